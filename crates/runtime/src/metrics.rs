//! The consumer metrics every subsystem exports, named `tally_<subsystem>_<name>` (so
//! inventory's stay `tally_inventory_consumer_lag_records` and so on), each booked by one
//! function here: the Prometheus series and the in-process counters `tally demo` and
//! `tally bench` read move together.
//!
//! Handles are created once per subsystem (and per partition for the lag gauge), so the hot
//! path never formats a name; the Prometheus recorder must be installed before a
//! [`ConsumerMetrics`] is built.
#![allow(clippy::disallowed_macros)] // the one place the runtime touches the `metrics` macros

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

/// Why the runtime (not the handler) dead-letters a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractViolation {
    /// The record's key or a header is not UTF-8.
    InvalidEncoding,
    /// Its CloudEvents attributes are missing or malformed.
    InvalidEnvelope,
    /// Its key is missing or is not the event's partition key.
    KeyMismatch,
    /// Forwarded once and still not on its key's partition.
    WrongPartition,
    /// Its idempotency key was already used for a different request.
    IdempotencyKeyReused,
}

impl ContractViolation {
    /// Every violation, for registering the metric's series up front.
    pub const ALL: [Self; 5] = [
        Self::InvalidEncoding,
        Self::InvalidEnvelope,
        Self::KeyMismatch,
        Self::WrongPartition,
        Self::IdempotencyKeyReused,
    ];

    /// The `tally_dlq_reason` code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidEncoding => "invalid_encoding",
            Self::InvalidEnvelope => "invalid_envelope",
            Self::KeyMismatch => "key_mismatch",
            Self::WrongPartition => "wrong_partition",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
}

/// A metric family the runtime exports for a subsystem, for the exporter's help texts and
/// for creating series with known labels at 0.
#[derive(Debug, Clone)]
pub struct Family {
    /// Full name.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Help text.
    pub help: &'static str,
    /// A label whose values are known up front, and those values.
    pub known: Option<(&'static str, Vec<&'static str>)>,
}

/// Prometheus metric kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram.
    Histogram,
}

/// The runtime's metric families for `subsystem`; `outcomes` are the handler's outcome codes
/// ([`crate::Handler::outcome_code`]), `dead_letter_reasons` its own refusal codes (the runtime
/// adds its contract violations).
pub fn families(subsystem: &str, outcomes: &[&'static str], dead_letter_reasons: &[&'static str]) -> Vec<Family> {
    let n = |name: &str| format!("tally_{subsystem}_{name}");
    let mut reasons: Vec<&'static str> = ContractViolation::ALL.iter().map(|v| v.code()).collect();
    for reason in dead_letter_reasons {
        if !reasons.contains(reason) {
            reasons.push(reason);
        }
    }
    use Kind::*;
    vec![
        Family {
            name: n("events_applied_total"),
            kind: Counter,
            help: "Events applied, by outcome.",
            known: Some(("outcome", outcomes.to_vec())),
        },
        Family {
            name: n("dead_lettered_total"),
            kind: Counter,
            help: "Records sent to the dead-letter topic, by reason.",
            known: Some(("reason", reasons)),
        },
        Family {
            name: n("records_forwarded_total"),
            kind: Counter,
            help: "Records produced to a partition other than their key's, forwarded to their key's partition.",
            known: None,
        },
        Family {
            name: n("duplicates_dropped_total"),
            kind: Counter,
            help: "Events dropped as duplicates by the idempotency window.",
            known: None,
        },
        Family {
            name: n("replays_skipped_total"),
            kind: Counter,
            help: "Redelivered events skipped by the per-key applied-offset watermark.",
            known: None,
        },
        Family {
            name: n("consumer_lag_records"),
            kind: Gauge,
            help: "Records not yet applied (end offset minus next offset), by topic and partition.",
            known: None,
        },
        Family {
            name: n("flushes_total"),
            kind: Counter,
            help: "Store flushes, by result.",
            known: Some(("result", vec!["ok", "error"])),
        },
        Family { name: n("flush_duration_seconds"), kind: Histogram, help: "Seconds a store flush took.", known: None },
        Family {
            name: n("poll_stage_seconds"),
            kind: Histogram,
            help: "Seconds a poll spent in each stage of a partition worker: delivery (the oldest record's bus timestamp to the worker receiving it), prepare (the handler loading state), apply (the worker's checks and dedupe, and the handler applying the events), finish (the handler making them visible), publish (outputs acknowledged by the bus).",
            known: Some(("stage", Stage::ALL.iter().map(|s| s.label()).collect())),
        },
        Family { name: n("flush_rows"), kind: Histogram, help: "Rows written per flush.", known: None },
        Family {
            name: n("store_statements_total"),
            kind: Counter,
            help: "Statements the store executed.",
            known: None,
        },
        Family {
            name: n("store_retries_total"),
            kind: Counter,
            help: "Store operations retried after a transient error (connection lost, timeout, serialization failure).",
            known: None,
        },
        Family {
            name: n("bus_retries_total"),
            kind: Counter,
            help: "Publishes retried after a transient bus error (a broker restarting, a timeout).",
            known: None,
        },
        Family {
            name: n("partitions_stopped"),
            kind: Gauge,
            help: "Partitions stopped by a permanent error until the role restarts.",
            known: None,
        },
        Family {
            name: n("engine_restarts_total"),
            kind: Counter,
            help: "Times the consumer engine failed (an error or a panic) and was restarted.",
            known: None,
        },
    ]
}

/// A stage of a poll's way through a partition worker (`stage` label of
/// `tally_<subsystem>_poll_stage_seconds`): where an event's latency goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// From the oldest record's bus timestamp to the worker receiving the poll: the producer,
    /// the broker and the fetch, plus any wait behind the worker's previous poll.
    Delivery,
    /// The handler loading what the poll needs ([`crate::Handler::prepare`]).
    Prepare,
    /// The worker's per-record checks and dedupe, and the handler applying the poll's events.
    Apply,
    /// The handler making the poll visible ([`crate::Handler::finish`]).
    Finish,
    /// The poll's outputs published and acknowledged by the bus.
    Publish,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 5] = [Self::Delivery, Self::Prepare, Self::Apply, Self::Finish, Self::Publish];

    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Delivery => "delivery",
            Self::Prepare => "prepare",
            Self::Apply => "apply",
            Self::Finish => "finish",
            Self::Publish => "publish",
        }
    }
}

/// In-process counters of one subsystem's consumer, for `tally demo` and `tally bench`.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Events applied (any outcome).
    pub applied: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Redeliveries skipped by the per-key watermark.
    pub replays_skipped: AtomicU64,
    /// Records dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Records forwarded to their key's partition.
    pub forwarded: AtomicU64,
    /// Store flushes.
    pub flushes: AtomicU64,
    /// Rows flushed.
    pub flushed_rows: AtomicU64,
    /// Store operations retried.
    pub store_retries: AtomicU64,
}

impl ConsumerStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Events finished with at their first delivery to this process: applied, dropped as
    /// duplicates, or dead-lettered. Redeliveries the watermark skips are not counted (they
    /// were handled before), nor are records forwarded to another partition (they are counted
    /// where they land).
    pub fn handled(&self) -> u64 {
        Self::get(&self.applied) + Self::get(&self.duplicates) + Self::get(&self.dead_lettered)
    }
}

/// The consumer metrics of one subsystem.
pub struct ConsumerMetrics {
    subsystem: &'static str,
    stats: std::sync::Arc<ConsumerStats>,
    /// The applied counter of each outcome code known up front (read without a lock: it is
    /// booked for every event).
    applied_known: HashMap<&'static str, Counter>,
    applied: Mutex<HashMap<&'static str, Counter>>,
    dead_lettered: Mutex<HashMap<&'static str, Counter>>,
    forwarded: Counter,
    duplicates: Counter,
    replays: Counter,
    flush_ok: Counter,
    flush_error: Counter,
    flush_duration: Histogram,
    flush_rows: Histogram,
    statements: Counter,
    retries: Counter,
    bus_retries: Counter,
    stopped: Gauge,
    restarts: Counter,
    stages: [Histogram; 5],
}

impl ConsumerMetrics {
    /// The metrics of `subsystem`, booking into `stats` as well.
    pub fn new(subsystem: &'static str, stats: std::sync::Arc<ConsumerStats>) -> Self {
        let n = |name: &str| format!("tally_{subsystem}_{name}");
        Self {
            subsystem,
            stats,
            applied_known: HashMap::new(),
            applied: Mutex::new(HashMap::new()),
            dead_lettered: Mutex::new(HashMap::new()),
            forwarded: metrics::counter!(n("records_forwarded_total")),
            duplicates: metrics::counter!(n("duplicates_dropped_total")),
            replays: metrics::counter!(n("replays_skipped_total")),
            flush_ok: metrics::counter!(n("flushes_total"), "result" => "ok"),
            flush_error: metrics::counter!(n("flushes_total"), "result" => "error"),
            flush_duration: metrics::histogram!(n("flush_duration_seconds")),
            flush_rows: metrics::histogram!(n("flush_rows")),
            statements: metrics::counter!(n("store_statements_total")),
            retries: metrics::counter!(n("store_retries_total")),
            bus_retries: metrics::counter!(n("bus_retries_total")),
            stopped: metrics::gauge!(n("partitions_stopped")),
            restarts: metrics::counter!(n("engine_restarts_total")),
            stages: Stage::ALL.map(|stage| metrics::histogram!(n("poll_stage_seconds"), "stage" => stage.label())),
        }
    }

    /// Takes the applied counter of each of the handler's outcome codes now, so that booking an
    /// applied event takes no lock.
    pub fn with_outcomes(mut self, outcomes: &[&'static str]) -> Self {
        let subsystem = self.subsystem;
        self.applied_known = outcomes
            .iter()
            .map(|&code| {
                (code, metrics::counter!(format!("tally_{subsystem}_events_applied_total"), "outcome" => code))
            })
            .collect();
        self
    }

    /// The in-process counters.
    pub fn stats(&self) -> &std::sync::Arc<ConsumerStats> {
        &self.stats
    }

    /// An event was applied with the outcome `outcome` (the handler's code for it).
    pub fn applied(&self, outcome: &'static str) {
        self.stats.applied.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = self.applied_known.get(outcome) {
            counter.increment(1);
            return;
        }
        let mut counters = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let subsystem = self.subsystem;
        counters
            .entry(outcome)
            .or_insert_with(
                || metrics::counter!(format!("tally_{subsystem}_events_applied_total"), "outcome" => outcome),
            )
            .increment(1);
    }

    /// A record went to the dead-letter topic with `reason`.
    pub fn dead_lettered(&self, reason: &'static str) {
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let mut counters = self.dead_lettered.lock().unwrap_or_else(|p| p.into_inner());
        let subsystem = self.subsystem;
        counters
            .entry(reason)
            .or_insert_with(|| metrics::counter!(format!("tally_{subsystem}_dead_lettered_total"), "reason" => reason))
            .increment(1);
    }

    /// A record was forwarded to its key's partition.
    pub fn forwarded(&self) {
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        self.forwarded.increment(1);
    }

    /// A duplicate was dropped by the idempotency window.
    pub fn duplicate_dropped(&self) {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        self.duplicates.increment(1);
    }

    /// A redelivery was skipped by the per-key watermark.
    pub fn replay_skipped(&self) {
        self.stats.replays_skipped.fetch_add(1, Ordering::Relaxed);
        self.replays.increment(1);
    }

    /// The lag gauge of one partition.
    pub fn lag_gauge(&self, topic: &str, partition: u32) -> Gauge {
        metrics::gauge!(
            format!("tally_{}_consumer_lag_records", self.subsystem),
            "topic" => topic.to_owned(),
            "partition" => partition.to_string()
        )
    }

    /// A flush committed `rows` rows in `took`.
    pub fn flushed(&self, rows: u64, took: Duration) {
        self.flush_ok.increment(1);
        self.flush_duration.record(took.as_secs_f64());
        self.flush_rows.record(rows as f64);
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.flushed_rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// A poll spent `took` in `stage`.
    pub fn stage(&self, stage: Stage, took: Duration) {
        self.stages[stage as usize].record(took.as_secs_f64());
    }

    /// A flush failed.
    pub fn flush_failed(&self) {
        self.flush_error.increment(1);
    }

    /// The store executed `n` more statements.
    pub fn statements(&self, n: u64) {
        self.statements.increment(n);
    }

    /// A store operation is retried after a transient error.
    pub fn store_retry(&self) {
        self.stats.store_retries.fetch_add(1, Ordering::Relaxed);
        self.retries.increment(1);
    }

    /// A publish is retried after a transient bus error.
    pub fn bus_retry(&self) {
        self.bus_retries.increment(1);
    }

    /// A partition stopped on a permanent error (`+1`) or resumed (`-1`).
    pub fn partitions_stopped(&self, delta: f64) {
        self.stopped.increment(delta);
    }

    /// The engine failed and is being restarted.
    pub fn engine_restarted(&self) {
        self.restarts.increment(1);
    }
}
