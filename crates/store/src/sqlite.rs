//! The SQLite store: the embedded mode's durable state, in the same file as the embedded log.
//! This module holds the connection handling every table shares; [`ledger`] the ledger's
//! reads and its own tables, [`inventory`] inventory's tables (`SqliteStore` is inventory's
//! store; other subsystems take their share of the ledger with `SqliteStore::documents`).

use std::path::PathBuf;
use std::sync::Arc;

use tally_sqlite::rusqlite;
use tally_sqlite::rusqlite::types::Value as SqlValue;
use tally_sqlite::{Durability, Pool, StatementCounter, Table, Writer};

use crate::ledger::Flush;
use crate::{RetryHint, StoreError};

mod demand;
#[cfg(feature = "inventory")]
mod inventory;
mod ledger;
mod migrations;

pub use ledger::SqliteDocuments;

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    /// The SQLite file.
    pub path: PathBuf,
    /// fsync policy.
    pub durability: Durability,
}

/// The SQLite store; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Arc<Writer>,
    readers: Pool,
    statements: StatementCounter,
}

/// A SQLite error, classified: a busy or locked database, or I/O, may clear; anything else
/// (a constraint, a missing table, a corrupt file) repeats.
fn backend(during: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        use rusqlite::ErrorCode as C;
        let hint = match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked | C::SystemIoFailure | C::OutOfMemory | C::DiskFull) => {
                RetryHint::Transient
            }
            _ => RetryHint::Permanent,
        };
        StoreError::Backend { during, hint, source: Box::new(e) }
    }
}

/// The writer thread is gone (the store is shutting down): a retry may reach a new one.
fn closed(during: &'static str) -> impl FnOnce(tally_sqlite::WriterClosed) -> StoreError {
    move |e| StoreError::Backend { during, hint: RetryHint::Transient, source: Box::new(e) }
}

impl SqliteStore {
    /// Opens the file (migrations are applied by [`InventoryStore::migrate`]).
    pub fn open(opts: SqliteStoreOptions) -> Result<Self, StoreError> {
        let writer = Writer::shared(&opts.path, opts.durability).map_err(backend("opening the file"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                readers: Pool::new(&opts.path, opts.durability),
                statements: StatementCounter::default(),
            }),
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        during: &'static str,
        f: impl FnOnce(&mut rusqlite::Connection, &StatementCounter) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let statements = self.inner.statements.clone();
        self.inner.writer.run(move |conn| f(conn, &statements)).await.map_err(closed(during))?.map_err(backend(during))
    }

    async fn read<T: Send + 'static>(
        &self,
        during: &'static str,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.statements.add(1);
            inner.readers.with(f)
        })
        .await
        .map_err(|e| StoreError::Backend { during, hint: RetryHint::Transient, source: Box::new(e) })?
        .map_err(backend(during))
    }
}

const OFFSETS_TABLE: Table = Table {
    insert: "INSERT INTO consumer_offsets (grp, topic, partition, next_offset) VALUES ",
    columns: 4,
    conflict: " ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset
    WHERE consumer_offsets.next_offset < excluded.next_offset",
};

fn int(v: impl TryInto<i64>) -> SqlValue {
    SqlValue::Integer(v.try_into().unwrap_or(i64::MAX))
}

fn text(v: &str) -> SqlValue {
    SqlValue::Text(v.to_owned())
}

/// Bound rows of one table.
type Rows = Vec<Vec<SqlValue>>;

impl SqliteStore {
    /// Writes each table's rows, in one transaction on the writer thread (multi-row statements
    /// of up to 1,000 rows each). The rows come back out of the job so that they are freed
    /// here, not on the writer thread everything else is queued behind.
    async fn write_tables<const N: usize>(
        &self,
        during: &'static str,
        tables: [(&'static Table, Rows); N],
    ) -> Result<(), StoreError> {
        self.write(during, move |conn, counter| {
            let tx = conn.transaction()?;
            let mut n = 2; // BEGIN + COMMIT
            for (table, rows) in &tables {
                n += table.write(&tx, rows)?;
            }
            tx.commit()?;
            counter.add(n);
            Ok(tables)
        })
        .await
        .map(drop)
    }

    fn statement_count(&self) -> u64 {
        self.inner.statements.get()
    }
}

/// Offsets of some flushes as bound rows.
fn offset_rows<E>(batch: &[Flush<E>]) -> Vec<Vec<SqlValue>> {
    batch
        .iter()
        .flat_map(|f| &f.offsets)
        .map(|o| vec![text(&o.group), text(&o.topic), int(o.partition), int(o.next_offset)])
        .collect()
}

#[cfg(all(test, feature = "inventory"))]
mod tests;
