//! The ledger's own tables on SQLite: idempotency records, keyed documents and appended rows
//! of a subsystem that has no rows of its own to keep them in.

use tally_core::EventKey;
use tally_sqlite::Table;
use tally_sqlite::rusqlite::params;
use tally_sqlite::rusqlite::types::Value as SqlValue;

use super::{OFFSETS_TABLE, SqliteStore, int, offset_rows, text};
use crate::ledger::{DocumentStore, Documents, Flush, Journal, Ledger, ProcessedEvent, RecordTable};
use crate::{RetryHint, StoreError};

const PROCESSED_TABLE: Table = Table {
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

/// One subsystem's share of the ledger's tables in the SQLite file.
#[derive(Clone)]
pub struct SqliteDocuments {
    store: SqliteStore,
    records: RecordTable,
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
    fn subsystem(&self) -> &'static str {
        self.records.subsystem.unwrap_or_default()
    }
}

impl Ledger for SqliteDocuments {
    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.store.migrate().await
    }

    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        self.store.pending_migrations().await
    }

    async fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        self.store.committed_offset(group, topic, partition).await
    }

    async fn processed_between(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<ProcessedEvent>, StoreError> {
        self.store.records_between(self.records, topic, partition, from, to).await
    }

    async fn processed_many(&self, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
        self.store.records_of(self.records, keys).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    fn statements(&self) -> u64 {
        self.store.statements()
    }
}

impl Journal<Documents> for SqliteDocuments {
    async fn flush(&self, batch: &[Flush<Documents>]) -> Result<(), StoreError> {
        if batch.iter().all(Flush::is_empty) {
            return Ok(());
        }
        let (subsystem, now) = (self.subsystem(), tally_core::now_ms());
        let processed: Vec<Vec<SqlValue>> = batch
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
            .collect();
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
        self.store
            .write("flushing ledger documents and offsets", move |conn, counter| {
                let tx = conn.transaction()?;
                let mut n = 2; // BEGIN + COMMIT
                let tables = [&PROCESSED_TABLE, &DOCUMENTS_TABLE, &APPENDED_TABLE, &OFFSETS_TABLE];
                for (table, rows) in tables.into_iter().zip([&processed, &documents, &appended, &offsets]) {
                    n += table.write(&tx, rows)?;
                }
                tx.commit()?;
                counter.add(n);
                Ok((processed, documents, appended, offsets))
            })
            .await
            .map(drop)
    }
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
                let mut stmt = c.prepare_cached(
                    "SELECT d.key, d.version, d.body FROM ledger_documents AS d JOIN json_each(?2) AS j
                     ON d.key = j.value WHERE d.subsystem = ?1",
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
