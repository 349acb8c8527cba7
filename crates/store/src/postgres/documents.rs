//! The ledger's own tables on PostgreSQL: idempotency records, keyed documents and appended
//! rows of a subsystem that has no rows of its own to keep them in. One set-based statement
//! per table per flush, in one transaction with the offsets.

use tally_core::EventKey;

use super::{PostgresStore, backend, i64_of, store_offsets};
use crate::StoreError;
use crate::ledger::{DocumentStore, Documents, Flush, Journal, Ledger, ProcessedEvent, RecordTable};

/// One subsystem's share of the ledger's tables in PostgreSQL.
#[derive(Clone)]
pub struct PostgresDocuments {
    store: PostgresStore,
    records: RecordTable,
}

impl PostgresStore {
    /// The ledger's own tables for `subsystem` (`[a-z_]+`).
    pub fn documents(&self, subsystem: &'static str) -> PostgresDocuments {
        PostgresDocuments {
            store: self.clone(),
            records: RecordTable { name: "ledger_processed", subsystem: Some(subsystem) },
        }
    }
}

impl PostgresDocuments {
    fn subsystem(&self) -> &'static str {
        self.records.subsystem.unwrap_or_default()
    }

    async fn flush_once(&self, batch: &[Flush<Documents>]) -> Result<u64, sqlx::Error> {
        let subsystem = self.subsystem();
        let now = tally_core::now_ms();
        let mut tx = self.store.pool.begin().await?;
        let mut n = 2; // BEGIN + COMMIT
        let processed: Vec<&ProcessedEvent> = batch.iter().flat_map(|f| &f.processed).collect();
        if !processed.is_empty() {
            let source: Vec<&str> = processed.iter().map(|p| p.key.source.as_str()).collect();
            let id: Vec<&str> = processed.iter().map(|p| p.key.id.as_str()).collect();
            let topic: Vec<&str> = processed.iter().map(|p| p.topic.as_str()).collect();
            let partition: Vec<i32> =
                processed.iter().map(|p| i32::try_from(p.partition).unwrap_or(i32::MAX)).collect();
            let offset: Vec<i64> = processed.iter().map(|p| i64_of(p.offset)).collect();
            let outcome: Vec<Option<&str>> = processed.iter().map(|p| p.outcome.as_ref().map(|o| o.json())).collect();
            let digest: Vec<Option<i64>> = processed.iter().map(|p| p.digest).collect();
            sqlx::query(
                "INSERT INTO ledger_processed (subsystem, event_source, event_id, topic, partition, \"offset\",
                     outcome_detail, event_digest, recorded_at_ms)
                 SELECT $1, s, i, t, p, o, d::jsonb, g, $9
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::text[], $8::bigint[])
                     AS x(s, i, t, p, o, d, g)
                 ON CONFLICT (subsystem, event_source, event_id) DO NOTHING",
            )
            .bind(subsystem)
            .bind(&source)
            .bind(&id)
            .bind(&topic)
            .bind(&partition)
            .bind(&offset)
            .bind(&outcome)
            .bind(&digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            n += 1;
        }
        let latest: Vec<(&String, &crate::ledger::Document)> = batch.iter().flat_map(|f| &f.effects.latest).collect();
        if !latest.is_empty() {
            let key: Vec<&str> = latest.iter().map(|(k, _)| k.as_str()).collect();
            let version: Vec<i64> = latest.iter().map(|(_, d)| d.version).collect();
            let body: Vec<&str> = latest.iter().map(|(_, d)| d.body.as_str()).collect();
            sqlx::query(
                "INSERT INTO ledger_documents (subsystem, key, version, body, updated_at_ms)
                 SELECT $1, k, v, b::jsonb, $5 FROM unnest($2::text[], $3::bigint[], $4::text[]) AS x(k, v, b)
                 ON CONFLICT (subsystem, key) DO UPDATE SET
                     version = excluded.version, body = excluded.body, updated_at_ms = excluded.updated_at_ms
                 WHERE ledger_documents.version < excluded.version",
            )
            .bind(subsystem)
            .bind(&key)
            .bind(&version)
            .bind(&body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            n += 1;
        }
        let appended: Vec<&crate::ledger::AppendedRow> = batch.iter().flat_map(|f| &f.effects.appended).collect();
        if !appended.is_empty() {
            let id: Vec<&str> = appended.iter().map(|r| r.id.as_str()).collect();
            let key: Vec<&str> = appended.iter().map(|r| r.key.as_str()).collect();
            let body: Vec<&str> = appended.iter().map(|r| r.body.as_str()).collect();
            sqlx::query(
                "INSERT INTO ledger_appended (subsystem, row_id, key, body, recorded_at_ms)
                 SELECT $1, i, k, b::jsonb, $5 FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY
                     AS x(i, k, b, n)
                 ORDER BY n
                 ON CONFLICT (subsystem, row_id) DO NOTHING",
            )
            .bind(subsystem)
            .bind(&id)
            .bind(&key)
            .bind(&body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            n += 1;
        }
        n += store_offsets(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(n)
    }
}

impl Ledger for PostgresDocuments {
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

impl Journal<Documents> for PostgresDocuments {
    async fn flush(&self, batch: &[Flush<Documents>]) -> Result<(), StoreError> {
        if batch.iter().all(Flush::is_empty) {
            return Ok(());
        }
        let n = self.flush_once(batch).await.map_err(backend("flushing ledger documents and offsets"))?;
        self.store.count(n);
        Ok(())
    }
}

impl DocumentStore for PostgresDocuments {
    async fn documents(&self, keys: Vec<String>) -> Result<Vec<(String, i64, String)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.store.count(1);
        sqlx::query_as("SELECT key, version, body::text FROM ledger_documents WHERE subsystem = $1 AND key = ANY($2)")
            .bind(self.subsystem())
            .bind(&keys)
            .fetch_all(&self.store.pool)
            .await
            .map_err(backend("reading ledger documents"))
    }

    async fn appended(&self, key: String) -> Result<Vec<(String, String)>, StoreError> {
        self.store.count(1);
        sqlx::query_as("SELECT row_id, body::text FROM ledger_appended WHERE subsystem = $1 AND key = $2 ORDER BY seq")
            .bind(self.subsystem())
            .bind(&key)
            .fetch_all(&self.store.pool)
            .await
            .map_err(backend("reading appended rows"))
    }
}
