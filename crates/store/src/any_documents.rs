//! One subsystem's share of the ledger's tables (its documents, appended rows and idempotency
//! records) in whichever backend configuration chose — what fraud and forecast journal into.

use tally_core::EventKey;

use crate::ledger::{DocumentStore, Documents, Flush, Journal, Ledger};
use crate::postgres::PostgresDocuments;
use crate::sqlite::SqliteDocuments;
use crate::{ProcessedEvent, StoreError};

/// Either backend's documents.
#[derive(Clone)]
pub enum AnyDocuments {
    /// The embedded SQLite file.
    Sqlite(SqliteDocuments),
    /// PostgreSQL.
    Postgres(PostgresDocuments),
}

macro_rules! delegate {
    ($self:ident, $d:ident => $call:expr) => {
        match $self {
            AnyDocuments::Sqlite($d) => $call,
            AnyDocuments::Postgres($d) => $call,
        }
    };
}

impl Ledger for AnyDocuments {
    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        delegate!(self, d => d.migrate().await)
    }

    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        delegate!(self, d => d.pending_migrations().await)
    }

    async fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        delegate!(self, d => d.committed_offset(group, topic, partition).await)
    }

    async fn processed_between(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        to_offset: u64,
    ) -> Result<Vec<ProcessedEvent>, StoreError> {
        delegate!(self, d => d.processed_between(topic, partition, from_offset, to_offset).await)
    }

    async fn processed_many(&self, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
        delegate!(self, d => d.processed_many(keys).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, d => d.ping().await)
    }

    fn statements(&self) -> u64 {
        delegate!(self, d => d.statements())
    }
}

impl Journal<Documents> for AnyDocuments {
    async fn flush(&self, batch: &[Flush<Documents>]) -> Result<(), StoreError> {
        delegate!(self, d => d.flush(batch).await)
    }
}

impl DocumentStore for AnyDocuments {
    async fn documents(&self, keys: Vec<String>) -> Result<Vec<(String, i64, String)>, StoreError> {
        delegate!(self, d => d.documents(keys).await)
    }

    async fn appended(&self, key: String) -> Result<Vec<(String, String)>, StoreError> {
        delegate!(self, d => d.appended(key).await)
    }
}
