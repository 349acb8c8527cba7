//! tally's configuration: typed structs with defaults, layered defaults → file → `TALLY_*`
//! environment (`__` separates nesting levels), unknown keys rejected, cross-field rules
//! checked at startup with errors that name the key, secrets masked when printed.
//!
//! The deployment mode is chosen here only: `[bus] kind`, `[store] kind`, `[cache] kind`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};

mod auth;
mod forecast;
mod fraud;
mod secret;

pub use auth::{ApiKeyConfig, Scope, hash_api_key};
pub use forecast::{ForecastConfig, ForecastExport, ForecastModel, ForecastTopics, ModelPriority};
pub use fraud::{FraudConfig, FraudRules, FraudTopics, ModelConfig, ModelTransport};
pub use secret::Secret;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed (unknown key, wrong type).
    #[error("configuration is invalid: {0}")]
    Parse(String),
    /// A value breaks a rule; `key` is the dotted path of the offending key.
    #[error("configuration key `{key}` is invalid: {reason}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A parse error, made specific where it can be: a backend section given settings but no
/// `kind` (e.g. only `TALLY_STORE__URL`) names the missing key and its choices.
fn extraction_error(e: figment::Error) -> ConfigError {
    if let figment::error::Kind::MissingField(field) = &e.kind
        && field == "kind"
        && let Some(section) = e.path.last()
    {
        let kinds = match section.as_str() {
            "bus" => "\"embedded\" or \"kafka\"",
            "store" => "\"sqlite\" or \"postgres\"",
            "cache" => "\"memory\" or \"redis\"",
            _ => "the backend",
        };
        return invalid(format!("{section}.kind"), format!("is required once any {section}.* key is set: {kinds}"));
    }
    ConfigError::Parse(e.to_string())
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Files of the embedded backends.
    pub embedded: EmbeddedConfig,
    /// Event bus backend.
    pub bus: BusConfig,
    /// State store backend.
    pub store: StoreConfig,
    /// Hot-aggregate cache backend.
    pub cache: CacheConfig,
    /// Inventory sync engine.
    pub inventory: InventoryConfig,
    /// Fraud scoring service.
    pub fraud: FraudConfig,
    /// Demand forecasting pipeline.
    pub forecast: ForecastConfig,
    /// The model client.
    pub model: ModelConfig,
    /// HTTP API access control.
    pub api: ApiConfig,
    /// Logging.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            embedded: EmbeddedConfig::default(),
            bus: BusConfig::Embedded { partitions: 4 },
            store: StoreConfig::Sqlite,
            cache: CacheConfig::Memory { max_bytes: 256 << 20, ttl_seconds: 3600 },
            inventory: InventoryConfig::default(),
            fraud: FraudConfig::default(),
            forecast: ForecastConfig::default(),
            model: ModelConfig::default(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Seconds to drain work on shutdown before giving up.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)), shutdown_grace_seconds: 30 }
    }
}

/// fsync policy of the embedded SQLite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Survives a process crash.
    #[default]
    Normal,
    /// Also survives power loss.
    Full,
}

/// The embedded mode's single SQLite file (log and store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Path of the SQLite file.
    pub path: PathBuf,
    /// fsync policy.
    pub durability: Durability,
    /// Hours the embedded log keeps a record that every consumer group has consumed
    /// (records not yet consumed are kept however old they are).
    pub log_retention_hours: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("tally.db"), durability: Durability::Normal, log_retention_hours: 168 }
    }
}

/// Event bus backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BusConfig {
    /// The durable log inside the embedded SQLite file.
    Embedded {
        /// Partitions per topic (parallel workers per consumer).
        #[serde(default = "default_partitions")]
        partitions: u32,
    },
    /// A Kafka-protocol cluster (production).
    Kafka {
        /// `host:port[,host:port…]`.
        brokers: String,
        /// `client.id` of tally's clients.
        #[serde(default = "default_client_id")]
        client_id: String,
        /// Partitions of the topics tally creates: the most instances that share the work.
        #[serde(default = "default_partitions")]
        partitions: u32,
        /// Replication factor of the topics tally creates.
        #[serde(default = "default_replication")]
        replication_factor: u32,
        /// Milliseconds a publish may take before it fails.
        #[serde(default = "default_publish_timeout_ms")]
        publish_timeout_ms: u64,
        /// Milliseconds a rebalance waits for revoked partitions to drain and commit.
        #[serde(default = "default_drain_timeout_ms")]
        drain_timeout_ms: u64,
        /// librdkafka settings passed through as they are (`security.protocol`,
        /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`, …); values
        /// are secrets, never printed.
        #[serde(default)]
        properties: std::collections::BTreeMap<String, Secret>,
    },
}

impl BusConfig {
    /// Partitions per topic.
    pub fn partitions(&self) -> u32 {
        match self {
            Self::Embedded { partitions } | Self::Kafka { partitions, .. } => *partitions,
        }
    }
}

fn default_client_id() -> String {
    "tally".into()
}
fn default_replication() -> u32 {
    1
}
fn default_publish_timeout_ms() -> u64 {
    30_000
}
fn default_drain_timeout_ms() -> u64 {
    30_000
}

fn default_partitions() -> u32 {
    4
}

/// State store backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// Tables in the embedded SQLite file.
    Sqlite,
    /// PostgreSQL (production).
    Postgres {
        /// `postgres://user:password@host:port/database` (secret: it may hold a password).
        url: Secret,
        /// Most pooled connections per process.
        #[serde(default = "default_pg_connections")]
        max_connections: u32,
        /// Milliseconds to wait for a pooled connection.
        #[serde(default = "default_pg_acquire_ms")]
        acquire_timeout_ms: u64,
        /// Server-side limit on one statement, in milliseconds.
        #[serde(default = "default_pg_statement_ms")]
        statement_timeout_ms: u64,
        /// Apply pending migrations when `tally serve` starts. Off by default: in production
        /// `tally migrate` runs with the schema owner's role (a migration Job) and the
        /// servers with a role that has only DML rights; a server then refuses to start,
        /// naming the migration, while the schema is not current.
        #[serde(default)]
        migrate_on_start: bool,
    },
}

impl StoreConfig {
    /// Whether `tally serve` applies pending migrations itself (always for the embedded
    /// SQLite file, which the process owns).
    pub fn migrate_on_start(&self) -> bool {
        match self {
            Self::Sqlite => true,
            Self::Postgres { migrate_on_start, .. } => *migrate_on_start,
        }
    }
}

fn default_pg_connections() -> u32 {
    16
}
fn default_pg_acquire_ms() -> u64 {
    5_000
}
fn default_pg_statement_ms() -> u64 {
    10_000
}

/// Cache backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CacheConfig {
    /// Process memory.
    Memory {
        /// Upper bound of cached bytes.
        #[serde(default = "default_cache_bytes")]
        max_bytes: u64,
        /// Seconds an entry lives.
        #[serde(default = "default_cache_ttl")]
        ttl_seconds: u64,
    },
    /// Redis (production): the hot aggregate shared by every instance.
    Redis {
        /// `redis://[user:password@]host:port[/db]` (secret: it may hold a password).
        url: Secret,
        /// Prepended to every key, so deployments can share a server.
        #[serde(default = "default_redis_prefix")]
        key_prefix: String,
        /// Seconds an entry lives without being rewritten.
        #[serde(default = "default_cache_ttl")]
        ttl_seconds: u64,
        /// Milliseconds allowed for connecting and for each command; past it a read falls
        /// back to the store.
        #[serde(default = "default_redis_timeout_ms")]
        timeout_ms: u64,
    },
}

fn default_redis_prefix() -> String {
    "tally:".into()
}
fn default_redis_timeout_ms() -> u64 {
    500
}

fn default_cache_bytes() -> u64 {
    256 << 20
}
fn default_cache_ttl() -> u64 {
    3600
}

/// Topic names of the inventory engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryTopics {
    /// Input: stock snapshots, adjustments, reservations, channel reports.
    pub events: String,
    /// Output: per-channel available-to-sell.
    pub availability: String,
    /// Output: reservation accepted/rejected.
    pub outcomes: String,
}

impl Default for InventoryTopics {
    fn default() -> Self {
        Self {
            events: "inventory.events".into(),
            availability: "inventory.availability".into(),
            outcomes: "inventory.outcomes".into(),
        }
    }
}

/// Inventory sync engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Consumer group of the inventory workers.
    pub consumer_group: String,
    /// Topic names.
    pub topics: InventoryTopics,
    /// Most milliseconds between store flushes while changes are pending.
    pub flush_interval_ms: u64,
    /// Flush earlier once this many SKU rows are pending.
    pub flush_max_rows: usize,
    /// Most store transactions a large flush (at least half of `flush_max_rows`) is split
    /// into, by partition, and run at once. Small flushes are always one transaction.
    pub flush_parallelism: usize,
    /// Records a partition worker takes per poll.
    pub poll_max_records: usize,
    /// Idempotency window: events per partition remembered for duplicate detection.
    pub dedupe_window: u64,
    /// Channel id whose key may write stock snapshots and adjustments.
    pub warehouse_channel: String,
    /// How often held reservations are checked for expiry.
    pub expiry_check_interval_ms: u64,
    /// Sales channels and how each derives available-to-sell.
    pub channels: Vec<ChannelConfig>,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        let ch =
            |s: &str| tally_core::ChannelId::parse(s).unwrap_or_else(|_| unreachable!("literal channel ids are valid"));
        Self {
            consumer_group: "tally-inventory".into(),
            topics: InventoryTopics::default(),
            flush_interval_ms: 100,
            flush_max_rows: 5000,
            flush_parallelism: 4,
            poll_max_records: 1000,
            dedupe_window: 200_000,
            warehouse_channel: "wms".into(),
            expiry_check_interval_ms: 1000,
            channels: vec![
                ChannelConfig::everything(ch("wms")),
                ChannelConfig::everything(ch("storefront")),
                ChannelConfig {
                    id: ch("partner:ozon"),
                    locations: vec![],
                    share_percent: 50,
                    cap: Some(100),
                    buffer: 2,
                },
            ],
        }
    }
}

/// How one sales channel derives its available-to-sell (`[[inventory.channels]]`); the
/// inventory engine turns it into its domain's channel rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Channel id, e.g. `storefront` or `partner:ozon`.
    pub id: tally_core::ChannelId,
    /// Locations the channel sells from; empty means every location.
    #[serde(default)]
    pub locations: Vec<tally_core::LocationId>,
    /// Percentage (0–100) of the pooled available stock offered on this channel.
    #[serde(default = "full_share")]
    pub share_percent: u8,
    /// Upper bound on what the channel may show.
    #[serde(default)]
    pub cap: Option<i64>,
    /// Units held back from this channel to absorb its sync delay.
    #[serde(default)]
    pub buffer: i64,
}

fn full_share() -> u8 {
    100
}

impl ChannelConfig {
    /// A channel that sells everything from every location.
    pub fn everything(id: tally_core::ChannelId) -> Self {
        Self { id, locations: Vec::new(), share_percent: 100, cap: None, buffer: 0 }
    }
}

/// How the HTTP API authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No key needed; every caller may do everything. For local demos only: logged loudly.
    #[default]
    Open,
    /// `Authorization: Bearer <key>` with a configured key's scopes.
    Keys,
}

/// HTTP API access control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Authentication mode.
    pub auth: AuthMode,
    /// API keys (stored as SHA-256 hashes).
    pub keys: Vec<ApiKeyConfig>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line (Loki-ready).
    #[default]
    Json,
    /// Human-readable.
    Pretty,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,tally=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Json, level: "info".into() }
    }
}

/// `TALLY_*` variables that are not configuration keys: the file's own path, and the
/// simulator's API key (read by `tally simulate`).
pub const NOT_KEYS: &[&str] = &["CONFIG", "SIM_API_KEY"];

/// Top-level sections, the first part of every `TALLY_<SECTION>__…` variable.
const SECTIONS: &[&str] =
    &["server", "embedded", "bus", "store", "cache", "inventory", "fraud", "forecast", "model", "api", "log"];

impl Config {
    /// Loads defaults, then `file` (if any), then `TALLY_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        // No layer of serialised defaults: `#[serde(default)]` fills what is absent, and a
        // defaults layer would leak one backend's fields (the memory cache's `max_bytes`) into
        // another chosen by `kind`.
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid("--config", format!("file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Everything under TALLY_ must be a key, except the variables of `NOT_KEYS`.
        let vars: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("TALLY_").map(|rest| (rest.to_owned(), v)))
            .filter(|(k, _)| !NOT_KEYS.contains(&k.as_str()))
            .collect();
        for (k, _) in &vars {
            let section = k.split("__").next().unwrap_or_default().to_lowercase();
            if !SECTIONS.contains(&section.as_str()) {
                return Err(ConfigError::Parse(format!(
                    "environment variable TALLY_{k} names no configuration key: `{section}` is not a section \
                     (sections: {})",
                    SECTIONS.join(", ")
                )));
            }
        }
        let mut env_figment = Figment::new();
        for (k, v) in vars {
            let key = k.to_lowercase().replace("__", ".");
            let value: figment::value::Value = v.parse().unwrap_or_else(|_| figment::value::Value::from(v.clone()));
            env_figment = env_figment.merge((key, value));
        }
        figment = figment.merge(env_figment);
        let config: Config = figment.extract().map_err(extraction_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the file named by `--config`, else `TALLY_CONFIG`, else `tally.toml` if present.
    pub fn load_default(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let from_env = env.iter().find(|(k, _)| k == "TALLY_CONFIG").map(|(_, v)| PathBuf::from(v));
        let implicit = Path::new("tally.toml");
        let path = file.map(Path::to_path_buf).or(from_env).or_else(|| implicit.exists().then(|| implicit.to_owned()));
        Self::load(path.as_deref(), env)
    }

    /// Cross-field rules; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let partitions = self.bus.partitions();
        if partitions == 0 || partitions > 256 {
            return Err(invalid("bus.partitions", format!("must be within 1..=256, got {partitions}")));
        }
        if let BusConfig::Kafka { brokers, replication_factor, .. } = &self.bus {
            if brokers.trim().is_empty() {
                return Err(invalid("bus.brokers", "must name at least one broker (host:port)"));
            }
            if *replication_factor == 0 {
                return Err(invalid("bus.replication_factor", "must be > 0"));
            }
        }
        if let StoreConfig::Postgres { url, max_connections, statement_timeout_ms, .. } = &self.store {
            if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
                return Err(invalid("store.url", "must start with postgres:// or postgresql://"));
            }
            if *max_connections == 0 {
                return Err(invalid("store.max_connections", "must be > 0"));
            }
            if *statement_timeout_ms == 0 {
                return Err(invalid("store.statement_timeout_ms", "must be > 0"));
            }
        }
        if let CacheConfig::Redis { url, timeout_ms, .. } = &self.cache {
            if !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://")) {
                return Err(invalid("cache.url", "must start with redis:// or rediss://"));
            }
            if *timeout_ms == 0 {
                return Err(invalid("cache.timeout_ms", "must be > 0"));
            }
        }
        let fraud = &self.fraud;
        for (key, v) in [
            ("fraud.flags_poll_ms", fraud.flags_poll_ms),
            ("fraud.flush_interval_ms", fraud.flush_interval_ms),
            ("fraud.poll_max_records", fraud.poll_max_records as u64),
            ("fraud.flush_max_rows", fraud.flush_max_rows as u64),
            ("fraud.quality_window", fraud.quality_window as u64),
            ("forecast.flush_interval_ms", self.forecast.flush_interval_ms),
            ("forecast.poll_max_records", self.forecast.poll_max_records as u64),
            ("forecast.flush_max_rows", self.forecast.flush_max_rows as u64),
            ("forecast.unpark_interval_ms", self.forecast.unpark_interval_ms),
            ("model.deadline_ms", self.model.deadline_ms),
            ("model.batch_max_rows", self.model.batch_max_rows as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be > 0"));
            }
        }
        if self.model.transport != ModelTransport::InProcess
            && !(self.model.url.starts_with("http://") || self.model.url.starts_with("https://"))
        {
            return Err(invalid("model.url", "must start with http:// or https://"));
        }
        self.forecast.validate()?;
        if self.embedded.log_retention_hours == 0 {
            return Err(invalid("embedded.log_retention_hours", "must be > 0"));
        }
        let inv = &self.inventory;
        if inv.flush_interval_ms == 0 || inv.flush_interval_ms > 60_000 {
            return Err(invalid("inventory.flush_interval_ms", "must be within 1..=60000"));
        }
        for (key, v) in
            [("inventory.flush_max_rows", inv.flush_max_rows), ("inventory.poll_max_records", inv.poll_max_records)]
        {
            if v == 0 {
                return Err(invalid(key, "must be > 0"));
            }
        }
        if !(1..=64).contains(&inv.flush_parallelism) {
            return Err(invalid("inventory.flush_parallelism", "must be within 1..=64"));
        }
        if let StoreConfig::Postgres { max_connections, .. } = &self.store
            && (*max_connections as usize) <= inv.flush_parallelism
        {
            // Parallel flushes hold that many connections; workers and API reads need more.
            return Err(invalid(
                "store.max_connections",
                format!("must exceed inventory.flush_parallelism ({})", inv.flush_parallelism),
            ));
        }
        if inv.consumer_group.trim().is_empty() {
            return Err(invalid("inventory.consumer_group", "must not be empty"));
        }
        for (key, topic) in [
            ("inventory.topics.events", &inv.topics.events),
            ("inventory.topics.availability", &inv.topics.availability),
            ("inventory.topics.outcomes", &inv.topics.outcomes),
        ] {
            if topic.is_empty() || !topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                return Err(invalid(key, format!("{topic:?} is not a valid topic name (letters, digits, . _ -)")));
            }
        }
        if tally_core::ChannelId::parse(inv.warehouse_channel.as_str()).is_err() {
            return Err(invalid("inventory.warehouse_channel", "is not a valid channel id"));
        }
        if inv.channels.is_empty() {
            return Err(invalid("inventory.channels", "at least one channel is required"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, ch) in inv.channels.iter().enumerate() {
            if !seen.insert(&ch.id) {
                return Err(invalid(
                    format!("inventory.channels[{i}].id"),
                    format!("channel {} is defined twice", ch.id),
                ));
            }
            if ch.share_percent > 100 {
                return Err(invalid(format!("inventory.channels[{i}].share_percent"), "must be within 0..=100"));
            }
            let bounded = |v: i64| (0..=tally_core::MAX_QUANTITY).contains(&v);
            if !bounded(ch.buffer) || ch.cap.is_some_and(|c| !bounded(c)) {
                return Err(invalid(
                    format!("inventory.channels[{i}]"),
                    format!("buffer and cap must be 0 to {}", tally_core::MAX_QUANTITY),
                ));
            }
        }
        if self.api.auth == AuthMode::Keys && self.api.keys.is_empty() {
            return Err(invalid("api.keys", "api.auth = \"keys\" needs at least one key"));
        }
        for (i, key) in self.api.keys.iter().enumerate() {
            key.validate().map_err(|reason| invalid(format!("api.keys[{i}]"), reason))?;
            // Each key's sources are its own: no two keys may send as the same source.
            for (j, other) in self.api.keys.iter().enumerate().skip(i + 1) {
                if other.id == key.id {
                    return Err(invalid(
                        format!("api.keys[{j}].id"),
                        format!("{:?} is also api.keys[{i}]'s id", key.id),
                    ));
                }
                for a in &key.sources {
                    if let Some(b) = other.sources.iter().find(|b| auth::sources_overlap(a, b)) {
                        return Err(invalid(
                            format!("api.keys[{j}].sources"),
                            format!("{b:?} overlaps {a:?} of api.keys[{i}]: a source belongs to one key"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
