//! What forecasting stores and publishes, and under which keys: the latest forecast and the
//! features of each series (documents, newest run wins), every forecast of every run (rows
//! appended under the run, first one wins — so a series is forecast once per run however many
//! instances try), and one summary row per run and share of the series.

use serde::{Deserialize, Serialize};
use tally_forecast::features::Features;
use tally_forecast::replenish::Suggestion;

/// Document key of a series' latest forecast.
pub fn forecast_doc(sku: &str, location: &str) -> String {
    format!("forecast/{sku}@{location}")
}

/// Document key of a series' features.
pub fn features_doc(sku: &str, location: &str) -> String {
    format!("features/{sku}@{location}")
}

/// Key the rows of one run are appended under.
pub fn run_rows(run_id: &str) -> String {
    format!("run/{run_id}")
}

/// Row id of a series' forecast in a run.
pub fn run_row(run_id: &str, sku: &str, location: &str) -> String {
    format!("run/{run_id}/{sku}@{location}")
}

/// Document key of the latest manual run requested (through the API): every forecast
/// instance runs its share of it.
pub const MANUAL_REQUEST_DOC: &str = "runs/manual-request";

/// A manual run requested, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualRequest {
    /// The run's id.
    pub run_id: String,
}

/// Key the run summaries are appended under.
pub const RUNS: &str = "forecast_runs";

/// Row id of a run's summary for one share of the series.
pub fn run_summary_row(run_id: &str, share: &str) -> String {
    format!("runs/{run_id}/{share}")
}

/// Cache key of a series' latest forecast (the fallback when the model is down).
pub fn forecast_cache_key(sku: &str, location: &str) -> String {
    format!("forecast:latest:{sku}@{location}")
}

/// Cache key of a series' features.
pub fn features_cache_key(sku: &str, location: &str) -> String {
    format!("forecast:features:{sku}@{location}")
}

/// One day ahead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForecastDay {
    /// Business day (`YYYY-MM-DD`).
    pub day: String,
    /// Point forecast (units).
    pub mean: f64,
    /// Quantiles at the configured levels (`"p10"`, `"p50"` …), and `"service"`: the
    /// service-level quantile.
    pub quantiles: std::collections::BTreeMap<String, f64>,
}

/// A series' forecast as stored, served and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForecastRecord {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// The run that made it.
    pub run_id: String,
    /// That run's version (its start, Unix ms): exports keep the forecast of the newest run.
    #[serde(default)]
    pub run_version: i64,
    /// Last business day of the history it saw (`YYYY-MM-DD`).
    pub as_of: String,
    /// Model version.
    pub model_version: String,
    /// Method chosen for the series.
    pub method: String,
    /// Error deviation of the next day's forecast.
    pub sigma_daily: f64,
    /// Service level of the `service` quantile and the suggestion.
    pub service_level: f64,
    /// The days ahead.
    pub days: Vec<ForecastDay>,
    /// The replenishment suggestion.
    pub suggestion: Suggestion,
    /// When it was made (Unix ms).
    pub made_at_ms: i64,
    /// Served from the last forecast because the model was unavailable.
    #[serde(default)]
    pub stale: bool,
    /// How old the forecast served was when this run served it (s), if stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_age_seconds: Option<f64>,
}

/// A series' features as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeaturesRecord {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// The features.
    pub features: Features,
}

/// What triggered a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// The schedule: every series.
    Full,
    /// Fresh data: the series touched.
    Incremental,
    /// An administrator: every series.
    Manual,
}

/// One share of a run, as stored and published in `forecast.ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// What triggered it.
    pub kind: RunKind,
    /// Which series this share covered (`all`, or the partitions).
    pub share: String,
    /// Model version.
    pub model_version: String,
    /// Last business day of the data (`YYYY-MM-DD`).
    pub as_of: String,
    /// Series forecast by this share.
    pub series: usize,
    /// Of them, served stale (the model was unavailable).
    pub stale: usize,
    /// Series already forecast in this run by another instance (skipped).
    pub skipped: usize,
    /// Started (Unix ms).
    pub started_at_ms: i64,
    /// Finished (Unix ms).
    pub finished_at_ms: i64,
}
