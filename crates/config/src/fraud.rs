//! `[fraud]` and `[model]`: the fraud scoring service and how it reaches its model.

use serde::{Deserialize, Serialize};

/// Fraud topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudTopics {
    /// Input: payment transactions (key = account id).
    pub transactions: String,
    /// Input: customer profile upserts.
    pub profiles: String,
    /// Input: labels (chargebacks, confirmations), days later.
    pub labels: String,
    /// Output: decisions.
    pub decisions: String,
}

impl Default for FraudTopics {
    fn default() -> Self {
        Self {
            transactions: "payments.transactions".into(),
            profiles: "customers.profiles".into(),
            labels: "fraud.labels".into(),
            decisions: "fraud.decisions".into(),
        }
    }
}

/// Hard rules that decide before any model (`[fraud.rules]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudRules {
    /// Accounts always approved.
    pub allow_accounts: Vec<String>,
    /// Accounts always declined.
    pub deny_accounts: Vec<String>,
    /// Devices always declined.
    pub deny_devices: Vec<String>,
    /// Cards always declined.
    pub deny_cards: Vec<String>,
    /// Amounts (major units) above this are reviewed.
    pub review_above_amount: Option<f64>,
    /// Amounts above this are declined.
    pub decline_above_amount: Option<f64>,
    /// More transactions than this per account and hour are declined.
    pub max_per_hour: Option<u32>,
}

/// Fraud scoring service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudConfig {
    /// Consumer group of the fraud workers.
    pub consumer_group: String,
    /// Topic names.
    pub topics: FraudTopics,
    /// Model cards: `<models>/<version>/config.toml` (schema, thresholds, drift reference)
    /// and `model.onnx` (for per-feature contributions).
    pub models: String,
    /// The version scoring every account when no flag was ever set.
    pub default_version: String,
    /// How often every instance re-reads the version flags (ms).
    pub flags_poll_ms: u64,
    /// How long a decision stays in the cache for lookup and duplicate detection (s).
    pub decision_ttl_seconds: u64,
    /// How long a feature vector's score is reused (s).
    pub score_ttl_seconds: u64,
    /// Labelled decisions per model version in the quality window.
    pub quality_window: usize,
    /// Most milliseconds between store flushes while changes are pending.
    pub flush_interval_ms: u64,
    /// Flush earlier once this many rows are pending.
    pub flush_max_rows: usize,
    /// Records a partition worker takes per poll.
    pub poll_max_records: usize,
    /// Idempotency window per partition.
    pub dedupe_window: u64,
    /// Hard rules.
    pub rules: FraudRules,
}

impl Default for FraudConfig {
    fn default() -> Self {
        Self {
            consumer_group: "tally-fraud".into(),
            topics: FraudTopics::default(),
            models: "models/fraud".into(),
            default_version: "1".into(),
            flags_poll_ms: 500,
            decision_ttl_seconds: 7 * 24 * 3600,
            score_ttl_seconds: 600,
            quality_window: 50_000,
            // Short: the embedded log's one writer carries both the decisions published and the
            // flushes, so a long interval's large flush delays decisions behind it (decision
            // p99 at 5,000/s: 27.8 ms at 25 ms, 39.8 at 100, 50.4 at 300; docs/benchmarks.md).
            flush_interval_ms: 25,
            flush_max_rows: 5000,
            poll_max_records: 1000,
            dedupe_window: 200_000,
            rules: FraudRules::default(),
        }
    }
}

/// How the model is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelTransport {
    /// Evaluated in this process from the model repository (embedded mode).
    InProcess,
    /// OIP v2 REST.
    Rest,
    /// OIP v2 gRPC.
    Grpc,
}

/// The model client (`[model]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// How the model is reached.
    pub transport: ModelTransport,
    /// Server URL for `rest` and `grpc` (`http://host:port`).
    pub url: String,
    /// The repository evaluated in process (`in_process`).
    pub repository: String,
    /// The model's name on the server.
    pub name: String,
    /// Its input tensor.
    pub input: String,
    /// The output holding the score.
    pub output: String,
    /// The score's column in it (1 for `probabilities` [N, 2]; 0 for MLServer's `predict`).
    pub output_column: usize,
    /// Longest wait for one call, retries included (ms).
    pub deadline_ms: u64,
    /// Retries of transient failures within the deadline.
    pub retries: u32,
    /// Most rows per call (micro-batching).
    pub batch_max_rows: usize,
    /// How long a batch's first row waits for others (µs). 0: no wait — the rows of one
    /// partition's round go as one call, and rounds that queue while a call is being sent go
    /// together; a window under 1,000 µs waits about 1 ms (tokio's timers tick in
    /// milliseconds).
    pub batch_window_us: u64,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long it stays open (ms).
    pub breaker_cooldown_ms: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            transport: ModelTransport::InProcess,
            url: "http://127.0.0.1:8001".into(),
            repository: "models".into(),
            name: "fraud".into(),
            input: "features".into(),
            output: "probabilities".into(),
            output_column: 1,
            deadline_ms: 20,
            retries: 1,
            batch_max_rows: 512,
            batch_window_us: 0,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
        }
    }
}
