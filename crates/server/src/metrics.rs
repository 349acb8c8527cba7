//! Every metric tally exports, named in one place: `tally_<subsystem>_<name>_<unit>`,
//! counters end in `_total`, label values come from bounded sets (outcome codes, reason
//! codes, channel ids from configuration, partition numbers) — never an id or a message.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Inventory engine metrics.
pub mod inventory {
    /// Events applied, by outcome code.
    pub const EVENTS_APPLIED_TOTAL: &str = "tally_inventory_events_applied_total";
    /// Events dropped as duplicates by the idempotency window.
    pub const DUPLICATES_DROPPED_TOTAL: &str = "tally_inventory_duplicates_dropped_total";
    /// Redelivered events skipped by the per-key applied-offset watermark.
    pub const REPLAYS_SKIPPED_TOTAL: &str = "tally_inventory_replays_skipped_total";
    /// Snapshots ignored because a newer source version is stored.
    pub const STALE_VERSIONS_IGNORED_TOTAL: &str = "tally_inventory_stale_versions_ignored_total";
    /// Reservations rejected, by reason.
    pub const RESERVATIONS_REJECTED_TOTAL: &str = "tally_inventory_reservations_rejected_total";
    /// Records sent to the dead-letter topic, by reason.
    pub const DEAD_LETTERED_TOTAL: &str = "tally_inventory_dead_lettered_total";
    /// Records that arrived on a partition other than their key's (a producer with another
    /// partitioner) and were forwarded to their key's partition.
    pub const RECORDS_FORWARDED_TOTAL: &str = "tally_inventory_records_forwarded_total";
    /// Availability messages published.
    pub const AVAILABILITY_PUBLISHED_TOTAL: &str = "tally_inventory_availability_published_total";
    /// Seconds from event time to the change being readable.
    pub const EVENT_TO_VISIBLE_SECONDS: &str = "tally_inventory_event_to_visible_seconds";
    /// Seconds from event time to availability published on the output topic.
    pub const CHANNEL_DESYNC_SECONDS: &str = "tally_inventory_channel_desync_seconds";
    /// Last reported channel delta (shown − truth), by channel.
    pub const CHANNEL_DELTA_UNITS: &str = "tally_inventory_channel_delta_units";
    /// Channel reports that disagreed with the truth, by channel.
    pub const CHANNEL_DRIFT_TOTAL: &str = "tally_inventory_channel_drift_total";
    /// Consumer lag (end offset − applied), by partition.
    pub const CONSUMER_LAG_RECORDS: &str = "tally_inventory_consumer_lag_records";
    /// Store flushes, by result.
    pub const FLUSHES_TOTAL: &str = "tally_inventory_flushes_total";
    /// Seconds a store flush took.
    pub const FLUSH_DURATION_SECONDS: &str = "tally_inventory_flush_duration_seconds";
    /// SKU rows written per flush.
    pub const FLUSH_ROWS: &str = "tally_inventory_flush_rows";
    /// Statements the store executed.
    pub const STORE_STATEMENTS_TOTAL: &str = "tally_inventory_store_statements_total";
    /// Reservations released because they expired.
    pub const RESERVATIONS_EXPIRED_TOTAL: &str = "tally_inventory_reservations_expired_total";
}

/// HTTP API metrics.
pub mod api {
    /// Requests, by route template, method and status class.
    pub const REQUESTS_TOTAL: &str = "tally_api_requests_total";
    /// Request duration, by route template.
    pub const REQUEST_DURATION_SECONDS: &str = "tally_api_request_duration_seconds";
    /// Events rejected at ingest, by reason code.
    pub const EVENTS_REJECTED_TOTAL: &str = "tally_api_events_rejected_total";
}

/// Label values of the counters that carry a bounded label, so that each series exists at 0
/// from start-up (a rate over a series that appears at its first increment misses it).
pub mod labels {
    /// `reason` of `tally_inventory_dead_lettered_total`: every code the worker dead-letters with.
    pub const DEAD_LETTER_REASONS: &[&str] = &[
        "invalid_envelope",
        "invalid_encoding",
        "key_mismatch",
        "wrong_partition",
        "unknown_type",
        "invalid_payload",
        "invalid_field",
        "subject_mismatch",
        "quantity_out_of_range",
        "idempotency_key_reused",
    ];
    /// `outcome` of `tally_inventory_events_applied_total`.
    pub const OUTCOMES: &[&str] = &[
        "applied",
        "stale_snapshot",
        "covered_by_snapshot",
        "cas_mismatch",
        "reservation_accepted",
        "reservation_rejected",
        "ignored",
        "reconciled",
    ];
    /// `reason` of `tally_inventory_reservations_rejected_total`.
    pub const REJECTION_REASONS: &[&str] = &[
        "insufficient_stock",
        "unknown_channel",
        "location_not_in_channel",
        "reservation_closed",
        "reservation_conflict",
        "other",
    ];
    /// `result` of `tally_inventory_flushes_total`.
    pub const FLUSH_RESULTS: &[&str] = &["ok", "error"];
    /// `reason` of `tally_api_events_rejected_total`: the event validation codes.
    pub const INGEST_REJECTIONS: &[&str] =
        &["invalid_envelope", "unknown_type", "invalid_payload", "invalid_field", "subject_mismatch"];
}

enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A label whose values are known up front, and those values.
type KnownLabel = Option<(&'static str, &'static [&'static str])>;

/// Every family: its kind, help text, and the label whose values are known up front.
const FAMILIES: &[(&str, Kind, &str, KnownLabel)] = {
    use Kind::*;
    use inventory as i;
    &[
        (i::EVENTS_APPLIED_TOTAL, Counter, "Events applied, by outcome.", Some(("outcome", labels::OUTCOMES))),
        (i::DUPLICATES_DROPPED_TOTAL, Counter, "Events dropped as duplicates by the idempotency window.", None),
        (
            i::REPLAYS_SKIPPED_TOTAL,
            Counter,
            "Redelivered events skipped by the per-SKU applied-offset watermark.",
            None,
        ),
        (i::STALE_VERSIONS_IGNORED_TOTAL, Counter, "Snapshots ignored because a newer source version is stored.", None),
        (
            i::RESERVATIONS_REJECTED_TOTAL,
            Counter,
            "Reservations rejected, by reason.",
            Some(("reason", labels::REJECTION_REASONS)),
        ),
        (
            i::DEAD_LETTERED_TOTAL,
            Counter,
            "Records sent to the dead-letter topic, by reason.",
            Some(("reason", labels::DEAD_LETTER_REASONS)),
        ),
        (
            i::RECORDS_FORWARDED_TOTAL,
            Counter,
            "Records produced to a partition other than their key's, forwarded to their key's partition.",
            None,
        ),
        (i::AVAILABILITY_PUBLISHED_TOTAL, Counter, "Availability messages published.", None),
        (i::EVENT_TO_VISIBLE_SECONDS, Histogram, "Seconds from event time to the change being readable.", None),
        (i::CHANNEL_DESYNC_SECONDS, Histogram, "Seconds from event time to availability published.", None),
        (i::CHANNEL_DELTA_UNITS, Gauge, "Last reported channel delta (shown minus truth), by channel.", None),
        (i::CHANNEL_DRIFT_TOTAL, Counter, "Channel reports that disagreed with the truth, by channel.", None),
        (i::CONSUMER_LAG_RECORDS, Gauge, "Records not yet applied (end offset minus next offset), by partition.", None),
        (i::FLUSHES_TOTAL, Counter, "Store flushes, by result.", Some(("result", labels::FLUSH_RESULTS))),
        (i::FLUSH_DURATION_SECONDS, Histogram, "Seconds a store flush took.", None),
        (i::FLUSH_ROWS, Histogram, "SKU rows written per flush.", None),
        (i::STORE_STATEMENTS_TOTAL, Counter, "Statements the store executed.", None),
        (i::RESERVATIONS_EXPIRED_TOTAL, Counter, "Reservations released because they expired.", None),
        (api::REQUESTS_TOTAL, Counter, "HTTP requests, by route template, method and status class.", None),
        (api::REQUEST_DURATION_SECONDS, Histogram, "HTTP request duration in seconds, by route template.", None),
        (
            api::EVENTS_REJECTED_TOTAL,
            Counter,
            "Events refused at HTTP ingest, by reason.",
            Some(("reason", labels::INGEST_REJECTIONS)),
        ),
    ]
};

/// Gives every family its help text and creates every counter series whose labels are known
/// up front (or that has none) at 0.
fn describe_and_register() {
    for (name, kind, help, labelled) in FAMILIES {
        let (name, help) = (*name, *help);
        match kind {
            Kind::Counter => {
                metrics::describe_counter!(name, help);
                match labelled {
                    None if !matches!(name, api::REQUESTS_TOTAL | inventory::CHANNEL_DRIFT_TOTAL) => {
                        metrics::counter!(name).absolute(0);
                    }
                    None => {}
                    Some((label, values)) => {
                        for value in *values {
                            metrics::counter!(name, *label => *value).absolute(0);
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
