//! The flush batcher shared by every partition worker: it coalesces what the workers hand
//! over (the latest state per SKU wins) for up to `flush_interval_ms` or `flush_max_rows`,
//! writes it with the consumer positions in one store transaction, retries until the store
//! accepts it, and only then tells each worker how far it may commit on the bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tally_config::InventoryConfig;
use tally_core::Sku;
use tally_store::{AppliedEvent, ConsumerOffset, FlushBatch, InventoryStore, StateRow};
use tokio::sync::mpsc;

use super::EngineStats;
use crate::metrics::inventory as m;

/// What one worker hands over after applying a poll's worth of records.
pub struct FlushPart {
    /// Topic of the partition.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Latest state of each SKU changed.
    pub rows: Vec<StateRow>,
    /// Events applied (audit rows and idempotency records).
    pub applied: Vec<AppliedEvent>,
    /// Every record before this offset is applied.
    pub next_offset: u64,
    /// Flush now (a draining worker).
    pub urgent: bool,
    /// Where to report the durable offset.
    pub ack: mpsc::UnboundedSender<u64>,
}

#[derive(Default)]
struct Pending {
    rows: HashMap<Sku, StateRow>,
    applied: Vec<AppliedEvent>,
    offsets: HashMap<(String, u32), (u64, mpsc::UnboundedSender<u64>)>,
    urgent: bool,
}

impl Pending {
    fn add(&mut self, part: FlushPart) {
        for row in part.rows {
            match self.rows.remove(&row.sku) {
                Some(existing) => {
                    let merged = merge_rows(existing, row);
                    self.rows.insert(merged.sku.clone(), merged);
                }
                None => {
                    self.rows.insert(row.sku.clone(), row);
                }
            }
        }
        self.applied.extend(part.applied);
        let entry = self.offsets.entry((part.topic, part.partition)).or_insert((part.next_offset, part.ack.clone()));
        entry.0 = entry.0.max(part.next_offset);
        entry.1 = part.ack;
        self.urgent |= part.urgent;
    }
}

/// Coalesces two rows of one SKU: the newer state wins, and since workers send only the
/// read-model rows that changed, the older row's levels and availability survive unless the
/// newer row has its own for the same location or channel.
fn merge_rows(a: StateRow, b: StateRow) -> StateRow {
    let (older, mut newer) = if a.version > b.version { (b, a) } else { (a, b) };
    for level in older.levels {
        if !newer.levels.iter().any(|l| l.location == level.location) {
            newer.levels.push(level);
        }
    }
    for ats in older.availability {
        if !newer.availability.iter().any(|x| x.channel == ats.channel) {
            newer.availability.push(ats);
        }
    }
    newer
}

/// Runs until every worker has dropped its sender, flushing what remains.
pub async fn run<S: InventoryStore>(
    store: S,
    cfg: Arc<InventoryConfig>,
    stats: Arc<EngineStats>,
    mut rx: mpsc::Receiver<FlushPart>,
) {
    let interval = Duration::from_millis(cfg.flush_interval_ms);
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + interval;
        let mut pending = Pending::default();
        pending.add(first);
        while !pending.urgent && pending.rows.len() + pending.applied.len() < cfg.flush_max_rows {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(part)) => pending.add(part),
                Ok(None) | Err(_) => break,
            }
        }
        flush(&store, &cfg.consumer_group, &stats, pending).await;
    }
}

async fn flush<S: InventoryStore>(store: &S, group: &str, stats: &EngineStats, pending: Pending) {
    let rows = pending.rows.len() as u64;
    let batch = FlushBatch {
        states: pending.rows.into_values().collect(),
        applied: pending.applied,
        offsets: pending
            .offsets
            .iter()
            .map(|((topic, partition), (next, _))| ConsumerOffset {
                group: group.to_owned(),
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next,
            })
            .collect(),
    };
    let mut backoff = Duration::from_millis(50);
    let before = store.statements();
    loop {
        let started = Instant::now();
        match store.flush(&batch).await {
            Ok(()) => {
                metrics::histogram!(m::FLUSH_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::counter!(m::FLUSHES_TOTAL, "result" => "ok").increment(1);
                break;
            }
            Err(e) => {
                // Nothing is lost: the workers keep their offsets uncommitted until this succeeds,
                // and back-pressure slows consumption meanwhile.
                metrics::counter!(m::FLUSHES_TOTAL, "result" => "error").increment(1);
                tracing::error!(error = %e, rows, retry_in_ms = backoff.as_millis() as u64, "store flush failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    metrics::histogram!(m::FLUSH_ROWS).record(rows as f64);
    metrics::counter!(m::STORE_STATEMENTS_TOTAL).increment(store.statements().saturating_sub(before));
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    stats.flushed_rows.fetch_add(rows, Ordering::Relaxed);
    for (next, ack) in pending.offsets.into_values() {
        let _ = ack.send(next);
    }
}
