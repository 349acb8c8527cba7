//! The PostgreSQL store of the production mode. Every write of a flush is one set-based
//! statement per table — `INSERT … SELECT … FROM unnest($1::text[], $2::bigint[], …) ON CONFLICT
//! … DO UPDATE … WHERE stored.version < excluded.version` — so a flush costs the same handful of
//! statements whether it carries ten rows or ten thousand, and all of them commit in one
//! transaction with the consumer offsets.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tally_core::{EventKey, Sku};
use tally_inventory::SkuState;

use crate::inventory::{InventoryEffects, InventoryFlush, all_empty, applied_rows};
use crate::ledger::{Flush, Journal, Ledger, ProcessedEvent, RecordTable};
use crate::{AuditRecord, InventoryStore, RetryHint, StoreError, decode_json, decode_processed};

mod documents;
mod migrations;

pub use documents::PostgresDocuments;

/// How to reach PostgreSQL and how hard to lean on it.
#[derive(Debug, Clone)]
pub struct PostgresStoreOptions {
    /// `postgres://user:password@host:port/database?sslmode=…`.
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a free connection before failing.
    pub acquire_timeout: Duration,
    /// Server-side limit on any one statement (`statement_timeout`), so a stuck query fails
    /// and is retried instead of holding a connection forever.
    pub statement_timeout: Duration,
}

/// The PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    statements: Arc<AtomicU64>,
}

/// Whether a retry can help with `e`: a lost or refused connection, a timeout (the pool's, or
/// the server's `statement_timeout`), a serialization failure or deadlock, or a server short of
/// resources or shutting down may clear; a constraint, a missing table or privilege, bad data
/// or a row that does not decode repeats.
pub(crate) fn retry_hint(e: &sqlx::Error) -> RetryHint {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            RetryHint::Transient
        }
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => RetryHint::Transient,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // 08: connection exception; 40001 serialization failure; 40P01 deadlock; 53:
            // insufficient resources; 57014 query canceled (statement timeout); 57P0x: the
            // server is shutting down or restarting; 55P03 lock not available.
            Some(code)
                if code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || matches!(code, "40001" | "40P01" | "57014" | "55P03") =>
            {
                RetryHint::Transient
            }
            _ => RetryHint::Permanent,
        },
        _ => RetryHint::Permanent,
    }
}

fn backend(during: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Backend { during, hint: retry_hint(&e), source: Box::new(e) }
}

impl PostgresStore {
    /// Creates the pool; connections open lazily, so this succeeds while the database is down
    /// (readiness and the first flush report it).
    pub fn connect(opts: &PostgresStoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&opts.url)
            .map_err(backend("reading the database URL"))?
            .application_name("tally")
            .options([("statement_timeout", format!("{}ms", opts.statement_timeout.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect_lazy_with(connect);
        let statements = Arc::new(AtomicU64::new(0));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(summarise_audit_offsets(pool.clone(), Arc::downgrade(&statements)));
        }
        Ok(Self { pool, statements })
    }

    fn count(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
    }

    /// One flush in one transaction. Unlike SQLite, PostgreSQL has no single writer to keep
    /// free, so one transaction holds everything: the stronger form of the trait's contract.
    async fn flush_once(&self, batch: &[InventoryFlush], duplicates: Duplicates) -> Result<(), sqlx::Error> {
        let applied = applied_rows(batch).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let mut n = 2; // BEGIN + COMMIT
        n += insert_applied(&mut tx, &applied, duplicates).await?;
        n += upsert_states(&mut tx, batch).await?;
        n += store_offsets(&mut tx, batch).await?;
        tx.commit().await?;
        self.count(n);
        Ok(())
    }
}

/// How often the newest block ranges of the audit table's BRIN offset index are summarised.
const SUMMARISE_EVERY: Duration = Duration::from_secs(5);

/// Keeps the BRIN index on audit offsets (migration 2) summarised up to the last few seconds.
/// A range not yet summarised is scanned in full by every resume-window read, and autovacuum
/// (`autosummarize`) may take a minute or more to get to it — a minute of audit rows scanned
/// per partition on every rebalance. Summarising reads each new range once, while its pages
/// are still in memory. Best effort: a role that does not own the index reads more on resume,
/// nothing else. Ends with the store: `alive` is the store's own counter, gone once the last
/// clone of the store is dropped.
async fn summarise_audit_offsets(pool: PgPool, alive: std::sync::Weak<AtomicU64>) {
    let mut every = tokio::time::interval(SUMMARISE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        if alive.strong_count() == 0 || pool.is_closed() {
            return;
        }
        if let Err(e) =
            sqlx::query("SELECT brin_summarize_new_values('inventory_audit_by_offset_brin')").execute(&pool).await
        {
            tracing::debug!(error = %e, "cannot summarise the audit offset index");
        }
    }
}

/// The flush's rows as column arrays, the shape `unnest` takes.
#[derive(Default)]
struct Columns {
    sku: Vec<String>,
    version: Vec<i64>,
    applied_offset: Vec<i64>,
    state: Vec<String>,
    updated_at_ms: Vec<i64>,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn upsert_states(tx: &mut Transaction<'_, Postgres>, batch: &[InventoryFlush]) -> Result<u64, sqlx::Error> {
    let mut c = Columns::default();
    let (
        mut l_sku,
        mut l_loc,
        mut l_on_hand,
        mut l_reserved,
        mut l_safety,
        mut l_avail,
        mut l_snap,
        mut l_ver,
        mut l_at,
    ) = (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut a_sku, mut a_channel, mut a_ats, mut a_ver, mut a_at) = (vec![], vec![], vec![], vec![], vec![]);
    for row in batch.iter().flat_map(|f| f.effects.states.values()) {
        c.sku.push(row.sku.to_string());
        c.version.push(i64_of(row.version));
        c.applied_offset.push(row.applied_offset);
        c.state.push(row.state_json.get().to_owned());
        c.updated_at_ms.push(row.updated_at_ms);
        for l in &row.levels {
            l_sku.push(row.sku.to_string());
            l_loc.push(l.location.to_string());
            l_on_hand.push(l.on_hand);
            l_reserved.push(l.reserved);
            l_safety.push(l.safety_stock);
            l_avail.push(l.available);
            l_snap.push(i64_of(l.snapshot_version));
            l_ver.push(i64_of(row.version));
            l_at.push(row.updated_at_ms);
        }
        for a in &row.availability {
            a_sku.push(row.sku.to_string());
            a_channel.push(a.channel.to_string());
            a_ats.push(a.available_to_sell);
            a_ver.push(i64_of(row.version));
            a_at.push(row.updated_at_ms);
        }
    }
    let mut statements = 0;
    if !c.sku.is_empty() {
        sqlx::query(
            "INSERT INTO inventory_sku (sku, version, applied_offset, state, updated_at_ms)
             SELECT s, v, o, j::jsonb, t FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[])
                 AS x(s, v, o, j, t)
             ON CONFLICT (sku) DO UPDATE SET
                 version = excluded.version, applied_offset = excluded.applied_offset,
                 state = excluded.state, updated_at_ms = excluded.updated_at_ms
             WHERE (inventory_sku.version, inventory_sku.applied_offset) < (excluded.version, excluded.applied_offset)",
        )
        .bind(&c.sku)
        .bind(&c.version)
        .bind(&c.applied_offset)
        .bind(&c.state)
        .bind(&c.updated_at_ms)
        .execute(&mut **tx)
        .await?;
        statements += 1;
    }
    if !l_sku.is_empty() {
        sqlx::query(
            "INSERT INTO stock_levels
                 (sku, location, on_hand, reserved, safety_stock, available, snapshot_version, version, updated_at_ms)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                                  $7::bigint[], $8::bigint[], $9::bigint[])
             ON CONFLICT (sku, location) DO UPDATE SET
                 on_hand = excluded.on_hand, reserved = excluded.reserved, safety_stock = excluded.safety_stock,
                 available = excluded.available, snapshot_version = excluded.snapshot_version,
                 version = excluded.version, updated_at_ms = excluded.updated_at_ms
             WHERE stock_levels.version < excluded.version",
        )
        .bind(&l_sku)
        .bind(&l_loc)
        .bind(&l_on_hand)
        .bind(&l_reserved)
        .bind(&l_safety)
        .bind(&l_avail)
        .bind(&l_snap)
        .bind(&l_ver)
        .bind(&l_at)
        .execute(&mut **tx)
        .await?;
        statements += 1;
    }
    if !a_sku.is_empty() {
        sqlx::query(
            "INSERT INTO channel_availability (sku, channel, available_to_sell, version, updated_at_ms)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
             ON CONFLICT (sku, channel) DO UPDATE SET
                 available_to_sell = excluded.available_to_sell, version = excluded.version,
                 updated_at_ms = excluded.updated_at_ms
             WHERE channel_availability.version < excluded.version",
        )
        .bind(&a_sku)
        .bind(&a_channel)
        .bind(&a_ats)
        .bind(&a_ver)
        .bind(&a_at)
        .execute(&mut **tx)
        .await?;
        statements += 1;
    }
    Ok(statements)
}

/// The audit rows as column arrays for `unnest`.
#[derive(Default)]
struct AuditColumns {
    sku: Vec<String>,
    location: Vec<Option<String>>,
    version: Vec<i64>,
    event_type: Vec<String>,
    source: Vec<String>,
    id: Vec<String>,
    outcome: Vec<String>,
    detail: Vec<Option<String>>,
    topic: Vec<String>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    delta: Vec<i64>,
    on_hand: Vec<i64>,
    reserved: Vec<i64>,
    available: Vec<i64>,
    time: Vec<i64>,
    digest: Vec<Option<i64>>,
}

/// What the audit insert does with an event whose row is already there.
#[derive(Clone, Copy)]
enum Duplicates {
    /// Fail on the unique index: the common case costs one index descent per row, not two.
    Fail,
    /// `ON CONFLICT DO NOTHING`: the retry of a flush that met one.
    Skip,
}

/// The unique index on the audit rows' event keys (migration 1).
const AUDIT_EVENT_INDEX: &str = "inventory_audit_by_event";

fn is_duplicate_audit_row(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.code().as_deref() == Some("23505") && db.constraint() == Some(AUDIT_EVENT_INDEX))
}

async fn insert_applied(
    tx: &mut Transaction<'_, Postgres>,
    applied: &[(&ProcessedEvent, &tally_inventory::AuditEntry)],
    duplicates: Duplicates,
) -> Result<u64, sqlx::Error> {
    if applied.is_empty() {
        return Ok(0);
    }
    let mut c = AuditColumns::default();
    for &(p, a) in applied {
        c.sku.push(a.sku.to_string());
        c.location.push(a.location.as_ref().map(ToString::to_string));
        c.version.push(i64_of(a.version));
        c.event_type.push(a.event_type.clone());
        c.source.push(p.key.source.clone());
        c.id.push(p.key.id.clone());
        c.outcome.push(a.outcome.clone());
        c.detail.push(p.outcome.as_ref().map(|o| o.json().to_owned()));
        c.topic.push(p.topic.clone());
        c.partition.push(i32::try_from(p.partition).unwrap_or(i32::MAX));
        c.offset.push(i64_of(p.offset));
        c.delta.push(a.on_hand_delta);
        c.on_hand.push(a.on_hand);
        c.reserved.push(a.reserved);
        c.available.push(a.available);
        c.time.push(a.event_time_ms);
        c.digest.push(p.digest);
    }
    // `ON CONFLICT` makes PostgreSQL look each row up in the unique index before inserting it
    // (a speculative insertion): ~15 % of PostgreSQL's CPU per event in the Kafka benchmark.
    // A duplicate row is rare — an event applied again from beyond the idempotency window, or
    // a flush retried after its commit was lost — so the first attempt inserts plainly and a
    // flush that meets one is redone skipping it.
    let on_conflict = match duplicates {
        Duplicates::Fail => "",
        Duplicates::Skip => "ON CONFLICT (event_source, event_id) DO NOTHING",
    };
    sqlx::query(&format!(
        "INSERT INTO inventory_audit (sku, location, version, event_type, event_source, event_id, outcome,
             outcome_detail, topic, partition, \"offset\", on_hand_delta, on_hand, reserved, available,
             event_time_ms, recorded_at_ms, event_digest)
         SELECT s, l, v, ty, src, i, o, d::jsonb, tp, p, off, dl, oh, r, a, et, $17, dg
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::int[], $11::bigint[], $12::bigint[], $13::bigint[],
                     $14::bigint[], $15::bigint[], $16::bigint[], $18::bigint[])
             AS x(s, l, v, ty, src, i, o, d, tp, p, off, dl, oh, r, a, et, dg)
         {on_conflict}"
    ))
    .bind(&c.sku)
    .bind(&c.location)
    .bind(&c.version)
    .bind(&c.event_type)
    .bind(&c.source)
    .bind(&c.id)
    .bind(&c.outcome)
    .bind(&c.detail)
    .bind(&c.topic)
    .bind(&c.partition)
    .bind(&c.offset)
    .bind(&c.delta)
    .bind(&c.on_hand)
    .bind(&c.reserved)
    .bind(&c.available)
    .bind(&c.time)
    .bind(tally_core::now_ms())
    .bind(&c.digest)
    .execute(&mut **tx)
    .await?;
    Ok(1)
}

async fn store_offsets<E>(tx: &mut Transaction<'_, Postgres>, batch: &[Flush<E>]) -> Result<u64, sqlx::Error> {
    let offsets: Vec<&crate::ConsumerOffset> = batch.iter().flat_map(|f| &f.offsets).collect();
    if offsets.is_empty() {
        return Ok(0);
    }
    let group: Vec<&str> = offsets.iter().map(|o| o.group.as_str()).collect();
    let topic: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
    let partition: Vec<i32> = offsets.iter().map(|o| i32::try_from(o.partition).unwrap_or(i32::MAX)).collect();
    let next: Vec<i64> = offsets.iter().map(|o| i64_of(o.next_offset)).collect();
    sqlx::query(
        "INSERT INTO consumer_offsets (grp, topic, partition, next_offset)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[])
         ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset
         WHERE consumer_offsets.next_offset < excluded.next_offset",
    )
    .bind(&group)
    .bind(&topic)
    .bind(&partition)
    .bind(&next)
    .execute(&mut **tx)
    .await?;
    Ok(1)
}

fn processed_of(row: &sqlx::postgres::PgRow, key: Option<EventKey>) -> Result<ProcessedEvent, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt { what: "audit row", detail: e.to_string() };
    let key = match key {
        Some(k) => k,
        None => {
            EventKey { source: row.try_get("event_source").map_err(get)?, id: row.try_get("event_id").map_err(get)? }
        }
    };
    let partition: i32 = row.try_get("partition").map_err(get)?;
    let offset: i64 = row.try_get("offset").map_err(get)?;
    decode_processed(
        row.try_get("topic").map_err(get)?,
        u32::try_from(partition).unwrap_or_default(),
        key.source,
        key.id,
        u64::try_from(offset).unwrap_or_default(),
        row.try_get("outcome_detail").map_err(get)?,
        row.try_get("event_digest").map_err(get)?,
    )
}

/// The inventory store's idempotency records are its audit rows.
const INVENTORY_RECORDS: RecordTable = RecordTable { name: "inventory_audit", subsystem: None };

impl PostgresStore {
    /// Idempotency records of a partition in `from..to` from `table`.
    async fn records_between(
        &self,
        table: RecordTable,
        topic: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<ProcessedEvent>, StoreError> {
        let during = "reading idempotency records by offset";
        let mut tx = self.pool.begin().await.map_err(backend(during))?;
        // The planner picks the BRIN index only once it has statistics on the offsets; on a
        // table that grew since the last ANALYZE (any busy one) it scanned the whole table
        // instead — 50 ms instead of 7 for a 700-row window in the benchmark's 490k rows.
        // A window read is always a narrow offset range, so the index is always the way.
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.map_err(backend(during))?;
        let rows = sqlx::query(&format!(
            "SELECT event_source, event_id, topic, partition, \"offset\", outcome_detail::text AS outcome_detail,
                    event_digest
             FROM {}
             WHERE topic = $1 AND partition = $2 AND \"offset\" >= $3 AND \"offset\" < $4{} ORDER BY \"offset\"",
            table.name,
            table.scope()
        ))
        .bind(topic)
        .bind(i32::try_from(partition).unwrap_or(i32::MAX))
        .bind(i64_of(from))
        .bind(i64_of(to))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend(during))?;
        tx.commit().await.map_err(backend(during))?;
        self.count(4); // BEGIN, SET, SELECT, COMMIT
        rows.iter().map(|r| processed_of(r, None)).collect()
    }

    /// The idempotency records of those of `keys` in `table`.
    async fn records_of(&self, table: RecordTable, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.count(1);
        let (sources, ids): (Vec<String>, Vec<String>) = keys.into_iter().map(|k| (k.source, k.id)).unzip();
        let rows = sqlx::query(&format!(
            "SELECT event_source, event_id, topic, partition, \"offset\", outcome_detail::text AS outcome_detail,
                    event_digest
             FROM {}
             WHERE (event_source, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[])){}",
            table.name,
            table.scope()
        ))
        .bind(&sources)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(backend("reading idempotency records by key"))?;
        rows.iter().map(|r| processed_of(r, None)).collect()
    }
}

impl Ledger for PostgresStore {
    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let during = "applying migrations";
        let mut conn = self.pool.acquire().await.map_err(backend(during))?;
        migrations::apply(&mut conn).await.map_err(backend(during))
    }

    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let during = "reading the schema version";
        let mut conn = self.pool.acquire().await.map_err(backend(during))?;
        migrations::pending(&mut conn).await.map_err(backend(during))
    }

    async fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        self.count(1);
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT next_offset FROM consumer_offsets WHERE grp = $1 AND topic = $2 AND partition = $3",
        )
        .bind(group)
        .bind(topic)
        .bind(i32::try_from(partition).unwrap_or(i32::MAX))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend("reading a committed offset"))?;
        Ok(next.map(|n| u64::try_from(n).unwrap_or_default()))
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
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(backend("answering a ping")).map(drop)
    }

    fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}

impl Journal<InventoryEffects> for PostgresStore {
    async fn flush(&self, batch: &[InventoryFlush]) -> Result<(), StoreError> {
        if all_empty(batch) {
            return Ok(());
        }
        let during = "flushing inventory states, audit rows and offsets";
        match self.flush_once(batch, Duplicates::Fail).await {
            Err(e) if is_duplicate_audit_row(&e) => {
                self.count(3); // BEGIN, the failed insert, ROLLBACK
                tracing::debug!("a flush met an audit row already stored; redoing it skipping duplicates");
                self.flush_once(batch, Duplicates::Skip).await.map_err(backend(during))
            }
            other => other.map_err(backend(during)),
        }
    }
}

impl InventoryStore for PostgresStore {
    async fn load_states(&self, skus: Vec<Sku>) -> Result<Vec<SkuState>, StoreError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = skus.iter().map(Sku::as_str).collect();
        self.count(1);
        let rows: Vec<String> = sqlx::query_scalar("SELECT state::text FROM inventory_sku WHERE sku = ANY($1)")
            .bind(&keys)
            .fetch_all(&self.pool)
            .await
            .map_err(backend("loading SKU states"))?;
        rows.iter().map(|s| decode_json("inventory state", s)).collect()
    }

    async fn audit(&self, sku: Sku, limit: u32, before: Option<i64>) -> Result<Vec<AuditRecord>, StoreError> {
        self.count(1);
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT json_build_object('seq', id, 'sku', sku, 'location', location, 'version', version,
                 'event_type', event_type, 'event_source', event_source, 'event_id', event_id,
                 'outcome', outcome, 'on_hand_delta', on_hand_delta, 'on_hand', on_hand,
                 'reserved', reserved, 'available', available, 'event_time_ms', event_time_ms)::text
             FROM inventory_audit WHERE sku = $1 AND id < $3 ORDER BY id DESC LIMIT $2",
        )
        .bind(sku.as_str())
        .bind(i64::from(limit))
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend("reading the audit trail"))?;
        rows.iter().map(|s| decode_json("audit row", s)).collect()
    }
}

/// Creates an empty database named `<prefix>_<unique suffix>` on the server of `admin_url`
/// (a URL naming any database the user may connect to) and returns the new database's URL.
pub async fn create_database(admin_url: &str, prefix: &str) -> Result<String, StoreError> {
    use sqlx::Connection;
    // The clock alone is not unique: tests in one process create databases concurrently, and
    // two once got the same timestamp. A process-wide sequence number separates them.
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let during = "creating a database";
    let mut conn = sqlx::PgConnection::connect(admin_url).await.map_err(backend(during))?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.map_err(backend(during))?;
    let (base, _) = admin_url
        .rsplit_once('/')
        .ok_or_else(|| StoreError::Corrupt { what: "PostgreSQL URL", detail: "it names no database".into() })?;
    Ok(format!("{base}/{name}"))
}

/// What the server itself counted for one database, from `pg_stat_statements` (which must be
/// in `shared_preload_libraries`): for benchmarks, independent of tally's own counter.
pub mod server_stats {
    use sqlx::Connection;

    use super::{StoreError, backend};

    /// Creates the extension in the database of `url` and zeroes its counters.
    pub async fn reset(url: &str) -> Result<(), StoreError> {
        let during = "resetting pg_stat_statements";
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(backend(during))?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut conn)
            .await
            .map_err(backend(during))?;
        sqlx::query("SELECT pg_stat_statements_reset()").execute(&mut conn).await.map_err(backend(during))?;
        Ok(())
    }

    /// Statements executed and rows they returned or wrote in the database of `url` since the
    /// last reset (this query and the reset excluded).
    pub async fn statements_and_rows(url: &str) -> Result<(u64, u64), StoreError> {
        let during = "reading pg_stat_statements";
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(backend(during))?;
        let (calls, rows): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT sum(calls)::bigint, sum(rows)::bigint FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT ILIKE '%pg_stat_statements%'",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(backend(during))?;
        let n = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
        Ok((n(calls), n(rows)))
    }
}

/// Throwaway databases for tests: one per test, on the server `scripts/test.sh` starts.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    /// The admin URL of the test server (`TEST_TALLY_POSTGRES_URL`); tests that need it fail
    /// rather than skip without it.
    pub fn server_url() -> String {
        std::env::var("TEST_TALLY_POSTGRES_URL")
            .expect("TEST_TALLY_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    }

    /// Creates an empty database with a unique name and returns its URL.
    pub async fn fresh_database() -> String {
        create_database(&server_url(), "tally_test").await.expect("create a test database")
    }

    /// A store on a fresh database.
    pub async fn store() -> PostgresStore {
        PostgresStore::connect(&PostgresStoreOptions {
            url: fresh_database().await,
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        })
        .expect("pool")
    }
}

#[cfg(test)]
mod tests;
