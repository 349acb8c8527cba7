//! The fraud scoring service on the shared consumer runtime (`docs/fraud.md`): the
//! [`handler`] that decides each transaction, model [`cards`] (schema, thresholds, drift
//! reference, trees), version [`flags`], the [`quality`] watch, the [`records`] it stores and
//! publishes, its [`metrics`]; [`FraudEngine`] is what the consumer's tasks and the HTTP API
//! share. The domain rules live in `tally-fraud`, the model protocol in `tally-model`, the
//! exactly-once machinery in `tally-runtime`.

use std::sync::Arc;
use std::time::Duration;

use tally_bus::Bus;
use tally_cache::Cache;
use tally_config::FraudConfig;
use tally_fraud::HardRules;
use tally_model::ModelClient;
use tally_runtime::{ConsumerMetrics, ConsumerSpec, FlushSettings, Health, OutputTopic, PublishHook, Waiters};
use tally_store::ledger::{DocumentStore, claim_version};
use tokio_util::sync::CancellationToken;

pub mod cards;
pub mod flags;
pub mod handler;
pub mod metrics;
pub mod quality;
pub mod records;
pub mod scores;

pub use cards::{Card, Cards};
pub use flags::{Flags, FlagsView};
pub use handler::{FraudEvent, FraudHandler};
pub use metrics::{FraudMetrics, FraudStats};
pub use quality::{Quality, VersionQuality};
pub use records::{DecisionRecord, FraudOutcome};

/// How often the quality report is exported as gauges (it costs a sort per version).
const QUALITY_EXPORT_EVERY: Duration = Duration::from_secs(5);

/// The consumer engine type of fraud.
pub type Consumer<B, S, C> = tally_runtime::Engine<B, S, C, FraudHandler<S, C>>;

pub use tally_runtime::EngineError;

/// Why flags were not set.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    /// The flags are not valid (an unknown version, a bad percentage).
    #[error("{0}")]
    Invalid(String),
    /// Another writer set the flags at the same time and its revision won; nothing was changed
    /// by this call. Read the flags and try again.
    #[error(
        "the flags were changed by another writer at the same time (revision {revision} is in force); read them and try again"
    )]
    Conflict {
        /// The revision in force.
        revision: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Everything the fraud consumer's tasks and the HTTP API share.
pub struct FraudEngine<B, S, C> {
    /// Event bus.
    pub bus: B,
    /// Store (fraud's documents).
    pub store: S,
    /// Cache.
    pub cache: C,
    /// Settings.
    pub cfg: Arc<FraudConfig>,
    /// Callers waiting on a transaction's decision.
    pub waiters: Arc<Waiters<FraudOutcome>>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Counters for demo and bench.
    pub stats: Arc<FraudStats>,
    /// The consumer runtime's counters.
    pub consumer_stats: Arc<tally_runtime::ConsumerStats>,
    /// Version flags in force.
    pub flags: Arc<FlagsView>,
    /// Quality per version.
    pub quality: Arc<Quality>,
    /// The model client.
    pub client: Arc<ModelClient>,
    shared: Arc<handler::Shared<S, C>>,
    spec: Arc<ConsumerSpec>,
    consumer_metrics: Arc<ConsumerMetrics>,
}

impl<B: Clone, S: Clone, C: Clone> Clone for FraudEngine<B, S, C> {
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            store: self.store.clone(),
            cache: self.cache.clone(),
            cfg: self.cfg.clone(),
            waiters: self.waiters.clone(),
            health: self.health.clone(),
            stats: self.stats.clone(),
            consumer_stats: self.consumer_stats.clone(),
            flags: self.flags.clone(),
            quality: self.quality.clone(),
            client: self.client.clone(),
            shared: self.shared.clone(),
            spec: self.spec.clone(),
            consumer_metrics: self.consumer_metrics.clone(),
        }
    }
}

fn spec(cfg: &FraudConfig) -> ConsumerSpec {
    ConsumerSpec {
        subsystem: "fraud",
        group: cfg.consumer_group.clone(),
        topics: vec![cfg.topics.transactions.clone(), cfg.topics.profiles.clone(), cfg.topics.labels.clone()],
        outputs: vec![OutputTopic { name: cfg.topics.decisions.clone(), latest_per_key: false }],
        cache_prefix: "fraud".into(),
        poll_max_records: cfg.poll_max_records,
        dedupe_window: cfg.dedupe_window,
        flush: FlushSettings {
            group: cfg.consumer_group.clone(),
            interval: Duration::from_millis(cfg.flush_interval_ms),
            max_rows: cfg.flush_max_rows,
            parallelism: 2,
        },
    }
}

/// The hard rules of the configuration.
pub fn hard_rules(cfg: &tally_config::FraudRules) -> HardRules {
    HardRules {
        allow_accounts: cfg.allow_accounts.iter().cloned().collect(),
        deny_accounts: cfg.deny_accounts.iter().cloned().collect(),
        deny_devices: cfg.deny_devices.iter().cloned().collect(),
        deny_cards: cfg.deny_cards.iter().cloned().collect(),
        review_above_amount: cfg.review_above_amount,
        decline_above_amount: cfg.decline_above_amount,
        max_per_hour: cfg.max_per_hour,
    }
}

impl<B: Bus, S: DocumentStore, C: Cache> FraudEngine<B, S, C> {
    /// The engine over these backends and this model client. Build it once the metrics
    /// recorder is installed.
    pub fn new(bus: B, store: S, cache: C, cfg: FraudConfig, client: Arc<ModelClient>, health: Arc<Health>) -> Self {
        let cfg = Arc::new(cfg);
        let stats = Arc::new(FraudStats::default());
        let metrics = Arc::new(FraudMetrics::new(stats.clone()));
        let consumer_stats = Arc::new(tally_runtime::ConsumerStats::default());
        let consumer_metrics =
            Arc::new(ConsumerMetrics::new("fraud", consumer_stats.clone()).with_outcomes(&FraudOutcome::CODES));
        let flags = Arc::new(FlagsView::new(Flags::active(&cfg.default_version)));
        let quality = Arc::new(Quality::new(cfg.quality_window));
        let shared = Arc::new(handler::Shared {
            store: store.clone(),
            cache: cache.clone(),
            cards: Arc::new(Cards::new(&cfg.models)),
            client: client.clone(),
            flags: flags.clone(),
            rules: Arc::new(hard_rules(&cfg.rules)),
            quality: quality.clone(),
            metrics,
            decision_ttl: Duration::from_secs(cfg.decision_ttl_seconds),
            scores: scores::ScoreCache::new(Duration::from_secs(cfg.score_ttl_seconds)),
        });
        Self {
            bus,
            store,
            cache,
            spec: Arc::new(spec(&cfg)),
            cfg,
            waiters: Arc::default(),
            health,
            stats,
            consumer_stats,
            flags,
            quality,
            client,
            shared,
            consumer_metrics,
        }
    }

    /// The consumer on the shared runtime, with fraud's handler.
    pub fn consumer(&self) -> Consumer<B, S, C> {
        let hook: PublishHook = {
            let metrics = self.shared.metrics.clone();
            Arc::new(move |p: &tally_runtime::Published<'_>| metrics.published(p.event_times_us, p.published_us))
        };
        let shared = self.shared.clone();
        let factory = Arc::new(move |_topic: &str, partition: u32| FraudHandler::new(shared.clone(), partition));
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

    /// Creates the engine's topics.
    pub async fn create_topics(&self, partitions: u32) -> Result<(), EngineError> {
        Ok(self.consumer().create_topics(partitions).await?)
    }

    /// Reads the flags from the store now; whether they changed.
    pub async fn refresh_flags(&self) -> Result<bool, EngineError> {
        let stored = self.store.documents(vec![records::FLAGS_DOC.to_owned()]).await?;
        Ok(match stored.into_iter().next().and_then(|(_, _, body)| serde_json::from_str::<Flags>(&body).ok()) {
            Some(flags) => self.flags.offer(flags),
            None => false,
        })
    }

    /// Stores new flags (a revision above the one in force); every instance applies them
    /// within `flags_poll_ms`.
    pub async fn set_flags(&self, mut flags: Flags) -> Result<Flags, FlagsError> {
        flags.validate().map_err(FlagsError::Invalid)?;
        for version in [Some(&flags.active), flags.shadow.as_ref(), flags.canary.as_ref()].into_iter().flatten() {
            self.shared.cards.get(version).map_err(|e| FlagsError::Invalid(e.to_string()))?;
        }
        self.refresh_flags().await?;
        flags.revision = self.flags.get().revision + 1;
        let body = serde_json::to_string(&flags).unwrap_or_default();
        // Two writers that read the same revision both write the next one: the revision is
        // claimed, and only the writer whose claim stands changed anything.
        let won = claim_version(&self.store, records::FLAGS_DOC, flags.revision, body, |stored| {
            serde_json::from_str::<Flags>(stored).is_ok_and(|s| s == flags)
        })
        .await
        .map_err(EngineError::from)?;
        if won {
            self.flags.offer(flags.clone());
            return Ok(flags);
        }
        self.refresh_flags().await?;
        Err(FlagsError::Conflict { revision: self.flags.get().revision })
    }

    /// A transaction's decision: the cache, then the store.
    pub async fn decision(&self, transaction: &str) -> Result<Option<DecisionRecord>, EngineError> {
        if let Ok(mut v) = self.cache.get_many(&[records::decision_key(transaction)]).await
            && let Some(Some(bytes)) = v.pop()
            && let Ok(record) = serde_json::from_slice(&bytes)
        {
            return Ok(Some(record));
        }
        let rows = self.store.appended(records::transaction_rows(transaction)).await?;
        Ok(rows
            .into_iter()
            .find(|(id, _)| id.starts_with("decision/"))
            .and_then(|(_, body)| serde_json::from_str(&body).ok()))
    }

    /// Re-reads the flags every `flags_poll_ms` until `shutdown`.
    pub async fn watch_flags(self, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.cfg.flags_poll_ms);
        loop {
            match self.refresh_flags().await {
                Ok(true) => tracing::info!(flags = ?self.flags.get(), "fraud flags changed"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "reading the fraud flags failed; keeping the ones in force"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Exports the quality report as gauges every few seconds until `shutdown`.
    async fn export_quality(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(QUALITY_EXPORT_EVERY) => {}
            }
            self.shared.metrics.quality(&self.quality.report());
        }
    }

    /// Runs the consumer, the flag watcher and the quality export until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let watcher = tokio::spawn(self.clone().watch_flags(shutdown.clone()));
        let quality = tokio::spawn(self.clone().export_quality(shutdown.clone()));
        self.consumer().supervise(shutdown).await;
        let _ = watcher.await;
        let _ = quality.await;
    }
}
