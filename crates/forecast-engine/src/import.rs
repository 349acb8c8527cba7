//! Backfill: demand history from a CSV or Parquet file straight into the staging tables — the usual way a
//! retailer starts. Each row is parsed and normalised exactly as an event from the bus would be
//! (`DemandEvent`), keyed by the file's source and the row's id (its `id` column, else its line
//! number), so importing the same file again stages nothing twice; rows whose SKU or location is
//! not in the reference tables yet are parked, as events are, and staged by the sweep once the
//! reference arrives; invalid rows are reported with their line and reason and skipped.
//!
//! Columns (a header row, any order): `type` (`sale`, `supply`, `return`), `sku`, `location`,
//! `quantity`, and `occurred_at` (sales, returns) or `ordered_at` + `received_at` (supplies);
//! optional `unit` (`each`, `pack`), `unit_price`, `promo` (`true`/`false`, `1`/`0`), `id`.
//! Parquet columns have the same names; times may be strings (RFC 3339) or timestamps, dates
//! `DATE`, numbers any integer or floating type. A Parquet row's "line" is its row number + 1.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;

use tally_forecast::demand::{DemandEvent, DemandKind, types};
use tally_store::Flush;
use tally_store::demand::{DemandEffects, DemandStore, ParkedRow};
use tally_store::ledger::Journal;

use crate::handler::{Origin, staged_row};
use crate::references::References;

/// Rows written per store transaction.
const BATCH: usize = 5_000;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Rows read.
    pub rows: usize,
    /// Rows staged (or already staged by an earlier import: staging is idempotent).
    pub staged: usize,
    /// Rows parked for want of reference data.
    pub parked: usize,
    /// Rows refused: `(line, reason)`, the first 100.
    pub refused: Vec<(usize, String)>,
    /// How many were refused in all.
    pub refused_count: usize,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not CSV with the expected header.
    #[error("{0}")]
    Format(String),
    /// The store failed (the rows before the failing batch are staged; importing again is safe).
    #[error(transparent)]
    Store(#[from] tally_store::StoreError),
}

fn payload(row: &HashMap<&str, &str>) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    for key in ["sku", "location", "unit", "occurred_at", "ordered_at", "received_at"] {
        if let Some(x) = row.get(key).filter(|x| !x.is_empty()) {
            v.insert(key.to_owned(), serde_json::Value::String((*x).to_owned()));
        }
    }
    if let Some(q) = row.get("quantity") {
        // A number when it is one; otherwise the text, for the parser to refuse by name.
        let parsed = q
            .parse::<i64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| serde_json::Value::String((*q).to_owned()));
        v.insert("quantity".into(), parsed);
    }
    if let Some(p) = row.get("unit_price").filter(|x| !x.is_empty()) {
        v.insert("unit_price".into(), p.parse::<f64>().map_or(serde_json::Value::Null, serde_json::Value::from));
    }
    if let Some(p) = row.get("promo").filter(|x| !x.is_empty()) {
        v.insert("promo".into(), serde_json::Value::Bool(matches!(*p, "true" | "1" | "yes")));
    }
    serde_json::Value::Object(v)
}

/// Imports `input` (CSV) under idempotency source `source` into `store`, streaming it in
/// batches of 5,000 rows.
pub async fn import_csv<S: DemandStore>(
    store: &S,
    references: &References,
    source: &str,
    input: impl Read,
) -> Result<Imported, ImportError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(input);
    let header: Vec<String> =
        reader.headers().map_err(|e| ImportError::Format(e.to_string()))?.iter().map(str::to_owned).collect();
    let rows = reader.into_records().enumerate().map(|(i, record)| {
        let fields = record.map(|r| r.iter().map(str::to_owned).collect()).map_err(|e| format!("not CSV: {e}"));
        (i + 2, fields)
    });
    stage_rows(store, references, source, &header, rows).await
}

/// Imports a Parquet file under idempotency source `source` into `store`, streaming its rows
/// in batches of 5,000.
pub async fn import_parquet<S: DemandStore>(
    store: &S,
    references: &References,
    source: &str,
    file: std::fs::File,
) -> Result<Imported, ImportError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(file).map_err(|e| ImportError::Format(format!("not Parquet: {e}")))?;
    let header: Vec<String> =
        reader.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.name().to_owned()).collect();
    let rows = reader.get_row_iter(None).map_err(|e| ImportError::Format(format!("reading Parquet: {e}")))?;
    let rows = rows.enumerate().map(|(i, row)| {
        let fields = row
            .map(|row| {
                let mut fields = vec![String::new(); header.len()];
                for (name, field) in row.get_column_iter() {
                    if let Some(slot) = header.iter().position(|h| h == name) {
                        fields[slot] = parquet_text(field);
                    }
                }
                fields
            })
            .map_err(|e| format!("not readable: {e}"));
        (i + 1, fields)
    });
    stage_rows(store, references, source, &header, rows).await
}

/// Stages `rows` — `(line, the fields in `header`'s order or why the row is unreadable)` — in
/// batches of 5,000.
async fn stage_rows<S: DemandStore>(
    store: &S,
    references: &References,
    source: &str,
    header: &[String],
    rows: impl Iterator<Item = (usize, Result<Vec<String>, String>)>,
) -> Result<Imported, ImportError> {
    check_header(header)?;
    let mut out = Imported::default();
    let mut pending: Vec<(usize, Vec<String>)> = Vec::with_capacity(BATCH);
    for (line, fields) in rows {
        out.rows += 1;
        match fields {
            Ok(fields) => pending.push((line, fields)),
            Err(reason) => refuse(&mut out, line, reason),
        }
        if pending.len() == BATCH {
            stage_batch(store, references, source, header, std::mem::take(&mut pending), &mut out).await?;
        }
    }
    if !pending.is_empty() {
        stage_batch(store, references, source, header, pending, &mut out).await?;
    }
    Ok(out)
}

/// A Parquet value as the text a CSV cell would hold.
fn parquet_text(field: &parquet::record::Field) -> String {
    use parquet::record::Field;
    match field {
        Field::Null => String::new(),
        Field::Str(s) => s.clone(),
        Field::Date(days) => tally_forecast::day::iso(*days),
        Field::TimestampMillis(ms) => tally_forecast::day::rfc3339(*ms),
        Field::TimestampMicros(us) => tally_forecast::day::rfc3339(us.div_euclid(1000)),
        other => other.to_string(),
    }
}

fn check_header(header: &[String]) -> Result<(), ImportError> {
    for required in ["type", "sku", "location", "quantity"] {
        if !header.iter().any(|h| h == required) {
            return Err(ImportError::Format(format!("the header has no {required:?} column (it has {header:?})")));
        }
    }
    Ok(())
}

fn refuse(out: &mut Imported, line: usize, reason: String) {
    out.refused_count += 1;
    if out.refused.len() < 100 {
        out.refused.push((line, reason));
    }
}

async fn stage_batch<S: DemandStore>(
    store: &S,
    references: &References,
    source: &str,
    header: &[String],
    rows: Vec<(usize, Vec<String>)>,
    out: &mut Imported,
) -> Result<(), ImportError> {
    let mut parsed = Vec::with_capacity(rows.len());
    for (line, record) in &rows {
        let row: HashMap<&str, &str> =
            header.iter().map(String::as_str).zip(record.iter().map(String::as_str)).collect();
        let kind = match row.get("type").copied().and_then(DemandKind::parse) {
            Some(k) => k,
            None => {
                refuse(
                    out,
                    *line,
                    format!(
                        "type must be sale, supply or return, got {:?}",
                        row.get("type").copied().unwrap_or_default()
                    ),
                );
                continue;
            }
        };
        let data = payload(&row);
        let bytes = serde_json::to_vec(&data).unwrap_or_default();
        match DemandEvent::from_payload(kind, &bytes) {
            Ok(event) => {
                let id =
                    row.get("id").filter(|x| !x.is_empty()).map_or_else(|| format!("line-{line}"), |x| (*x).to_owned());
                parsed.push((*line, id, kind, event, String::from_utf8(bytes).unwrap_or_default()));
            }
            Err(e) => refuse(out, *line, e.detail),
        }
    }
    let skus: BTreeSet<String> = parsed.iter().map(|p| p.3.sku.as_str().to_owned()).collect();
    let locations: BTreeSet<String> = parsed.iter().map(|p| p.3.location.as_str().to_owned()).collect();
    references.load(store, skus.into_iter().collect(), locations.into_iter().collect()).await?;
    let mut effects = DemandEffects::default();
    for (line, id, kind, event, json) in parsed {
        match (references.sku(event.sku.as_str()), references.location(event.location.as_str())) {
            (Some(sku), Some(location)) => match event.stage(&sku, &location) {
                Ok(staged) => {
                    let origin = Origin { source, id: &id, topic: "import", partition: 0, offset: line as u64 };
                    effects.staged.push(staged_row(&event, &staged, &origin));
                    out.staged += 1;
                }
                Err(e) => refuse(out, line, e.detail),
            },
            (sku, _) => {
                let ty = match kind {
                    DemandKind::Sale => types::SALE,
                    DemandKind::Supply => types::SUPPLY,
                    DemandKind::Return => types::RETURN,
                };
                let mut envelope =
                    tally_core::Envelope::new(source, ty, serde_json::from_str(&json).unwrap_or_default());
                envelope.id.clone_from(&id);
                let (headers, _) = envelope.to_binary();
                effects.parked.push(ParkedRow {
                    source: source.to_owned(),
                    id,
                    ty: ty.to_owned(),
                    sku: event.sku.as_str().to_owned(),
                    location: event.location.as_str().to_owned(),
                    missing: if sku.is_none() { "sku".into() } else { "location".into() },
                    headers: serde_json::to_string(&headers).unwrap_or_else(|_| "[]".into()),
                    payload: json,
                    event_time_ms: event.occurred_at.as_millisecond(),
                    topic: "import".into(),
                    partition: 0,
                    offset: line as u64,
                });
                out.parked += 1;
            }
        }
    }
    Journal::<DemandEffects>::flush(store, &[Flush { effects, processed: Vec::new(), offsets: Vec::new() }]).await?;
    Ok(())
}
