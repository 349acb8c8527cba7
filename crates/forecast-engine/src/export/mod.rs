//! Exports of every forecast run for analysts and BI tools: ClickHouse (over its HTTP
//! interface, into `ReplacingMergeTree` tables versioned by run) and Parquet files.
//!
//! An exporter is a consumer on the shared runtime with its own group over `forecast.ready`:
//! each event names a run (and the share of it an instance finished), and the exporter writes
//! the run's forecasts as stored at that moment. It never slows a refresh, a destination that is
//! down only delays its exports (the poll is read again until it answers), and every write is
//! idempotent, so redelivery after a crash has exactly-once effects: ClickHouse keeps one row
//! per (series, as-of day, day) — the newest run's — and a run's Parquet file is written whole
//! under a name of its own, replacing itself.
//!
//! Rows: `forecasts` has one per series and day ahead (mean, quantiles, the service-level
//! quantile), `suggestions` one per series (the replenishment suggestion).

use std::sync::Arc;

use tally_config::ForecastExport;

use crate::records::ForecastRecord;
use crate::refresh::quantile_name;

pub mod clickhouse;
pub mod handler;
pub mod parquet;

pub use handler::{ExportHandler, ExportOutcome};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination did not answer or failed in a way a retry may mend.
    #[error("{0}")]
    Transient(String),
    /// The destination refused the rows; retrying repeats the failure.
    #[error("{0}")]
    Permanent(String),
}

impl ExportError {
    /// Whether a retry may help.
    pub fn hint(&self) -> tally_core::RetryHint {
        match self {
            Self::Transient(_) => tally_core::RetryHint::Transient,
            Self::Permanent(_) => tally_core::RetryHint::Permanent,
        }
    }
}

/// The quantile levels a run's records carry, with their keys.
#[derive(Debug, Clone)]
pub struct Levels(Vec<(f64, String)>);

impl Levels {
    /// The configured levels.
    pub fn new(levels: &[f64]) -> Self {
        Self(levels.iter().map(|q| (*q, quantile_name(*q))).collect())
    }

    /// `(level, key)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (f64, &str)> {
        self.0.iter().map(|(q, k)| (*q, k.as_str()))
    }
}

/// The destinations of one process, shared by the exporter's partitions.
pub struct Exporter {
    clickhouse: Option<clickhouse::ClickHouse>,
    parquet: Option<parquet::ParquetDir>,
    parquet_incremental: bool,
    levels: Levels,
}

/// What one export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Forecast rows (series × days).
    pub forecast_rows: usize,
    /// Suggestion rows (series).
    pub suggestion_rows: usize,
    /// Parquet files written (0 or 2).
    pub files: usize,
}

impl Exporter {
    /// The destinations `cfg` sets (none: `None`); `levels` are the quantile levels forecast.
    pub fn new(cfg: &ForecastExport, levels: &[f64]) -> Result<Option<Arc<Self>>, ExportError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let clickhouse = cfg.clickhouse_url.as_ref().map(|url| clickhouse::ClickHouse::new(url, cfg)).transpose()?;
        let parquet = cfg.parquet_dir.as_ref().map(parquet::ParquetDir::new);
        Ok(Some(Arc::new(Self {
            clickhouse,
            parquet,
            parquet_incremental: cfg.parquet_incremental,
            levels: Levels::new(levels),
        })))
    }

    /// Writes `records` (one run's, `incremental` or not) to every destination.
    pub async fn export(
        &self,
        run_id: &str,
        incremental: bool,
        records: Arc<Vec<ForecastRecord>>,
    ) -> Result<Written, ExportError> {
        let mut written = Written::default();
        if let Some(ch) = &self.clickhouse {
            let (f, s) = ch.insert(&records, &self.levels).await?;
            written.forecast_rows = f;
            written.suggestion_rows = s;
        }
        if let Some(dir) = &self.parquet
            && (!incremental || self.parquet_incremental)
        {
            let (dir, levels, run_id, rows) = (dir.clone(), self.levels.clone(), run_id.to_owned(), records.clone());
            let (f, s) = tokio::task::spawn_blocking(move || dir.write_run(&run_id, &rows, &levels))
                .await
                .map_err(|e| ExportError::Transient(format!("writing Parquet files: {e}")))??;
            written.forecast_rows = written.forecast_rows.max(f);
            written.suggestion_rows = written.suggestion_rows.max(s);
            written.files = 2;
        }
        Ok(written)
    }
}

/// A run id fit for a file name and a ClickHouse string: what tally makes
/// (`full-…`, `incremental-…`, `manual-…`).
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_that_could_escape_a_directory_are_not_valid() {
        assert!(valid_run_id("full-1764460800000"));
        assert!(valid_run_id("incremental-1764460800000-4242-123"));
        for bad in ["", "../x", "a/b", ".hidden", "a b", "a\"b"] {
            assert!(!valid_run_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn levels_pair_each_quantile_with_its_key() {
        let levels = Levels::new(&[0.1, 0.975]);
        let pairs: Vec<(f64, &str)> = levels.iter().collect();
        assert_eq!(pairs, vec![(0.1, "p10"), (0.975, "p97_5")]);
    }
}
