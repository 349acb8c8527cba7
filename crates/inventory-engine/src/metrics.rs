//! Inventory's own metrics (the consumer's — lag, duplicates, flushes, dead letters — come
//! from the runtime under the same `tally_inventory_` prefix). One function per fact books it
//! in Prometheus and in the in-process [`EngineStats`] that `tally demo` and `tally bench` read.
#![allow(clippy::disallowed_macros)] // the one place inventory touches the `metrics` macros

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use tally_core::ChannelId;
use tally_inventory::Outcome;
use tally_inventory::aggregate::RejectionReason;
use tally_runtime::ConsumerStats;
use tally_runtime::metrics::{Family, Kind};

/// Metric names.
pub mod names {
    /// Snapshots ignored because a newer source version is stored.
    pub const STALE_VERSIONS_IGNORED_TOTAL: &str = "tally_inventory_stale_versions_ignored_total";
    /// Reservations rejected, by reason.
    pub const RESERVATIONS_REJECTED_TOTAL: &str = "tally_inventory_reservations_rejected_total";
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
    /// Reservations released because they expired.
    pub const RESERVATIONS_EXPIRED_TOTAL: &str = "tally_inventory_reservations_expired_total";
}

/// The `reason` codes inventory's handler dead-letters with (the runtime adds its own).
pub const DEAD_LETTER_REASONS: &[&str] =
    &["unknown_type", "invalid_payload", "invalid_field", "subject_mismatch", crate::handler::QUANTITY_OUT_OF_RANGE];

/// Inventory's metric families, with the consumer runtime's under the same prefix.
pub fn families() -> Vec<Family> {
    use Kind::*;
    use names::*;
    let reasons = RejectionReason::ALL.iter().map(|r| r.code()).collect();
    let mut all = vec![
        Family {
            name: STALE_VERSIONS_IGNORED_TOTAL.into(),
            kind: Counter,
            help: "Snapshots ignored because a newer source version is stored.",
            known: None,
        },
        Family {
            name: RESERVATIONS_REJECTED_TOTAL.into(),
            kind: Counter,
            help: "Reservations rejected, by reason.",
            known: Some(("reason", reasons)),
        },
        Family {
            name: AVAILABILITY_PUBLISHED_TOTAL.into(),
            kind: Counter,
            help: "Availability messages published.",
            known: None,
        },
        Family {
            name: EVENT_TO_VISIBLE_SECONDS.into(),
            kind: Histogram,
            help: "Seconds from event time to the change being readable.",
            known: None,
        },
        Family {
            name: CHANNEL_DESYNC_SECONDS.into(),
            kind: Histogram,
            help: "Seconds from event time to availability published.",
            known: None,
        },
        Family {
            name: CHANNEL_DELTA_UNITS.into(),
            kind: Gauge,
            help: "Last reported channel delta (shown minus truth), by channel.",
            known: None,
        },
        Family {
            name: CHANNEL_DRIFT_TOTAL.into(),
            kind: Counter,
            help: "Channel reports that disagreed with the truth, by channel.",
            known: Some(("channel", Vec::new())),
        },
        Family {
            name: RESERVATIONS_EXPIRED_TOTAL.into(),
            kind: Counter,
            help: "Reservations released because they expired.",
            known: None,
        },
    ];
    // The consumer's, with `tally_inventory_events_applied_total{outcome}` among them.
    all.extend(tally_runtime::metrics::families("inventory", &Outcome::CODES, DEAD_LETTER_REASONS));
    all
}

/// A latency histogram in microseconds, 1 µs to an hour.
fn latency_histogram() -> Mutex<Histogram<u64>> {
    Mutex::new(
        Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!("static bounds are valid")),
    )
}

/// Counters and latency histograms of one engine, for `tally demo` and `tally bench`: the
/// consumer's (through `Deref`) and inventory's own.
pub struct EngineStats {
    /// The consumer runtime's counters (applied, duplicates, dead letters, flushes …).
    pub consumer: Arc<ConsumerStats>,
    /// Stale snapshots ignored.
    pub stale_snapshots: AtomicU64,
    /// Adjustments already covered by a snapshot.
    pub covered_adjustments: AtomicU64,
    /// Reservations accepted.
    pub reservations_accepted: AtomicU64,
    /// Reservations rejected.
    pub reservations_rejected: AtomicU64,
    /// Compare-and-set adjustments refused.
    pub cas_mismatches: AtomicU64,
    /// Availability messages published.
    pub availability_published: AtomicU64,
    /// Reservations expired.
    pub reservations_expired: AtomicU64,
    /// Event time → readable, in microseconds.
    pub visible_latency_us: Mutex<Histogram<u64>>,
    /// Event time → availability published, in microseconds.
    pub desync_latency_us: Mutex<Histogram<u64>>,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            consumer: Arc::default(),
            stale_snapshots: AtomicU64::new(0),
            covered_adjustments: AtomicU64::new(0),
            reservations_accepted: AtomicU64::new(0),
            reservations_rejected: AtomicU64::new(0),
            cas_mismatches: AtomicU64::new(0),
            availability_published: AtomicU64::new(0),
            reservations_expired: AtomicU64::new(0),
            visible_latency_us: latency_histogram(),
            desync_latency_us: latency_histogram(),
        }
    }
}

impl Deref for EngineStats {
    type Target = ConsumerStats;

    fn deref(&self) -> &ConsumerStats {
        &self.consumer
    }
}

impl EngineStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Books inventory's facts.
pub struct InventoryMetrics {
    stats: Arc<EngineStats>,
    availability_published: metrics::Counter,
    visible: metrics::Histogram,
    desync: metrics::Histogram,
    stale: metrics::Counter,
    expired: metrics::Counter,
}

impl InventoryMetrics {
    /// Inventory's metrics, booking into `stats` too. Build after the recorder is installed.
    pub fn new(stats: Arc<EngineStats>) -> Self {
        use names::*;
        Self {
            stats,
            availability_published: metrics::counter!(AVAILABILITY_PUBLISHED_TOTAL),
            visible: metrics::histogram!(EVENT_TO_VISIBLE_SECONDS),
            desync: metrics::histogram!(CHANNEL_DESYNC_SECONDS),
            stale: metrics::counter!(STALE_VERSIONS_IGNORED_TOTAL),
            expired: metrics::counter!(RESERVATIONS_EXPIRED_TOTAL),
        }
    }

    /// The in-process counters.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// What an applied event's `outcome` says beyond "applied" (the runtime counts that): a
    /// stale snapshot, a covered adjustment, a reservation's fate, a refused compare-and-set.
    pub fn outcome(&self, outcome: &Outcome) {
        let s = &self.stats;
        let counter = match outcome {
            Outcome::StaleSnapshot { .. } => {
                self.stale.increment(1);
                &s.stale_snapshots
            }
            Outcome::CoveredBySnapshot { .. } => &s.covered_adjustments,
            Outcome::ReservationAccepted { .. } => &s.reservations_accepted,
            Outcome::ReservationRejected { reason, .. } => {
                metrics::counter!(names::RESERVATIONS_REJECTED_TOTAL, "reason" => reason.code()).increment(1);
                &s.reservations_rejected
            }
            Outcome::CasMismatch { .. } => &s.cas_mismatches,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A channel reported what it shows: `delta` = shown − truth.
    pub fn channel_reported(&self, channel: &ChannelId, delta: i64) {
        metrics::gauge!(names::CHANNEL_DELTA_UNITS, "channel" => channel.to_string()).set(delta as f64);
        if delta != 0 {
            metrics::counter!(names::CHANNEL_DRIFT_TOTAL, "channel" => channel.to_string()).increment(1);
        }
    }

    /// Changes of events at `event_times_us` became readable at `visible_us`.
    pub fn visible(&self, event_times_us: &[i64], visible_us: i64) {
        if event_times_us.is_empty() {
            return;
        }
        let mut hist = self.stats.visible_latency_us.lock().unwrap_or_else(|p| p.into_inner());
        for t in event_times_us {
            let us = (visible_us - t).max(1) as u64;
            let _ = hist.record(us);
            self.visible.record(us as f64 / 1e6);
        }
    }

    /// `messages` availability messages for events at `event_times_us` were published at
    /// `published_us`.
    pub fn availability_published(&self, messages: usize, event_times_us: &[i64], published_us: i64) {
        if messages > 0 {
            self.availability_published.increment(messages as u64);
            self.stats.availability_published.fetch_add(messages as u64, Ordering::Relaxed);
        }
        if event_times_us.is_empty() {
            return;
        }
        let mut hist = self.stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner());
        for t in event_times_us {
            let us = (published_us - t).max(1) as u64;
            let _ = hist.record(us);
            self.desync.record(us as f64 / 1e6);
        }
    }

    /// `n` expired reservations were released.
    pub fn reservations_expired(&self, n: u64) {
        self.expired.increment(n);
        self.stats.reservations_expired.fetch_add(n, Ordering::Relaxed);
    }
}
