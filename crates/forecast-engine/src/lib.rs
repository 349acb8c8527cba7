//! Demand forecasting on the shared consumer runtime (`docs/forecast.md`): the [`handler`]
//! that stages sales, supplies and returns (parking what lacks reference data), the
//! [`parking`] sweep that releases it, the [`references`] every partition enriches from, the
//! series [`touched`] since their last forecast, the [`metrics`]. [`ForecastEngine`] is what
//! the consumer's tasks and the HTTP API share. The domain lives in `tally-forecast`, the
//! exactly-once machinery in `tally-runtime`.

use std::sync::Arc;
use std::time::Duration;

use tally_bus::Bus;
use tally_cache::Cache;
use tally_config::ForecastConfig;
use tally_forecast::reference::{LocationInfo, SkuInfo};
use tally_runtime::{ConsumerMetrics, ConsumerSpec, FlushSettings, Health, Waiters};
use tally_store::demand::DemandStore;
use tally_store::ledger::{DocumentStore, claim_version};
use tokio_util::sync::CancellationToken;

pub mod export;
pub mod flags;
pub mod handler;
pub mod import;
pub mod metrics;
pub mod model;
pub mod ownership;
pub mod parking;
pub mod records;
pub mod references;
pub mod refresh;
pub mod stock;
pub mod touched;

pub use flags::{FlagsError, FlagsView, ForecastFlags};
pub use handler::{DemandHandler, DemandOutcome};
pub use metrics::{ForecastMetrics, ForecastStats};
pub use model::DemandModel;
pub use parking::Swept;
pub use records::{ForecastRecord, RunKind, RunSummary};
pub use references::References;
pub use stock::{FixedStock, NoStock, StockPort};
pub use tally_runtime::EngineError;
pub use touched::Touched;

/// How often every instance re-reads the model version flags.
const FLAGS_POLL: Duration = Duration::from_secs(1);

/// How often the event table's partitions ahead are checked.
const PARTITION_UPKEEP_EVERY: Duration = Duration::from_secs(6 * 3600);

/// The consumer engine type of forecasting.
pub type Consumer<B, S, C> = tally_runtime::Engine<B, S, C, DemandHandler<S>>;

/// The consumer engine type of the exporter.
pub type ExportConsumer<B, S, C> = tally_runtime::Engine<B, S, C, export::ExportHandler<S>>;

/// The exporter's destinations and consumer settings.
struct ExportParts {
    exporter: Arc<export::Exporter>,
    spec: Arc<ConsumerSpec>,
    metrics: Arc<ConsumerMetrics>,
    waiters: Arc<Waiters<export::ExportOutcome>>,
}

/// Everything the forecast consumer's tasks and the HTTP API share.
pub struct ForecastEngine<B, S, C> {
    /// Event bus.
    pub bus: B,
    /// Store (demand's tables and forecasting's documents).
    pub store: S,
    /// Where refreshes read series from: a read replica when one is configured, else `store`.
    pub reads: S,
    /// Cache.
    pub cache: C,
    /// Settings.
    pub cfg: Arc<ForecastConfig>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Counters for demo and bench.
    pub stats: Arc<ForecastStats>,
    /// The consumer runtime's counters.
    pub consumer_stats: Arc<tally_runtime::ConsumerStats>,
    /// Reference data.
    pub references: Arc<References>,
    /// Series waiting for a refresh.
    pub touched: Arc<Touched>,
    /// The demand model.
    pub model: DemandModel,
    /// Stock on hand (the inventory port).
    pub stock: Arc<dyn StockPort>,
    /// Partitions of the sales topic this instance owns.
    pub ownership: Arc<ownership::Ownership>,
    /// This instance's name in run shares and ids.
    pub instance: String,
    /// The model version flags in force.
    pub flags: Arc<FlagsView>,
    metrics: Arc<ForecastMetrics>,
    shared: Arc<handler::Shared<S>>,
    waiters: Arc<Waiters<DemandOutcome>>,
    spec: Arc<ConsumerSpec>,
    consumer_metrics: Arc<ConsumerMetrics>,
    unpark_now: Arc<tokio::sync::Notify>,
    export: Option<Arc<ExportParts>>,
}

impl<B: Clone, S: Clone, C: Clone> Clone for ForecastEngine<B, S, C> {
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            store: self.store.clone(),
            reads: self.reads.clone(),
            cache: self.cache.clone(),
            cfg: self.cfg.clone(),
            health: self.health.clone(),
            stats: self.stats.clone(),
            consumer_stats: self.consumer_stats.clone(),
            references: self.references.clone(),
            touched: self.touched.clone(),
            model: self.model.clone(),
            stock: self.stock.clone(),
            ownership: self.ownership.clone(),
            instance: self.instance.clone(),
            flags: self.flags.clone(),
            metrics: self.metrics.clone(),
            shared: self.shared.clone(),
            waiters: self.waiters.clone(),
            spec: self.spec.clone(),
            consumer_metrics: self.consumer_metrics.clone(),
            unpark_now: self.unpark_now.clone(),
            export: self.export.clone(),
        }
    }
}

fn export_spec(cfg: &ForecastConfig) -> ConsumerSpec {
    let group = cfg.export.consumer_group.clone();
    ConsumerSpec {
        subsystem: metrics::EXPORT_SUBSYSTEM,
        group: group.clone(),
        topics: vec![cfg.topics.ready.clone()],
        outputs: Vec::new(),
        cache_prefix: "forecast-export".into(),
        // A run is thousands of rows: a few runs per poll.
        poll_max_records: 16,
        dedupe_window: 10_000,
        flush: FlushSettings { group, interval: Duration::from_millis(100), max_rows: 1_000, parallelism: 1 },
    }
}

fn export_parts(cfg: &ForecastConfig) -> Option<Arc<ExportParts>> {
    let exporter = match export::Exporter::new(&cfg.export, &cfg.quantiles) {
        Ok(e) => e?,
        Err(e) => {
            tracing::error!(error = %e, "the forecast exporter cannot start; forecasts are not exported");
            return None;
        }
    };
    let stats = Arc::new(tally_runtime::ConsumerStats::default());
    Some(Arc::new(ExportParts {
        exporter,
        spec: Arc::new(export_spec(cfg)),
        metrics: Arc::new(ConsumerMetrics::new(metrics::EXPORT_SUBSYSTEM, stats).with_outcomes(&["exported"])),
        waiters: Arc::default(),
    }))
}

fn spec(cfg: &ForecastConfig) -> ConsumerSpec {
    ConsumerSpec {
        subsystem: "forecast",
        group: cfg.consumer_group.clone(),
        topics: vec![cfg.topics.sales.clone(), cfg.topics.supplies.clone(), cfg.topics.returns.clone()],
        outputs: Vec::new(),
        cache_prefix: "forecast".into(),
        poll_max_records: cfg.poll_max_records,
        dedupe_window: cfg.dedupe_window,
        flush: FlushSettings {
            group: cfg.consumer_group.clone(),
            interval: Duration::from_millis(cfg.flush_interval_ms),
            max_rows: cfg.flush_max_rows,
            parallelism: 1,
        },
    }
}

/// Why reference data was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// An entry is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The model settings of the configuration.
pub fn model_settings(cfg: &ForecastConfig) -> tally_forecast::model::Settings {
    tally_forecast::model::Settings {
        period: cfg.period_days,
        horizon: cfg.horizon_days,
        windows: cfg.backtest_windows,
        quantiles: cfg.quantiles.clone(),
    }
}

/// The threads the configuration gives direct evaluation.
pub fn model_workers(cfg: &ForecastConfig) -> tally_forecast::workers::Workers {
    use tally_forecast::workers::Priority;
    let priority = match cfg.model_priority {
        tally_config::ModelPriority::Idle => Priority::Idle,
        tally_config::ModelPriority::Normal => Priority::Normal,
    };
    tally_forecast::workers::Workers { threads: cfg.model_threads, priority }
}

impl<B: Bus, S: DemandStore + DocumentStore, C: Cache> ForecastEngine<B, S, C> {
    /// The engine over these backends, reading stock on hand through `stock`. Build it once
    /// the metrics recorder is installed.
    pub fn new(
        bus: B,
        store: S,
        cache: C,
        cfg: ForecastConfig,
        stock: Arc<dyn StockPort>,
        health: Arc<Health>,
    ) -> Self {
        let cfg = Arc::new(cfg);
        let stats = Arc::new(ForecastStats::default());
        let metrics = Arc::new(ForecastMetrics::new(stats.clone()));
        let consumer_stats = Arc::new(tally_runtime::ConsumerStats::default());
        let consumer_metrics =
            Arc::new(ConsumerMetrics::new("forecast", consumer_stats.clone()).with_outcomes(&DemandOutcome::CODES));
        let references = Arc::new(References::new(Duration::from_secs(cfg.reference_ttl_seconds)));
        let touched = Arc::new(Touched::default());
        let shared = Arc::new(handler::Shared {
            store: store.clone(),
            references: references.clone(),
            touched: touched.clone(),
            metrics: metrics.clone(),
        });
        let model = DemandModel::direct(model_settings(&cfg), cfg.default_version.clone()).on(model_workers(&cfg));
        let instance = format!("{}-{}", std::process::id(), tally_core::now_ms() % 100_000);
        let flags = Arc::new(FlagsView::new(ForecastFlags { revision: 0, active: cfg.default_version.clone() }));
        let export = export_parts(&cfg);
        Self {
            bus,
            reads: store.clone(),
            store,
            cache,
            spec: Arc::new(spec(&cfg)),
            cfg,
            health,
            stats,
            consumer_stats,
            references,
            touched,
            model,
            stock,
            ownership: Arc::default(),
            instance,
            flags,
            metrics,
            shared,
            waiters: Arc::default(),
            consumer_metrics,
            unpark_now: Arc::default(),
            export,
        }
    }

    /// The same engine reading series for refreshes from `replica` (a hot standby: writes,
    /// the last forecasts and flags stay on the primary).
    pub fn with_replica(mut self, replica: S) -> Self {
        self.reads = replica;
        self
    }

    /// The same engine calling the demand model over OIP v2 (`remote`).
    pub fn with_model(mut self, remote: model::Remote) -> Self {
        self.model = DemandModel::remote(model_settings(&self.cfg), remote);
        self
    }

    /// The consumer on the shared runtime, with the demand handler.
    pub fn consumer(&self) -> Consumer<B, S, C> {
        let shared = self.shared.clone();
        let (ownership, sales) = (self.ownership.clone(), self.cfg.topics.sales.clone());
        let factory = Arc::new(move |topic: &str, partition: u32| {
            let owns = (topic == sales).then(|| ownership.clone());
            DemandHandler::new(shared.clone(), topic, partition, owns)
        });
        tally_runtime::Engine::new(
            self.bus.clone(),
            self.store.clone(),
            self.cache.clone(),
            self.spec.clone(),
            self.waiters.clone(),
            self.consumer_metrics.clone(),
            self.health.clone(),
            None,
            factory,
        )
    }

    /// The exporter of every run to ClickHouse and Parquet files (`[forecast.export]`), when
    /// a destination is set.
    pub fn exporter(&self) -> Option<ExportConsumer<B, S, C>> {
        let parts = self.export.as_ref()?;
        let (store, exporter) = (self.store.clone(), parts.exporter.clone());
        let factory = Arc::new(move |_: &str, _: u32| export::ExportHandler::new(store.clone(), exporter.clone()));
        Some(tally_runtime::Engine::new(
            self.bus.clone(),
            self.store.clone(),
            self.cache.clone(),
            parts.spec.clone(),
            parts.waiters.clone(),
            parts.metrics.clone(),
            self.health.clone(),
            None,
            factory,
        ))
    }

    /// Creates the engine's topics.
    pub async fn create_topics(&self, partitions: u32) -> Result<(), EngineError> {
        self.consumer().create_topics(partitions).await?;
        self.bus.create_topic(&self.cfg.topics.ready, partitions).await?;
        if let Some(exporter) = self.exporter() {
            exporter.create_topics(partitions).await?;
        }
        Ok(())
    }

    /// Stores catalogue entries and locations (each checked), then releases the events parked
    /// for want of them.
    pub async fn put_references(&self, skus: Vec<SkuInfo>, locations: Vec<LocationInfo>) -> Result<(), ReferenceError> {
        let skus = skus
            .into_iter()
            .map(SkuInfo::checked)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ReferenceError::Invalid(e.detail))?;
        let locations = locations
            .into_iter()
            .map(LocationInfo::checked)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ReferenceError::Invalid(e.detail))?;
        if !skus.is_empty() {
            self.store.put_skus(skus.iter().map(references::sku_row).collect()).await.map_err(EngineError::from)?;
        }
        if !locations.is_empty() {
            self.store
                .put_locations(locations.iter().map(references::location_row).collect())
                .await
                .map_err(EngineError::from)?;
        }
        self.references.offer(&skus, &locations);
        self.unpark_now.notify_one();
        Ok(())
    }

    /// Releases the parked events whose references are known now.
    pub async fn unpark(&self) -> Result<Swept, EngineError> {
        let (swept, touched) = parking::sweep(&self.bus, &self.store, &self.references).await?;
        self.metrics.unparked(swept.staged, swept.dead_lettered);
        self.touched.mark(touched);
        self.metrics.parked_now(self.store.parked_count().await?);
        Ok(swept)
    }

    /// Makes the event table's partitions from this month to `partitions_ahead_months` ahead.
    pub async fn keep_partitions_ahead(&self) -> Result<Vec<String>, EngineError> {
        let today = i32::try_from(tally_core::now_ms().div_euclid(86_400_000)).unwrap_or_default();
        let ahead = i32::try_from(self.cfg.partitions_ahead_months).unwrap_or(0).saturating_mul(31);
        Ok(self.store.ensure_partitions(today, today.saturating_add(ahead)).await?)
    }

    /// Reads the flags from the store now; whether they changed.
    pub async fn refresh_flags(&self) -> Result<bool, EngineError> {
        let stored = self.store.documents(vec![flags::FLAGS_DOC.to_owned()]).await?;
        Ok(match stored.into_iter().next().and_then(|(_, _, body)| serde_json::from_str::<ForecastFlags>(&body).ok()) {
            Some(f) => self.flags.offer(f),
            None => false,
        })
    }

    /// Switches the model version (a revision above the one in force) once the model answers
    /// with it; every instance follows within a second.
    pub async fn set_flags(&self, active: String) -> Result<ForecastFlags, FlagsError> {
        let valid = !active.is_empty()
            && active.len() <= 64
            && active.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(FlagsError::Invalid(format!("version {active:?} must be 1 to 64 of A-Z a-z 0-9 - _")));
        }
        // A version the model cannot answer with would turn every forecast stale.
        let probe: Vec<f64> = (0..28).map(|d| f64::from(d % 7)).collect();
        self.model
            .forecast(vec![probe], &active)
            .await
            .map_err(|e| FlagsError::Invalid(format!("model version {active:?} does not answer: {e}")))?;
        self.refresh_flags().await?;
        let flags = ForecastFlags { revision: self.flags.get().revision + 1, active };
        let body = serde_json::to_string(&flags).unwrap_or_default();
        let won = claim_version(&self.store, flags::FLAGS_DOC, flags.revision, body, |stored| {
            serde_json::from_str::<ForecastFlags>(stored).is_ok_and(|s| s == flags)
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

    /// Re-reads the flags every second until `shutdown`.
    async fn watch_flags(self, shutdown: CancellationToken) {
        loop {
            match self.refresh_flags().await {
                Ok(true) => tracing::info!(flags = ?self.flags.get(), "forecast flags changed"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "reading the forecast flags failed; keeping the ones in force"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(FLAGS_POLL) => {}
            }
        }
    }

    /// Sweeps parked events every `unpark_interval_ms` (and when references are stored here)
    /// until `shutdown`.
    async fn sweep_parked(self, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.cfg.unpark_interval_ms);
        loop {
            match self.unpark().await {
                Ok(s) if s.staged + s.dead_lettered > 0 => {
                    tracing::info!(staged = s.staged, dead_lettered = s.dead_lettered, "released parked demand events");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "releasing parked demand events failed; retrying later"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.unpark_now.notified() => {}
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Keeps the event table's partitions ahead until `shutdown`.
    async fn upkeep_partitions(self, shutdown: CancellationToken) {
        loop {
            match self.keep_partitions_ahead().await {
                Ok(created) if !created.is_empty() => tracing::info!(?created, "created demand event partitions"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "creating demand event partitions failed; retrying later"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PARTITION_UPKEEP_EVERY) => {}
            }
        }
    }

    /// Runs the consumer, the parking sweep, the partition upkeep and the refresh schedule
    /// until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let sweeper = tokio::spawn(self.clone().sweep_parked(shutdown.clone()));
        let upkeep = tokio::spawn(self.clone().upkeep_partitions(shutdown.clone()));
        let schedule = tokio::spawn(self.clone().schedule(shutdown.clone()));
        let flags = tokio::spawn(self.clone().watch_flags(shutdown.clone()));
        let exporter = self.exporter().map(|e| tokio::spawn(e.supervise(shutdown.clone())));
        self.consumer().supervise(shutdown).await;
        if let Some(exporter) = exporter {
            let _ = exporter.await;
        }
        let _ = flags.await;
        let _ = sweeper.await;
        let _ = upkeep.await;
        let _ = schedule.await;
    }
}
