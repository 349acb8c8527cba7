//! The model server's metrics, per model and version: inferences by protocol and outcome,
//! their latency, the rows of each evaluation (what dynamic batching achieved).

#![allow(clippy::disallowed_macros)] // the one place the model server touches the `metrics` macros

use std::time::Duration;

/// Metric names.
pub mod names {
    /// Inference requests, by model, version, protocol (`rest`, `grpc`, `in_process`) and
    /// outcome (`ok`, `invalid`, `not_found`, `unavailable`, `error`).
    pub const REQUESTS_TOTAL: &str = "tally_model_server_requests_total";
    /// Inference request duration (queueing and batching included), by model and version.
    pub const REQUEST_DURATION_SECONDS: &str = "tally_model_server_request_duration_seconds";
    /// Rows per evaluation, by model and version.
    pub const BATCH_ROWS: &str = "tally_model_server_batch_rows";
}

/// Describes the families (help texts) once per process.
pub fn describe() {
    metrics::describe_counter!(names::REQUESTS_TOTAL, "Inference requests, by model, version, protocol and outcome.");
    metrics::describe_histogram!(
        names::REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Inference request duration, queueing and batching included, by model and version."
    );
    metrics::describe_histogram!(names::BATCH_ROWS, "Rows per evaluation (dynamic batching), by model and version.");
}

/// An inference was answered.
pub fn request(model: &str, version: &str, protocol: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!(names::REQUESTS_TOTAL, "model" => model.to_owned(), "version" => version.to_owned(),
        "protocol" => protocol, "outcome" => outcome)
    .increment(1);
    metrics::histogram!(names::REQUEST_DURATION_SECONDS, "model" => model.to_owned(), "version" => version.to_owned())
        .record(took.as_secs_f64());
}

/// An evaluation of `rows` rows ran.
pub fn batch(model: &str, version: &str, rows: usize) {
    metrics::histogram!(names::BATCH_ROWS, "model" => model.to_owned(), "version" => version.to_owned())
        .record(rows as f64);
}
