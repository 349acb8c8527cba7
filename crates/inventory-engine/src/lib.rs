//! The inventory sync engine: inventory's [`handler`] on the shared consumer runtime
//! (`tally-runtime`), the records it publishes, its metrics, and the reads the HTTP API serves
//! from the hot aggregate. The rules themselves live in `tally-inventory`; the machinery that
//! makes them exactly-once (ordered partition workers, resume, dedupe, publish-before-commit,
//! batched flushes, drain, supervision) in the runtime.

use std::collections::HashMap;
use std::sync::Arc;

use tally_bus::Bus;
use tally_cache::Cache;
use tally_config::InventoryConfig;
use tally_core::Sku;
use tally_inventory::{ChannelRules, Outcome, SkuState};
use tally_runtime::{ConsumerMetrics, ConsumerSpec, FlushSettings, Health, OutputTopic, PublishHook, Waiters};
use tally_store::InventoryStore;
use tokio_util::sync::CancellationToken;

pub mod handler;
pub mod metrics;
pub mod records;

pub use handler::InventoryHandler;
pub use metrics::{EngineStats, InventoryMetrics};

/// What became of an event an HTTP caller waits on.
pub type Resolution = tally_runtime::Resolution<Outcome>;

pub use tally_runtime::EngineError;

/// The consumer engine type of inventory.
pub type Consumer<B, S, C> = tally_runtime::Engine<B, S, C, InventoryHandler<S, C>>;

/// Everything the engine's tasks and the HTTP API share. Generic over the three backends;
/// which ones run is decided by configuration in the server's wiring, never here.
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
    pub waiters: Arc<Waiters<Outcome>>,
    /// Counters for demo and bench.
    pub stats: Arc<EngineStats>,
    /// Readiness of the consumer.
    pub health: Arc<Health>,
    spec: Arc<ConsumerSpec>,
    metrics: Arc<InventoryMetrics>,
    consumer_metrics: Arc<ConsumerMetrics>,
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
            health: self.health.clone(),
            spec: self.spec.clone(),
            metrics: self.metrics.clone(),
            consumer_metrics: self.consumer_metrics.clone(),
        }
    }
}

/// The channel rules of `cfg.channels` (configuration → the domain's rules).
pub fn channel_rules(cfg: &InventoryConfig) -> ChannelRules {
    ChannelRules::new(cfg.channels.iter().map(|c| tally_inventory::ChannelRule {
        id: c.id.clone(),
        locations: c.locations.clone(),
        share_percent: c.share_percent,
        cap: c.cap,
        buffer: c.buffer,
    }))
}

/// Cache key of a SKU's aggregate.
pub fn cache_key(sku: &Sku) -> String {
    format!("inv:sku:{sku}")
}

/// The runtime's settings for inventory's consumer.
fn spec(cfg: &InventoryConfig) -> ConsumerSpec {
    ConsumerSpec {
        subsystem: "inventory",
        group: cfg.consumer_group.clone(),
        topics: vec![cfg.topics.events.clone()],
        outputs: vec![
            // The order is handler::AVAILABILITY, handler::OUTCOMES.
            OutputTopic { name: cfg.topics.availability.clone(), latest_per_key: true },
            OutputTopic { name: cfg.topics.outcomes.clone(), latest_per_key: false },
        ],
        cache_prefix: "inv".into(),
        poll_max_records: cfg.poll_max_records,
        dedupe_window: cfg.dedupe_window,
        flush: FlushSettings {
            group: cfg.consumer_group.clone(),
            interval: std::time::Duration::from_millis(cfg.flush_interval_ms),
            max_rows: cfg.flush_max_rows,
            parallelism: cfg.flush_parallelism,
        },
    }
}

impl<B: Bus, S: InventoryStore, C: Cache> InventoryEngine<B, S, C> {
    /// The engine over these backends. Build it once the metrics recorder is installed (its
    /// metric handles are taken here).
    pub fn new(bus: B, store: S, cache: C, cfg: InventoryConfig, health: Arc<Health>) -> Self {
        let cfg = Arc::new(cfg);
        let rules = Arc::new(channel_rules(&cfg));
        let stats = Arc::new(EngineStats::default());
        let metrics = Arc::new(InventoryMetrics::new(stats.clone()));
        let consumer_metrics =
            Arc::new(ConsumerMetrics::new("inventory", stats.consumer.clone()).with_outcomes(&Outcome::CODES));
        Self {
            bus,
            store,
            cache,
            rules,
            spec: Arc::new(spec(&cfg)),
            cfg,
            waiters: Arc::default(),
            stats,
            health,
            metrics,
            consumer_metrics,
        }
    }

    /// The consumer on the shared runtime, with inventory's handler.
    pub fn consumer(&self) -> Consumer<B, S, C> {
        let hook: PublishHook = {
            let metrics = self.metrics.clone();
            Arc::new(move |p: &tally_runtime::Published<'_>| {
                let messages = p.records.get(handler::AVAILABILITY.0).copied().unwrap_or(0);
                metrics.availability_published(messages, p.event_times_us, p.published_us);
            })
        };
        let factory = {
            let (store, cache, rules) = (self.store.clone(), self.cache.clone(), self.rules.clone());
            let (cfg, metrics) = (self.cfg.clone(), self.metrics.clone());
            Arc::new(move |_topic: &str, _partition: u32| {
                InventoryHandler::new(store.clone(), cache.clone(), rules.clone(), cfg.clone(), metrics.clone())
            })
        };
        tally_runtime::Engine::new(
            self.bus.clone(),
            self.store.clone(),
            self.cache.clone(),
            self.spec.clone(),
            self.waiters.clone(),
            self.consumer_metrics.clone(),
            self.health.clone(),
            Some(hook),
            factory,
        )
    }

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
        Ok(self.consumer().create_topics(partitions).await?)
    }

    /// Runs the consumer until `shutdown`, supervised: a failure restarts it with backoff while
    /// `/readyz` reports it.
    pub async fn run(self, shutdown: CancellationToken) {
        self.consumer().supervise(shutdown).await;
    }
}
