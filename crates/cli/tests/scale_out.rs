//! Scale-out on the production stack: two `tally serve --role inventory` processes share the
//! partitions of one consumer group on Kafka (nisshi), with PostgreSQL and Redis. One is
//! killed with SIGKILL mid-stream; the survivor takes its partitions over, and the stored state
//! must equal applying each distinct event once — nothing lost, nothing applied twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env, kafka_bus};
use tally_bus::Bus;
use tally_core::Envelope;
use tally_sim::{SimConfig, Simulator};
use tally_store::{InventoryStore, Ledger};

const PARTITIONS: u32 = 4;

/// A running instance and the partitions it logged as assigned to it.
struct Instance {
    child: Child,
    assigned: Arc<Mutex<HashSet<u64>>>,
}

fn start(config: &std::path::Path) -> Instance {
    let assigned = Arc::new(Mutex::new(HashSet::new()));
    let seen = assigned.clone();
    let child = common::spawn_serve(config, &["--role", "inventory"], move |line| {
        let Ok(log) = serde_json::from_str::<serde_json::Value>(line) else { return };
        if log["message"] == "partition assigned; worker started"
            && let Some(p) = log["partition"].as_u64()
        {
            seen.lock().unwrap().insert(p);
        }
    });
    Instance { child, assigned }
}

async fn applied(store: &impl InventoryStore, group: &str, topic: &str) -> u64 {
    let mut total = 0;
    for p in 0..PARTITIONS {
        total += store.committed_offset(group, topic, p).await.unwrap().unwrap_or(0);
    }
    total
}

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_partitions_and_the_survivor_of_a_kill_finishes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (group, topic) = (format!("scale-{run}"), format!("inventory.events.{run}"));
    let brokers = env("TEST_TALLY_KAFKA_BROKERS");
    let pg = tally_store::postgres::testing::fresh_database().await;
    let config = dir.path().join("tally.toml");
    // A short session timeout so the group notices the killed member within seconds.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n\
             [bus]\nkind = \"kafka\"\nbrokers = {brokers:?}\npartitions = {PARTITIONS}\n\
             [bus.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [store]\nkind = \"postgres\"\nurl = {pg:?}\n\
             [cache]\nkind = \"redis\"\nurl = {redis:?}\nkey_prefix = \"scale:{run}:\"\n\
             [inventory]\nconsumer_group = {group:?}\nflush_interval_ms = 30\npoll_max_records = 200\n\
             [inventory.topics]\nevents = {topic:?}\navailability = \"inventory.availability.{run}\"\n\
             outcomes = \"inventory.outcomes.{run}\"\n",
            redis = env("TEST_TALLY_REDIS_URL"),
        ),
    )
    .unwrap();
    let cfg = tally_config::Config::load(Some(&config), Vec::new()).unwrap();
    let rules = tally_inventory_engine::channel_rules(&cfg.inventory);
    let store = tally_server::app::open_store(&cfg).unwrap();
    store.migrate().await.unwrap();
    let bus = kafka_bus(&brokers, "scale-test");
    bus.create_topic(&topic, PARTITIONS).await.unwrap();
    let mut sim = Simulator::new(SimConfig {
        seed: 7,
        skus: 200,
        duplicate_rate: 0.1,
        poison_rate: 0.0,
        reservation_ttl_seconds: None,
        fixed_clock: true,
        ..SimConfig::default()
    });
    let mut log: Vec<Envelope> = Vec::new();
    let mut publish = async |n: usize, log: &mut Vec<Envelope>| {
        let batch = sim.next_batch(n);
        for chunk in batch.chunks(1000) {
            bus.publish(&topic, chunk.iter().map(tally_cli::driver::record).collect()).await.unwrap();
        }
        log.extend(batch);
    };

    let mut a = start(&config);
    let b = start(&config);
    wait_until("both instances hold partitions", Duration::from_secs(60), async || {
        !a.assigned.lock().unwrap().is_empty() && !b.assigned.lock().unwrap().is_empty()
    })
    .await;
    let (held_by_a, held_by_b) = (a.assigned.lock().unwrap().clone(), b.assigned.lock().unwrap().clone());
    assert!(held_by_a.is_disjoint(&held_by_b), "one partition, one owner: {held_by_a:?} / {held_by_b:?}");

    publish(20_000, &mut log).await;
    let published = log.len() as u64;
    wait_until("a third is applied", Duration::from_secs(60), async || {
        applied(&store, &group, &topic).await >= published / 3
    })
    .await;
    a.child.kill().unwrap(); // SIGKILL: no drain, no flush, no leaving the group
    a.child.wait().unwrap();
    let at_kill = applied(&store, &group, &topic).await;
    publish(5_000, &mut log).await;
    let total = log.len() as u64;
    wait_until("the survivor applies everything", Duration::from_secs(120), async || {
        applied(&store, &group, &topic).await >= total
    })
    .await;
    assert!(at_kill < published, "the kill hit unfinished work ({at_kill} of {published} applied)");
    let taken_over: HashSet<u64> = b.assigned.lock().unwrap().clone();
    assert_eq!(taken_over.len() as u32, PARTITIONS, "the survivor took every partition: {taken_over:?}");

    common::assert_store_matches_oracle(&store, &log, &rules).await;

    let mut b = b;
    common::terminate(&mut b.child);
}
