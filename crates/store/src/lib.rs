//! The durable state store behind a small trait. The inventory worker's batcher hands it the
//! latest state of every changed SKU, the applied events (audit rows that double as
//! idempotency records) and the consumer positions of a batch; the store writes them with one
//! set-based statement per table, and keeps a row only if its version is newer than the stored
//! one. The states and the consumer positions commit in one transaction, so effects and offsets
//! can never disagree after a crash.

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tally_core::{EventKey, Sku};
use tally_inventory::aggregate::LocationLevel;
use tally_inventory::{AuditEntry, ChannelAvailability, Outcome, SkuState};

mod any;
pub mod conformance;
pub mod postgres;
pub mod sqlite;

pub use any::AnyStore;
pub use postgres::{PostgresStore, PostgresStoreOptions};
pub use sqlite::{SqliteStore, SqliteStoreOptions};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed; the operation may be retried.
    #[error("store backend failed: {0}")]
    Backend(String),
    /// Stored data could not be decoded (a bug or a foreign write).
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// Decoder error.
        detail: String,
    },
}

/// The latest state of one SKU with its read-model rows. The aggregate travels already
/// serialised: the worker serialises it once for the cache and the same bytes are stored.
#[derive(Debug, Clone)]
pub struct StateRow {
    /// SKU.
    pub sku: Sku,
    /// Aggregate version; a row lands only if newer than the stored one.
    pub version: u64,
    /// Offset of the last event applied (the per-key watermark).
    pub applied_offset: i64,
    /// Last change (Unix ms).
    pub updated_at_ms: i64,
    /// The aggregate as JSON.
    pub state_json: Arc<RawValue>,
    /// Per-location levels derived from it.
    pub levels: Vec<LocationLevel>,
    /// Per-channel available-to-sell derived from it.
    pub availability: Vec<ChannelAvailability>,
}

impl StateRow {
    /// The row of `state`, reusing `state_json` if the caller already serialised it.
    pub fn new(state: &SkuState, state_json: Option<Arc<RawValue>>, availability: Vec<ChannelAvailability>) -> Self {
        let state_json = state_json.unwrap_or_else(|| serialize_state(state));
        Self {
            sku: state.sku.clone(),
            version: state.version,
            applied_offset: state.applied_offset,
            updated_at_ms: state.updated_at_ms,
            state_json,
            levels: state.levels(),
            availability,
        }
    }
}

/// A state as raw JSON.
pub fn serialize_state(state: &SkuState) -> Arc<RawValue> {
    // A SkuState is maps and vectors of strings and integers: serialising cannot fail.
    let text = serde_json::to_string(state).unwrap_or_else(|_| "null".to_owned());
    Arc::from(RawValue::from_string(text).unwrap_or_else(|_| unreachable!("serde_json output is valid JSON")))
}

impl PartialEq for StateRow {
    fn eq(&self, other: &Self) -> bool {
        self.sku == other.sku
            && self.version == other.version
            && self.applied_offset == other.applied_offset
            && self.state_json.get() == other.state_json.get()
            && self.levels == other.levels
            && self.availability == other.availability
    }
}
impl Eq for StateRow {}

/// An idempotency record: this event was applied (once) with this outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessedEvent {
    /// Idempotency key.
    pub key: EventKey,
    /// Topic it was consumed from.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset of its first delivery.
    pub offset: u64,
    /// Outcome, kept for events a caller may wait on (reservations, adjustments).
    pub outcome: Option<Outcome>,
    /// Digest of what the event asked for (`InventoryEvent::digest`): a later event with the
    /// same key but another digest is a different request reusing the key, and is refused.
    /// `None` for records stored before digests were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<i64>,
}

/// A consumer group's position in one partition: everything before `next_offset` is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerOffset {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Next offset to apply.
    pub next_offset: u64,
}

/// One applied event: its idempotency record and its audit row. Stores keep the two as one
/// row, so an applied event costs one insert, and the audit trail doubles as the durable
/// idempotency record (an event id never vanishes from it while the SKU's history is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEvent {
    /// Which event, where it was consumed, and its outcome.
    pub processed: ProcessedEvent,
    /// What it did to the SKU.
    pub audit: AuditEntry,
}

/// An audit row with its position in the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increases with every row stored; the cursor of the next (older) page.
    pub seq: i64,
    /// The row.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Everything one flush writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushBatch {
    /// Latest state per SKU (one row per SKU: the batcher coalesces).
    pub states: Vec<StateRow>,
    /// Applied events, in apply order.
    pub applied: Vec<AppliedEvent>,
    /// Consumer positions reached.
    pub offsets: Vec<ConsumerOffset>,
}

impl FlushBatch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.applied.is_empty() && self.offsets.is_empty()
    }
}

/// The inventory state store.
pub trait InventoryStore: Clone + Send + Sync + 'static {
    /// Applies pending schema migrations.
    fn migrate(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// The schema migrations not applied yet, without changing anything (needs no DDL rights).
    fn pending_migrations(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Loads the stored state of the given SKUs (absent SKUs are omitted).
    fn load_states(&self, skus: Vec<Sku>) -> impl Future<Output = Result<Vec<SkuState>, StoreError>> + Send;

    /// Writes a batch durably; rows not newer than the stored ones are left alone. The states
    /// and the offsets commit atomically; the applied events may commit before them (they are
    /// idempotent, and [`Self::processed_between`] ignores those past the committed offset), so
    /// after a crash the events of an incomplete flush are applied again, exactly once.
    /// Takes the batch by reference so that a failed flush is retried without copying it.
    fn flush(&self, batch: &FlushBatch) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The position a consumer group reached in a partition.
    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Idempotency records of a partition with offsets in `from_offset..to_offset`, to seed
    /// a dedupe window on resume. `to_offset` is the committed position: records at or past it
    /// may belong to a flush that did not complete, and those events are applied again.
    fn processed_between(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        to_offset: u64,
    ) -> impl Future<Output = Result<Vec<ProcessedEvent>, StoreError>> + Send;

    /// The idempotency records of those of `keys` that were applied (in no particular order).
    fn processed_many(
        &self,
        keys: Vec<EventKey>,
    ) -> impl Future<Output = Result<Vec<ProcessedEvent>, StoreError>> + Send;
    /// The idempotency record of an event, if it was applied.
    fn processed(&self, key: EventKey) -> impl Future<Output = Result<Option<ProcessedEvent>, StoreError>> + Send {
        let found = self.processed_many(vec![key]);
        async move { Ok(found.await?.into_iter().next()) }
    }

    /// Up to `limit` audit rows of a SKU, newest first, older than `before` (a row's `seq`)
    /// when given: the pages of the whole trail.
    fn audit(
        &self,
        sku: Sku,
        limit: u32,
        before: Option<i64>,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;

    /// Checks the database answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Statements executed so far (for "statements per 1,000 events").
    fn statements(&self) -> u64;
}

/// A stored JSON value; `what` names it in the error if it does not decode.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(what: &'static str, raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}

/// An idempotency record from its stored columns (`outcome` as JSON).
pub(crate) fn decode_processed(
    topic: String,
    partition: u32,
    source: String,
    id: String,
    offset: u64,
    outcome: Option<String>,
    digest: Option<i64>,
) -> Result<ProcessedEvent, StoreError> {
    let outcome = match outcome.as_deref() {
        None | Some("null") => None,
        Some(raw) => Some(decode_json("event outcome", raw)?),
    };
    Ok(ProcessedEvent { key: EventKey { source, id }, topic, partition, offset, outcome, digest })
}
