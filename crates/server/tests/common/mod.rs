//! Test harness: the real app on port 0 with a fresh SQLite file per test.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tally_bus::{Assignment, Bus, Consumer, PartitionReader, Record};
use tally_config::{ApiKeyConfig, AuthMode, Config, hash_api_key};
use tally_server::App;
use tally_server::RunningApp;
use tally_server::app::Role;

pub const ADMIN_KEY: &str = "admin-key";
pub const OZON_KEY: &str = "ozon-key";
pub const READER_KEY: &str = "reader-key";
pub const WMS_KEY: &str = "wms-key";
pub const CHECKOUT_KEY: &str = "checkout-key";
pub const ANALYST_KEY: &str = "analyst-key";
pub const PLANNER_KEY: &str = "planner-key";

/// The checkout's root (the reference model lives in `models/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub struct TestApp {
    pub app: Option<RunningApp>,
    pub config: Config,
    pub url: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path, auth: AuthMode) -> Config {
    let mut c = Config::default();
    c.embedded.path = dir.join("tally.db");
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.inventory.flush_interval_ms = 20;
    c.api.auth = auth;
    let key = |id: &str, raw: &str, scopes: &[&str], sources: &[&str]| ApiKeyConfig {
        id: id.into(),
        hash: hash_api_key(raw),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        sources: sources.iter().map(|s| (*s).to_owned()).collect(),
    };
    c.api.keys = vec![
        key("admin", ADMIN_KEY, &["admin"], &[]),
        key("ozon", OZON_KEY, &["stock:read", "stock:write:partner:ozon"], &["/ozon"]),
        key("reader", READER_KEY, &["stock:read"], &[]),
        key("wms", WMS_KEY, &["stock:read", "stock:write:wms"], &["/wms"]),
        key("checkout", CHECKOUT_KEY, &["fraud:score"], &[]),
        key("analyst", ANALYST_KEY, &["fraud:read"], &[]),
        key("planner", PLANNER_KEY, &["forecast:read"], &[]),
    ];
    c.fraud.models = repo_root().join("models/fraud").display().to_string();
    c.fraud.flush_interval_ms = 20;
    c.fraud.flags_poll_ms = 100;
    c.model.repository = repo_root().join("models").display().to_string();
    // Tests that mean the model to be up must not see it time out on a loaded machine.
    c.model.deadline_ms = 5_000;
    c
}

/// The backends a test runs on: the embedded default, or PostgreSQL + Redis (the servers
/// `scripts/test.sh` starts; a fresh database and a unique key prefix per test).
#[derive(Debug, Clone, Copy)]
pub enum Stack {
    Embedded,
    PostgresRedis,
    /// Kafka (the nisshi broker `scripts/test.sh` starts) + PostgreSQL + Redis: production.
    KafkaPostgresRedis,
}

/// `config(dir, auth)` moved onto `stack`.
pub async fn stack_config(stack: Stack, dir: &std::path::Path, auth: AuthMode) -> Config {
    let mut c = config(dir, auth);
    if let Stack::KafkaPostgresRedis = stack {
        let brokers = std::env::var("TEST_TALLY_KAFKA_BROKERS")
            .expect("TEST_TALLY_KAFKA_BROKERS is not set: run the tests with scripts/test.sh, which starts a broker");
        c.bus = tally_config::BusConfig::Kafka {
            brokers,
            client_id: "tally-test".into(),
            partitions: 4,
            replication_factor: 1,
            publish_timeout_ms: 10_000,
            drain_timeout_ms: 10_000,
            properties: Default::default(),
        };
        // Topics and the group are the broker's shared namespace: unique per test.
        let run = uuid::Uuid::new_v4().simple().to_string();
        c.inventory.consumer_group = format!("test-{run}");
        c.inventory.topics.events = format!("inventory.events.{run}");
        c.inventory.topics.availability = format!("inventory.availability.{run}");
        c.inventory.topics.outcomes = format!("inventory.outcomes.{run}");
        c.fraud.consumer_group = format!("test-fraud-{run}");
        c.fraud.topics.transactions = format!("payments.transactions.{run}");
        c.fraud.topics.profiles = format!("customers.profiles.{run}");
        c.fraud.topics.labels = format!("fraud.labels.{run}");
        c.fraud.topics.decisions = format!("fraud.decisions.{run}");
        c.forecast.namespace(&run);
    }
    if let Stack::PostgresRedis | Stack::KafkaPostgresRedis = stack {
        c.store = tally_config::StoreConfig::Postgres {
            url: tally_config::Secret::new(tally_store::postgres::testing::fresh_database().await),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 10_000,
            // The harness stands in for the migration Job.
            migrate_on_start: true,
        };
        let redis = std::env::var("TEST_TALLY_REDIS_URL")
            .expect("TEST_TALLY_REDIS_URL is not set: run the tests with scripts/test.sh, which starts Redis");
        c.cache = tally_config::CacheConfig::Redis {
            url: tally_config::Secret::new(redis),
            key_prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
            ttl_seconds: 600,
            timeout_ms: 1_000,
        };
    }
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(Stack::Embedded).await
}

pub async fn spawn_app_on(stack: Stack) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = stack_config(stack, dir.path(), AuthMode::Keys).await;
    spawn_with(config, dir).await
}

pub async fn spawn_with(config: Config, dir: tempfile::TempDir) -> TestApp {
    let app = App::new(config.clone()).start(Role::All).await.unwrap();
    let url = format!("http://{}", app.addr.unwrap());
    TestApp { app: Some(app), config, url, client: reqwest::Client::new(), dir }
}

/// Runs each named `async fn(Stack)` as one test per stack.
#[macro_export]
macro_rules! on_every_stack {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test] async fn $name() { super::$name($crate::common::Stack::Embedded).await } )*
        }
        mod postgres_redis {
            $( #[tokio::test] async fn $name() { super::$name($crate::common::Stack::PostgresRedis).await } )*
        }
        mod kafka_postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Stack::KafkaPostgresRedis).await }
            )*
        }
    };
}

impl TestApp {
    pub fn engine(&self) -> &tally_server::app::Engine {
        &self.app.as_ref().unwrap().engine
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client.post(format!("{}{path}", self.url)).bearer_auth(key).json(body).send().await.unwrap()
    }

    pub async fn post_with_key(&self, path: &str, key: &str, idem: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .header("Idempotency-Key", idem)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client.put(format!("{}{path}", self.url)).bearer_auth(key).json(body).send().await.unwrap()
    }

    pub fn fraud(&self) -> &tally_server::app::Fraud {
        &self.app.as_ref().unwrap().fraud
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.url)).bearer_auth(key).send().await.unwrap()
    }

    /// Polls GET `path` until `check` holds (changes become visible within milliseconds).
    pub async fn eventually(&self, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let resp = self.get(path, ADMIN_KEY).await;
            if resp.status().is_success() {
                let body: Value = resp.json().await.unwrap();
                if check(&body) {
                    return body;
                }
                assert!(Instant::now() < deadline, "condition never held; last body {body}");
            } else {
                assert!(Instant::now() < deadline, "GET {path} kept failing: {}", resp.status());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
    }
}

pub fn event(id: &str, source: &str, ty: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": source, "type": ty, "time": "2026-11-25T10:00:00Z", "data": data})
}

pub fn snapshot(id: &str, sku: &str, location: &str, on_hand: i64, version: u64) -> Value {
    event(
        id,
        "/wms",
        "stock.snapshot",
        json!({"sku": sku, "location": location, "on_hand": on_hand, "source_version": version}),
    )
}

pub fn on_hand(stock: &Value, location: &str) -> Option<i64> {
    stock["locations"].as_array()?.iter().find(|l| l["location"] == location)?["on_hand"].as_i64()
}

pub fn ats(stock: &Value, channel: &str) -> Option<i64> {
    stock["channels"].as_array()?.iter().find(|c| c["channel"] == channel)?["available_to_sell"].as_i64()
}

/// Reads `topic` from the start with a fresh group until `done` holds for what was read.
pub async fn read_topic(app: &TestApp, topic: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let group = format!("reader-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = app.engine().bus.subscribe(&group, &[topic.to_owned()]).await.unwrap();
    let Assignment::Assigned(mut parts) = consumer.next_assignment().await.unwrap() else {
        panic!("no assignment for the reader of {topic}")
    };
    for p in &mut parts {
        p.seek(0);
    }
    let (mut read, deadline): (Vec<Record>, _) = (Vec::new(), Instant::now() + Duration::from_secs(20));
    while !done(&read) {
        assert!(Instant::now() < deadline, "{topic}: condition never held; read {} records", read.len());
        for p in &mut parts {
            if let Ok(batch) = tokio::time::timeout(Duration::from_millis(50), p.poll(100)).await {
                read.extend(batch.unwrap());
            }
        }
    }
    read
}
