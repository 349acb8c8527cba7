//! ClickHouse over its HTTP interface: statements in the request, rows as `JSONEachRow` (a
//! format every ClickHouse since 2017 reads, Debian's 18.16 included). The tables are
//! `ReplacingMergeTree(run_version)`: per sort key — (sku, location, as_of, day) for forecasts,
//! (sku, location, as_of) for suggestions — the row of the newest run survives merges, and a
//! row written twice (a redelivered export) counts once. Read them with `FINAL` (or
//! `argMax(…, run_version)`) to see that before a merge.

use std::time::Duration;

use serde::Serialize;
use tally_config::ForecastExport;
use tokio::sync::Mutex;

use super::{ExportError, Levels};
use crate::records::ForecastRecord;

/// ClickHouse error codes that mean the rows or the statement are wrong, not the server's
/// state: retrying repeats them (`CANNOT_PARSE_*`, `SYNTAX_ERROR`, `TYPE_MISMATCH`,
/// `NO_SUCH_COLUMN_IN_TABLE`, `INCORRECT_DATA`).
const PERMANENT_CODES: [&str; 8] =
    ["Code: 6,", "Code: 26,", "Code: 27,", "Code: 38,", "Code: 53,", "Code: 62,", "Code: 16,", "Code: 117,"];

/// The two tables' definitions (`{db}` is the database).
const TABLES: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS {db}.forecasts (
        run_id String, run_version Int64, sku String, location String, as_of Date, day Date,
        mean Float64, quantile_levels Array(Float64), quantiles Array(Float64), service Float64,
        method String, model_version String, stale UInt8, made_at_ms Int64
    ) ENGINE = ReplacingMergeTree(run_version) PARTITION BY toYYYYMM(as_of) ORDER BY (sku, location, as_of, day)",
    "CREATE TABLE IF NOT EXISTS {db}.suggestions (
        run_id String, run_version Int64, sku String, location String, as_of Date,
        method String, model_version String, service_level Float64, sigma_daily Float64,
        lead_time_days Float64, daily_demand Float64, safety_stock Float64, reorder_point Float64,
        order_up_to Float64, order_quantity Int64, on_hand Int64, days_of_cover Nullable(Float64),
        stockout_probability Float64, stale UInt8, made_at_ms Int64
    ) ENGINE = ReplacingMergeTree(run_version) PARTITION BY toYYYYMM(as_of) ORDER BY (sku, location, as_of)",
];

/// A ClickHouse server's HTTP interface.
pub struct ClickHouse {
    http: reqwest::Client,
    url: String,
    database: String,
    user: String,
    password: String,
    insert_rows: usize,
    /// Whether the tables are known to exist (checked again after any failure: a dropped
    /// table is made again).
    ready: Mutex<bool>,
}

#[derive(Serialize)]
struct ForecastRow<'a> {
    run_id: &'a str,
    run_version: i64,
    sku: &'a str,
    location: &'a str,
    as_of: &'a str,
    day: &'a str,
    mean: f64,
    quantile_levels: Vec<f64>,
    quantiles: Vec<f64>,
    service: f64,
    method: &'a str,
    model_version: &'a str,
    stale: u8,
    made_at_ms: i64,
}

#[derive(Serialize)]
struct SuggestionRow<'a> {
    run_id: &'a str,
    run_version: i64,
    sku: &'a str,
    location: &'a str,
    as_of: &'a str,
    method: &'a str,
    model_version: &'a str,
    service_level: f64,
    sigma_daily: f64,
    lead_time_days: f64,
    daily_demand: f64,
    safety_stock: f64,
    reorder_point: f64,
    order_up_to: f64,
    order_quantity: i64,
    on_hand: i64,
    days_of_cover: Option<f64>,
    stockout_probability: f64,
    stale: u8,
    made_at_ms: i64,
}

/// Appends `row` as one JSON line (a non-finite number, which JSON cannot hold, as 0).
fn push_line<T: Serialize>(body: &mut Vec<u8>, row: &T) {
    if serde_json::to_writer(&mut *body, row).is_ok() {
        body.push(b'\n');
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// Each record's forecast days as `JSONEachRow` lines, in chunks of at most `per_chunk` rows.
fn forecast_lines(records: &[ForecastRecord], levels: &Levels, per_chunk: usize) -> Vec<(usize, Vec<u8>)> {
    let mut chunks = vec![(0, Vec::new())];
    for r in records {
        for d in &r.days {
            let (mut quantile_levels, mut quantiles) = (Vec::new(), Vec::new());
            for (q, key) in levels.iter() {
                if let Some(v) = d.quantiles.get(key) {
                    quantile_levels.push(q);
                    quantiles.push(finite(*v));
                }
            }
            let row = ForecastRow {
                run_id: &r.run_id,
                run_version: r.run_version,
                sku: &r.sku,
                location: &r.location,
                as_of: &r.as_of,
                day: &d.day,
                mean: finite(d.mean),
                quantile_levels,
                quantiles,
                service: finite(d.quantiles.get("service").copied().unwrap_or(d.mean)),
                method: &r.method,
                model_version: &r.model_version,
                stale: u8::from(r.stale),
                made_at_ms: r.made_at_ms,
            };
            if chunks.last().is_some_and(|(n, _)| *n >= per_chunk) {
                chunks.push((0, Vec::new()));
            }
            if let Some((n, body)) = chunks.last_mut() {
                push_line(body, &row);
                *n += 1;
            }
        }
    }
    chunks.retain(|(n, _)| *n > 0);
    chunks
}

/// Each record's suggestion as one `JSONEachRow` line.
fn suggestion_lines(records: &[ForecastRecord]) -> Vec<u8> {
    let mut body = Vec::new();
    for r in records {
        let s = &r.suggestion;
        push_line(
            &mut body,
            &SuggestionRow {
                run_id: &r.run_id,
                run_version: r.run_version,
                sku: &r.sku,
                location: &r.location,
                as_of: &r.as_of,
                method: &r.method,
                model_version: &r.model_version,
                service_level: finite(r.service_level),
                sigma_daily: finite(r.sigma_daily),
                lead_time_days: finite(s.lead_time_days),
                daily_demand: finite(s.daily_demand),
                safety_stock: finite(s.safety_stock),
                reorder_point: finite(s.reorder_point),
                order_up_to: finite(s.order_up_to),
                order_quantity: s.order_quantity,
                on_hand: s.on_hand,
                days_of_cover: s.days_of_cover.filter(|d| d.is_finite()),
                stockout_probability: finite(s.stockout_probability),
                stale: u8::from(r.stale),
                made_at_ms: r.made_at_ms,
            },
        );
    }
    body
}

impl ClickHouse {
    /// The server at `url` with `cfg`'s database, credentials and limits.
    pub fn new(url: &str, cfg: &ForecastExport) -> Result<Self, ExportError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.clickhouse_timeout_ms))
            .build()
            .map_err(|e| ExportError::Permanent(format!("ClickHouse client: {e}")))?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            database: cfg.clickhouse_database.clone(),
            user: cfg.clickhouse_user.clone(),
            password: cfg.clickhouse_password.expose().to_owned(),
            insert_rows: cfg.clickhouse_insert_rows.max(1),
            ready: Mutex::new(false),
        })
    }

    /// Runs `statement`, with `body` after it when not empty (the rows of an `INSERT … FORMAT`).
    async fn execute(&self, statement: &str, body: Vec<u8>) -> Result<(), ExportError> {
        // A statement alone goes in the body: an empty body would be sent without the
        // Content-Length header ClickHouse insists on.
        let request = self.http.post(format!("{}/", self.url)).basic_auth(&self.user, Some(&self.password));
        let request = if body.is_empty() {
            request.body(statement.to_owned())
        } else {
            request.query(&[("query", statement)]).body(body)
        };
        let response =
            request.send().await.map_err(|e| ExportError::Transient(format!("ClickHouse at {}: {e}", self.url)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let detail = format!("ClickHouse answered {status} to {}: {}", first_words(statement), text.trim());
        if PERMANENT_CODES.iter().any(|c| text.contains(c)) {
            Err(ExportError::Permanent(detail))
        } else {
            Err(ExportError::Transient(detail))
        }
    }

    /// Makes the database and tables when missing.
    async fn ensure_tables(&self) -> Result<(), ExportError> {
        let mut ready = self.ready.lock().await;
        if *ready {
            return Ok(());
        }
        self.execute(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database), Vec::new()).await?;
        for table in TABLES {
            self.execute(&table.replace("{db}", &self.database), Vec::new()).await?;
        }
        *ready = true;
        Ok(())
    }

    /// Inserts the records' forecast and suggestion rows; returns how many of each.
    pub async fn insert(&self, records: &[ForecastRecord], levels: &Levels) -> Result<(usize, usize), ExportError> {
        let result = self.insert_rows(records, levels).await;
        if result.is_err() {
            *self.ready.lock().await = false;
        }
        result
    }

    async fn insert_rows(&self, records: &[ForecastRecord], levels: &Levels) -> Result<(usize, usize), ExportError> {
        if records.is_empty() {
            return Ok((0, 0));
        }
        self.ensure_tables().await?;
        let mut forecast_rows = 0;
        for (n, body) in forecast_lines(records, levels, self.insert_rows) {
            self.execute(&format!("INSERT INTO {}.forecasts FORMAT JSONEachRow", self.database), body).await?;
            forecast_rows += n;
        }
        for chunk in records.chunks(self.insert_rows) {
            self.execute(
                &format!("INSERT INTO {}.suggestions FORMAT JSONEachRow", self.database),
                suggestion_lines(chunk),
            )
            .await?;
        }
        Ok((forecast_rows, records.len()))
    }
}

fn first_words(statement: &str) -> String {
    statement.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}
