//! Kill -9 the real `tally serve --role forecast` mid-stream, several times, then restart it:
//! the staged demand must equal staging each distinct sale, supply and return once — nothing
//! lost, nothing counted twice — whatever the kills interrupted. And the role's claim on the
//! CPU: its own scheduling group lowered only when the group is its own.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use tally_bus::{Bus, EmbeddedLog, EmbeddedLogOptions, OutRecord};
use tally_forecast::demand::types;
use tally_sim::demand::{DemandConfig, DemandSim, topic_of};
use tally_store::Ledger;
use tally_store::demand::DemandStore;

const TOPICS: [&str; 3] = ["demand.sales", "demand.supplies", "demand.returns"];

fn start(config: &std::path::Path) -> std::process::Child {
    start_via(&[], config)
}

/// `tally serve --role forecast` started through `wrapper` (`common::spawn_serve_via`), once it
/// listens.
fn start_via(wrapper: &[&str], config: &std::path::Path) -> std::process::Child {
    let (tx, rx) = std::sync::mpsc::channel();
    let child = common::spawn_serve_via(wrapper, config, &["--role", "forecast"], &[], move |line| {
        if line.starts_with("tally listening on ") {
            let _ = tx.send(());
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("the forecast role did not start");
    child
}

async fn committed(store: &impl Ledger) -> u64 {
    let mut total = 0;
    for topic in TOPICS {
        for p in 0..4 {
            total += store.committed_offset("tally-forecast", topic, p).await.unwrap().unwrap_or(0);
        }
    }
    total
}

/// `(sku, location, day) → (sold, returned, received)` in the store's rollup.
async fn rollup(store: &impl DemandStore) -> BTreeMap<(String, String, i32), (i64, i64, i64)> {
    let mut all = BTreeMap::new();
    for (sku, location) in store.series().await.unwrap() {
        for d in store.daily(sku.clone(), location.clone()).await.unwrap() {
            all.insert((sku.clone(), location.clone(), d.day), (d.sold, d.returned, d.received));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_the_forecast_role_loses_no_demand_and_counts_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tally.db");
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "[embedded]\npath = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
             [forecast]\nflush_interval_ms = 30\npoll_max_records = 200\nmodel = \"direct\"\n\
             refresh_interval_seconds = 86400\ndebounce_ms = 60000\ndebounce_max_wait_ms = 600000\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    let cfg = tally_config::Config::load(Some(&config), Vec::new()).unwrap();
    let store = tally_server::app::open_forecast_store(&cfg).unwrap().documents("forecast");
    store.migrate().await.unwrap();
    let sim = DemandSim::new(DemandConfig { seed: 5, skus: 60, locations: 3, ..DemandConfig::default() });
    store.put_skus(sim.skus().iter().map(tally_forecast_engine::references::sku_row).collect()).await.unwrap();
    store
        .put_locations(sim.locations().iter().map(tally_forecast_engine::references::location_row).collect())
        .await
        .unwrap();

    // Every distinct event, and what the rollup must end up holding.
    // Enough that each part takes the role well over a second to stage: the kills, a few
    // hundred milliseconds after each start, land in the middle of the work.
    let days = 365;
    let events: Vec<tally_core::Envelope> = (0..days).flat_map(|d| sim.events(sim.first_day() + d)).collect();
    let mut expected: BTreeMap<(String, String, i32), (i64, i64, i64)> = BTreeMap::new();
    for e in &events {
        let (sku, location) =
            (e.data["sku"].as_str().unwrap().to_owned(), e.data["location"].as_str().unwrap().to_owned());
        // The simulator's ids end in the (local) business day.
        let day = e.id.rsplit('-').next().unwrap().parse::<i32>().unwrap();
        let q = e.data["quantity"].as_i64().unwrap();
        let slot = expected.entry((sku, location, day)).or_default();
        match e.ty.as_str() {
            types::SALE => slot.0 += q,
            types::RETURN => slot.1 += q,
            _ => slot.2 += q,
        }
    }
    let bus = EmbeddedLog::open(EmbeddedLogOptions {
        path: db.clone(),
        default_partitions: 4,
        durability: tally_sqlite::Durability::Normal,
    })
    .unwrap();
    for topic in TOPICS {
        bus.create_topic(topic, 4).await.unwrap();
    }
    let record = |e: &tally_core::Envelope| {
        let (headers, payload) = e.to_binary();
        OutRecord::keyed(e.subject.clone().unwrap(), headers, payload)
    };
    // The log: every event, one in ten twice (a producer retry), published in four parts
    // between the kills.
    let mut published = 0u64;
    let parts: Vec<&[tally_core::Envelope]> = events.chunks(events.len().div_ceil(4)).collect();
    let mut killed_mid_stream = 0;
    for (round, part) in parts.iter().enumerate() {
        let mut by_topic: BTreeMap<&str, Vec<OutRecord>> = BTreeMap::new();
        for (i, e) in part.iter().enumerate() {
            by_topic.entry(topic_of(&e.ty)).or_default().push(record(e));
            if i % 10 == 0 {
                by_topic.entry(topic_of(&e.ty)).or_default().push(record(e));
            }
        }
        for (topic, records) in by_topic {
            published += records.len() as u64;
            for chunk in records.chunks(2000) {
                bus.publish(topic, chunk.to_vec()).await.unwrap();
            }
        }
        let mut child = start(&config);
        tokio::time::sleep(Duration::from_millis(150 + 60 * round as u64)).await;
        child.kill().unwrap(); // SIGKILL: no drain, no flush
        child.wait().unwrap();
        if committed(&store).await < published {
            killed_mid_stream += 1;
        }
    }
    assert!(killed_mid_stream >= 2, "only {killed_mid_stream} kills hit unfinished work; the test would prove nothing");

    let mut child = start(&config);
    let deadline = Instant::now() + Duration::from_secs(180);
    while committed(&store).await < published {
        assert!(Instant::now() < deadline, "caught up to {} of {published}", committed(&store).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let staged = rollup(&store).await;
    let missing: HashSet<_> = expected.keys().filter(|k| !staged.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{} series-days never staged", missing.len());
    assert_eq!(staged, expected, "every distinct event staged once");
    common::terminate(&mut child);
}

/// A process's line in `/proc/<pid>/autogroup`: `/autogroup-<id> nice <n>`.
fn autogroup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/autogroup"))
        .expect("this test needs Linux autogroups")
        .trim()
        .to_owned()
}

#[test]
fn a_forecast_role_lowers_its_own_scheduling_group_and_never_a_shared_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "[embedded]\npath = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
             [forecast]\nmodel = \"direct\"\nrefresh_interval_seconds = 86400\n",
            dir.path().join("tally.db").display().to_string()
        ),
    )
    .unwrap();
    let ours = autogroup(std::process::id());

    // As a service manager starts it (a session, so an autogroup, of its own): lowered.
    let mut own = start_via(&["setsid"], &config);
    let its = autogroup(own.id());
    own.kill().unwrap();
    own.wait().unwrap();
    assert!(its.ends_with(" nice 19"), "its own group at forecast.group_nice: {its}");
    assert_ne!(its.split(' ').next(), ours.split(' ').next(), "a group of its own");

    // Started by this test, in its session: the group is shared, so left as it was.
    let mut shared = start(&config);
    let its = autogroup(shared.id());
    shared.kill().unwrap();
    shared.wait().unwrap();
    assert_eq!(its, ours, "the shared group keeps its nice");
    assert_eq!(autogroup(std::process::id()), ours);
}
