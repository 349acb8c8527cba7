//! Supervision of the inventory role against a real PostgreSQL: a store that refuses the
//! engine's rows for good turns readiness red with the cause — for that partition only — and
//! shutdown does not wait out the grace period on it; once the cause is fixed, a restart
//! resumes from the committed offsets and loses nothing. And a consumer-only role serves its
//! health, readiness and metrics.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sqlx::Connection;
use tally_bus::{Bus, OutRecord};
use tally_config::{AuthMode, StoreConfig};
use tally_core::Envelope;
use tally_inventory::oracle::apply_each_once;
use tally_server::App;
use tally_server::app::Role;
use tally_sim::{SimConfig, Simulator};
use tally_store::{InventoryStore, Ledger};

fn record(env: &Envelope) -> OutRecord {
    let (headers, payload) = env.to_binary();
    OutRecord { key: env.subject.clone(), headers, payload }
}

async fn sql(url: &str, statement: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(statement).execute(&mut conn).await.unwrap();
}

async fn readyz(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = client.get(format!("{url}/readyz")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_rows_for_good_turns_readiness_red_and_a_restart_after_the_fix_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = stack_config(Stack::PostgresRedis, dir.path(), AuthMode::Open).await;
    cfg.server.shutdown_grace_seconds = 30;
    let StoreConfig::Postgres { url, .. } = &cfg.store else { unreachable!("a PostgreSQL stack") };
    let url = url.expose().to_owned();
    let client = reqwest::Client::new();

    let app = App::new(cfg.clone()).start(Role::Inventory).await.unwrap();
    let base = format!("http://{}", app.addr.unwrap());
    assert_eq!(readyz(&client, &base).await.0, 200, "ready before the sabotage");
    // A constraint every row of the SKU table violates: retrying can never help.
    sql(&url, "ALTER TABLE inventory_sku ADD CONSTRAINT sabotage CHECK (version < 0) NOT VALID").await;
    let sim =
        SimConfig { seed: 11, skus: 80, duplicate_rate: 0.1, reservation_ttl_seconds: None, ..SimConfig::default() };
    let events = Simulator::new(sim).next_batch(2_000);
    let topic = cfg.inventory.topics.events.clone();
    app.engine.bus.publish(&topic, events.iter().map(record).collect()).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = readyz(&client, &base).await;
        if status == 503 && !body["consumers"]["stopped_partitions"].as_array().unwrap().is_empty() {
            break body;
        }
        assert!(Instant::now() < deadline, "readiness never went red: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stopped = body["consumers"]["stopped_partitions"].as_array().unwrap();
    for partition in stopped {
        assert_eq!(partition["topic"], topic.as_str());
        let reason = partition["reason"].as_str().unwrap();
        assert!(reason.contains("sabotage"), "the cause reaches /readyz: {reason}");
    }
    assert_eq!(body["checks"]["store"], "ok", "the database answers; it is the rows it refuses");
    assert_eq!(body["status"], 503, "a problem document: {body}");
    assert!(body["detail"].as_str().unwrap().contains("is stopped"), "{body}");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("tally_inventory_partitions_stopped "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap();
    assert!(gauge >= stopped.len() as f64, "the metric shows the stopped partitions: {gauge}");
    let committed_before = {
        let mut n = 0;
        for p in 0..cfg.bus.partitions() {
            n +=
                app.engine.store.committed_offset(&cfg.inventory.consumer_group, &topic, p).await.unwrap().unwrap_or(0);
        }
        n
    };
    assert!(committed_before < events.len() as u64, "a stopped partition did not move its offset");

    // Shutdown does not wait for the stopped partitions (the grace period is 30 s).
    let started = Instant::now();
    app.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(15), "shutdown took {:?}", started.elapsed());

    sql(&url, "ALTER TABLE inventory_sku DROP CONSTRAINT sabotage").await;
    let app = App::new(cfg.clone()).start(Role::Inventory).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for p in 0..cfg.bus.partitions() {
            done +=
                app.engine.store.committed_offset(&cfg.inventory.consumer_group, &topic, p).await.unwrap().unwrap_or(0);
        }
        if done >= events.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "after the fix, offsets reached only {done}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = format!("http://{}", app.addr.unwrap());
    assert_eq!(readyz(&client, &base).await.0, 200, "ready again after the restart");
    let store = app.engine.store.clone();
    app.shutdown().await;
    let oracle = apply_each_once(&events, &tally_inventory_engine::channel_rules(&cfg.inventory));
    let stored = store.load_states(oracle.keys().cloned().collect()).await.unwrap();
    assert_eq!(stored.len(), oracle.len(), "every SKU was stored");
    for state in stored {
        let want = &oracle[&state.sku];
        assert_eq!(state.locations, want.locations, "{}: nothing lost or applied twice", state.sku);
        assert_eq!(state.reservations, want.reservations, "{}", state.sku);
    }
}

#[tokio::test]
async fn a_consumer_only_role_serves_health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), AuthMode::Keys);
    let app = App::new(cfg).start(Role::Inventory).await.unwrap();
    let base = format!("http://{}", app.addr.unwrap());
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    let (status, body) = readyz(&client, &base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["consumers"]["engines"]["inventory"]["state"], "running", "{body}");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tally_inventory_consumer_lag_records{"), "the lag to scale on is scraped");
    // Only the operational endpoints: the API is another role's.
    assert_eq!(client.get(format!("{base}/v1/stock/SKU-1")).send().await.unwrap().status(), 404);
    app.shutdown().await;
}
