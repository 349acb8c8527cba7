//! `[forecast]`: the demand forecasting pipeline.

use serde::{Deserialize, Serialize};

use crate::{ConfigError, invalid};

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

/// Where the demand model is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastModel {
    /// Over OIP v2 through `[model]`'s transport: the model server in this process in embedded
    /// mode (the repository's `demand` model), or `tally model-server`, Triton … in production.
    Server,
    /// Evaluated directly by the forecast role with this section's settings (no model
    /// repository needed).
    Direct,
}

/// How the demand model's threads claim the CPU when this process evaluates it directly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelPriority {
    /// Linux `SCHED_IDLE`: the model runs only on time no other thread of its scheduling group
    /// wants (across groups see `group_nice`), and takes every idle core otherwise.
    #[default]
    Idle,
    /// The normal policy: the model competes with the main contour for the cores.
    Normal,
}

/// `[forecast.export]`: where every run's forecasts and suggestions go besides the store. An
/// exporter (its own consumer group over `forecast.ready`) writes each run it hears of; with
/// neither destination set it does not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastExport {
    /// Consumer group of the exporter.
    pub consumer_group: String,
    /// ClickHouse's HTTP interface (`http://host:8123`); unset: no ClickHouse export.
    pub clickhouse_url: Option<String>,
    /// Database of the `forecasts` and `suggestions` tables (created when missing).
    pub clickhouse_database: String,
    /// ClickHouse user.
    pub clickhouse_user: String,
    /// ClickHouse password.
    pub clickhouse_password: crate::Secret,
    /// Rows per ClickHouse insert.
    pub clickhouse_insert_rows: usize,
    /// Longest one ClickHouse request may take (ms).
    pub clickhouse_timeout_ms: u64,
    /// Directory Parquet files are written under (`forecasts/<run>.parquet`,
    /// `suggestions/<run>.parquet`); unset: no Parquet files.
    pub parquet_dir: Option<String>,
    /// Whether incremental runs get Parquet files too (many small files: off by default;
    /// full and manual runs always do).
    pub parquet_incremental: bool,
}

impl Default for ForecastExport {
    fn default() -> Self {
        Self {
            consumer_group: "tally-forecast-export".into(),
            clickhouse_url: None,
            clickhouse_database: "tally".into(),
            clickhouse_user: "default".into(),
            clickhouse_password: crate::Secret::new(""),
            clickhouse_insert_rows: 100_000,
            clickhouse_timeout_ms: 30_000,
            parquet_dir: None,
            parquet_incremental: false,
        }
    }
}

impl ForecastExport {
    /// Whether any destination is set.
    pub fn enabled(&self) -> bool {
        self.clickhouse_url.is_some() || self.parquet_dir.is_some()
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
    /// Seconds between full refreshes (every series this instance owns).
    pub refresh_interval_seconds: u64,
    /// A touched series is refreshed once it has been quiet this long (ms) …
    pub debounce_ms: u64,
    /// … or once it has waited this long (ms), whichever comes first.
    pub debounce_max_wait_ms: u64,
    /// Series per model call and per store write.
    pub batch_size: usize,
    /// Batches a run has in flight at once: with two, one batch's reads and writes overlap
    /// the other's model call instead of leaving the cores idle. Each holds at most one of
    /// forecasting's own connections.
    pub batches_in_flight: usize,
    /// The share of a full or manual run's time spent working (0 < d ≤ 1): after a batch that
    /// took `t`, its slot waits `t·(1 − d)/d` before the next batch (none after the last).
    /// Below 1 the refresh takes longer and leaves the servers it shares with the main contour
    /// idle in between — fully only with `batches_in_flight = 1`. Incremental runs are never
    /// paced, but an instance runs them between its full runs: a paced full run delays them
    /// by as much as it is stretched.
    pub duty_cycle: f64,
    /// Days forecast.
    pub horizon_days: usize,
    /// Season length (days).
    pub period_days: usize,
    /// Rolling-origin backtest folds per series, at least (a horizon under four weeks gets more,
    /// up to eight).
    pub backtest_windows: usize,
    /// Quantile levels published beside the point forecast.
    pub quantiles: Vec<f64>,
    /// Service level of the replenishment suggestions (probability of no stock-out per cycle).
    pub service_level: f64,
    /// Days between ordering opportunities (the order-up-to policy's review period).
    pub review_days: f64,
    /// Lead time assumed for a series with no receipts yet (days).
    pub default_lead_time_days: f64,
    /// The model version used when no flag was ever set.
    pub default_version: String,
    /// Where the demand model is evaluated.
    pub model: ForecastModel,
    /// The demand model's name on the model server.
    pub model_name: String,
    /// The longest one batch's model call may take (ms); past it the batch is served from
    /// the last forecasts, marked stale.
    pub model_deadline_ms: u64,
    /// A PostgreSQL read replica (hot standby) forecasting reads its series from
    /// (`postgres://…`); unset: the primary (`store.url`). Writes always go to the primary.
    pub replica_url: Option<crate::Secret>,
    /// Threads a direct evaluation of the model uses (0: one per core); one evaluation runs at
    /// a time, whatever `batches_in_flight`. Fewer leave cores to the main contour when
    /// forecasting shares its machine (`docs/benchmarks.md`, isolation).
    pub model_threads: usize,
    /// How those threads claim the CPU: `idle` (`SCHED_IDLE`, the default — a woken thread of
    /// the same scheduling group, such as inventory's in the embedded process, takes the core
    /// at once; across groups see `group_nice`) or `normal`.
    pub model_priority: ModelPriority,
    /// The nice (0–19) of the scheduling group of a process that runs forecasting alone
    /// (`--role forecast`), set at its start when it leads its own session — a service
    /// manager's process, or one started with `setsid` — so its Linux autogroup is its own.
    /// Autogroups share the CPU group against group: without this, `model_priority` and the
    /// process's nice only order forecasting against its own threads, and a refresh takes its
    /// fair share from PostgreSQL and the broker (`docs/benchmarks.md`, isolation). 0: leave it.
    pub group_nice: u8,
    /// Connections in forecasting's own PostgreSQL pool (never the main contour's).
    pub store_max_connections: u32,
    /// Server-side limit on any one of forecasting's statements (ms).
    pub store_statement_timeout_ms: u64,
    /// How long the broker may hold one of forecasting's fetches that found nothing new (ms;
    /// Kafka's `fetch.wait.max.ms`, set on forecasting's own Kafka clients — `bus.properties`
    /// keep the main contour's). Kafka answers as soon as records arrive, so a longer wait
    /// only spares idle round trips there; a broker that polls its storage (nisshi) may add up
    /// to it to an incremental update, which is debounced anyway (`debounce_ms`). The main
    /// contour's 10 ms, here, made the forecast role's idle polling cost the test broker ~7 %
    /// of a core (`docs/benchmarks.md`, isolation).
    pub fetch_wait_ms: u64,
    /// Exports of every run.
    pub export: ForecastExport,
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
            refresh_interval_seconds: 900,
            debounce_ms: 200,
            debounce_max_wait_ms: 500,
            batch_size: 256,
            batches_in_flight: 2,
            duty_cycle: 1.0,
            horizon_days: 28,
            period_days: 7,
            backtest_windows: 2,
            quantiles: vec![0.1, 0.5, 0.9],
            service_level: 0.95,
            review_days: 7.0,
            default_lead_time_days: 7.0,
            default_version: "1".into(),
            model: ForecastModel::Server,
            model_name: "demand".into(),
            model_deadline_ms: 60_000,
            replica_url: None,
            model_threads: 0,
            model_priority: ModelPriority::Idle,
            group_nice: 19,
            store_max_connections: 4,
            store_statement_timeout_ms: 30_000,
            fetch_wait_ms: 100,
            export: ForecastExport::default(),
        }
    }
}

impl ForecastConfig {
    /// Suffixes the consumer group and every topic with `.{run}`: a test's or benchmark's own
    /// names on a shared broker.
    pub fn namespace(&mut self, run: &str) {
        for name in [
            &mut self.consumer_group,
            &mut self.topics.sales,
            &mut self.topics.supplies,
            &mut self.topics.returns,
            &mut self.topics.ready,
            &mut self.export.consumer_group,
        ] {
            *name = format!("{name}.{run}");
        }
    }

    /// Checks values that must be in range, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("forecast.refresh_interval_seconds", self.refresh_interval_seconds),
            ("forecast.batch_size", self.batch_size as u64),
            ("forecast.batches_in_flight", self.batches_in_flight as u64),
            ("forecast.horizon_days", self.horizon_days as u64),
            ("forecast.period_days", self.period_days as u64),
            ("forecast.store_max_connections", u64::from(self.store_max_connections)),
            ("forecast.store_statement_timeout_ms", self.store_statement_timeout_ms),
            ("forecast.fetch_wait_ms", self.fetch_wait_ms),
            ("forecast.model_deadline_ms", self.model_deadline_ms),
            ("forecast.export.clickhouse_insert_rows", self.export.clickhouse_insert_rows as u64),
            ("forecast.export.clickhouse_timeout_ms", self.export.clickhouse_timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be > 0"));
            }
        }
        if self.group_nice > 19 {
            return Err(invalid("forecast.group_nice", "must be within 0 and 19"));
        }
        // librdkafka takes up to 300 s, but a wait near `socket.timeout.ms` (60 s) only trades
        // incremental freshness for nothing.
        if self.fetch_wait_ms > 10_000 {
            return Err(invalid("forecast.fetch_wait_ms", "must be at most 10000"));
        }
        if self.horizon_days > 366 {
            return Err(invalid("forecast.horizon_days", "must be at most 366"));
        }
        if !(self.duty_cycle > 0.0 && self.duty_cycle <= 1.0) {
            return Err(invalid("forecast.duty_cycle", "must be within (0, 1]"));
        }
        if !(0.5..=0.9999).contains(&self.service_level) {
            return Err(invalid("forecast.service_level", "must be within 0.5..=0.9999"));
        }
        if self.quantiles.iter().any(|q| !(0.0 < *q && *q < 1.0)) {
            return Err(invalid("forecast.quantiles", "each level must be within 0 and 1 (exclusive)"));
        }
        if !(self.review_days >= 0.0 && self.default_lead_time_days >= 0.0) {
            return Err(invalid("forecast.review_days", "review_days and default_lead_time_days must be ≥ 0"));
        }
        if let Some(url) = &self.export.clickhouse_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("forecast.export.clickhouse_url", "must be an http:// or https:// URL"));
        }
        let db = &self.export.clickhouse_database;
        if db.is_empty() || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid("forecast.export.clickhouse_database", "must be 1 or more of A-Z a-z 0-9 _"));
        }
        Ok(())
    }
}
