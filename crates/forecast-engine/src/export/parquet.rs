//! Parquet files for BI tools: per run, `forecasts/<run>.parquet` (one row per series and day
//! ahead, a column per quantile level) and `suggestions/<run>.parquet` (one row per series),
//! Snappy-compressed. Each file is written beside its final name and renamed into place, so a
//! reader never sees half a file, and a run exported again replaces its own files (names
//! starting with `.` are skipped by pyarrow, Spark and DuckDB alike).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::{ExportError, Levels};
use crate::records::ForecastRecord;

/// Rows per row group (readers parallelise and skip by row group).
const ROW_GROUP_ROWS: usize = 1 << 18;

/// One column's values, in the schema's order.
enum Column {
    Text(Vec<ByteArray>),
    Long(Vec<i64>),
    Date(Vec<i32>),
    Double(Vec<f64>),
    Flag(Vec<bool>),
    /// An optional double: the values present, and 1 (present) or 0 per row.
    MaybeDouble(Vec<f64>, Vec<i16>),
}

fn text<'a>(values: impl Iterator<Item = &'a str>) -> Column {
    Column::Text(values.map(|s| ByteArray::from(s.as_bytes().to_vec())).collect())
}

fn day_number(iso: &str) -> i32 {
    tally_forecast::day::parse_iso(iso).unwrap_or_default()
}

/// The directory a process writes Parquet files under.
#[derive(Debug, Clone)]
pub struct ParquetDir(PathBuf);

impl ParquetDir {
    /// Files go under `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self(dir.as_ref().to_path_buf())
    }

    /// Where a run's forecasts go.
    pub fn forecasts_file(&self, run_id: &str) -> PathBuf {
        self.0.join("forecasts").join(format!("{run_id}.parquet"))
    }

    /// Where a run's suggestions go.
    pub fn suggestions_file(&self, run_id: &str) -> PathBuf {
        self.0.join("suggestions").join(format!("{run_id}.parquet"))
    }

    /// Writes one run's two files; returns (forecast rows, suggestion rows).
    pub fn write_run(
        &self,
        run_id: &str,
        records: &[ForecastRecord],
        levels: &Levels,
    ) -> Result<(usize, usize), ExportError> {
        let (schema, columns, rows) = forecast_columns(records, levels);
        write_file(&self.forecasts_file(run_id), &schema, columns, rows)?;
        let (schema, columns) = suggestion_columns(records);
        write_file(&self.suggestions_file(run_id), &schema, columns, records.len())?;
        Ok((rows, records.len()))
    }
}

fn forecast_columns(records: &[ForecastRecord], levels: &Levels) -> (String, Vec<Column>, usize) {
    let rows: Vec<(&ForecastRecord, &crate::records::ForecastDay)> =
        records.iter().flat_map(|r| r.days.iter().map(move |d| (r, d))).collect();
    let mut schema = String::from(
        "message forecast {
            required binary run_id (UTF8); required int64 run_version;
            required binary sku (UTF8); required binary location (UTF8);
            required int32 as_of (DATE); required int32 day (DATE); required double mean;",
    );
    let mut columns = vec![
        text(rows.iter().map(|(r, _)| r.run_id.as_str())),
        Column::Long(rows.iter().map(|(r, _)| r.run_version).collect()),
        text(rows.iter().map(|(r, _)| r.sku.as_str())),
        text(rows.iter().map(|(r, _)| r.location.as_str())),
        Column::Date(rows.iter().map(|(r, _)| day_number(&r.as_of)).collect()),
        Column::Date(rows.iter().map(|(_, d)| day_number(&d.day)).collect()),
        Column::Double(rows.iter().map(|(_, d)| d.mean).collect()),
    ];
    for (_, key) in levels.iter().chain(std::iter::once((0.0, "service"))) {
        schema.push_str(&format!(" required double {key};"));
        columns.push(Column::Double(
            rows.iter().map(|(_, d)| d.quantiles.get(key).copied().unwrap_or(f64::NAN)).collect(),
        ));
    }
    schema.push_str(
        " required binary method (UTF8); required binary model_version (UTF8);
          required boolean stale; required int64 made_at (TIMESTAMP_MILLIS); }",
    );
    columns.extend([
        text(rows.iter().map(|(r, _)| r.method.as_str())),
        text(rows.iter().map(|(r, _)| r.model_version.as_str())),
        Column::Flag(rows.iter().map(|(r, _)| r.stale).collect()),
        Column::Long(rows.iter().map(|(r, _)| r.made_at_ms).collect()),
    ]);
    let n = rows.len();
    (schema, columns, n)
}

fn suggestion_columns(records: &[ForecastRecord]) -> (String, Vec<Column>) {
    let schema = "message suggestion {
        required binary run_id (UTF8); required int64 run_version;
        required binary sku (UTF8); required binary location (UTF8); required int32 as_of (DATE);
        required binary method (UTF8); required binary model_version (UTF8);
        required double service_level; required double sigma_daily; required double lead_time_days;
        required double daily_demand; required double safety_stock; required double reorder_point;
        required double order_up_to; required int64 order_quantity; required int64 on_hand;
        optional double days_of_cover; required double stockout_probability;
        required boolean stale; required int64 made_at (TIMESTAMP_MILLIS);
    }"
    .to_owned();
    let f = |get: fn(&ForecastRecord) -> f64| Column::Double(records.iter().map(get).collect());
    let cover: Vec<Option<f64>> = records.iter().map(|r| r.suggestion.days_of_cover).collect();
    let columns = vec![
        text(records.iter().map(|r| r.run_id.as_str())),
        Column::Long(records.iter().map(|r| r.run_version).collect()),
        text(records.iter().map(|r| r.sku.as_str())),
        text(records.iter().map(|r| r.location.as_str())),
        Column::Date(records.iter().map(|r| day_number(&r.as_of)).collect()),
        text(records.iter().map(|r| r.method.as_str())),
        text(records.iter().map(|r| r.model_version.as_str())),
        f(|r| r.service_level),
        f(|r| r.sigma_daily),
        f(|r| r.suggestion.lead_time_days),
        f(|r| r.suggestion.daily_demand),
        f(|r| r.suggestion.safety_stock),
        f(|r| r.suggestion.reorder_point),
        f(|r| r.suggestion.order_up_to),
        Column::Long(records.iter().map(|r| r.suggestion.order_quantity).collect()),
        Column::Long(records.iter().map(|r| r.suggestion.on_hand).collect()),
        Column::MaybeDouble(
            cover.iter().flatten().copied().collect(),
            cover.iter().map(|c| i16::from(c.is_some())).collect(),
        ),
        f(|r| r.suggestion.stockout_probability),
        Column::Flag(records.iter().map(|r| r.stale).collect()),
        Column::Long(records.iter().map(|r| r.made_at_ms).collect()),
    ];
    (schema, columns)
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> ExportError {
    // A full disk or a missing permission may be mended while the exporter retries.
    ExportError::Transient(format!("writing {}: {e}", path.display()))
}

/// Writes `columns` (`rows` each, in `schema`'s order) to `path` via a hidden file beside it.
fn write_file(path: &Path, schema: &str, columns: Vec<Column>, rows: usize) -> Result<(), ExportError> {
    let dir = path.parent().ok_or_else(|| io_error(path, "no directory"))?;
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("run.parquet");
    let partial = dir.join(format!(".{name}.partial"));
    let schema =
        Arc::new(parse_message_type(schema).map_err(|e| ExportError::Permanent(format!("Parquet schema: {e}")))?);
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    let file = fs::File::create(&partial).map_err(|e| io_error(&partial, e))?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(|e| io_error(&partial, e))?;
    let mut start = 0;
    // An empty run still gets a valid file (with its schema and no row group).
    while start < rows {
        let end = (start + ROW_GROUP_ROWS).min(rows);
        let mut group = writer.next_row_group().map_err(|e| io_error(&partial, e))?;
        for column in &columns {
            let mut out = group
                .next_column()
                .map_err(|e| io_error(&partial, e))?
                .ok_or_else(|| ExportError::Permanent("Parquet schema and columns differ".into()))?;
            let written = match column {
                Column::Text(v) => out.typed::<ByteArrayType>().write_batch(&v[start..end], None, None),
                Column::Long(v) => out.typed::<Int64Type>().write_batch(&v[start..end], None, None),
                Column::Date(v) => out.typed::<Int32Type>().write_batch(&v[start..end], None, None),
                Column::Double(v) => out.typed::<DoubleType>().write_batch(&v[start..end], None, None),
                Column::Flag(v) => out.typed::<BoolType>().write_batch(&v[start..end], None, None),
                Column::MaybeDouble(values, present) => {
                    let before = present[..start].iter().filter(|p| **p == 1).count();
                    let here = present[start..end].iter().filter(|p| **p == 1).count();
                    out.typed::<DoubleType>().write_batch(
                        &values[before..before + here],
                        Some(&present[start..end]),
                        None,
                    )
                }
            };
            written.map_err(|e| io_error(&partial, e))?;
            out.close().map_err(|e| io_error(&partial, e))?;
        }
        group.close().map_err(|e| io_error(&partial, e))?;
        start = end;
    }
    let file = writer.into_inner().map_err(|e| io_error(&partial, e))?;
    file.sync_all().map_err(|e| io_error(&partial, e))?;
    fs::rename(&partial, path).map_err(|e| io_error(path, e))?;
    Ok(())
}
