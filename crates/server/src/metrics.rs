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

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is already global (e.g. an embedding application's); render an
            // empty registry rather than fail to start.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}
