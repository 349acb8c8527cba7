//! `[forecast]`: the demand forecasting pipeline.

use serde::{Deserialize, Serialize};

/// Forecast topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastTopics {
    /// Input: sales (key = `sku@location`).
    pub sales: String,
    /// Input: receipts of ordered stock.
    pub supplies: String,
    /// Input: customer returns.
    pub returns: String,
    /// Output: one event per forecast run.
    pub ready: String,
}

impl Default for ForecastTopics {
    fn default() -> Self {
        Self {
            sales: "demand.sales".into(),
            supplies: "demand.supplies".into(),
            returns: "demand.returns".into(),
            ready: "forecast.ready".into(),
        }
    }
}

/// Demand forecasting settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Consumer group of the demand consumers (its own: forecasting never shares a group
    /// with the main contour).
    pub consumer_group: String,
    /// Topic names.
    pub topics: ForecastTopics,
    /// Most milliseconds between store flushes while changes are pending.
    pub flush_interval_ms: u64,
    /// Flush earlier once this many rows are pending.
    pub flush_max_rows: usize,
    /// Records a partition worker takes per poll.
    pub poll_max_records: usize,
    /// Idempotency window per partition.
    pub dedupe_window: u64,
    /// How long a catalogue or location entry is used before it is read again (s).
    pub reference_ttl_seconds: u64,
    /// How often parked events are checked against the reference tables (ms); a reference
    /// stored through this instance's API wakes the check at once.
    pub unpark_interval_ms: u64,
    /// Monthly partitions of the event table kept ahead of the current month.
    pub partitions_ahead_months: u32,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            consumer_group: "tally-forecast".into(),
            topics: ForecastTopics::default(),
            flush_interval_ms: 100,
            flush_max_rows: 5000,
            poll_max_records: 1000,
            dedupe_window: 200_000,
            reference_ttl_seconds: 60,
            unpark_interval_ms: 5_000,
            partitions_ahead_months: 3,
        }
    }
}
