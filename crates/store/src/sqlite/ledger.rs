//! The ledger on SQLite: reading idempotency records from whichever table holds them, and the
//! ledger's own tables (idempotency records, keyed documents and appended rows) for a
//! subsystem that has no rows of its own to keep them in.

use tally_core::EventKey;
use tally_sqlite::Table;
use tally_sqlite::rusqlite::types::Value as SqlValue;
use tally_sqlite::rusqlite::{OptionalExtension, params};

use super::{OFFSETS_TABLE, SqliteStore, int, migrations, offset_rows, text};
use crate::decode_processed;
use crate::ledger::{DocumentStore, Documents, Flush, Journal, ProcessedEvent, RecordTable};
use crate::{RetryHint, StoreError};

pub(super) const PROCESSED_TABLE: Table = Table {
    insert: "INSERT INTO ledger_processed (subsystem, event_source, event_id, topic, partition, offset,
        outcome_detail, event_digest, recorded_at_ms) VALUES ",
    columns: 9,
    conflict: " ON CONFLICT (subsystem, event_source, event_id) DO NOTHING",
};

const DOCUMENTS_TABLE: Table = Table {
    insert: "INSERT INTO ledger_documents (subsystem, key, version, body, updated_at_ms) VALUES ",
    columns: 5,
    conflict: " ON CONFLICT (subsystem, key) DO UPDATE SET
        version = excluded.version, body = excluded.body, updated_at_ms = excluded.updated_at_ms
    WHERE ledger_documents.version < excluded.version",
};

const APPENDED_TABLE: Table = Table {
    insert: "INSERT INTO ledger_appended (subsystem, row_id, key, body, recorded_at_ms) VALUES ",
    columns: 5,
    conflict: " ON CONFLICT (subsystem, row_id) DO NOTHING",
};

impl SqliteStore {
    pub(super) async fn apply_migrations(&self) -> Result<Vec<String>, StoreError> {
        self.write("applying migrations", |conn, _| migrations::apply(conn)).await
    }

    pub(super) async fn migrations_pending(&self) -> Result<Vec<String>, StoreError> {
        self.read("reading the schema version", |c| migrations::pending(c)).await
    }

    pub(super) async fn offset_of(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
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

    pub(super) async fn answer_ping(&self) -> Result<(), StoreError> {
        self.read("answering a ping", |c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    /// Idempotency records of a partition in `from..to` from `table`.
    pub(super) async fn records_between(
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
    pub(super) async fn records_of(
        &self,
        table: RecordTable,
        keys: Vec<EventKey>,
    ) -> Result<Vec<ProcessedEvent>, StoreError> {
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

/// One subsystem's share of the ledger's tables in the SQLite file.
#[derive(Clone)]
pub struct SqliteDocuments {
    pub(super) store: SqliteStore,
    pub(super) records: RecordTable,
}

impl SqliteStore {
    /// The ledger's own tables for `subsystem` (`[a-z_]+`).
    pub fn documents(&self, subsystem: &'static str) -> SqliteDocuments {
        SqliteDocuments {
            store: self.clone(),
            records: RecordTable { name: "ledger_processed", subsystem: Some(subsystem) },
        }
    }
}

impl SqliteDocuments {
    pub(super) fn subsystem(&self) -> &'static str {
        self.records.subsystem.unwrap_or_default()
    }
}

crate::ledger::impl_ledger!(SqliteDocuments, |this| this.store, this.records);

impl Journal<Documents> for SqliteDocuments {
    async fn flush(&self, batch: &[Flush<Documents>]) -> Result<(), StoreError> {
        if batch.iter().all(Flush::is_empty) {
            return Ok(());
        }
        let (subsystem, now) = (self.subsystem(), tally_core::now_ms());
        let processed = processed_rows(subsystem, batch, now);
        let documents: Vec<Vec<SqlValue>> = batch
            .iter()
            .flat_map(|f| &f.effects.latest)
            .map(|(key, d)| vec![text(subsystem), text(key), int(d.version), text(&d.body), int(now)])
            .collect();
        let appended: Vec<Vec<SqlValue>> = batch
            .iter()
            .flat_map(|f| &f.effects.appended)
            .map(|r| vec![text(subsystem), text(&r.id), text(&r.key), text(&r.body), int(now)])
            .collect();
        let offsets = offset_rows(batch);
        // One transaction: this file's writer is shared with the embedded log, but these
        // subsystems' flushes are small next to inventory's.
        let tables = [
            (&PROCESSED_TABLE, processed),
            (&DOCUMENTS_TABLE, documents),
            (&APPENDED_TABLE, appended),
            (&OFFSETS_TABLE, offsets),
        ];
        self.store.write_tables("flushing ledger documents and offsets", tables).await
    }
}

/// The idempotency records of some flushes as bound rows of `ledger_processed`.
pub(super) fn processed_rows<E>(subsystem: &str, batch: &[Flush<E>], now: i64) -> Vec<Vec<SqlValue>> {
    batch
        .iter()
        .flat_map(|f| &f.processed)
        .map(|p| {
            vec![
                text(subsystem),
                text(&p.key.source),
                text(&p.key.id),
                text(&p.topic),
                int(p.partition),
                int(p.offset),
                p.outcome.as_ref().map_or(SqlValue::Null, |o| text(o.json())),
                p.digest.map_or(SqlValue::Null, int),
                int(now),
            ]
        })
        .collect()
}

impl DocumentStore for SqliteDocuments {
    async fn documents(&self, keys: Vec<String>) -> Result<Vec<(String, i64, String)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let subsystem = self.subsystem();
        let keys = serde_json::to_string(&keys).map_err(|e| StoreError::Backend {
            during: "encoding keys",
            hint: RetryHint::Permanent,
            source: Box::new(e),
        })?;
        self.store
            .read("reading ledger documents", move |c| {
                // `IN (SELECT … json_each)`: the list is built once and each key looked up in the
                // primary key. A JOIN let the planner scan every document of the subsystem and
                // re-parse the JSON per document: quadratic, 40 % of the fraud benchmark's CPU.
                let mut stmt = c.prepare_cached(
                    "SELECT key, version, body FROM ledger_documents
                     WHERE subsystem = ?1 AND key IN (SELECT value FROM json_each(?2))",
                )?;
                let rows = stmt.query_map(params![subsystem, keys], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect()
            })
            .await
    }

    async fn appended(&self, key: String) -> Result<Vec<(String, String)>, StoreError> {
        let subsystem = self.subsystem();
        self.store
            .read("reading appended rows", move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT row_id, body FROM ledger_appended WHERE subsystem = ?1 AND key = ?2 ORDER BY seq",
                )?;
                let rows = stmt.query_map(params![subsystem, key], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await
    }
}
