//! The inventory sync engine's runtime: one ordered worker per assigned partition applies
//! events to its SKUs' aggregates, makes each change visible (cache + `inventory.availability`)
//! at once, and hands the latest state per SKU to a shared batcher that flushes it to the store
//! with the consumer positions in one transaction. Only then is the bus offset committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tally_bus::{Assignment, Bus, Consumer, PartitionReader};
use tally_cache::Cache;
use tally_config::InventoryConfig;
use tally_core::Sku;
use tally_inventory::{ChannelRules, SkuState};
use tally_store::InventoryStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub mod batcher;
pub mod dedupe;
pub mod publisher;
pub mod records;
pub mod waiters;
pub mod window;
pub mod worker;

pub use waiters::{Resolution, Waiters};

/// Errors that stop the engine (everything transient is retried inside).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bus failed in a way that was not retried.
    #[error("bus: {0}")]
    Bus(#[from] tally_bus::BusError),
    /// The store failed in a way that was not retried.
    #[error("store: {0}")]
    Store(#[from] tally_store::StoreError),
}

/// Counters and latency histograms of one engine, for `tally demo` and `tally bench`
/// (the same facts also go to Prometheus through [`crate::metrics`]).
pub struct EngineStats {
    /// Events applied (any outcome).
    pub applied: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Redeliveries skipped by the per-key watermark.
    pub replays_skipped: AtomicU64,
    /// Stale snapshots ignored.
    pub stale_snapshots: AtomicU64,
    /// Adjustments already covered by a snapshot.
    pub covered_adjustments: AtomicU64,
    /// Reservations accepted.
    pub reservations_accepted: AtomicU64,
    /// Reservations rejected.
    pub reservations_rejected: AtomicU64,
    /// Compare-and-set adjustments refused.
    pub cas_mismatches: AtomicU64,
    /// Records dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Availability messages published.
    pub availability_published: AtomicU64,
    /// Reservations expired.
    pub reservations_expired: AtomicU64,
    /// Store flushes.
    pub flushes: AtomicU64,
    /// SKU rows flushed.
    pub flushed_rows: AtomicU64,
    /// Event time → readable, in microseconds.
    pub visible_latency_us: std::sync::Mutex<Histogram<u64>>,
    /// Event time → availability published, in microseconds.
    pub desync_latency_us: std::sync::Mutex<Histogram<u64>>,
}

impl Default for EngineStats {
    fn default() -> Self {
        let hist = || {
            Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!("static bounds are valid"))
        };
        Self {
            applied: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            replays_skipped: AtomicU64::new(0),
            stale_snapshots: AtomicU64::new(0),
            covered_adjustments: AtomicU64::new(0),
            reservations_accepted: AtomicU64::new(0),
            reservations_rejected: AtomicU64::new(0),
            cas_mismatches: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            availability_published: AtomicU64::new(0),
            reservations_expired: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flushed_rows: AtomicU64::new(0),
            visible_latency_us: std::sync::Mutex::new(hist()),
            desync_latency_us: std::sync::Mutex::new(hist()),
        }
    }
}

impl EngineStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Events the engine has finished with: applied, duplicates, replays and dead letters.
    pub fn handled(&self) -> u64 {
        Self::get(&self.applied) + Self::get(&self.duplicates) + Self::get(&self.dead_lettered)
    }
}

/// Everything the engine's tasks share. Generic over the three backends; which ones run is
/// decided by configuration in [`crate::app`], never here.
pub struct InventoryEngine<B, S, C> {
    /// Event bus.
    pub bus: B,
    /// State store.
    pub store: S,
    /// Hot-aggregate cache.
    pub cache: C,
    /// Channel rules.
    pub rules: Arc<ChannelRules>,
    /// Engine settings.
    pub cfg: Arc<InventoryConfig>,
    /// Pending synchronous requests.
    pub waiters: Arc<Waiters>,
    /// Counters for demo and bench.
    pub stats: Arc<EngineStats>,
}

impl<B: Clone, S: Clone, C: Clone> Clone for InventoryEngine<B, S, C> {
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            store: self.store.clone(),
            cache: self.cache.clone(),
            rules: self.rules.clone(),
            cfg: self.cfg.clone(),
            waiters: self.waiters.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// Wall-clock time in microseconds since the epoch (event times are wall-clock too).
fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// Cache key of a SKU's aggregate.
pub fn cache_key(sku: &Sku) -> String {
    format!("inv:sku:{sku}")
}

impl<B: Bus, S: InventoryStore, C: Cache> InventoryEngine<B, S, C> {
    /// Current states of `skus`: the hot aggregate first, the store for misses. SKUs never
    /// seen are omitted.
    pub async fn read_states(&self, skus: &[Sku]) -> Result<HashMap<Sku, SkuState>, EngineError> {
        let keys: Vec<String> = skus.iter().map(cache_key).collect();
        let mut found = HashMap::new();
        match self.cache.get_many(&keys).await {
            Ok(values) => {
                for (sku, value) in skus.iter().zip(values) {
                    if let Some(state) = value.and_then(|v| serde_json::from_slice::<SkuState>(&v).ok()) {
                        found.insert(sku.clone(), state);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cache read failed; reading the store"),
        }
        let missing: Vec<Sku> = skus.iter().filter(|s| !found.contains_key(*s)).cloned().collect();
        if !missing.is_empty() {
            for state in self.store.load_states(missing).await? {
                found.insert(state.sku.clone(), state);
            }
        }
        Ok(found)
    }

    /// Creates the engine's topics (input, outputs and dead letters).
    pub async fn create_topics(&self, partitions: u32) -> Result<(), EngineError> {
        let t = &self.cfg.topics;
        for topic in [&t.events, &t.availability, &t.outcomes, &format!("{}.dlq", t.events)] {
            self.bus.create_topic(topic, partitions).await?;
        }
        Ok(())
    }

    /// Runs the consumer until `shutdown`: spawns a worker per assigned partition, drains a
    /// worker before its partition is released, and drains all of them on shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EngineError> {
        let (flush_tx, flush_rx) = mpsc::channel(8);
        let batcher = tokio::spawn(batcher::run(self.store.clone(), self.cfg.clone(), self.stats.clone(), flush_rx));
        let mut consumer = self.bus.subscribe(&self.cfg.consumer_group, &self.cfg.topics.events).await?;
        let mut workers: HashMap<u32, (CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                change = consumer.next_assignment() => match change {
                    Ok(Assignment::Assigned(parts)) => {
                        for reader in parts {
                            let partition = reader.partition();
                            let cancel = shutdown.child_token();
                            let worker = worker::PartitionWorker::new(self.clone(), flush_tx.clone());
                            let handle = tokio::spawn(worker.run(reader, cancel.clone()));
                            tracing::info!(partition, "partition assigned; worker started");
                            workers.insert(partition, (cancel, handle));
                        }
                    }
                    Ok(Assignment::Revoked(parts)) => {
                        for partition in parts {
                            if let Some((cancel, handle)) = workers.remove(&partition) {
                                cancel.cancel();
                                let _ = handle.await;
                                tracing::info!(partition, "partition revoked; worker drained");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
            }
        }
        for (_, (cancel, handle)) in workers.drain() {
            cancel.cancel();
            let _ = handle.await;
        }
        drop(flush_tx);
        let _ = batcher.await;
        tracing::info!("inventory engine stopped after draining every partition");
        Ok(())
    }
}
