//! What the forecast engine's tests share: an embedded stack on a directory (so a test can
//! stop it and start it again on the same files), demand records, reference data, waiting.
#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_bus::{Assignment, Bus, Consumer, EmbeddedLog, EmbeddedLogOptions, OutRecord, PartitionReader};
use tally_cache::MemoryCache;
use tally_config::ForecastConfig;
use tally_core::Envelope;
use tally_forecast::demand::types;
use tally_forecast::reference::{LocationInfo, SkuInfo};
use tally_forecast_engine::{ForecastEngine, StockPort};
use tally_runtime::Health;
use tally_store::demand::DemandStore;
use tally_store::sqlite::SqliteDocuments;
use tally_store::{Ledger, SqliteStore, SqliteStoreOptions};
use tokio_util::sync::CancellationToken;

pub type Engine = ForecastEngine<EmbeddedLog, SqliteDocuments, MemoryCache>;

pub struct Stack {
    pub engine: Engine,
    pub bus: EmbeddedLog,
    pub cancel: CancellationToken,
    pub run: tokio::task::JoinHandle<()>,
}

pub async fn stack(dir: &std::path::Path) -> Stack {
    stack_with(dir, Arc::new(tally_forecast_engine::NoStock), |c| c).await
}

/// A stack reading stock through `stock`, with `tune` applied to the test configuration.
pub async fn stack_with(
    dir: &std::path::Path,
    stock: Arc<dyn StockPort>,
    tune: impl FnOnce(ForecastConfig) -> ForecastConfig,
) -> Stack {
    stack_adapted(dir, stock, tune, |e| e).await
}

/// The same, with `adapt` applied to the engine before it runs (another model, say).
pub async fn stack_adapted(
    dir: &std::path::Path,
    stock: Arc<dyn StockPort>,
    tune: impl FnOnce(ForecastConfig) -> ForecastConfig,
    adapt: impl FnOnce(Engine) -> Engine,
) -> Stack {
    let bus = EmbeddedLog::open(EmbeddedLogOptions {
        path: dir.join("log.db"),
        default_partitions: 4,
        durability: tally_sqlite::Durability::Normal,
    })
    .expect("log");
    let store = SqliteStore::open(SqliteStoreOptions {
        path: dir.join("state.db"),
        durability: tally_sqlite::Durability::Normal,
    })
    .expect("store")
    .documents("forecast");
    store.migrate().await.expect("migrate");
    let cache = MemoryCache::new(16 << 20, Duration::from_secs(3600));
    let cfg = tune(ForecastConfig { flush_interval_ms: 20, unpark_interval_ms: 100, ..ForecastConfig::default() });
    let engine = adapt(ForecastEngine::new(bus.clone(), store, cache, cfg, stock, Arc::new(Health::default())));
    engine.create_topics(4).await.expect("topics");
    let cancel = CancellationToken::new();
    let run = tokio::spawn(engine.clone().run(cancel.clone()));
    Stack { engine, bus, cancel, run }
}

impl Stack {
    pub async fn stop(self) {
        self.cancel.cancel();
        self.run.await.expect("engine stopped");
    }
}

pub fn sku(id: &str, pack_size: u32) -> SkuInfo {
    SkuInfo {
        sku: tally_core::Sku::parse(id).expect("sku"),
        category: "grocery".into(),
        brand: "acme".into(),
        price: 2.0,
        pack_size,
        moq: 0,
    }
}

pub fn location(id: &str, zone: &str) -> LocationInfo {
    LocationInfo {
        location: tally_core::LocationId::parse(id).expect("location"),
        region: "EU".into(),
        time_zone: zone.into(),
    }
}

pub fn topic_of(ty: &str) -> &'static str {
    match ty {
        types::SALE => "demand.sales",
        types::SUPPLY => "demand.supplies",
        _ => "demand.returns",
    }
}

/// A demand event as a record on its topic.
pub fn record(id: &str, ty: &str, data: serde_json::Value) -> (&'static str, OutRecord) {
    let key = format!("{}@{}", data["sku"].as_str().expect("sku"), data["location"].as_str().expect("location"));
    let mut e = Envelope::new("/pos", ty, data);
    e.id = id.to_owned();
    let (headers, payload) = e.to_binary();
    (topic_of(ty), OutRecord::keyed(key, headers, payload))
}

pub async fn publish(bus: &EmbeddedLog, records: Vec<(&'static str, OutRecord)>) {
    let mut by_topic: BTreeMap<&str, Vec<OutRecord>> = BTreeMap::new();
    for (topic, r) in records {
        by_topic.entry(topic).or_default().push(r);
    }
    for (topic, records) in by_topic {
        bus.publish(topic, records).await.expect("publish");
    }
}

/// `(sku, location, day) → (sold, returned, received)` as the store's rollup has it.
pub async fn rollup(store: &SqliteDocuments) -> BTreeMap<(String, String, i32), (i64, i64, i64)> {
    let mut all = BTreeMap::new();
    for (sku, location) in store.series().await.expect("series") {
        for d in store.daily(sku.clone(), location.clone()).await.expect("daily") {
            all.insert((sku.clone(), location.clone(), d.day), (d.sold, d.returned, d.received));
        }
    }
    all
}

pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small deterministic generator (the test needs no statistics, only variety).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

pub async fn dead_letters(bus: &EmbeddedLog, topic: &str, n: usize) -> Vec<(String, String)> {
    let mut consumer = bus.subscribe("dlq-reader", &[format!("{topic}.dlq")]).await.expect("subscribe");
    let Assignment::Assigned(mut parts) = consumer.next_assignment().await.expect("assignment") else {
        panic!("no assignment")
    };
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while found.len() < n {
        assert!(Instant::now() < deadline, "dead letters missing: {found:?}");
        for p in parts.iter_mut() {
            if let Ok(Ok(records)) = tokio::time::timeout(Duration::from_millis(20), p.poll(10)).await {
                for r in records {
                    let header = |name: &str| r.header(name).unwrap_or_default().to_owned();
                    found.push((header("ce_id"), header("tally_dlq_reason")));
                }
            }
        }
    }
    found.sort();
    found
}

/// Reads at least `n` records from a consumer's assignment (or fails after 20 s).
pub async fn read_all<K: Consumer>(consumer: &mut K, n: usize) -> Vec<tally_bus::Record> {
    let Assignment::Assigned(mut parts) = consumer.next_assignment().await.expect("assignment") else {
        panic!("no assignment")
    };
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while found.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} records", found.len());
        for p in parts.iter_mut() {
            if let Ok(Ok(records)) = tokio::time::timeout(Duration::from_millis(20), p.poll(10)).await {
                found.extend(records);
            }
        }
    }
    found
}

/// The test venv's python (scripts/venv.sh makes it once per machine).
pub fn venv_python() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(root.join("scripts/venv.sh")).output().expect("scripts/venv.sh runs");
    assert!(out.status.success(), "the test venv: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// Waits until the stack has applied `events` and its rollup holds `series` series.
pub async fn wait_staged(s: &Stack, events: u64, series: usize) {
    eventually("history staged", Duration::from_secs(60), || async {
        tally_runtime::ConsumerStats::get(&s.engine.consumer_stats.applied) >= events
    })
    .await;
    // Staged durably: the series are in the rollup.
    let store = s.engine.store.clone();
    eventually("series in the rollup", Duration::from_secs(10), || async {
        store.series().await.expect("series").len() == series
    })
    .await;
}
