//! Kill -9 the real `tally serve` process mid-stream, several times, then restart it: the
//! durable state must equal applying each distinct event once in log order — nothing lost,
//! nothing applied twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;

use tally_bus::{Bus, EmbeddedLog, EmbeddedLogOptions};
use tally_core::{Envelope, Sku};
use tally_inventory::InventoryEvent;
use tally_sim::{SimConfig, Simulator};
use tally_store::{InventoryStore, Ledger};

async fn applied_offsets(store: &impl InventoryStore) -> u64 {
    let mut total = 0;
    for p in 0..4 {
        total += store.committed_offset("tally-inventory", "inventory.events", p).await.unwrap().unwrap_or(0);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_stream_loses_nothing_and_applies_nothing_twice() {
    crash_case(false).await;
}

/// The same with the PostgreSQL store and the Redis cache (the servers `scripts/test.sh`
/// starts): Redis keeps what the killed process wrote, ahead of what PostgreSQL committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_on_postgres_and_redis_loses_nothing_and_applies_nothing_twice() {
    crash_case(true).await;
}

async fn crash_case(postgres_redis: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tally.db");
    let config = dir.path().join("tally.toml");
    let mut toml = format!(
        "[embedded]\npath = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n[inventory]\nflush_interval_ms = 30\npoll_max_records = 200\n",
        db.display().to_string()
    );
    if postgres_redis {
        let pg = tally_store::postgres::testing::fresh_database().await;
        let redis = std::env::var("TEST_TALLY_REDIS_URL")
            .expect("TEST_TALLY_REDIS_URL is not set: run the tests with scripts/test.sh, which starts Redis");
        let prefix = format!("crash:{}:", uuid::Uuid::new_v4().simple());
        toml.push_str(&format!(
            "[store]\nkind = \"postgres\"\nurl = {pg:?}\n[cache]\nkind = \"redis\"\nurl = {redis:?}\nkey_prefix = {prefix:?}\n"
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let cfg = tally_config::Config::load(Some(&config), Vec::new()).unwrap();
    let rules = tally_inventory_engine::channel_rules(&tally_config::Config::default().inventory);
    let sim_cfg = SimConfig {
        seed: 99,
        skus: 300,
        duplicate_rate: 0.1,
        poison_rate: 0.005,
        reservation_ttl_seconds: None,
        fixed_clock: true,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(sim_cfg);
    let mut log: Vec<Envelope> = Vec::new();

    // A backlog in the log before the first start.
    {
        let bus = EmbeddedLog::open(EmbeddedLogOptions {
            path: db.clone(),
            default_partitions: 4,
            durability: tally_sqlite::Durability::Normal,
        })
        .unwrap();
        bus.create_topic("inventory.events", 4).await.unwrap();
        let backlog = sim.next_batch(40_000);
        for chunk in backlog.chunks(2000) {
            bus.publish("inventory.events", chunk.iter().map(tally_cli::driver::record).collect()).await.unwrap();
        }
        log.extend(backlog);
    }
    let store = tally_server::app::open_store(&cfg).unwrap();
    store.migrate().await.unwrap();
    let client = reqwest::Client::new();
    let mut killed_mid_stream = 0;
    for round in 0..4u64 {
        let mut server = Server::start(&config);
        // More traffic over HTTP while it consumes; each batch is durable once answered 202
        // (the deliberate poison is refused there and never reaches the log).
        for _ in 0..3 {
            let batch: Vec<Envelope> =
                sim.next_batch(500).into_iter().filter(|e| InventoryEvent::from_envelope(e).is_ok()).collect();
            let resp = client.post(format!("{}/v1/events", server.url)).json(&batch).send().await.unwrap();
            assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
            log.extend(batch);
        }
        tokio::time::sleep(Duration::from_millis(150 + 97 * round)).await;
        server.child.kill().unwrap(); // SIGKILL: no drain, no flush
        server.child.wait().unwrap();
        if applied_offsets(&store).await < log.len() as u64 {
            killed_mid_stream += 1;
        }
    }
    assert!(killed_mid_stream >= 2, "only {killed_mid_stream} kills hit unfinished work; the test would prove nothing");

    let server = Server::start(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    while applied_offsets(&store).await < log.len() as u64 {
        assert!(Instant::now() < deadline, "caught up to {} of {}", applied_offsets(&store).await, log.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected = common::assert_store_matches_oracle(&store, &log, &rules).await;
    // The API serves the same truth.
    let hot = &expected[&Sku::parse("SKU-000000").unwrap()];
    let body: serde_json::Value =
        client.get(format!("{}/v1/stock/SKU-000000", server.url)).send().await.unwrap().json().await.unwrap();
    let want: Vec<i64> = hot.availability(&rules).iter().map(|a| a.available_to_sell).collect();
    let got: Vec<i64> =
        body["channels"].as_array().unwrap().iter().map(|c| c["available_to_sell"].as_i64().unwrap()).collect();
    assert_eq!(got, want);
    // A graceful stop exits cleanly.
    server.stop();
}
