//! Forecasting's metrics (`tally_forecast_…`) and the counters the demo and the benchmark
//! read.

#![allow(clippy::disallowed_macros)] // the one place forecast touches the `metrics` macros

use std::sync::atomic::{AtomicU64, Ordering};

use tally_forecast::demand::DemandKind;
use tally_runtime::metrics::{Family, Kind};

use crate::handler::{DemandOutcome, REFUSALS};

/// Metric names.
pub mod names {
    /// Demand events staged, by kind.
    pub const EVENTS_STAGED_TOTAL: &str = "tally_forecast_events_staged_total";
    /// Demand events parked for want of reference data.
    pub const EVENTS_PARKED_TOTAL: &str = "tally_forecast_events_parked_total";
    /// Parked events staged once their reference data arrived, by fate.
    pub const EVENTS_UNPARKED_TOTAL: &str = "tally_forecast_events_unparked_total";
    /// Events waiting in the parking table.
    pub const PARKED_EVENTS: &str = "tally_forecast_parked_events";
    /// Forecast runs (shares of runs) finished, by kind.
    pub const RUNS_TOTAL: &str = "tally_forecast_runs_total";
    /// Wall time of a run's share, by kind.
    pub const RUN_SECONDS: &str = "tally_forecast_run_seconds";
    /// Series forecast, by whether the model answered (`fresh`) or the last forecast was
    /// served (`stale`).
    pub const SERIES_FORECAST_TOTAL: &str = "tally_forecast_series_forecast_total";
    /// Batches the model did not answer.
    pub const MODEL_UNAVAILABLE_TOTAL: &str = "tally_forecast_model_unavailable_total";
    /// Age of the newest event reflected at each stage (`ingest`: staged; `features`:
    /// features computed; `forecast`: forecasts published), seconds.
    pub const DATA_FRESHNESS_SECONDS: &str = "tally_forecast_data_freshness_seconds";
    /// Rows the exporter wrote, by table (`forecasts`, `suggestions`).
    pub const EXPORT_ROWS_TOTAL: &str = "tally_forecast_export_rows_total";
    /// Time from a run's end to its export, for the run exported last, seconds.
    pub const EXPORT_LAG_SECONDS: &str = "tally_forecast_export_lag_seconds";
}

/// Subsystem name of the exporter's consumer (`tally_forecast_export_…`).
pub const EXPORT_SUBSYSTEM: &str = "forecast_export";

/// The exporter wrote one run: its rows, and how long after the run ended.
pub fn exported(forecast_rows: usize, suggestion_rows: usize, lag_seconds: f64) {
    use names::*;
    metrics::counter!(EXPORT_ROWS_TOTAL, "table" => "forecasts").increment(forecast_rows as u64);
    metrics::counter!(EXPORT_ROWS_TOTAL, "table" => "suggestions").increment(suggestion_rows as u64);
    metrics::gauge!(EXPORT_LAG_SECONDS).set(lag_seconds);
}

/// Forecasting's metric families, its own and its consumer runtime's.
pub fn families() -> Vec<Family> {
    use Kind::*;
    use names::*;
    let mut all = vec![
        Family {
            name: EVENTS_STAGED_TOTAL.into(),
            kind: Counter,
            help: "Demand events staged, by kind (sale, supply, return).",
            known: Some(("kind", vec!["sale", "supply", "return"])),
        },
        Family {
            name: EVENTS_PARKED_TOTAL.into(),
            kind: Counter,
            help: "Demand events parked because their SKU or location is not in the reference tables yet.",
            known: None,
        },
        Family {
            name: EVENTS_UNPARKED_TOTAL.into(),
            kind: Counter,
            help: "Parked demand events released once their reference data arrived, by fate (staged, dead_lettered).",
            known: Some(("fate", vec!["staged", "dead_lettered"])),
        },
        Family {
            name: PARKED_EVENTS.into(),
            kind: Gauge,
            help: "Demand events waiting for their reference data.",
            known: None,
        },
        Family {
            name: RUNS_TOTAL.into(),
            kind: Counter,
            help: "Forecast runs (this instance's share of each) finished, by kind (full, incremental, manual).",
            known: Some(("kind", vec!["full", "incremental", "manual"])),
        },
        Family {
            name: RUN_SECONDS.into(),
            kind: Histogram,
            help: "Seconds a forecast run's share took, by kind.",
            known: None,
        },
        Family {
            name: SERIES_FORECAST_TOTAL.into(),
            kind: Counter,
            help: "Series forecast, fresh (the model answered) or stale (the last forecast served).",
            known: Some(("freshness", vec!["fresh", "stale"])),
        },
        Family {
            name: MODEL_UNAVAILABLE_TOTAL.into(),
            kind: Counter,
            help: "Batches the demand model did not answer (the last forecasts were served, marked stale).",
            known: None,
        },
        Family {
            name: DATA_FRESHNESS_SECONDS.into(),
            kind: Gauge,
            help: "Age of the newest demand event reflected at each stage (ingest, features, forecast), seconds.",
            known: Some(("stage", vec!["ingest", "features", "forecast"])),
        },
    ];
    all.extend(tally_runtime::metrics::families("forecast", &DemandOutcome::CODES, &REFUSALS));
    all.extend([
        Family {
            name: EXPORT_ROWS_TOTAL.into(),
            kind: Counter,
            help: "Rows the forecast exporter wrote (ClickHouse, Parquet), by table.",
            known: Some(("table", vec!["forecasts", "suggestions"])),
        },
        Family {
            name: EXPORT_LAG_SECONDS.into(),
            kind: Gauge,
            help: "Seconds from the end of the run exported last to its export.",
            known: None,
        },
    ]);
    all.extend(tally_runtime::metrics::families(EXPORT_SUBSYSTEM, &["exported"], &crate::export::handler::REFUSALS));
    all
}

/// Counters for the demo and the benchmark.
#[derive(Debug, Default)]
pub struct ForecastStats {
    /// Events staged.
    pub staged: AtomicU64,
    /// Events parked.
    pub parked: AtomicU64,
    /// Parked events staged later.
    pub unparked: AtomicU64,
    /// Series forecast (fresh and stale).
    pub forecast: AtomicU64,
    /// Of them, stale.
    pub stale: AtomicU64,
    /// Runs finished.
    pub runs: AtomicU64,
    /// Event time (Unix ms) of the newest event staged.
    pub ingest_data_ms: std::sync::atomic::AtomicI64,
    /// … reflected in features computed.
    pub features_data_ms: std::sync::atomic::AtomicI64,
    /// … reflected in forecasts published.
    pub forecast_data_ms: std::sync::atomic::AtomicI64,
}

/// A refresh stage, for the freshness metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Features computed.
    Features,
    /// Forecasts published.
    Forecast,
}

/// Forecasting's metric handles.
#[derive(Debug, Default)]
pub struct ForecastMetrics {
    /// Counters.
    pub stats: std::sync::Arc<ForecastStats>,
}

impl ForecastMetrics {
    /// Metrics over `stats`.
    pub fn new(stats: std::sync::Arc<ForecastStats>) -> Self {
        Self { stats }
    }

    /// An event (of event time `event_ms`) was staged.
    pub fn staged(&self, kind: DemandKind, event_ms: i64) {
        self.stats.staged.fetch_add(1, Ordering::Relaxed);
        self.stats.ingest_data_ms.fetch_max(event_ms, Ordering::Relaxed);
        metrics::counter!(names::EVENTS_STAGED_TOTAL, "kind" => kind.as_str()).increment(1);
    }

    /// An event was parked.
    pub fn parked(&self) {
        self.stats.parked.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::EVENTS_PARKED_TOTAL).increment(1);
    }

    /// Parked events were released: `staged` staged, `dead_lettered` refused.
    pub fn unparked(&self, staged: usize, dead_lettered: usize) {
        self.stats.unparked.fetch_add(staged as u64, Ordering::Relaxed);
        metrics::counter!(names::EVENTS_UNPARKED_TOTAL, "fate" => "staged").increment(staged as u64);
        metrics::counter!(names::EVENTS_UNPARKED_TOTAL, "fate" => "dead_lettered").increment(dead_lettered as u64);
    }

    /// Events waiting in the parking table.
    pub fn parked_now(&self, n: u64) {
        metrics::gauge!(names::PARKED_EVENTS).set(n as f64);
    }

    /// A stage now reflects the events up to `data_ms` (event time).
    pub fn reached(&self, stage: Stage, data_ms: i64) {
        let at = match stage {
            Stage::Features => &self.stats.features_data_ms,
            Stage::Forecast => &self.stats.forecast_data_ms,
        };
        at.fetch_max(data_ms, Ordering::Relaxed);
    }

    /// Exports the age of each stage's newest event as of `now_ms`.
    pub fn export_freshness(&self, now_ms: i64) {
        for (stage, at) in [
            ("ingest", &self.stats.ingest_data_ms),
            ("features", &self.stats.features_data_ms),
            ("forecast", &self.stats.forecast_data_ms),
        ] {
            let at = at.load(Ordering::Relaxed);
            if at > 0 {
                metrics::gauge!(names::DATA_FRESHNESS_SECONDS, "stage" => stage).set((now_ms - at).max(0) as f64 / 1e3);
            }
        }
    }

    /// A run's share finished.
    pub fn run(&self, kind: &'static str, series: usize, stale: usize, took: std::time::Duration) {
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        self.stats.forecast.fetch_add(series as u64, Ordering::Relaxed);
        self.stats.stale.fetch_add(stale as u64, Ordering::Relaxed);
        metrics::counter!(names::RUNS_TOTAL, "kind" => kind).increment(1);
        metrics::histogram!(names::RUN_SECONDS, "kind" => kind).record(took.as_secs_f64());
        metrics::counter!(names::SERIES_FORECAST_TOTAL, "freshness" => "fresh").increment((series - stale) as u64);
        metrics::counter!(names::SERIES_FORECAST_TOTAL, "freshness" => "stale").increment(stale as u64);
    }

    /// The model did not answer a batch.
    pub fn model_unavailable(&self) {
        metrics::counter!(names::MODEL_UNAVAILABLE_TOTAL).increment(1);
    }
}
