//! The store chosen by configuration: one closed set of backends, so the engine is compiled
//! once and the choice is made at startup, not in domain code.

use tally_core::{EventKey, Sku};
use tally_inventory::SkuState;

use crate::inventory::{InventoryEffects, InventoryFlush};
use crate::ledger::{Journal, Ledger};
use crate::{AuditRecord, InventoryStore, PostgresStore, ProcessedEvent, SqliteStore, StoreError};

/// Either store backend.
#[derive(Clone)]
pub enum AnyStore {
    /// The embedded SQLite file.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PostgresStore),
}

/// Calls the same method on whichever backend this is.
macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call,
            AnyStore::Postgres($store) => $call,
        }
    };
}

impl AnyStore {
    /// The ledger's own tables for `subsystem` (`[a-z_]+`) in the same backend.
    pub fn documents(&self, subsystem: &'static str) -> crate::AnyDocuments {
        match self {
            Self::Sqlite(s) => crate::AnyDocuments::Sqlite(s.documents(subsystem)),
            Self::Postgres(s) => crate::AnyDocuments::Postgres(s.documents(subsystem)),
        }
    }
}

impl Ledger for AnyStore {
    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        delegate!(self, s => s.migrate().await)
    }

    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        delegate!(self, s => s.pending_migrations().await)
    }

    async fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        delegate!(self, s => s.committed_offset(group, topic, partition).await)
    }

    async fn processed_between(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        to_offset: u64,
    ) -> Result<Vec<ProcessedEvent>, StoreError> {
        delegate!(self, s => s.processed_between(topic, partition, from_offset, to_offset).await)
    }

    async fn processed_many(&self, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
        delegate!(self, s => s.processed_many(keys).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.ping().await)
    }

    fn statements(&self) -> u64 {
        delegate!(self, s => s.statements())
    }
}

impl Journal<InventoryEffects> for AnyStore {
    async fn flush(&self, batch: &[InventoryFlush]) -> Result<(), StoreError> {
        delegate!(self, s => s.flush(batch).await)
    }
}

impl InventoryStore for AnyStore {
    async fn load_states(&self, skus: Vec<Sku>) -> Result<Vec<SkuState>, StoreError> {
        delegate!(self, s => s.load_states(skus).await)
    }

    async fn audit(&self, sku: Sku, limit: u32, before: Option<i64>) -> Result<Vec<AuditRecord>, StoreError> {
        delegate!(self, s => s.audit(sku, limit, before).await)
    }
}
