//! Inventory's tables on SQLite: the latest state per SKU, its per-location and per-channel
//! read-model rows, and the audit trail whose rows are inventory's idempotency records.

use tally_core::Sku;
use tally_inventory::SkuState;
use tally_sqlite::Table;
use tally_sqlite::rusqlite::params;
use tally_sqlite::rusqlite::types::Value as SqlValue;

use super::{OFFSETS_TABLE, SqliteStore, int, offset_rows, text};
use crate::inventory::{InventoryEffects, InventoryFlush, all_empty, applied_rows};
use crate::ledger::{Journal, RecordTable};
use crate::{AuditRecord, InventoryStore, StoreError, decode_json};

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

/// The inventory store's idempotency records are its audit rows.
const INVENTORY_RECORDS: RecordTable = RecordTable { name: "inventory_audit", subsystem: None };

crate::ledger::impl_ledger!(SqliteStore, |store| store, INVENTORY_RECORDS);

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
            self.write_tables("writing audit rows", [(&AUDIT_TABLE, audit)]).await?;
        }
        let tables =
            [(&SKU_TABLE, skus), (&LEVELS_TABLE, levels), (&AVAILABILITY_TABLE, ats), (&OFFSETS_TABLE, offsets)];
        self.write_tables("writing states and offsets", tables).await
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
