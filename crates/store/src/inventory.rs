//! The inventory engine's tables: the latest state per SKU (with its per-location and
//! per-channel read-model rows) and the audit trail, whose rows double as the inventory
//! consumer's idempotency records — one insert per applied event instead of two.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tally_core::Sku;
use tally_inventory::aggregate::LocationLevel;
use tally_inventory::{AuditEntry, ChannelAvailability, SkuState};

use crate::StoreError;
use crate::ledger::{Effects, Flush, Journal, ProcessedEvent};

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
    /// Per-location levels derived from it (only those that changed since the last flush).
    pub levels: Vec<LocationLevel>,
    /// Per-channel available-to-sell derived from it (only those that changed).
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

    /// Coalesces two rows of one SKU: the newer state wins, and since workers send only the
    /// read-model rows that changed, the older row's levels and availability survive unless
    /// the newer row has its own for the same location or channel.
    pub fn merge(a: Self, b: Self) -> Self {
        let (older, mut newer) = if a.version > b.version { (b, a) } else { (a, b) };
        for level in older.levels {
            if !newer.levels.iter().any(|l| l.location == level.location) {
                newer.levels.push(level);
            }
        }
        for ats in older.availability {
            if !newer.availability.iter().any(|x| x.channel == ats.channel) {
                newer.availability.push(ats);
            }
        }
        newer
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

/// What the inventory handler hands the store for one or more polls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryEffects {
    /// Latest state per SKU (coalesced: [`StateRow::merge`]).
    pub states: HashMap<Sku, StateRow>,
    /// One audit row per applied event, in the order of the flush's idempotency records
    /// ([`Flush::processed`]): the two are stored as one row.
    pub audit: Vec<AuditEntry>,
}

impl InventoryEffects {
    /// Adds the latest row of a SKU.
    pub fn put(&mut self, row: StateRow) {
        let row = match self.states.remove(&row.sku) {
            Some(existing) => StateRow::merge(existing, row),
            None => row,
        };
        self.states.insert(row.sku.clone(), row);
    }
}

impl Effects for InventoryEffects {
    fn merge(&mut self, later: Self) {
        for row in later.states.into_values() {
            self.put(row);
        }
        self.audit.extend(later.audit);
    }

    fn rows(&self) -> usize {
        // The audit rows are the idempotency records: counted once, as those.
        self.states.len()
    }
}

/// One inventory flush.
pub type InventoryFlush = Flush<InventoryEffects>;

/// Pairs each idempotency record with its audit row.
pub(crate) fn applied_rows(batch: &[InventoryFlush]) -> Result<Vec<(&ProcessedEvent, &AuditEntry)>, StoreError> {
    let mut rows = Vec::with_capacity(batch.iter().map(|f| f.processed.len()).sum());
    for flush in batch {
        if flush.processed.len() != flush.effects.audit.len() {
            return Err(StoreError::Corrupt {
                what: "inventory flush",
                detail: format!(
                    "{} idempotency records but {} audit rows: each applied event has exactly one of each",
                    flush.processed.len(),
                    flush.effects.audit.len()
                ),
            });
        }
        rows.extend(flush.processed.iter().zip(&flush.effects.audit));
    }
    Ok(rows)
}

/// Whether none of the flushes writes anything.
pub(crate) fn all_empty<E: Effects>(batch: &[Flush<E>]) -> bool {
    batch.iter().all(Flush::is_empty)
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

/// The inventory state store: the ledger, plus the SKU states and their audit trail.
pub trait InventoryStore: Journal<InventoryEffects> {
    /// Loads the stored state of the given SKUs (absent SKUs are omitted).
    fn load_states(&self, skus: Vec<Sku>) -> impl Future<Output = Result<Vec<SkuState>, StoreError>> + Send;

    /// Up to `limit` audit rows of a SKU, newest first, older than `before` (a row's `seq`)
    /// when given: the pages of the whole trail.
    fn audit(
        &self,
        sku: Sku,
        limit: u32,
        before: Option<i64>,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;
}
