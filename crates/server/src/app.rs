//! Builds tally from configuration and runs its roles. This is the only place that knows
//! which backend implementations exist; everything below it is generic over the traits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tally_bus::{AnyBus, EmbeddedLog, EmbeddedLogOptions, KafkaBus, KafkaBusOptions};
use tally_cache::{AnyCache, MemoryCache, RedisCache, RedisCacheOptions};
use tally_config::{BusConfig, CacheConfig, Config, Durability, ModelConfig, ModelTransport, StoreConfig};
use tally_forecast_engine::{ForecastEngine, StockPort};
use tally_fraud_engine::FraudEngine;
use tally_inventory_engine::InventoryEngine;
use tally_model::{ModelClient, ScoreConfig, Transport};
use tally_runtime::Health;
use tally_store::{
    AnyDocuments, AnyStore, Ledger, PostgresStore, PostgresStoreOptions, SqliteStore, SqliteStoreOptions,
};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, Authenticator};

/// Which parts of tally a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Every role in one process (the embedded default).
    #[default]
    All,
    /// Only the inventory consumers.
    Inventory,
    /// Only the fraud consumers.
    Fraud,
    /// Only the demand consumers and the forecast refresh.
    Forecast,
    /// Only the HTTP API.
    Api,
}

impl Role {
    fn runs_inventory(self) -> bool {
        matches!(self, Self::All | Self::Inventory)
    }
    fn runs_fraud(self) -> bool {
        matches!(self, Self::All | Self::Fraud)
    }
    fn runs_forecast(self) -> bool {
        matches!(self, Self::All | Self::Forecast)
    }
    fn runs_api(self) -> bool {
        matches!(self, Self::All | Self::Api)
    }
}

/// The engine over the backends configuration selects. Backends add variants to the `Any*`
/// enums; the engine is compiled once for all of them.
pub type Engine = InventoryEngine<AnyBus, AnyStore, AnyCache>;

/// The fraud engine over the same backends (its rows in the ledger's document tables).
pub type Fraud = FraudEngine<AnyBus, AnyDocuments, AnyCache>;

/// The store's subsystem name for fraud's documents.
pub const FRAUD_SUBSYSTEM: &str = "fraud";

/// The forecasting engine (its staging tables, and its documents in the ledger's tables).
pub type Forecast = ForecastEngine<AnyBus, AnyDocuments, AnyCache>;

/// The store's subsystem name for forecasting's documents.
pub const FORECAST_SUBSYSTEM: &str = "forecast";

/// Stock on hand for replenishment, read through the inventory engine's own read path (the
/// hot aggregate, then its store): forecasting never touches inventory's tables.
struct InventoryStock(Engine);

impl StockPort for InventoryStock {
    fn on_hand(
        &self,
        series: Vec<(String, String)>,
    ) -> tally_forecast_engine::stock::BoxFuture<'_, Result<std::collections::HashMap<(String, String), i64>, String>>
    {
        Box::pin(async move {
            let skus: Vec<tally_core::Sku> = series
                .iter()
                .filter_map(|(s, _)| tally_core::Sku::parse(s.as_str()).ok())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let states = self.0.read_states(&skus).await.map_err(|e| e.to_string())?;
            Ok(series
                .into_iter()
                .filter_map(|(sku, location)| {
                    let state = states.get(&tally_core::Sku::parse(sku.as_str()).ok()?)?;
                    let stock = state.locations.get(&tally_core::LocationId::parse(location.as_str()).ok()?)?;
                    Some(((sku, location), stock.on_hand))
                })
                .collect())
        })
    }
}

/// A configured, not yet started tally.
pub struct App {
    config: Config,
}

/// A started tally.
pub struct RunningApp {
    /// Where the process listens: the API, or a consumer-only role's health, readiness and
    /// metrics.
    pub addr: Option<SocketAddr>,
    /// The engine, for in-process drivers (demo, bench, tests).
    pub engine: Engine,
    /// The fraud engine.
    pub fraud: Fraud,
    /// The forecasting engine.
    pub forecast: Forecast,
    /// The model server evaluating in this process (`[model] transport = "in_process"`): fault
    /// injection for drills and benchmarks.
    pub model_server: Option<Arc<tally_model_server::ModelServer>>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    grace: Duration,
}

fn durability(d: Durability) -> tally_sqlite::Durability {
    match d {
        Durability::Normal => tally_sqlite::Durability::Normal,
        Durability::Full => tally_sqlite::Durability::Full,
    }
}

/// The bus `config` selects (Kafka clients connect lazily, on first use).
pub fn open_bus(config: &Config) -> anyhow::Result<AnyBus> {
    open_bus_with(config, "", &[])
}

/// Forecasting's bus in a process running `role`: on Kafka, when the role consumes or publishes
/// for forecasting, clients of its own (`<client_id>-forecast`) whose fetches wait
/// `forecast.fetch_wait_ms` (its events are debounced; the main contour's short wait would only
/// cost the broker idle reads). Otherwise, and for the embedded log (one file, one writer),
/// the shared bus.
fn forecast_bus(config: &Config, role: Role, shared: &AnyBus) -> anyhow::Result<AnyBus> {
    match shared {
        AnyBus::Kafka(_) if role.runs_forecast() || role.runs_api() => {
            let wait = [("fetch.wait.max.ms".to_owned(), config.forecast.fetch_wait_ms.to_string())];
            open_bus_with(config, "-forecast", &wait)
                .context("configuring forecasting's Kafka clients (bus.*, forecast.fetch_wait_ms)")
        }
        _ => Ok(shared.clone()),
    }
}

/// The bus `config` selects, its Kafka clients named `<client_id><suffix>`, with `overrides`
/// over `bus.properties`.
fn open_bus_with(config: &Config, suffix: &str, overrides: &[(String, String)]) -> anyhow::Result<AnyBus> {
    Ok(match &config.bus {
        BusConfig::Embedded { partitions } => AnyBus::Embedded(
            EmbeddedLog::open(EmbeddedLogOptions {
                path: config.embedded.path.clone(),
                default_partitions: *partitions,
                durability: durability(config.embedded.durability),
            })
            .with_context(|| format!("opening the embedded log in {}", config.embedded.path.display()))?,
        ),
        BusConfig::Kafka {
            brokers,
            client_id,
            replication_factor,
            publish_timeout_ms,
            drain_timeout_ms,
            properties,
            ..
        } => AnyBus::Kafka(
            KafkaBus::connect(KafkaBusOptions {
                brokers: brokers.clone(),
                client_id: format!("{client_id}{suffix}"),
                replication_factor: i32::try_from(*replication_factor).unwrap_or(i32::MAX),
                // Collected into a map: an override replaces the configured value.
                properties: properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                    .chain(overrides.iter().cloned())
                    .collect(),
                publish_timeout: Duration::from_millis(*publish_timeout_ms),
                drain_timeout: Duration::from_millis(*drain_timeout_ms),
            })
            .context("configuring the Kafka clients (bus.*)")?,
        ),
    })
}

/// The store `config` selects (a PostgreSQL pool connects lazily, on first use).
pub fn open_store(config: &Config) -> anyhow::Result<AnyStore> {
    Ok(match &config.store {
        StoreConfig::Sqlite => AnyStore::Sqlite(
            SqliteStore::open(SqliteStoreOptions {
                path: config.embedded.path.clone(),
                durability: durability(config.embedded.durability),
            })
            .with_context(|| format!("opening the SQLite store in {}", config.embedded.path.display()))?,
        ),
        StoreConfig::Postgres { url, max_connections, acquire_timeout_ms, statement_timeout_ms, .. } => {
            AnyStore::Postgres(
                PostgresStore::connect(&PostgresStoreOptions {
                    url: url.expose().to_owned(),
                    max_connections: *max_connections,
                    acquire_timeout: Duration::from_millis(*acquire_timeout_ms),
                    statement_timeout: Duration::from_millis(*statement_timeout_ms),
                })
                .context("configuring the PostgreSQL store (store.url)")?,
            )
        }
    })
}

/// Forecasting's store: in PostgreSQL its own pool, with forecasting's statement timeout, so
/// a long refresh query can neither exhaust the main contour's connections nor run unbounded.
/// The embedded file is shared (one writer serialises every transaction anyway).
pub fn open_forecast_store(config: &Config) -> anyhow::Result<AnyStore> {
    match &config.store {
        StoreConfig::Sqlite => open_store(config),
        StoreConfig::Postgres { url, acquire_timeout_ms, .. } => {
            forecast_pool(config, url.expose(), *acquire_timeout_ms).context("forecasting's pool (store.url)")
        }
    }
}

/// A PostgreSQL pool with forecasting's own limits.
fn forecast_pool(config: &Config, url: &str, acquire_timeout_ms: u64) -> anyhow::Result<AnyStore> {
    Ok(AnyStore::Postgres(PostgresStore::connect(&PostgresStoreOptions {
        url: url.to_owned(),
        max_connections: config.forecast.store_max_connections,
        acquire_timeout: Duration::from_millis(acquire_timeout_ms),
        statement_timeout: Duration::from_millis(config.forecast.store_statement_timeout_ms),
    })?))
}

/// Forecasting's read replica (`forecast.replica_url`), when configured: a pool of its own with
/// forecasting's limits.
pub fn open_forecast_replica(config: &Config) -> anyhow::Result<Option<AnyStore>> {
    let (Some(url), StoreConfig::Postgres { acquire_timeout_ms, .. }) = (&config.forecast.replica_url, &config.store)
    else {
        anyhow::ensure!(
            config.forecast.replica_url.is_none(),
            "forecast.replica_url needs store.kind = \"postgres\" (a replica of that database)"
        );
        return Ok(None);
    };
    Ok(Some(
        forecast_pool(config, url.expose(), *acquire_timeout_ms)
            .context("forecasting's replica pool (forecast.replica_url)")?,
    ))
}

impl App {
    /// A tally with this configuration.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    async fn engines(
        &self,
        role: Role,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(Engine, Fraud, Forecast, Option<Arc<tally_model_server::ModelServer>>)> {
        // Metric handles are taken as the engine is built: the recorder must exist first.
        let _ = crate::metrics::prometheus();
        let cfg = &self.config;
        let path = cfg.embedded.path.clone();
        let embedded_file_used = matches!(cfg.bus, BusConfig::Embedded { .. }) || cfg.store == StoreConfig::Sqlite;
        if embedded_file_used && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
        }
        let bus = open_bus(cfg)?;
        let store = open_store(cfg)?;
        let cache = match &cfg.cache {
            CacheConfig::Memory { max_bytes, ttl_seconds } => {
                AnyCache::Memory(MemoryCache::new(*max_bytes, Duration::from_secs(*ttl_seconds)))
            }
            CacheConfig::Redis { url, key_prefix, ttl_seconds, timeout_ms } => AnyCache::Redis(
                RedisCache::connect(RedisCacheOptions {
                    url: url.expose().to_owned(),
                    key_prefix: key_prefix.clone(),
                    ttl: Duration::from_secs(*ttl_seconds),
                    timeout: Duration::from_millis(*timeout_ms),
                })
                .await
                .context("connecting to Redis (cache.url)")?,
            ),
        };
        let health = Arc::new(Health::default());
        let (client, transport, model_server) = model_client(&cfg.model, shutdown)?;
        let fraud = FraudEngine::new(
            bus.clone(),
            store.documents(FRAUD_SUBSYSTEM),
            cache.clone(),
            cfg.fraud.clone(),
            client,
            health.clone(),
        );
        let inventory = InventoryEngine::new(bus.clone(), store, cache.clone(), cfg.inventory.clone(), health.clone());
        let forecast = ForecastEngine::new(
            forecast_bus(cfg, role, &bus)?,
            open_forecast_store(cfg)?.documents(FORECAST_SUBSYSTEM),
            cache,
            cfg.forecast.clone(),
            Arc::new(InventoryStock(inventory.clone())),
            health,
        );
        let forecast = match open_forecast_replica(cfg)? {
            Some(replica) => forecast.with_replica(replica.documents(FORECAST_SUBSYSTEM)),
            None => forecast,
        };
        let forecast = match cfg.forecast.model {
            tally_config::ForecastModel::Direct => forecast,
            tally_config::ForecastModel::Server => forecast.with_model(tally_forecast_engine::model::Remote {
                transport,
                model: cfg.forecast.model_name.clone(),
                deadline: Duration::from_millis(cfg.forecast.model_deadline_ms),
            }),
        };
        Ok((inventory, fraud, forecast, model_server))
    }

    /// Applies pending store migrations; returns their names.
    pub async fn migrate(&self) -> anyhow::Result<Vec<String>> {
        // Only the store: a migration Job must not need the broker or Redis to be up.
        open_store(&self.config)?.migrate().await.context("migrating the store")
    }

    /// Starts the given role; returns once the API is listening and consumers are running.
    pub async fn start(self, role: Role) -> anyhow::Result<RunningApp> {
        let shutdown = CancellationToken::new();
        let (engine, fraud, forecast, model_server) = self.engines(role, &shutdown).await?;
        if self.config.store.migrate_on_start() {
            let applied = engine.store.migrate().await.context("migrating the store")?;
            if !applied.is_empty() {
                tracing::info!(migrations = ?applied, "applied store migrations");
            }
        } else {
            let pending = engine.store.pending_migrations().await.context("reading the schema version")?;
            anyhow::ensure!(
                pending.is_empty(),
                "the database schema is not current: migration {} is not applied; run `tally migrate` with \
                 the schema owner's role first (or set store.migrate_on_start = true)",
                pending.join(", migration ")
            );
        }
        engine.create_topics(self.config.bus.partitions()).await.context("creating topics")?;
        fraud.create_topics(self.config.bus.partitions()).await.context("creating fraud topics")?;
        forecast.create_topics(self.config.bus.partitions()).await.context("creating forecast topics")?;
        let mut tasks = Vec::new();
        if role.runs_inventory() {
            // Supervised: a failure restarts the engine with backoff, reported on /readyz.
            tasks.push(tokio::spawn(engine.clone().run(shutdown.clone())));
        }
        if role.runs_fraud() {
            tasks.push(tokio::spawn(fraud.clone().run(shutdown.clone())));
        } else {
            // Lookups and flags still serve (the API role): keep this instance's flags current.
            tasks.push(tokio::spawn(fraud.clone().watch_flags(shutdown.clone())));
        }
        if role.runs_forecast() {
            if role == Role::Forecast {
                // Alone in its process, forecasting can step back as a whole; beside the main
                // contour only its model threads can (`forecast.model_priority`).
                crate::scheduling::apply_forecast_group_nice(self.config.forecast.group_nice).await;
            }
            tasks.push(tokio::spawn(forecast.clone().run(shutdown.clone())));
        }
        if let AnyBus::Embedded(log) = &engine.bus {
            tasks.push(tokio::spawn(enforce_log_retention(
                log.clone(),
                Duration::from_secs(self.config.embedded.log_retention_hours.saturating_mul(3600)),
                shutdown.clone(),
            )));
        }
        // Every role listens: the API role serves the API, a consumer-only role its health,
        // readiness and metrics (so it can be probed, and scraped for the lag it scales on).
        let listener = tokio::net::TcpListener::bind(self.config.server.listen)
            .await
            .with_context(|| format!("binding {}", self.config.server.listen))?;
        let addr = Some(listener.local_addr()?);
        let state = AppState {
            engine: engine.clone(),
            fraud: fraud.clone(),
            forecast: forecast.clone(),
            auth: Arc::new(Authenticator::new(&self.config.api)),
            warehouse: tally_core::ChannelId::parse(self.config.inventory.warehouse_channel.as_str())
                .context("inventory.warehouse_channel")?,
            wait_timeout: Duration::from_secs(5),
        };
        let router = if role.runs_api() { api::router(state) } else { api::ops_router(state) };
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server stopped with an error");
            }
        }));
        let what = if role.runs_api() { "HTTP API" } else { "health, readiness and metrics" };
        tracing::info!(addr = %addr.map(|a| a.to_string()).unwrap_or_default(), "{what} listening");
        Ok(RunningApp {
            addr,
            engine,
            fraud,
            forecast,
            model_server,
            shutdown,
            tasks,
            grace: Duration::from_secs(self.config.server.shutdown_grace_seconds),
        })
    }
}

impl RunningApp {
    /// A token that stops the app when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops consuming, drains every partition (flush + commit) and stops the API.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the app has stopped (after its token is cancelled), within the grace period.
    pub async fn wait(self) {
        let all = futures_join(self.tasks);
        self.shutdown.cancelled().await;
        if tokio::time::timeout(self.grace, all).await.is_err() {
            tracing::error!(
                grace_s = self.grace.as_secs(),
                "shutdown did not finish in time; unflushed work will be replayed"
            );
        }
    }
}

/// The model client `[model]` describes: in process (the repository evaluated here, rescanned
/// every second until `shutdown`; the server is returned too), or OIP v2 over REST or gRPC to
/// any server.
pub fn model_client(
    cfg: &ModelConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<ModelClient>, Transport, Option<Arc<tally_model_server::ModelServer>>)> {
    let mut local = None;
    let transport = match cfg.transport {
        ModelTransport::InProcess => {
            let server = tally_model_server::ModelServer::open(&cfg.repository, Duration::from_micros(0), None);
            tokio::spawn(server.repository.clone().watch(Duration::from_secs(1), shutdown.clone()));
            local = Some(server.clone());
            Transport::Local(server)
        }
        ModelTransport::Rest => Transport::rest(&cfg.url).map_err(|e| anyhow::anyhow!("model.url: {e}"))?,
        ModelTransport::Grpc => Transport::grpc(&cfg.url).map_err(|e| anyhow::anyhow!("model.url: {e}"))?,
    };
    let client = Arc::new(ModelClient::new(
        transport.clone(),
        ScoreConfig {
            model: cfg.name.clone(),
            input: cfg.input.clone(),
            output: cfg.output.clone(),
            column: cfg.output_column,
            deadline: Duration::from_millis(cfg.deadline_ms),
            retries: cfg.retries,
            batch_max_rows: cfg.batch_max_rows,
            batch_window: Duration::from_micros(cfg.batch_window_us),
            breaker_failures: cfg.breaker_failures,
            breaker_cooldown: Duration::from_millis(cfg.breaker_cooldown_ms),
        },
    ));
    Ok((client, transport, local))
}

/// Trims the embedded log every minute; see [`EmbeddedLog::enforce_retention`].
async fn enforce_log_retention(log: EmbeddedLog, max_age: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => match log.enforce_retention(max_age).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "trimmed consumed records past retention from the embedded log"),
                Err(e) => tracing::warn!(error = %e, "embedded log retention failed; retrying in a minute"),
            },
        }
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_config() -> Config {
        let mut cfg = Config {
            bus: BusConfig::Kafka {
                brokers: "127.0.0.1:9".into(),
                client_id: "tally-test".into(),
                partitions: 4,
                replication_factor: 1,
                publish_timeout_ms: 1_000,
                drain_timeout_ms: 1_000,
                properties: [("fetch.wait.max.ms", "10"), ("socket.keepalive.enable", "true")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), tally_config::Secret::new(v)))
                    .collect(),
            },
            ..Config::default()
        };
        cfg.forecast.fetch_wait_ms = 250;
        cfg
    }

    fn properties(bus: &AnyBus) -> std::collections::BTreeMap<String, String> {
        match bus {
            AnyBus::Kafka(kafka) => kafka.options().properties.clone(),
            AnyBus::Embedded(_) => panic!("a Kafka configuration made an embedded bus"),
        }
    }

    #[tokio::test]
    async fn forecasting_fetches_wait_longer_than_the_main_contours_on_clients_of_its_own() {
        let cfg = kafka_config();
        let shared = open_bus(&cfg).expect("the shared bus");
        let forecast = forecast_bus(&cfg, Role::Forecast, &shared).expect("forecasting's bus");
        assert_eq!(properties(&shared)["fetch.wait.max.ms"], "10", "the main contour keeps bus.properties");
        assert_eq!(properties(&forecast)["fetch.wait.max.ms"], "250", "forecast.fetch_wait_ms wins for forecasting");
        assert_eq!(properties(&forecast)["socket.keepalive.enable"], "true", "the other properties carry over");
        let AnyBus::Kafka(kafka) = &forecast else { unreachable!("checked above") };
        assert_eq!(kafka.options().client_id, "tally-test-forecast", "its broker load is told apart");
    }

    #[tokio::test]
    async fn roles_without_forecasting_open_no_second_kafka_clients() {
        let cfg = kafka_config();
        let shared = open_bus(&cfg).expect("the shared bus");
        for role in [Role::Inventory, Role::Fraud] {
            let bus = forecast_bus(&cfg, role, &shared).expect("forecasting's bus");
            assert_eq!(properties(&bus)["fetch.wait.max.ms"], "10", "{role:?} shares the main contour's clients");
        }
    }
}
