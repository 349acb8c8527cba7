//! The flush batcher shared by every partition worker: it coalesces what the workers hand
//! over (the latest state per SKU wins) for up to `flush_interval_ms` or `flush_max_rows`,
//! writes it with the consumer positions in one store transaction, retries until the store
//! accepts it, and only then tells each worker how far it may commit on the bus.
//!
//! Partitions are disjoint in SKUs and offsets, so a flush of some partitions is complete on
//! its own. Under light load one transaction per interval carries every partition (few
//! statements per event). When the store is the bottleneck, up to `flush_parallelism`
//! transactions run at once, each for its own partitions, and a partition whose flush just
//! finished starts the next one while others are still writing; PostgreSQL then works on
//! several cores. One partition is never in two flushes at once, so its effects and offsets
//! land in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tally_config::InventoryConfig;
use tally_core::Sku;
use tally_store::{AppliedEvent, ConsumerOffset, FlushBatch, InventoryStore, StateRow};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

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

type PartitionKey = (String, u32);

/// What is pending for one partition.
struct PartitionPending {
    rows: HashMap<Sku, StateRow>,
    applied: Vec<AppliedEvent>,
    next_offset: u64,
    ack: mpsc::UnboundedSender<u64>,
    /// When the oldest of it arrived.
    since: tokio::time::Instant,
    urgent: bool,
}

impl PartitionPending {
    fn new(part: &FlushPart) -> Self {
        Self {
            rows: HashMap::new(),
            applied: Vec::new(),
            next_offset: part.next_offset,
            ack: part.ack.clone(),
            since: tokio::time::Instant::now(),
            urgent: false,
        }
    }

    fn add(&mut self, part: FlushPart) {
        for row in part.rows {
            let row = match self.rows.remove(&row.sku) {
                Some(existing) => merge_rows(existing, row),
                None => row,
            };
            self.rows.insert(row.sku.clone(), row);
        }
        self.applied.extend(part.applied);
        self.next_offset = self.next_offset.max(part.next_offset);
        self.ack = part.ack;
        self.urgent |= part.urgent;
    }

    fn size(&self) -> usize {
        self.rows.len() + self.applied.len()
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
    let group: Arc<str> = cfg.consumer_group.as_str().into();
    let mut pending: HashMap<PartitionKey, PartitionPending> = HashMap::new();
    let mut flushing: HashMap<tokio::task::Id, Vec<PartitionKey>> = HashMap::new();
    let mut flushes = JoinSet::new();
    let mut open = true;
    let mut statements = store.statements();
    loop {
        let busy: HashSet<&PartitionKey> = flushing.values().flatten().collect();
        let ready: Vec<PartitionKey> = pending.keys().filter(|k| !busy.contains(k)).cloned().collect();
        let size: usize = ready.iter().map(|k| pending[k].size()).sum();
        let oldest = ready.iter().map(|k| pending[k].since).min();
        let slots = cfg.flush_parallelism.saturating_sub(flushes.len());
        let due = !open
            || size >= cfg.flush_max_rows
            || oldest.is_some_and(|t| t.elapsed() >= interval)
            || ready.iter().any(|k| pending[k].urgent);
        if !ready.is_empty() && slots > 0 && due {
            // A large flush means the store is behind: spread it over the free slots.
            let lanes = if size >= cfg.flush_max_rows / 2 { slots.min(ready.len()) } else { 1 };
            let mut groups: Vec<Vec<(PartitionKey, PartitionPending)>> = (0..lanes).map(|_| Vec::new()).collect();
            for (i, key) in ready.into_iter().enumerate() {
                if let Some(p) = pending.remove(&key) {
                    groups[i % lanes].push((key, p));
                }
            }
            for partitions in groups {
                let keys = partitions.iter().map(|(k, _)| k.clone()).collect();
                let task = flushes.spawn(flush(store.clone(), group.clone(), stats.clone(), partitions));
                flushing.insert(task.id(), keys);
            }
            continue;
        }
        if !open && pending.is_empty() && flushes.is_empty() {
            break;
        }
        let wake = oldest.filter(|_| slots > 0).map(|t| t + interval);
        // Back-pressure: past this, workers wait (their outboxes fill) until flushes catch up.
        let full = pending.values().map(PartitionPending::size).sum::<usize>() >= 2 * cfg.flush_max_rows;
        tokio::select! {
            part = rx.recv(), if open && !full => match part {
                Some(part) => {
                    let key = (part.topic.clone(), part.partition);
                    pending.entry(key).or_insert_with(|| PartitionPending::new(&part)).add(part);
                }
                None => open = false,
            },
            Some(done) = flushes.join_next_with_id(), if !flushes.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        // Its partitions stay unacknowledged: their workers replay after a restart.
                        tracing::error!(error = %e, "a store flush task failed");
                        e.id()
                    }
                };
                flushing.remove(&id);
                let now = store.statements();
                metrics::counter!(m::STORE_STATEMENTS_TOTAL).increment(now.saturating_sub(statements));
                statements = now;
            },
            () = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {},
        }
    }
}

async fn flush<S: InventoryStore>(
    store: S,
    group: Arc<str>,
    stats: Arc<EngineStats>,
    partitions: Vec<(PartitionKey, PartitionPending)>,
) {
    let mut batch = FlushBatch { states: Vec::new(), applied: Vec::new(), offsets: Vec::new() };
    let mut acks = Vec::with_capacity(partitions.len());
    for ((topic, partition), pending) in partitions {
        batch.states.extend(pending.rows.into_values());
        batch.applied.extend(pending.applied);
        batch.offsets.push(ConsumerOffset {
            group: group.to_string(),
            topic,
            partition,
            next_offset: pending.next_offset,
        });
        acks.push((pending.next_offset, pending.ack));
    }
    let rows = batch.states.len() as u64;
    let mut backoff = Duration::from_millis(50);
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
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    stats.flushed_rows.fetch_add(rows, Ordering::Relaxed);
    for (next, ack) in acks {
        let _ = ack.send(next);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tally_core::EventKey;
    use tally_inventory::SkuState;
    use tally_store::{ProcessedEvent, SqliteStore, SqliteStoreOptions, StoreError};

    use super::*;

    /// The real SQLite store, slowed down and watched: which partitions are being flushed at
    /// any moment, and the most flushes seen at once.
    #[derive(Clone)]
    struct Watched {
        store: SqliteStore,
        in_flight: Arc<Mutex<Vec<u32>>>,
        overlaps: Arc<Mutex<Vec<u32>>>,
        most_at_once: Arc<std::sync::atomic::AtomicUsize>,
        flushes_at_once: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl InventoryStore for Watched {
        async fn migrate(&self) -> Result<Vec<String>, StoreError> {
            self.store.migrate().await
        }
        async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
            self.store.pending_migrations().await
        }
        async fn load_states(&self, skus: Vec<Sku>) -> Result<Vec<SkuState>, StoreError> {
            self.store.load_states(skus).await
        }
        async fn flush(&self, batch: &FlushBatch) -> Result<(), StoreError> {
            let partitions: Vec<u32> = batch.offsets.iter().map(|o| o.partition).collect();
            {
                let mut in_flight = self.in_flight.lock().expect("lock");
                let mut overlaps = self.overlaps.lock().expect("lock");
                overlaps.extend(partitions.iter().filter(|p| in_flight.contains(p)));
                in_flight.extend(&partitions);
            }
            let now = self.flushes_at_once.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let result = self.store.flush(batch).await;
            self.flushes_at_once.fetch_sub(1, Ordering::SeqCst);
            self.in_flight.lock().expect("lock").retain(|p| !partitions.contains(p));
            result
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
            self.store.processed_between(topic, partition, from, to).await
        }
        async fn processed_many(&self, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
            self.store.processed_many(keys).await
        }
        async fn audit(
            &self,
            sku: Sku,
            limit: u32,
            before: Option<i64>,
        ) -> Result<Vec<tally_store::AuditRecord>, StoreError> {
            self.store.audit(sku, limit, before).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.store.ping().await
        }
        fn statements(&self) -> u64 {
            self.store.statements()
        }
    }

    fn part(partition: u32, round: u64, ack: &mpsc::UnboundedSender<u64>) -> FlushPart {
        let rows = (0..50)
            .map(|i| {
                let mut state = SkuState::new(Sku::parse(format!("P{partition}-{i}")).expect("sku"));
                state.version = round;
                state.applied_offset = (round * 100) as i64;
                StateRow::new(&state, None, Vec::new())
            })
            .collect();
        FlushPart {
            topic: "events".into(),
            partition,
            rows,
            applied: Vec::new(),
            next_offset: (round + 1) * 100,
            urgent: false,
            ack: ack.clone(),
        }
    }

    async fn migrated_store(dir: &tempfile::TempDir) -> SqliteStore {
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(SqliteStoreOptions { path, durability: tally_sqlite::Durability::Normal })
            .expect("store");
        store.migrate().await.expect("migrate");
        store
    }

    #[tokio::test]
    async fn a_store_that_falls_behind_gets_parallel_flushes_but_never_one_partition_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = migrated_store(&dir).await;
        let watched = Watched {
            store: store.clone(),
            in_flight: Arc::default(),
            overlaps: Arc::default(),
            most_at_once: Arc::default(),
            flushes_at_once: Arc::default(),
        };
        let cfg = InventoryConfig { flush_max_rows: 100, flush_parallelism: 4, ..InventoryConfig::default() };
        let (tx, rx) = mpsc::channel(8);
        let batcher = tokio::spawn(run(watched.clone(), Arc::new(cfg.clone()), Arc::default(), rx));
        let mut acks = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..4 {
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            senders.push(ack_tx);
            acks.push(ack_rx);
        }
        // Every partition sends 20 large parts as fast as the batcher takes them.
        for round in 0..20 {
            for (partition, ack) in senders.iter().enumerate() {
                tx.send(part(partition as u32, round, ack)).await.expect("send");
            }
        }
        drop(tx);
        batcher.await.expect("batcher");

        assert!(watched.overlaps.lock().expect("lock").is_empty(), "a partition was in two flushes at once");
        assert!(watched.most_at_once.load(Ordering::SeqCst) > 1, "the flushes never ran in parallel");
        for (partition, mut ack) in acks.into_iter().enumerate() {
            let mut last = 0;
            while let Ok(next) = ack.try_recv() {
                assert!(next > last, "partition {partition}: ack {next} after {last}");
                last = next;
            }
            assert_eq!(last, 2000, "partition {partition} was not acknowledged to its end");
            let stored = store.committed_offset(&cfg.consumer_group, "events", partition as u32).await.expect("offset");
            assert_eq!(stored, Some(2000));
        }
        let states = store.load_states(vec![Sku::parse("P3-49").expect("sku")]).await.expect("load");
        assert_eq!(states[0].version, 19, "the newest state of a SKU landed last");
    }

    #[tokio::test]
    async fn light_load_is_one_flush_for_every_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = migrated_store(&dir).await;
        let cfg = InventoryConfig { flush_max_rows: 1000, flush_parallelism: 4, ..InventoryConfig::default() };
        let stats = Arc::new(EngineStats::default());
        let (tx, rx) = mpsc::channel(8);
        let batcher = tokio::spawn(run(store.clone(), Arc::new(cfg), stats.clone(), rx));
        let (ack, _acks) = mpsc::unbounded_channel();
        for partition in 0..4 {
            tx.send(part(partition, 1, &ack)).await.expect("send");
        }
        drop(tx);
        batcher.await.expect("batcher");
        assert_eq!(EngineStats::get(&stats.flushes), 1, "200 rows over 4 partitions are one transaction");
    }
}
