//! Forecasting scales out on the production stack: two `tally serve --role forecast` processes
//! share the demand topics' partitions in one consumer group on Kafka (nisshi), with
//! PostgreSQL and Redis; a full refresh is split by partition ownership, each instance
//! forecasting its own partitions' series under the interval's shared run id. One instance is
//! killed (SIGKILL) in the middle of a refresh: the survivor takes its partitions over and
//! finishes that same run — every series forecast exactly once in it, none done twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env, kafka_bus};
use tally_bus::{Bus, OutRecord};
use tally_forecast_engine::RunSummary;
use tally_forecast_engine::records;
use tally_sim::demand::{DemandConfig, DemandSim};
use tally_store::Ledger;
use tally_store::demand::DemandStore;
use tally_store::ledger::DocumentStore;

const PARTITIONS: u32 = 4;
/// Seconds between full refreshes: long enough for a rebalance to land inside one interval.
const INTERVAL_S: i64 = 60;

struct Instance {
    child: Child,
    assigned: Arc<Mutex<HashSet<u64>>>,
}

fn start(config: &std::path::Path) -> Instance {
    let assigned = Arc::new(Mutex::new(HashSet::new()));
    let seen = assigned.clone();
    let child = common::spawn_serve(config, &["--role", "forecast"], move |line| {
        let Ok(log) = serde_json::from_str::<serde_json::Value>(line) else { return };
        if log["message"] == "partition assigned; worker started"
            && let Some(p) = log["partition"].as_u64()
        {
            seen.lock().unwrap().insert(p);
        }
    });
    Instance { child, assigned }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_forecast_instances_split_a_refresh_and_the_survivor_of_a_kill_finishes_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let brokers = env("TEST_TALLY_KAFKA_BROKERS");
    let pg = tally_store::postgres::testing::fresh_database().await;
    let config = dir.path().join("tally.toml");
    let topics = [format!("demand.sales.{run}"), format!("demand.supplies.{run}"), format!("demand.returns.{run}")];
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n\
             [bus]\nkind = \"kafka\"\nbrokers = {brokers:?}\npartitions = {PARTITIONS}\n\
             [bus.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [store]\nkind = \"postgres\"\nurl = {pg:?}\n\
             [cache]\nkind = \"redis\"\nurl = {redis:?}\nkey_prefix = \"fscale:{run}:\"\n\
             [forecast]\nconsumer_group = \"forecast-{run}\"\nflush_interval_ms = 30\nmodel = \"direct\"\n\
             refresh_interval_seconds = {INTERVAL_S}\ndebounce_ms = 600000\ndebounce_max_wait_ms = 600000\n\
             batch_size = 16\n\
             [forecast.topics]\nsales = {s:?}\nsupplies = {u:?}\nreturns = {r:?}\nready = \"forecast.ready.{run}\"\n",
            redis = env("TEST_TALLY_REDIS_URL"),
            s = topics[0],
            u = topics[1],
            r = topics[2],
        ),
    )
    .unwrap();
    let cfg = tally_config::Config::load(Some(&config), Vec::new()).unwrap();
    let store = tally_server::app::open_forecast_store(&cfg).unwrap().documents("forecast");
    store.migrate().await.unwrap();
    let sim = DemandSim::new(DemandConfig { seed: 3, skus: 60, locations: 3, ..DemandConfig::default() });
    store.put_skus(sim.skus().iter().map(tally_forecast_engine::references::sku_row).collect()).await.unwrap();
    store
        .put_locations(sim.locations().iter().map(tally_forecast_engine::references::location_row).collect())
        .await
        .unwrap();
    let bus = kafka_bus(&brokers, "forecast-scale-test");
    for t in &topics {
        bus.create_topic(t, PARTITIONS).await.unwrap();
    }
    // 240 days of history for 180 series.
    let mut by_topic: BTreeMap<usize, Vec<OutRecord>> = BTreeMap::new();
    for d in 0..240 {
        for e in sim.events(sim.first_day() + d) {
            let t = match e.ty.as_str() {
                "demand.sale" => 0,
                "demand.supply" => 1,
                _ => 2,
            };
            let (headers, payload) = e.to_binary();
            by_topic.entry(t).or_default().push(OutRecord::keyed(e.subject.clone().unwrap(), headers, payload));
        }
    }
    let mut published = 0;
    for (t, records) in by_topic {
        published += records.len() as u64;
        for chunk in records.chunks(2000) {
            bus.publish(&topics[t], chunk.to_vec()).await.unwrap();
        }
    }
    let series = sim.series.len();

    let mut a = start(&config);
    let b = start(&config);
    wait_until("both instances hold partitions", Duration::from_secs(60), async || {
        !a.assigned.lock().unwrap().is_empty() && !b.assigned.lock().unwrap().is_empty()
    })
    .await;
    let committed = async || {
        let mut total = 0;
        for t in &topics {
            for p in 0..PARTITIONS {
                total += store.committed_offset(&format!("forecast-{run}"), t, p).await.unwrap().unwrap_or(0);
            }
        }
        total
    };
    wait_until("the history is staged", Duration::from_secs(120), async || committed().await >= published).await;
    assert_eq!(store.series().await.unwrap().len(), series);

    // The next interval's full run: both instances start their shares at its first second;
    // one is killed a moment later, in the middle of its share.
    let now_ms = tally_core::now_ms();
    let interval_ms = INTERVAL_S * 1000;
    let mut bucket = now_ms - now_ms.rem_euclid(interval_ms) + interval_ms;
    if bucket - now_ms < 3_000 {
        bucket += interval_ms;
    }
    let run_id = format!("full-{bucket}");
    let rows = async || store.appended(records::run_rows(&run_id)).await.unwrap().len();
    let held_by_a = a.assigned.lock().unwrap().clone();
    // Rows of the run whose series belong to the partitions `a` holds.
    let rows_of_a = async || {
        store
            .appended(records::run_rows(&run_id))
            .await
            .unwrap()
            .iter()
            .filter_map(|(id, _)| id.rsplit('/').next().and_then(|s| s.split_once('@')))
            .filter(|(sku, loc)| {
                held_by_a.contains(&u64::from(tally_forecast_engine::ownership::partition_of(sku, loc, PARTITIONS)))
            })
            .count()
    };
    tokio::time::sleep(Duration::from_millis(u64::try_from(bucket - now_ms).unwrap())).await;
    wait_until("the run is under way on both", Duration::from_secs(20), async || rows_of_a().await >= 4).await;
    a.child.kill().unwrap(); // SIGKILL: mid-refresh, no leaving the group
    a.child.wait().unwrap();
    let at_kill = rows().await;
    assert!(at_kill < series, "the kill came after the run had finished ({at_kill} of {series}): it proves nothing");

    wait_until("the survivor finishes the run", Duration::from_secs(INTERVAL_S as u64 - 5), async || {
        rows().await >= series
    })
    .await;
    let forecast_rows = store.appended(records::run_rows(&run_id)).await.unwrap();
    let distinct: HashSet<&String> = forecast_rows.iter().map(|(id, _)| id).collect();
    assert_eq!((forecast_rows.len(), distinct.len()), (series, series), "every series once in the run");
    let summaries: Vec<RunSummary> = store
        .appended(records::RUNS.to_owned())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(_, body)| serde_json::from_str::<RunSummary>(&body).ok())
        .filter(|s| s.run_id == run_id)
        .collect();
    // The survivor's own share, and its share of what it took over — which found the series
    // the killed instance had finished and did not forecast them again.
    assert!(summaries.len() >= 2, "{summaries:?}");
    let done_by_survivor: usize = summaries.iter().map(|s| s.series).sum();
    assert!(done_by_survivor < series, "the killed instance's finished series were skipped: {summaries:?}");
    assert_eq!(b.assigned.lock().unwrap().len() as u32, PARTITIONS, "the survivor took every partition");
    let mut b = b;
    common::terminate(&mut b.child);
}
