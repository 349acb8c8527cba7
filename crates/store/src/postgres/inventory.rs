//! Inventory's tables on PostgreSQL: the latest state per SKU, its per-location and
//! per-channel read-model rows, and the audit trail whose rows are inventory's idempotency
//! records. Every write of a flush is one set-based statement per table.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};
use tally_core::Sku;
use tally_inventory::SkuState;

use super::{PostgresStore, backend, i64_of, store_offsets};
use crate::inventory::{InventoryEffects, InventoryFlush, all_empty, applied_rows};
use crate::ledger::{Journal, ProcessedEvent, RecordTable};
use crate::{AuditRecord, InventoryStore, StoreError, decode_json};

impl PostgresStore {
    /// One flush in one transaction. Unlike SQLite, PostgreSQL has no single writer to keep
    /// free, so one transaction holds everything: the stronger form of the trait's contract.
    async fn flush_once(
        &self,
        batch: &[InventoryFlush],
        applied: &[(&ProcessedEvent, &tally_inventory::AuditEntry)],
        duplicates: Duplicates,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut n = 2; // BEGIN + COMMIT
        n += insert_applied(&mut tx, applied, duplicates).await?;
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
pub(super) async fn summarise_audit_offsets(pool: PgPool, alive: std::sync::Weak<AtomicU64>) {
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

/// The inventory store's idempotency records are its audit rows.
const INVENTORY_RECORDS: RecordTable = RecordTable { name: "inventory_audit", subsystem: None };

crate::ledger::impl_ledger!(PostgresStore, |store| store, INVENTORY_RECORDS);

impl Journal<InventoryEffects> for PostgresStore {
    async fn flush(&self, batch: &[InventoryFlush]) -> Result<(), StoreError> {
        if all_empty(batch) {
            return Ok(());
        }
        let during = "flushing inventory states, audit rows and offsets";
        // A flush whose records and audit rows do not pair up is a bug no retry can fix.
        let applied = applied_rows(batch)?;
        match self.flush_once(batch, &applied, Duplicates::Fail).await {
            Err(e) if is_duplicate_audit_row(&e) => {
                self.count(3); // BEGIN, the failed insert, ROLLBACK
                tracing::debug!("a flush met an audit row already stored; redoing it skipping duplicates");
                self.flush_once(batch, &applied, Duplicates::Skip).await.map_err(backend(during))
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
