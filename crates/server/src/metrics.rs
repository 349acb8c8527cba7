//! The Prometheus exporter and the HTTP API's metrics. Every metric tally exports is named
//! `tally_<subsystem>_<name>_<unit>`, counters end in `_total`, label values come from bounded
//! sets (outcome codes, reason codes, channel ids from configuration, partition numbers) —
//! never an id or a message. Each subsystem names its own in one module (the consumer
//! runtime's, inventory's); this one gathers their families for help texts and zero series.

#![allow(clippy::disallowed_macros)] // the exporter and the HTTP API's metrics live here

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tally_runtime::metrics::{Family, Kind};

/// HTTP API metrics.
pub mod api {
    /// Requests, by route template, method and status class.
    pub const REQUESTS_TOTAL: &str = "tally_api_requests_total";
    /// Request duration, by route template.
    pub const REQUEST_DURATION_SECONDS: &str = "tally_api_request_duration_seconds";
    /// Events rejected at ingest, by reason code.
    pub const EVENTS_REJECTED_TOTAL: &str = "tally_api_events_rejected_total";
}

/// An HTTP request was answered with `status` after `took`.
pub fn request_served(route: String, method: String, status: axum::http::StatusCode, took: std::time::Duration) {
    let class = format!("{}xx", status.as_u16() / 100);
    metrics::counter!(api::REQUESTS_TOTAL, "route" => route.clone(), "method" => method, "status" => class)
        .increment(1);
    metrics::histogram!(api::REQUEST_DURATION_SECONDS, "route" => route).record(took.as_secs_f64());
}

/// An event was refused at HTTP ingest for `reason` (one of [`INGEST_REJECTIONS`]).
pub fn event_rejected(reason: &str) {
    let reason = INGEST_REJECTIONS.iter().find(|r| **r == reason).copied().unwrap_or("invalid_payload");
    metrics::counter!(api::EVENTS_REJECTED_TOTAL, "reason" => reason).increment(1);
}

/// `reason` of `tally_api_events_rejected_total`: the event validation codes.
const INGEST_REJECTIONS: &[&str] =
    &["invalid_envelope", "unknown_type", "invalid_payload", "invalid_field", "subject_mismatch"];

/// Every family the process exports: the HTTP API's, and each subsystem's (its own and its
/// consumer runtime's).
fn families() -> Vec<Family> {
    let mut all = tally_inventory_engine::metrics::families();
    all.extend(tally_fraud_engine::metrics::families());
    all.extend(tally_forecast_engine::metrics::families());
    all.extend([
        Family {
            name: api::REQUESTS_TOTAL.into(),
            kind: Kind::Counter,
            help: "HTTP requests, by route template, method and status class.",
            known: Some(("route", Vec::new())),
        },
        Family {
            name: api::REQUEST_DURATION_SECONDS.into(),
            kind: Kind::Histogram,
            help: "HTTP request duration in seconds, by route template.",
            known: None,
        },
        Family {
            name: api::EVENTS_REJECTED_TOTAL.into(),
            kind: Kind::Counter,
            help: "Events refused at HTTP ingest, by reason.",
            known: Some(("reason", INGEST_REJECTIONS.to_vec())),
        },
    ]);
    all
}

/// Gives every family its help text and creates every counter series whose labels are known
/// up front (or that has none) at 0.
/// Families with a label whose values are only known as they come (channels, routes) get
/// their help text but no series until then.
fn describe_and_register() {
    for Family { name, kind, help, known } in families() {
        match kind {
            Kind::Counter => {
                metrics::describe_counter!(name.clone(), help);
                match known {
                    None => metrics::counter!(name).absolute(0),
                    Some((label, values)) => {
                        for value in values {
                            metrics::counter!(name.clone(), label => value).absolute(0);
                        }
                    }
                }
            }
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => {
                describe_and_register();
                handle
            }
            // Another recorder is already global (e.g. an embedding application's); render an
            // empty registry rather than fail to start.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}
