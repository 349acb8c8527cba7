//! The SQLite store: the embedded mode's durable state, in the same file as the embedded log.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::value::RawValue;
use tally_core::{EventKey, Sku};
use tally_inventory::{AuditEntry, SkuState};
use tally_sqlite::rusqlite::{self, OptionalExtension, params};
use tally_sqlite::{Durability, Pool, StatementCounter};

use crate::{FlushBatch, InventoryStore, ProcessedEvent, StoreError};

mod migrations;

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    /// The SQLite file.
    pub path: PathBuf,
    /// fsync policy.
    pub durability: Durability,
}

/// The SQLite store; cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<rusqlite::Connection>,
    readers: Pool,
    statements: StatementCounter,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens the file (migrations are applied by [`InventoryStore::migrate`]).
    pub fn open(opts: SqliteStoreOptions) -> Result<Self, StoreError> {
        let writer = tally_sqlite::open(&opts.path, opts.durability).map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers: Pool::new(&opts.path, opts.durability),
                statements: StatementCounter::default(),
            }),
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection, &StatementCounter) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn, &inner.statements)
        })
        .await
        .map_err(backend)?
        .map_err(backend)
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.statements.add(1);
            inner.readers.with(f)
        })
        .await
        .map_err(backend)?
        .map_err(backend)
    }
}

// One statement per table per batch: rows travel as one JSON array and `json_each` turns it
// into a relation, SQLite's counterpart of PostgreSQL's `unnest`. The row is replaced only when
// the incoming (version, applied_offset) is newer: a late or replayed flush never wins.
const UPSERT_SKU: &str = "
INSERT INTO inventory_sku (sku, version, applied_offset, state, updated_at_ms)
SELECT j.value->>'sku', j.value->>'version', j.value->>'applied_offset', j.value->'state', j.value->>'updated_at_ms'
FROM json_each(?1) AS j WHERE true
ON CONFLICT (sku) DO UPDATE SET
    version = excluded.version, applied_offset = excluded.applied_offset,
    state = excluded.state, updated_at_ms = excluded.updated_at_ms
WHERE (inventory_sku.version, inventory_sku.applied_offset) < (excluded.version, excluded.applied_offset)";

const UPSERT_LEVELS: &str = "
INSERT INTO stock_levels (sku, location, on_hand, reserved, safety_stock, available, snapshot_version, version, updated_at_ms)
SELECT j.value->>'sku', j.value->>'location', j.value->>'on_hand', j.value->>'reserved', j.value->>'safety_stock',
       j.value->>'available', j.value->>'snapshot_version', j.value->>'version', j.value->>'updated_at_ms'
FROM json_each(?1) AS j WHERE true
ON CONFLICT (sku, location) DO UPDATE SET
    on_hand = excluded.on_hand, reserved = excluded.reserved, safety_stock = excluded.safety_stock,
    available = excluded.available, snapshot_version = excluded.snapshot_version,
    version = excluded.version, updated_at_ms = excluded.updated_at_ms
WHERE stock_levels.version < excluded.version";

const UPSERT_AVAILABILITY: &str = "
INSERT INTO channel_availability (sku, channel, available_to_sell, version, updated_at_ms)
SELECT j.value->>'sku', j.value->>'channel', j.value->>'ats', j.value->>'version', j.value->>'updated_at_ms'
FROM json_each(?1) AS j WHERE true
ON CONFLICT (sku, channel) DO UPDATE SET
    available_to_sell = excluded.available_to_sell, version = excluded.version, updated_at_ms = excluded.updated_at_ms
WHERE channel_availability.version < excluded.version";

const INSERT_AUDIT: &str = "
INSERT INTO inventory_audit (sku, location, version, event_type, event_source, event_id, outcome,
                             on_hand_delta, on_hand, reserved, available, event_time_ms, recorded_at_ms)
SELECT j.value->>'sku', j.value->>'location', j.value->>'version', j.value->>'event_type', j.value->>'event_source',
       j.value->>'event_id', j.value->>'outcome', j.value->>'on_hand_delta', j.value->>'on_hand',
       j.value->>'reserved', j.value->>'available', j.value->>'event_time_ms', ?2
FROM json_each(?1) AS j WHERE true
ON CONFLICT (event_source, event_id) DO NOTHING";

const INSERT_PROCESSED: &str = "
INSERT INTO processed_events (source, id, topic, partition, offset, outcome, recorded_at_ms)
SELECT j.value->>'source', j.value->>'id', j.value->>'topic', j.value->>'partition', j.value->>'offset',
       j.value->'outcome', ?2
FROM json_each(?1) AS j WHERE true
ON CONFLICT (source, id) DO NOTHING";

const UPSERT_OFFSETS: &str = "
INSERT INTO consumer_offsets (grp, topic, partition, next_offset)
SELECT j.value->>'group', j.value->>'topic', j.value->>'partition', j.value->>'next_offset'
FROM json_each(?1) AS j WHERE true
ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset
WHERE consumer_offsets.next_offset < excluded.next_offset";

// Rows are serialised straight from borrowed, typed structs into one JSON text per table:
// no intermediate `serde_json::Value` trees, and the aggregate's JSON is embedded verbatim.
#[derive(Serialize)]
struct SkuRowOut<'a> {
    sku: &'a str,
    version: u64,
    applied_offset: i64,
    state: &'a RawValue,
    updated_at_ms: i64,
}

#[derive(Serialize)]
struct LevelRowOut<'a> {
    sku: &'a str,
    location: &'a str,
    on_hand: i64,
    reserved: i64,
    safety_stock: i64,
    available: i64,
    snapshot_version: u64,
    version: u64,
    updated_at_ms: i64,
}

#[derive(Serialize)]
struct AtsRowOut<'a> {
    sku: &'a str,
    channel: &'a str,
    ats: i64,
    version: u64,
    updated_at_ms: i64,
}

#[derive(Serialize)]
struct ProcessedRowOut<'a> {
    source: &'a str,
    id: &'a str,
    topic: &'a str,
    partition: u32,
    offset: u64,
    outcome: Option<&'a tally_inventory::Outcome>,
}

fn to_json<T: Serialize>(rows: &[T]) -> String {
    // Plain structs of strings and integers: serialising cannot fail.
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".to_owned())
}

fn flush_params(batch: &FlushBatch) -> [String; 6] {
    let mut skus = Vec::with_capacity(batch.states.len());
    let mut levels = Vec::with_capacity(batch.states.len() * 2);
    let mut ats = Vec::with_capacity(batch.states.len() * 3);
    for row in &batch.states {
        let sku = row.sku.as_str();
        skus.push(SkuRowOut {
            sku,
            version: row.version,
            applied_offset: row.applied_offset,
            state: &row.state_json,
            updated_at_ms: row.updated_at_ms,
        });
        for l in &row.levels {
            levels.push(LevelRowOut {
                sku,
                location: l.location.as_str(),
                on_hand: l.on_hand,
                reserved: l.reserved,
                safety_stock: l.safety_stock,
                available: l.available,
                snapshot_version: l.snapshot_version,
                version: row.version,
                updated_at_ms: row.updated_at_ms,
            });
        }
        for a in &row.availability {
            ats.push(AtsRowOut {
                sku,
                channel: a.channel.as_str(),
                ats: a.available_to_sell,
                version: row.version,
                updated_at_ms: row.updated_at_ms,
            });
        }
    }
    let processed: Vec<_> = batch
        .processed
        .iter()
        .map(|p| ProcessedRowOut {
            source: &p.key.source,
            id: &p.key.id,
            topic: &p.topic,
            partition: p.partition,
            offset: p.offset,
            outcome: p.outcome.as_ref(),
        })
        .collect();
    [
        to_json(&skus),
        to_json(&levels),
        to_json(&ats),
        to_json(&batch.audit),
        to_json(&processed),
        to_json(&batch.offsets),
    ]
}

impl InventoryStore for SqliteStore {
    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.write(|conn, _| migrations::apply(conn)).await
    }

    async fn load_states(&self, skus: Vec<Sku>) -> Result<Vec<SkuState>, StoreError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let keys = serde_json::to_string(&skus).map_err(backend)?;
        let raw = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT s.state FROM inventory_sku AS s JOIN json_each(?1) AS j ON s.sku = j.value",
                )?;
                let rows = stmt.query_map([keys], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        raw.iter()
            .map(|s| {
                serde_json::from_str(s)
                    .map_err(|e| StoreError::Corrupt { what: "inventory state", detail: e.to_string() })
            })
            .collect()
    }

    async fn flush(&self, batch: FlushBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let [skus, levels, ats, audit, processed, offsets] = flush_params(&batch);
        self.write(move |conn, counter| {
            let now = tally_core::now_ms();
            let tx = conn.transaction()?;
            let mut n = 2; // BEGIN + COMMIT
            let mut run = |sql: &str, rows: &str, with_now: bool| -> rusqlite::Result<()> {
                if rows == "[]" {
                    return Ok(());
                }
                let mut stmt = tx.prepare_cached(sql)?;
                if with_now {
                    stmt.execute(params![rows, now])?;
                } else {
                    stmt.execute([rows])?;
                }
                n += 1;
                Ok(())
            };
            run(UPSERT_SKU, &skus, false)?;
            run(UPSERT_LEVELS, &levels, false)?;
            run(UPSERT_AVAILABILITY, &ats, false)?;
            run(INSERT_AUDIT, &audit, true)?;
            run(INSERT_PROCESSED, &processed, true)?;
            run(UPSERT_OFFSETS, &offsets, false)?;
            tx.commit()?;
            counter.add(n);
            Ok(())
        })
        .await
    }

    async fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.read(move |c| {
            c.query_row(
                "SELECT next_offset FROM consumer_offsets WHERE grp = ?1 AND topic = ?2 AND partition = ?3",
                params![group, topic, partition],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn processed_since(&self, topic: &str, partition: u32, from: u64) -> Result<Vec<ProcessedEvent>, StoreError> {
        let topic = topic.to_owned();
        let rows = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT source, id, offset, outcome FROM processed_events \
                     WHERE topic = ?1 AND partition = ?2 AND offset >= ?3 ORDER BY offset",
                )?;
                let rows = stmt.query_map(params![topic, partition, from], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })?;
                rows.map(|r| r.map(|(s, i, o, out)| (topic.clone(), s, i, o, out))).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        rows.into_iter()
            .map(|(topic, source, id, offset, outcome)| decode_processed(topic, partition, source, id, offset, outcome))
            .collect()
    }

    async fn processed(&self, key: EventKey) -> Result<Option<ProcessedEvent>, StoreError> {
        let row = self
            .read(move |c| {
                c.query_row(
                    "SELECT topic, partition, offset, outcome FROM processed_events WHERE source = ?1 AND id = ?2",
                    params![key.source, key.id],
                    |r| {
                        Ok((
                            key.clone(),
                            r.get::<_, String>(0)?,
                            r.get::<_, u32>(1)?,
                            r.get::<_, u64>(2)?,
                            r.get::<_, Option<String>>(3)?,
                        ))
                    },
                )
                .optional()
            })
            .await?;
        row.map(|(key, topic, partition, offset, outcome)| {
            decode_processed(topic, partition, key.source, key.id, offset, outcome)
        })
        .transpose()
    }

    async fn prune_processed(&self, topic: &str, partition: u32, below: u64) -> Result<u64, StoreError> {
        let topic = topic.to_owned();
        self.write(move |c, counter| {
            counter.add(1);
            c.execute(
                "DELETE FROM processed_events WHERE topic = ?1 AND partition = ?2 AND offset < ?3",
                params![topic, partition, below],
            )
            .map(|n| n as u64)
        })
        .await
    }

    async fn audit(&self, sku: Sku, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let raw = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT json_object('sku', sku, 'location', location, 'version', version, 'event_type', event_type,
                        'event_source', event_source, 'event_id', event_id, 'outcome', outcome,
                        'on_hand_delta', on_hand_delta, 'on_hand', on_hand, 'reserved', reserved,
                        'available', available, 'event_time_ms', event_time_ms)
                     FROM inventory_audit WHERE sku = ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![sku.as_str(), limit], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .await?;
        raw.iter()
            .map(|s| {
                serde_json::from_str(s).map_err(|e| StoreError::Corrupt { what: "audit row", detail: e.to_string() })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    fn statements(&self) -> u64 {
        self.inner.statements.get()
    }
}

fn decode_processed(
    topic: String,
    partition: u32,
    source: String,
    id: String,
    offset: u64,
    outcome: Option<String>,
) -> Result<ProcessedEvent, StoreError> {
    let outcome = match outcome.as_deref() {
        None | Some("null") => None,
        Some(raw) => Some(
            serde_json::from_str(raw)
                .map_err(|e| StoreError::Corrupt { what: "event outcome", detail: e.to_string() })?,
        ),
    };
    Ok(ProcessedEvent { key: EventKey { source, id }, topic, partition, offset, outcome })
}

#[cfg(test)]
mod tests;
