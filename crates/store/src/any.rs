//! The store chosen by configuration: one closed set of backends, so the engine is compiled
//! once and the choice is made at startup, not in domain code.

use tally_core::Sku;
use tally_inventory::SkuState;

use crate::inventory::{InventoryEffects, InventoryFlush};
use crate::ledger::Journal;
use crate::{AuditRecord, InventoryStore, PostgresStore, SqliteStore, StoreError};

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

crate::any_documents::impl_any_ledger!(AnyStore);

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
