//! Kill -9 the real `tally serve` (fraud worker included) mid-stream on Kafka + PostgreSQL +
//! Redis, several times, then restart it: every transaction has exactly one decision, scored
//! on the features an oracle computes by applying each transaction once in order, and every
//! account's stored history equals the oracle's — nothing lost, nothing counted twice, even
//! though Redis kept decisions the killed process cached before PostgreSQL committed them.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Server, env, kafka_bus};
use tally_bus::{Bus, OutRecord};
use tally_core::Envelope;
use tally_fraud::{FeatureSchema, HardRules, History, Profile, Transaction, assess};
use tally_sim::payments::{Payments, PaymentsConfig, types};
use tally_store::Ledger;
use tally_store::ledger::DocumentStore;

const PARTITIONS: u32 = 4;

fn records(events: &[Envelope]) -> Vec<OutRecord> {
    events
        .iter()
        .map(|e| {
            let (headers, payload) = e.to_binary();
            OutRecord::keyed(e.subject.as_deref().unwrap(), headers, payload)
        })
        .collect()
}

async fn committed(store: &impl Ledger, group: &str, topic: &str) -> u64 {
    let mut total = 0;
    for p in 0..PARTITIONS {
        total += store.committed_offset(group, topic, p).await.unwrap().unwrap_or(0);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_the_fraud_worker_decides_each_transaction_once_on_the_oracles_features() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (brokers, redis) = (env("TEST_TALLY_KAFKA_BROKERS"), env("TEST_TALLY_REDIS_URL"));
    let pg = tally_store::postgres::testing::fresh_database().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let (group, transactions, profiles) =
        (format!("fraud-crash-{run}"), format!("payments.transactions.{run}"), format!("customers.profiles.{run}"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
             [bus]\nkind = \"kafka\"\nbrokers = {brokers:?}\npartitions = {PARTITIONS}\n\
             [bus.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [store]\nkind = \"postgres\"\nurl = {pg:?}\n\
             [cache]\nkind = \"redis\"\nurl = {redis:?}\nkey_prefix = \"fraudcrash:{run}:\"\n\
             [inventory]\nconsumer_group = \"inv-{run}\"\n\
             [inventory.topics]\nevents = \"inventory.events.{run}\"\navailability = \"inventory.availability.{run}\"\n\
             outcomes = \"inventory.outcomes.{run}\"\n\
             [fraud]\nconsumer_group = {group:?}\nflush_interval_ms = 30\npoll_max_records = 100\nmodels = {:?}\n\
             [fraud.topics]\ntransactions = {transactions:?}\nprofiles = {profiles:?}\n\
             labels = \"fraud.labels.{run}\"\ndecisions = \"fraud.decisions.{run}\"\n\
             [model]\nrepository = {:?}\ndeadline_ms = 5000\n",
            root.join("models/fraud").display().to_string(),
            root.join("models").display().to_string(),
        ),
    )
    .unwrap();
    let cfg = tally_config::Config::load(Some(&config), Vec::new()).unwrap();
    let store = tally_server::app::open_store(&cfg).unwrap().documents(tally_server::app::FRAUD_SUBSYSTEM);
    store.migrate().await.unwrap();

    let mut sim =
        Payments::new(PaymentsConfig { seed: 21, accounts: 400, fraud_rate: 0.03, ..PaymentsConfig::default() });
    let events: Vec<Envelope> = sim.next_batch(9_000).into_iter().map(|g| g.event).collect();
    let profile_events: Vec<Envelope> = events.iter().filter(|e| e.ty == types::PROFILE).cloned().collect();
    let tx_events: Vec<Envelope> = events.iter().filter(|e| e.ty == types::TRANSACTION).cloned().collect();

    // Profiles first, consumed before any transaction (two topics have no order between them).
    let bus = kafka_bus(&brokers, "fraud-crash-producer");
    for t in [&transactions, &profiles] {
        bus.create_topic(t, PARTITIONS).await.unwrap();
    }
    bus.publish(&profiles, records(&profile_events)).await.unwrap();
    let mut server = Server::start(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&store, &group, &profiles).await < profile_events.len() as u64 {
        assert!(Instant::now() < deadline, "profiles not consumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Then the transactions as a stream, with kills in the middle of it.
    let mut killed_mid_stream = 0;
    let chunks: Vec<&[Envelope]> = tx_events.chunks(tx_events.len() / 4 + 1).collect();
    for (round, chunk) in chunks.iter().enumerate() {
        bus.publish(&transactions, records(chunk)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250 + 90 * round as u64)).await;
        server.child.kill().unwrap(); // SIGKILL: no drain, no flush
        server.child.wait().unwrap();
        if committed(&store, &group, &transactions).await < tx_events.len() as u64 {
            killed_mid_stream += 1;
        }
        server = Server::start(&config);
    }
    assert!(killed_mid_stream >= 2, "only {killed_mid_stream} kills hit unfinished work; the test would prove nothing");
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&store, &group, &transactions).await < tx_events.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "caught up to {} of {}",
            committed(&store, &group, &transactions).await,
            tx_events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The oracle: each transaction once, in order, after every profile.
    let schema = FeatureSchema::v1();
    let mut profiles_of = HashMap::new();
    for e in &profile_events {
        let (a, p) = Profile::from_payload(&serde_json::to_vec(&e.data).unwrap()).unwrap();
        profiles_of.insert(a.as_str().to_owned(), p);
    }
    let mut histories: HashMap<String, History> = HashMap::new();
    let mut want = Vec::new();
    for e in &tx_events {
        let tx = Transaction::from_payload(&serde_json::to_vec(&e.data).unwrap()).unwrap();
        let account = tx.account_id.as_str().to_owned();
        let a = assess(
            &schema,
            &HardRules::default(),
            histories.entry(account.clone()).or_default(),
            &tx,
            profiles_of.get(&account),
        );
        want.push((e.id.clone(), a.features.unwrap()));
    }
    for (tx, features) in &want {
        let rows = store.appended(format!("tx/{tx}")).await.unwrap();
        let decisions: Vec<&(String, String)> = rows.iter().filter(|(id, _)| id.starts_with("decision/")).collect();
        assert_eq!(decisions.len(), 1, "one decision for {tx}");
        let d: serde_json::Value = serde_json::from_str(&decisions[0].1).unwrap();
        let got: Vec<f32> = serde_json::from_value(d["features"].clone()).unwrap();
        assert_eq!(&got, features, "features of {tx}");
    }
    let keys: Vec<String> = histories.keys().map(|a| format!("history/{a}")).collect();
    let stored: HashMap<String, History> = store
        .documents(keys)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _, body)| (k.trim_start_matches("history/").to_owned(), serde_json::from_str(&body).unwrap()))
        .collect();
    assert_eq!(stored.len(), histories.len(), "a history per account");
    for (account, history) in &histories {
        assert_eq!(&stored[account], history, "the history of {account}");
    }
    server.stop();
}
