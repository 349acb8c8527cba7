//! The seam between the runtime and a subsystem: one [`Handler`] per assigned partition.
//!
//! # What the runtime does before a handler sees an event
//! For each record of a poll, in offset order: the record's bytes are checked (UTF-8 key and
//! headers), its CloudEvents attributes are parsed, the handler parses the payload
//! ([`Handler::parse`]), the record key is checked against the event's partition key, and a
//! record on a partition other than its key's is forwarded to its key's partition. What fails
//! goes to `<topic>.dlq` with a reason. Then events the handler's state already holds
//! ([`Handler::already_applied`]) are skipped, and events whose idempotency key (`source` +
//! `id`) is in the window are dropped as duplicates — or dead-lettered when the same key now
//! asks for something else (another digest).
//!
//! # What a handler may assume
//! - It alone handles its partition: no other task, in this process or another, applies
//!   events of the keys it owns while it lives. Its in-memory state needs no locks.
//! - Events arrive in offset order; each fresh event reaches [`Handler::apply`] at most once
//!   per handler. A poll is usually one call; when an idempotency key repeats within a poll,
//!   the poll is split into contiguous rounds (one call each, in order) so the repeat is judged
//!   after the first event's fate. [`Handler::finish`] follows the last round of every poll.
//!   After a crash or a rebalance a new handler starts from the committed offset: events after
//!   it are delivered again, and the state it loads (from the store, never a cache that may be
//!   ahead) reflects exactly the events before it.
//! - [`Handler::apply`] is awaited on the partition's own task: a slow call there (a model
//!   service) delays this partition only, never the others.
//!
//! # What a handler must guarantee
//! - `apply` answers every event it is given, in order: an outcome, or a [`Refusal`] (the
//!   event then changes nothing and is dead-lettered).
//! - Everything an event changes is in the [`Output`] of the poll that applied it: effects for
//!   the store (written with the partition's offset in one transaction, after the outputs are
//!   published) and records for the output topics. Effects are idempotent rows: latest-per-key
//!   rows carry a version and land only if newer; appended rows are keyed by the event.
//! - Whatever it makes visible before the flush (a cache entry) is derived from state that
//!   the flush will make durable; readers may see it early, never a state that is later lost.
//! - It does not block the thread (`apply` is async; CPU-heavy work stays small per poll).

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_bus::{OutRecord, Record};
use tally_core::Attributes;
use tally_store::{Effects, RetryHint, StoreError};

/// A record's payload, parsed.
#[derive(Debug)]
pub struct Parsed<E> {
    /// The event.
    pub event: E,
    /// The key the event belongs under (the SKU, the account id, `sku@location`): the record's
    /// key must equal it, and its partition is the one it belongs on.
    pub partition_key: String,
    /// A digest of what the event asks for (not its id, time or trace): the same idempotency
    /// key with another digest is a different request reusing the key.
    pub digest: i64,
}

/// Why an event is refused (dead-lettered with this reason, or answered to a waiting caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable reason (`tally_dlq_reason`): a code from the subsystem's own enum of
    /// reasons, so metric labels stay bounded.
    pub reason: &'static str,
    /// What was wrong, for people.
    pub detail: String,
}

/// An event that passed every check and is applied now.
#[derive(Debug)]
pub struct Fresh<E> {
    /// The event.
    pub event: E,
    /// Its CloudEvents attributes (source, id, time, trace context).
    pub attributes: Attributes,
    /// Its offset in the partition.
    pub offset: u64,
}

/// An output topic a subsystem publishes to.
#[derive(Debug, Clone)]
pub struct OutputTopic {
    /// Topic name.
    pub name: String,
    /// When several polls are published at once, keep only the last record of each key (a
    /// state topic such as `inventory.availability`); otherwise every record goes out (events
    /// such as decisions).
    pub latest_per_key: bool,
}

/// Index of an output topic in the subsystem's list ([`crate::ConsumerSpec::outputs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputId(pub usize);

/// What applying one poll produced: effects for the store, records for the output topics.
pub struct Output<E> {
    /// Effects for the store.
    pub effects: E,
    records: Vec<Vec<OutRecord>>,
    /// Event times (µs since the epoch) of the events whose outputs this poll publishes, for
    /// the subsystem's "event → published" latency ([`crate::PublishHook`]): the handler says
    /// which events count (every applied event for inventory, decisions for fraud).
    pub event_times_us: Vec<i64>,
}

impl<E: Effects> Output<E> {
    pub(crate) fn new(outputs: usize) -> Self {
        Self { effects: E::default(), records: vec![Vec::new(); outputs], event_times_us: Vec::new() }
    }

    /// Publishes `record` on output topic `to` (before the poll's offset is committed).
    pub fn publish(&mut self, to: OutputId, record: OutRecord) {
        if let Some(records) = self.records.get_mut(to.0) {
            records.push(record);
        }
    }

    pub(crate) fn into_parts(self) -> (E, Vec<Vec<OutRecord>>, Vec<i64>) {
        (self.effects, self.records, self.event_times_us)
    }
}

/// A handler's failure outside any one event (loading state, reaching a service).
#[derive(Debug, thiserror::Error)]
#[error("{during}: {source}")]
pub struct HandlerError {
    /// What the handler was doing.
    pub during: &'static str,
    /// Whether a retry can help.
    pub hint: RetryHint,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        Self { during: "reading the store", hint: e.retry_hint(), source: Box::new(e) }
    }
}

/// A subsystem's consumer logic for one partition. See the module documentation for the
/// contract.
pub trait Handler: Send + 'static {
    /// A parsed input event.
    type Event: Send + Sync + 'static;
    /// What applying an event yields: kept in the idempotency window and with the idempotency
    /// record, and answered to a caller waiting on the event.
    type Outcome: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// What a poll hands the store.
    type Effects: Effects;

    /// Parses a record whose envelope is valid (`attributes` are its CloudEvents headers).
    fn parse(&self, attributes: &Attributes, record: &Record) -> Result<Parsed<Self::Event>, Refusal>;

    /// Loads what the events of a poll need before any is applied (state of keys not in memory
    /// yet). A failure leaves nothing changed: the poll is read again (transient) or the
    /// partition stops (permanent).
    fn prepare(&mut self, events: &[&Self::Event]) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Whether the state already includes the event at `offset` (a per-key applied-offset
    /// watermark): a redelivery after a crash, skipped without consulting the window.
    fn already_applied(&self, event: &Self::Event, offset: u64) -> bool;

    /// Applies fresh events in order and records their effects and outputs in `out`. One answer
    /// per event, in order. May be called more than once per poll (see the module
    /// documentation); `out` is the poll's.
    fn apply(
        &mut self,
        events: Vec<Fresh<Self::Event>>,
        out: &mut Output<Self::Effects>,
    ) -> impl Future<Output = Vec<Result<Self::Outcome, Refusal>>> + Send;

    /// After the last round of a poll: makes the poll's changes visible (the cache) and adds
    /// what depends on all of them to `out` (one coalesced state message per key). Waiting
    /// callers are answered after it.
    fn finish(&mut self, out: &mut Output<Self::Effects>) -> impl Future<Output = ()> + Send {
        let _ = out;
        async {}
    }

    /// The noun for the partition key in messages (`sku` for inventory).
    fn key_name(&self) -> &'static str {
        "key"
    }

    /// A short code for an outcome, from a bounded set: the `outcome` label of
    /// `tally_<subsystem>_events_applied_total`, and words for messages
    /// (`reservation_accepted`).
    fn outcome_code(&self, outcome: &Self::Outcome) -> &'static str {
        let _ = outcome;
        "applied"
    }

    /// How often [`Handler::tick`] runs (`None`: never).
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work of the partition (expiring reservations): records to publish as
    /// `(topic, records)`, with retries, outside any poll.
    fn tick(&mut self) -> impl Future<Output = Vec<(String, Vec<OutRecord>)>> + Send {
        async { Vec::new() }
    }

    /// Every event before `next_offset` is durable in the store: state kept only to survive
    /// until then may be dropped.
    fn durable(&mut self, next_offset: u64) {
        let _ = next_offset;
    }
}
