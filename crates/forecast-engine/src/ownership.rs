//! Which partitions of the sales topic this instance owns right now: a series belongs to the
//! instance that owns its key's partition, so a full refresh split by ownership forecasts every
//! series once across instances, and adding an instance adds capacity. Kept by the handler
//! factory (a handler exists exactly while its partition is assigned).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

/// The partitions owned, with how many live handlers hold each (a partition revoked and
/// assigned again may briefly have its old handler and its new one).
#[derive(Debug, Default)]
pub struct Ownership {
    partitions: RwLock<BTreeMap<u32, usize>>,
}

impl Ownership {
    /// A partition was assigned.
    pub fn gained(&self, partition: u32) {
        *self.partitions.write().unwrap_or_else(std::sync::PoisonError::into_inner).entry(partition).or_default() += 1;
    }

    /// A partition was revoked (or its worker ended).
    pub fn lost(&self, partition: u32) {
        let mut held = self.partitions.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = held.get_mut(&partition) {
            *n -= 1;
            if *n == 0 {
                held.remove(&partition);
            }
        }
    }

    /// The partitions owned now.
    pub fn owned(&self) -> BTreeSet<u32> {
        self.partitions.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().copied().collect()
    }
}

/// The partition of a series among `partitions` (the key's, as the bus places it).
pub fn partition_of(sku: &str, location: &str, partitions: u32) -> u32 {
    tally_core::partition::partition_for_key(tally_forecast::demand::series_key(sku, location).as_bytes(), partitions)
}
