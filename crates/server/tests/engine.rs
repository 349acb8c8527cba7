//! The engine against an oracle: whatever the duplicates, reordering, partitioning, batch
//! sizes and restarts, the stored state equals applying each distinct event once, in
//! per-key (log) order.
#![allow(clippy::unwrap_used)]

mod common;

use common::Stack;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tally_bus::{Assignment, Bus, Consumer, PartitionReader};
use tally_config::AuthMode;
use tally_core::{Envelope, Sku};
use tally_inventory::aggregate::EventMeta;
use tally_inventory::oracle::{apply_each_once, effects};
use tally_inventory::{InventoryEvent, SkuState};
use tally_server::App;
use tally_server::app::Role;
use tally_sim::{SimConfig, Simulator};
use tally_store::{InventoryStore, Journal, Ledger};

async fn wait_for_offsets(app: &tally_server::RunningApp, partitions: u32, total: u64) {
    let e = &app.engine;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for p in 0..partitions {
            done +=
                e.store.committed_offset(&e.cfg.consumer_group, &e.cfg.topics.events, p).await.unwrap().unwrap_or(0);
        }
        if done >= total {
            return;
        }
        assert!(Instant::now() < deadline, "stored offsets reached {done} of {total}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The read-model rows as the store holds them: (sku, location, on_hand, reserved, available)
/// and (sku, channel, available_to_sell).
type ReadModels = (Vec<(String, String, i64, i64, i64)>, Vec<(String, String, i64)>);

async fn read_models(cfg: &tally_config::Config) -> ReadModels {
    const LEVELS: &str = "SELECT sku, location, on_hand, reserved, available FROM stock_levels";
    const CHANNELS: &str = "SELECT sku, channel, available_to_sell FROM channel_availability";
    match &cfg.store {
        tally_config::StoreConfig::Sqlite => {
            let conn = tally_sqlite::open(&cfg.embedded.path, tally_sqlite::Durability::Normal).unwrap();
            let levels = conn
                .prepare(LEVELS)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let channels = conn
                .prepare(CHANNELS)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (levels, channels)
        }
        tally_config::StoreConfig::Postgres { url, .. } => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url.expose()).await.unwrap();
            let levels = sqlx::query_as(LEVELS).fetch_all(&mut conn).await.unwrap();
            let channels = sqlx::query_as(CHANNELS).fetch_all(&mut conn).await.unwrap();
            (levels, channels)
        }
    }
}

/// One generated scenario of the oracle property test.
#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    events: usize,
    partitions: u32,
    flush_ms: u64,
    poll: usize,
    restarts: usize,
    dup: f64,
}

async fn run_case(stack: Stack, case: Case) {
    let Case { seed, events, partitions, flush_ms, poll, restarts, dup } = case;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::stack_config(stack, dir.path(), AuthMode::Open).await;
    match &mut cfg.bus {
        tally_config::BusConfig::Embedded { partitions: p } | tally_config::BusConfig::Kafka { partitions: p, .. } => {
            *p = partitions
        }
    }
    cfg.inventory.flush_interval_ms = flush_ms;
    cfg.inventory.poll_max_records = poll;
    let rules = tally_inventory_engine::channel_rules(&cfg.inventory);
    let sim_cfg = SimConfig {
        seed,
        skus: 40,
        duplicate_rate: dup,
        reorder_rate: 0.05,
        burst_rate: 0.005,
        burst_size: 30,
        poison_rate: 0.01,
        reservation_ttl_seconds: None,
        fixed_clock: true,
        ..SimConfig::default()
    };
    let log: Vec<Envelope> = Simulator::new(sim_cfg).next_batch(events);
    let chunks: Vec<&[Envelope]> = log.chunks(events.div_ceil(restarts + 1)).collect();
    let mut published = 0u64;
    for chunk in chunks {
        let app = App::new(cfg.clone()).start(Role::Inventory).await.unwrap();
        let topic = app.engine.cfg.topics.events.clone();
        for part in chunk.chunks(97) {
            let records = part.iter().map(tally_cli_record).collect();
            app.engine.bus.publish(&topic, records).await.unwrap();
        }
        published += chunk.len() as u64;
        // Stop at an arbitrary point: sometimes before everything was consumed.
        tokio::time::sleep(Duration::from_millis(seed % 40)).await;
        app.shutdown().await;
    }
    let app = App::new(cfg.clone()).start(Role::Inventory).await.unwrap();
    wait_for_offsets(&app, partitions, published).await;
    let expected = apply_each_once(&log, &rules);
    let skus: Vec<Sku> = expected.keys().cloned().collect();
    app.shutdown().await;
    // Read what is durable: the store, after the app is gone.
    let store = tally_server::app::open_store(&cfg).unwrap();
    let stored: HashMap<Sku, SkuState> =
        store.load_states(skus).await.unwrap().into_iter().map(|s| (s.sku.clone(), s)).collect();
    assert_eq!(stored.len(), expected.len(), "every SKU is stored");
    for (sku, want) in &expected {
        assert_eq!(effects(&stored[sku]), effects(want), "state of {sku} differs from the oracle");
    }
    // The read-model tables (flushed as changed rows only) agree with the oracle too.
    let (rows, channel_rows) = read_models(&cfg).await;
    let mut want_levels = 0;
    for (sku, want) in &expected {
        for l in want.levels() {
            want_levels += 1;
            let got = rows.iter().find(|r| r.0 == sku.as_str() && r.1 == l.location.as_str());
            assert_eq!(
                got.map(|r| (r.2, r.3, r.4)),
                Some((l.on_hand, l.reserved, l.available)),
                "{sku}@{}",
                l.location
            );
        }
    }
    assert_eq!(rows.len(), want_levels);
    let rows = channel_rows;
    for (sku, want) in &expected {
        for a in want.availability(&rules) {
            let got = rows.iter().find(|r| r.0 == sku.as_str() && r.1 == a.channel.as_str()).map(|r| r.2);
            assert_eq!(got, Some(a.available_to_sell), "{sku} on {}", a.channel);
        }
    }
}

fn tally_cli_record(env: &Envelope) -> tally_bus::OutRecord {
    let (headers, payload) = env.to_binary();
    tally_bus::OutRecord { key: env.subject.clone(), headers, payload }
}

/// Scenarios: any seed, 1–5 partitions, flush every 1–39 ms, polls of 1–299 records, up to
/// `max_restarts` restarts at arbitrary points, up to 30 % duplicates.
fn cases(max_restarts: usize) -> impl Strategy<Value = Case> {
    (0..10_000u64, 1..6u32, 1..40u64, 1..300usize, 0..=max_restarts, 0.0..0.3f64).prop_map(
        |(seed, partitions, flush_ms, poll, restarts, dup)| Case {
            seed,
            events: 1500,
            partitions,
            flush_ms,
            poll,
            restarts,
            dup,
        },
    )
}

fn check(stack: Stack, case: Case) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run_case(stack, case));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    #[test]
    fn duplicated_reordered_restarted_delivery_gives_the_oracle_state(case in cases(3)) {
        check(Stack::Embedded, case);
    }

    #[test]
    fn on_postgres_and_redis_duplicated_reordered_restarted_delivery_gives_the_oracle_state(case in cases(3)) {
        check(Stack::PostgresRedis, case);
    }
}

proptest! {
    // Each case joins a consumer group several times (restarts); fewer cases keep it quick.
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]
    #[test]
    fn on_kafka_postgres_and_redis_duplicated_reordered_restarted_delivery_gives_the_oracle_state(case in cases(2)) {
        check(Stack::KafkaPostgresRedis, case);
    }
}

#[tokio::test]
async fn poison_records_go_to_the_dead_letter_topic_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(common::config(dir.path(), AuthMode::Open)).start(Role::Inventory).await.unwrap();
    let e = &app.engine;
    let bad_json = tally_bus::OutRecord {
        key: Some("SKU-1".into()),
        headers: vec![("ce_id".into(), "p1".into())],
        payload: b"{".to_vec(),
    };
    let mut wrong_key = Simulator::new(SimConfig { fixed_clock: true, ..SimConfig::default() }).next().unwrap();
    wrong_key.id = "p2".into();
    let mut wrong = tally_cli_record(&wrong_key);
    wrong.key = Some("SKU-OTHER".into());
    e.bus.publish(&e.cfg.topics.events, vec![bad_json, wrong]).await.unwrap();
    let mut consumer = e.bus.subscribe("dlq-reader", &[format!("{}.dlq", e.cfg.topics.events)]).await.unwrap();
    let Assignment::Assigned(mut parts) = consumer.next_assignment().await.unwrap() else { panic!("assigned") };
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reasons.len() < 2 {
        assert!(Instant::now() < deadline, "dead letters missing: {reasons:?}");
        for p in parts.iter_mut() {
            if let Ok(Ok(recs)) = tokio::time::timeout(Duration::from_millis(20), p.poll(10)).await {
                reasons.extend(recs.iter().map(|r| r.header("tally_dlq_reason").unwrap().to_owned()));
            }
        }
    }
    reasons.sort();
    assert_eq!(reasons, vec!["invalid_envelope", "key_mismatch"]);
    // The partition moved past them: a valid event behind them is applied.
    let good = Simulator::new(SimConfig { fixed_clock: true, ..SimConfig::default() }).next().unwrap();
    e.bus.publish(&e.cfg.topics.events, vec![tally_cli_record(&good)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally_inventory_engine::EngineStats::get(&e.stats.applied) < 1 {
        assert!(Instant::now() < deadline, "event after poison not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tally_inventory_engine::EngineStats::get(&e.stats.dead_lettered), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_burst_on_one_sku_is_coalesced_and_ends_with_the_true_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path(), AuthMode::Open);
    cfg.inventory.poll_max_records = 1000;
    let app = App::new(cfg).start(Role::Inventory).await.unwrap();
    let e = &app.engine;
    let topic = e.cfg.topics.events.clone();
    let mk = |i: usize, data: serde_json::Value, ty: &str| {
        let mut env = Envelope::new("/wms", ty, data);
        env.id = format!("b{i}");
        env.subject = Some("HOT".into());
        tally_cli_record(&env)
    };
    let mut burst = vec![mk(
        0,
        serde_json::json!({"sku": "HOT", "location": "wh-1", "on_hand": 5000, "source_version": 1}),
        "stock.snapshot",
    )];
    for i in 1..=1000 {
        burst.push(mk(
            i,
            serde_json::json!({"sku": "HOT", "location": "wh-1", "delta": -1, "reason": "damage"}),
            "stock.adjusted",
        ));
    }
    e.bus.publish(&topic, burst).await.unwrap();
    let mut consumer =
        e.bus.subscribe("availability-reader", std::slice::from_ref(&e.cfg.topics.availability)).await.unwrap();
    let Assignment::Assigned(mut parts) = consumer.next_assignment().await.unwrap() else { panic!("assigned") };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut messages = Vec::new();
    loop {
        for p in parts.iter_mut() {
            if let Ok(Ok(recs)) = tokio::time::timeout(Duration::from_millis(20), p.poll(1000)).await {
                messages.extend(recs);
            }
        }
        let last_ats = messages.last().map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            v["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "storefront").unwrap()["available_to_sell"].as_i64().unwrap()
        });
        if last_ats == Some(4000) {
            break;
        }
        assert!(Instant::now() < deadline, "availability never reached the true state; last {last_ats:?}");
    }
    assert!(messages.len() <= 20, "1,001 events produced {} availability messages", messages.len());
    app.shutdown().await;
}

/// A flush commits its applied events before the states and offsets that make them count. If
/// the process dies in between, those events' rows exist past the committed offset: on restart
/// they must not be taken for duplicates, or their effects would be lost.
#[tokio::test]
async fn applied_event_rows_past_the_committed_offset_do_not_suppress_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path(), AuthMode::Open);
    cfg.bus = tally_config::BusConfig::Embedded { partitions: 1 };
    let rules = tally_inventory_engine::channel_rules(&cfg.inventory);
    let sim = SimConfig {
        seed: 5,
        skus: 20,
        poison_rate: 0.0,
        // Expiry runs on the wall clock, which the oracle does not model.
        reservation_ttl_seconds: None,
        fixed_clock: true,
        ..SimConfig::default()
    };
    let log: Vec<Envelope> = Simulator::new(sim).next_batch(400);
    let topic = cfg.inventory.topics.events.clone();
    {
        // The state a crash between the two transactions of the first flush leaves behind:
        // every event in the log, the first 300 recorded as applied, no state, no offset.
        let bus = tally_bus::EmbeddedLog::open(tally_bus::EmbeddedLogOptions {
            path: cfg.embedded.path.clone(),
            default_partitions: 1,
            durability: tally_sqlite::Durability::Normal,
        })
        .unwrap();
        bus.create_topic(&topic, 1).await.unwrap();
        bus.publish(&topic, log.iter().map(tally_cli_record).collect()).await.unwrap();
        let store = tally_store::SqliteStore::open(tally_store::SqliteStoreOptions {
            path: cfg.embedded.path.clone(),
            durability: tally_sqlite::Durability::Normal,
        })
        .unwrap();
        store.migrate().await.unwrap();
        let mut states: HashMap<Sku, SkuState> = HashMap::new();
        let mut seen = HashSet::new();
        let mut applied = Vec::new();
        for (offset, env) in log.iter().enumerate().take(300) {
            let ev = InventoryEvent::from_envelope(env).unwrap();
            if !seen.insert(env.key()) {
                continue;
            }
            let state = states.entry(ev.sku().clone()).or_insert_with(|| SkuState::new(ev.sku().clone()));
            let a = state
                .apply(&ev, EventMeta { source: &env.source, id: &env.id, time_ms: env.time_ms() }, &rules)
                .unwrap();
            applied.push((
                tally_store::ProcessedEvent {
                    key: env.key(),
                    topic: topic.clone(),
                    partition: 0,
                    offset: offset as u64,
                    outcome: Some(tally_store::RawOutcome::of(&a.outcome)),
                    digest: Some(ev.digest()),
                },
                a.audit,
            ));
        }
        store.flush(&tally_store::conformance::flush(Vec::new(), applied, Vec::new())).await.unwrap();
    }
    let app = App::new(cfg.clone()).start(Role::Inventory).await.unwrap();
    wait_for_offsets(&app, 1, log.len() as u64).await;
    let expected = apply_each_once(&log, &rules);
    let stored = app.engine.read_states(&expected.keys().cloned().collect::<Vec<_>>()).await.unwrap();
    app.shutdown().await;
    for (sku, want) in &expected {
        assert_eq!(effects(&stored[sku]), effects(want), "state of {sku} differs from the oracle");
    }
}

/// Two engines one after the other in one process, each on fresh Kafka topics and group: the
/// second must consume everything as the first did (a benchmark once saw the second stall).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_in_the_same_process_consumes_all_of_its_topic() {
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = common::stack_config(Stack::KafkaPostgresRedis, dir.path(), AuthMode::Open).await;
        let app = App::new(cfg.clone()).start(Role::Inventory).await.unwrap();
        let sim = SimConfig {
            seed: round,
            skus: 500,
            reservation_ttl_seconds: None,
            fixed_clock: true,
            ..SimConfig::default()
        };
        let events = Simulator::new(sim).next_batch(5_000);
        let records = events.iter().map(tally_cli_record).collect();
        app.engine.bus.publish(&app.engine.cfg.topics.events, records).await.unwrap();
        wait_for_offsets(&app, cfg.bus.partitions(), events.len() as u64).await;
        app.shutdown().await;
    }
}

/// The idempotency window of each partition is handed to the next owner through Redis: after
/// a restart the window comes from the cache alone and still drops duplicates of events from
/// before the restart; with the cache's copy gone, it comes from PostgreSQL and does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_owner_takes_the_idempotency_window_from_redis_and_from_postgres_when_redis_lost_it() {
    use tally_cache::Cache;
    use tally_runtime::window::{self, WindowKeys};

    let dir = tempfile::tempdir().unwrap();
    let cfg = common::stack_config(Stack::PostgresRedis, dir.path(), AuthMode::Open).await;
    let partitions = cfg.bus.partitions();
    let sim = SimConfig {
        seed: 5,
        skus: 300,
        duplicate_rate: 0.0,
        reservation_ttl_seconds: None,
        fixed_clock: true,
        ..SimConfig::default()
    };
    let events = Simulator::new(sim).next_batch(6_000);
    let topic = cfg.inventory.topics.events.clone();
    let app = App::new(cfg.clone()).start(Role::Inventory).await.unwrap();
    app.engine.bus.publish(&topic, events.iter().map(tally_cli_record).collect()).await.unwrap();
    wait_for_offsets(&app, partitions, events.len() as u64).await;
    let (store, cache) = (app.engine.store.clone(), app.engine.cache.clone());
    app.shutdown().await;

    // For each partition's complete segments, the cache holds what the store holds.
    let mut segment_keys = Vec::new();
    for p in 0..partitions {
        let committed = store.committed_offset(&cfg.inventory.consumer_group, &topic, p).await.unwrap().unwrap();
        let end = committed - committed % window::SEGMENT;
        assert!(end > 0, "partition {p} has no complete segment");
        let keys = WindowKeys::new("inv", &cfg.inventory.consumer_group, &topic, p);
        let (from_cache, from_store) = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                // The last write is off the worker's path: wait for it.
                let loaded = window::load(&cache, &store, &keys, 0, end).await.unwrap();
                if loaded.1 == 0 {
                    return loaded;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the cache never covered the whole window");
        assert_eq!(from_store, 0);
        let authority = store.processed_between(&topic, p, 0, end).await.unwrap();
        let keys_of =
            |v: &[tally_store::ProcessedEvent]| v.iter().map(|e| (e.offset, e.key.clone())).collect::<Vec<_>>();
        assert_eq!(keys_of(&from_cache), keys_of(&authority), "partition {p}");
        segment_keys.extend(
            (0..=end / window::SEGMENT).map(|s| format!("inv:window:{}:{topic}:{p}:{s}", cfg.inventory.consumer_group)),
        );
    }

    let oracle = apply_each_once(&events, &tally_inventory_engine::channel_rules(&cfg.inventory));
    for round in ["window from Redis", "window from PostgreSQL"] {
        if round == "window from PostgreSQL" {
            cache.delete(&segment_keys).await.unwrap();
        }
        // Duplicates of the first events, sent again after the restart at new offsets.
        let app = App::new(cfg.clone()).start(Role::Inventory).await.unwrap();
        let resent: Vec<Envelope> = events[..500].to_vec();
        app.engine.bus.publish(&topic, resent.iter().map(tally_cli_record).collect()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while app.engine.stats.handled() < resent.len() as u64 {
            assert!(Instant::now() < deadline, "{round}: the resent events were not handled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let dropped = tally_inventory_engine::EngineStats::get(&app.engine.stats.duplicates);
        let dead = tally_inventory_engine::EngineStats::get(&app.engine.stats.dead_lettered);
        assert_eq!(dropped + dead, resent.len() as u64, "{round}: a resent event was applied again");
        app.shutdown().await;
        let stored = store.load_states(oracle.keys().cloned().collect()).await.unwrap();
        for state in stored {
            assert_eq!(effects(&state), effects(&oracle[&state.sku]), "{round}: {}", state.sku);
        }
    }
}
