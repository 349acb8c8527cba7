//! The SQLite store: the embedded mode's durable state, in the same file as the embedded log.

use std::path::PathBuf;
use std::sync::Arc;

use tally_core::{EventKey, Sku};
use tally_inventory::SkuState;

use tally_sqlite::rusqlite::types::Value as SqlValue;
use tally_sqlite::rusqlite::{self, OptionalExtension, params};
use tally_sqlite::{Durability, Pool, StatementCounter, Table, Writer};

use crate::inventory::{InventoryEffects, InventoryFlush, all_empty, applied_rows};
use crate::ledger::{Flush, Journal, Ledger, ProcessedEvent, RecordTable};
use crate::{AuditRecord, InventoryStore, RetryHint, StoreError, decode_json, decode_processed};

mod documents;
mod migrations;

pub use documents::SqliteDocuments;

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

// Set-based writes: each table gets multi-row `INSERT … VALUES (…),(…)…` statements of up to
// up to 1,000 rows with the values bound directly (no JSON to parse), so a flush
// costs one statement per table per chunk whatever the number of events behind it. A row is
// replaced only when the incoming version is newer: a late or replayed flush never wins.
const SKU_TABLE: Table = Table {
    insert: "INSERT INTO inventory_sku (sku, version, applied_offset, state, updated_at_ms) VALUES ",
    columns: 5,
    conflict: " ON CONFLICT (sku) DO UPDATE SET
        version = excluded.version, applied_offset = excluded.applied_offset,
        state = excluded.state, updated_at_ms = excluded.updated_at_ms
    WHERE (inventory_sku.version, inventory_sku.applied_offset) < (excluded.version, excluded.applied_offset)",
};

const LEVELS_TABLE: Table = Table {
    insert: "INSERT INTO stock_levels (sku, location, on_hand, reserved, safety_stock, available, snapshot_version, version, updated_at_ms) VALUES ",
    columns: 9,
    conflict: " ON CONFLICT (sku, location) DO UPDATE SET
        on_hand = excluded.on_hand, reserved = excluded.reserved, safety_stock = excluded.safety_stock,
        available = excluded.available, snapshot_version = excluded.snapshot_version,
        version = excluded.version, updated_at_ms = excluded.updated_at_ms
    WHERE stock_levels.version < excluded.version",
};

const AVAILABILITY_TABLE: Table = Table {
    insert: "INSERT INTO channel_availability (sku, channel, available_to_sell, version, updated_at_ms) VALUES ",
    columns: 5,
    conflict: " ON CONFLICT (sku, channel) DO UPDATE SET
        available_to_sell = excluded.available_to_sell, version = excluded.version, updated_at_ms = excluded.updated_at_ms
    WHERE channel_availability.version < excluded.version",
};

// The audit row is also the event's idempotency record (see `AppliedEvent`); a retried flush
// leaves the existing row alone.
const AUDIT_TABLE: Table = Table {
    insert: "INSERT INTO inventory_audit (sku, location, version, event_type, event_source, event_id, outcome,
        outcome_detail, topic, partition, offset, on_hand_delta, on_hand, reserved, available, event_time_ms,
        recorded_at_ms, event_digest) VALUES ",
    columns: 18,
    conflict: " ON CONFLICT (event_source, event_id) DO NOTHING",
};

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

/// The rows of every table of a flush, as bound values.
fn flush_rows(batch: &[InventoryFlush], now: i64) -> Result<[Vec<Vec<SqlValue>>; 5], StoreError> {
    let states = batch.iter().map(|f| f.effects.states.len()).sum::<usize>();
    let mut skus = Vec::with_capacity(states);
    let mut levels = Vec::with_capacity(states * 2);
    let mut ats = Vec::with_capacity(states * 3);
    for row in batch.iter().flat_map(|f| f.effects.states.values()) {
        let sku = row.sku.as_str();
        skus.push(vec![
            text(sku),
            int(row.version),
            int(row.applied_offset),
            text(row.state_json.get()),
            int(row.updated_at_ms),
        ]);
        for l in &row.levels {
            levels.push(vec![
                text(sku),
                text(l.location.as_str()),
                int(l.on_hand),
                int(l.reserved),
                int(l.safety_stock),
                int(l.available),
                int(l.snapshot_version),
                int(row.version),
                int(row.updated_at_ms),
            ]);
        }
        for a in &row.availability {
            ats.push(vec![
                text(sku),
                text(a.channel.as_str()),
                int(a.available_to_sell),
                int(row.version),
                int(row.updated_at_ms),
            ]);
        }
    }
    let audit = applied_rows(batch)?
        .into_iter()
        .map(|(p, a)| {
            vec![
                text(a.sku.as_str()),
                a.location.as_ref().map_or(SqlValue::Null, |l| text(l.as_str())),
                int(a.version),
                text(&a.event_type),
                text(&p.key.source),
                text(&p.key.id),
                text(&a.outcome),
                p.outcome.as_ref().map_or(SqlValue::Null, |o| text(o.json())),
                text(&p.topic),
                int(p.partition),
                int(p.offset),
                int(a.on_hand_delta),
                int(a.on_hand),
                int(a.reserved),
                int(a.available),
                int(a.event_time_ms),
                int(now),
                p.digest.map_or(SqlValue::Null, int),
            ]
        })
        .collect();
    let offsets = offset_rows(batch);
    Ok([skus, levels, ats, audit, offsets])
}

/// Offsets of some flushes as bound rows.
fn offset_rows<E>(batch: &[Flush<E>]) -> Vec<Vec<SqlValue>> {
    batch
        .iter()
        .flat_map(|f| &f.offsets)
        .map(|o| vec![text(&o.group), text(&o.topic), int(o.partition), int(o.next_offset)])
        .collect()
}

impl SqliteStore {
    /// Idempotency records of a partition in `from..to` from `table`.
    async fn records_between(
        &self,
        table: RecordTable,
        topic: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<ProcessedEvent>, StoreError> {
        let owned = topic.to_owned();
        let rows = self
            .read("reading idempotency records by offset", move |c| {
                let topic = owned;
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT event_source, event_id, offset, outcome_detail, event_digest FROM {} \
                     WHERE topic = ?1 AND partition = ?2 AND offset >= ?3 AND offset < ?4{} ORDER BY offset",
                    table.name,
                    table.scope()
                ))?;
                let rows = stmt.query_map(params![topic, partition, from, to], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        rows.into_iter()
            .map(|(source, id, offset, outcome, digest)| {
                decode_processed(topic.to_owned(), partition, source, id, offset, outcome, digest)
            })
            .collect()
    }

    /// The idempotency records of those of `keys` in `table`.
    async fn records_of(&self, table: RecordTable, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .read("reading idempotency records by key", move |c| {
                // One prepared lookup per key on the unique index: for SQLite, in process, as
                // cheap as any set-based form.
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT topic, partition, offset, outcome_detail, event_digest FROM {} \
                     WHERE event_source = ?1 AND event_id = ?2{}",
                    table.name,
                    table.scope()
                ))?;
                let mut found = Vec::new();
                for key in keys {
                    let row = stmt
                        .query_row(params![key.source, key.id], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, u32>(1)?,
                                r.get::<_, u64>(2)?,
                                r.get::<_, Option<String>>(3)?,
                                r.get::<_, Option<i64>>(4)?,
                            ))
                        })
                        .optional()?;
                    found.extend(row.map(|row| (key, row)));
                }
                Ok(found)
            })
            .await?;
        rows.into_iter()
            .map(|(key, (topic, partition, offset, outcome, digest))| {
                decode_processed(topic, partition, key.source, key.id, offset, outcome, digest)
            })
            .collect()
    }
}

/// The inventory store's idempotency records are its audit rows.
const INVENTORY_RECORDS: RecordTable = RecordTable { name: "inventory_audit", subsystem: None };

impl Ledger for SqliteStore {
    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.write("applying migrations", |conn, _| migrations::apply(conn)).await
    }

    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        self.read("reading the schema version", |c| migrations::pending(c)).await
    }

    async fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.read("reading a committed offset", move |c| {
            c.query_row(
                "SELECT next_offset FROM consumer_offsets WHERE grp = ?1 AND topic = ?2 AND partition = ?3",
                params![group, topic, partition],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn processed_between(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<ProcessedEvent>, StoreError> {
        self.records_between(INVENTORY_RECORDS, topic, partition, from, to).await
    }

    async fn processed_many(&self, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
        self.records_of(INVENTORY_RECORDS, keys).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("answering a ping", |c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    fn statements(&self) -> u64 {
        self.inner.statements.get()
    }
}

impl Journal<InventoryEffects> for SqliteStore {
    async fn flush(&self, batch: &[InventoryFlush]) -> Result<(), StoreError> {
        if all_empty(batch) {
            return Ok(());
        }
        let [skus, levels, ats, audit, offsets] = flush_rows(batch, tally_core::now_ms())?;
        // Two transactions, so that appends to the embedded log (which share the file's one
        // writer) wait behind half a flush at most. The applied events go first: their rows are
        // idempotent, and rows past a partition's committed offset are ignored on resume (see
        // `processed_between`), so a crash between the two leaves nothing half-applied. The
        // states and the offsets that make them count commit together in the second.
        // The rows come back out of each job so that they are freed here, not on the writer
        // thread everything else is queued behind.
        if !audit.is_empty() {
            self.write("writing audit rows", move |conn, counter| {
                let tx = conn.transaction()?;
                let n = 2 + AUDIT_TABLE.write(&tx, &audit)?; // + BEGIN, COMMIT
                tx.commit()?;
                counter.add(n);
                Ok(audit)
            })
            .await?;
        }
        self.write("writing states and offsets", move |conn, counter| {
            let tx = conn.transaction()?;
            let mut n = 2; // BEGIN + COMMIT
            let tables = [&SKU_TABLE, &LEVELS_TABLE, &AVAILABILITY_TABLE, &OFFSETS_TABLE];
            for (table, rows) in tables.into_iter().zip([&skus, &levels, &ats, &offsets]) {
                n += table.write(&tx, rows)?;
            }
            tx.commit()?;
            counter.add(n);
            Ok((skus, levels, ats, offsets))
        })
        .await
        .map(drop)
    }
}

impl InventoryStore for SqliteStore {
    async fn load_states(&self, skus: Vec<Sku>) -> Result<Vec<SkuState>, StoreError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let keys =
            serde_json::to_string(&skus).map_err(|e| StoreError::Corrupt { what: "sku", detail: e.to_string() })?;
        let raw = self
            .read("loading SKU states", move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT s.state FROM inventory_sku AS s JOIN json_each(?1) AS j ON s.sku = j.value",
                )?;
                let rows = stmt.query_map([keys], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        raw.iter().map(|s| decode_json("inventory state", s)).collect()
    }

    async fn audit(&self, sku: Sku, limit: u32, before: Option<i64>) -> Result<Vec<AuditRecord>, StoreError> {
        let raw = self
            .read("reading the audit trail", move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT json_object('seq', id, 'sku', sku, 'location', location, 'version', version,
                        'event_type', event_type, 'event_source', event_source, 'event_id', event_id,
                        'outcome', outcome, 'on_hand_delta', on_hand_delta, 'on_hand', on_hand,
                        'reserved', reserved, 'available', available, 'event_time_ms', event_time_ms)
                     FROM inventory_audit WHERE sku = ?1 AND id < ?3 ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = stmt
                    .query_map(params![sku.as_str(), limit, before.unwrap_or(i64::MAX)], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        raw.iter().map(|s| decode_json("audit row", s)).collect()
    }
}

#[cfg(test)]
mod tests;
