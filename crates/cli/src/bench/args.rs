//! What every inventory benchmark shares: its arguments, its result, the simulator settings
//! and the peak-RSS reading.

use serde::Serialize;
use tally_sim::SimConfig;

/// Arguments of `tally bench inventory`.
#[derive(Debug, clap::Args)]
pub struct InventoryBenchArgs {
    /// Events for the throughput phase.
    #[arg(long, default_value_t = 500_000)]
    pub events: usize,
    /// Rate of the latency phase (events/s).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// SKUs (Zipf 1.1 popularity).
    #[arg(long, default_value_t = 10_000)]
    pub skus: usize,
    /// Share of events delivered twice.
    #[arg(long, default_value_t = 0.10)]
    pub duplicates: f64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Which backends: the embedded default, or Kafka + PostgreSQL + Redis.
    #[arg(long, value_enum, default_value_t = BenchStack::Embedded)]
    pub stack: BenchStack,
    /// Kafka brokers for `--stack kafka` (default: $TEST_TALLY_KAFKA_BROKERS).
    #[arg(long)]
    pub brokers: Option<String>,
    /// PostgreSQL URL for `--stack kafka`; a fresh database is created on that server
    /// (default: $TEST_TALLY_POSTGRES_URL).
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Redis URL for `--stack kafka` (default: $TEST_TALLY_REDIS_URL).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Rate of the desync phase on `--stack kafka` (events/s).
    #[arg(long, default_value_t = 5_000)]
    pub kafka_rate: u64,
    /// `--stack kafka`: also measure the desync before, during and after a full forecast
    /// refresh of this many simulated series (730 days each, staged in the same PostgreSQL) by
    /// a separate `tally serve --role forecast` process — forecasting's isolation from the
    /// main contour. 0: skip.
    #[arg(long, default_value_t = 0)]
    pub forecast_series: usize,
    /// Repeat the before/during/after comparison this many times, each round around a refresh
    /// of its own (a new forecast process), and report every round, the median and the range:
    /// one round's ratio moves by as much as the effect it measures.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub forecast_rounds: u32,
    /// The control for `--forecast-series`: the same rounds and phases with no forecast
    /// process started, so the ratios show what chance alone gives.
    #[arg(long)]
    pub forecast_control: bool,
    /// The forecast process's `forecast.model_threads` (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub forecast_model_threads: usize,
    /// Start the forecast process under `nice -n` this (0: as is).
    #[arg(long, default_value_t = 0)]
    pub forecast_nice: u32,
    /// A `[forecast]` setting of the forecast process (repeatable): `--forecast-setting
    /// duty_cycle=0.5 --forecast-setting batches_in_flight=1`; the value is TOML. Not
    /// `model_threads` (`--forecast-model-threads` sets it; a second one is a duplicate key).
    #[arg(long = "forecast-setting", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub forecast_settings: Vec<(String, String)>,
    /// A librdkafka setting for every Kafka client of `--stack kafka` (repeatable), as in
    /// `[bus.properties]`: `--kafka-property fetch.wait.max.ms=100`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Backends a benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStack {
    /// SQLite log and store, in-process cache.
    Embedded,
    /// Kafka + PostgreSQL + Redis, on servers given by URL.
    Kafka,
}

/// Results (the JSON line).
#[derive(Debug, Serialize)]
pub struct InventoryBenchResult {
    /// Sustained engine rate: a backlog consumed, applied, flushed and committed.
    pub events_per_s: f64,
    /// Producer and engine running at once on the same machine.
    pub end_to_end_events_per_s: f64,
    /// Rate at which the embedded log alone appends (the producer side).
    pub log_append_events_per_s: f64,
    /// Event-to-visible latency p50 at the fixed rate.
    pub latency_p50_ms: f64,
    /// p99 of the same.
    pub latency_p99_ms: f64,
    /// Max of the same.
    pub latency_max_ms: f64,
    /// Event time → availability published on the output topic, p50, at the fixed rate.
    pub desync_p50_ms: f64,
    /// p99 of the same.
    pub desync_p99_ms: f64,
    /// Store statements per 1,000 events at the fixed rate.
    pub store_statements_per_1k_events: f64,
    /// Store statements per 1,000 events at full throughput.
    pub store_statements_per_1k_events_max_rate: f64,
    /// Peak resident memory while the engine drained the backlog.
    pub peak_rss_mb: f64,
    /// Events in the throughput phase.
    pub throughput_events: usize,
    /// Rate of the latency phase.
    pub latency_rate: u64,
    /// Events in the latency phase.
    pub latency_events: u64,
    /// Duplicates dropped in both phases.
    pub duplicates_dropped: u64,
}

/// The simulator settings of a benchmark run.
pub fn sim_config(args: &InventoryBenchArgs, seed: u64) -> SimConfig {
    SimConfig {
        seed,
        skus: args.skus,
        duplicate_rate: args.duplicates,
        poison_rate: 0.0,
        reservation_ttl_seconds: None,
        ..SimConfig::default()
    }
}

/// Peak resident set size of this process in MiB (Linux), 0 elsewhere.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the kernel's peak-RSS mark so the next phase is measured on its own (Linux).
/// Starts a new peak-RSS measurement (Linux: `clear_refs` 5 resets VmHWM).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `--stack kafka` server address: the flag's value, else the variable `scripts/test.sh` and
/// `scripts/bench-kafka.sh` set.
pub(crate) fn env_or(value: &Option<String>, var: &str) -> anyhow::Result<String> {
    value.clone().or_else(|| std::env::var(var).ok()).ok_or_else(|| {
        anyhow::anyhow!("--stack kafka needs the servers: pass --brokers/--postgres-url/--redis-url or set {var} (scripts/bench-kafka.sh starts throwaway ones)")
    })
}
