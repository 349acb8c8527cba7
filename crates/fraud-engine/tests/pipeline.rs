//! The fraud pipeline end to end on the embedded stack (embedded log, SQLite, memory cache,
//! the model evaluated in process through the same protocol client): simulated payments in,
//! one decision per transaction out, features equal to an oracle that applies each
//! transaction once, duplicates never scored twice, and a model that goes down handing over to
//! the rules without losing or stalling anything — and taking over again when it returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tally_bus::{Bus, EmbeddedLog, EmbeddedLogOptions, OutRecord};
use tally_cache::MemoryCache;
use tally_config::FraudConfig;
use tally_core::Envelope;
use tally_fraud::{DecidedBy, FeatureSchema, HardRules, History, Profile, Transaction, assess};
use tally_fraud_engine::{Flags, FraudEngine};
use tally_model::{ModelClient, ScoreConfig, Transport};
use tally_model_server::ModelServer;
use tally_model_server::faults::FaultSettings;
use tally_runtime::Health;
use tally_sim::payments::{Pattern, Payments, PaymentsConfig, types};
use tally_store::ledger::DocumentStore;
use tally_store::sqlite::SqliteDocuments;
use tally_store::{Ledger, SqliteStore, SqliteStoreOptions};
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("root")
}

type Engine = FraudEngine<EmbeddedLog, SqliteDocuments, MemoryCache>;

/// Where a test means the model to be up, a deadline no loaded test machine misses (the
/// deadline's own behaviour is tested with the model down and slow).
const MODEL_UP_DEADLINE_MS: u64 = 5_000;

struct Stack {
    engine: Engine,
    server: Arc<ModelServer>,
    bus: EmbeddedLog,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn stack(deadline_ms: u64) -> Stack {
    let dir = tempfile::tempdir().expect("tmp");
    let bus = EmbeddedLog::open(EmbeddedLogOptions {
        path: dir.path().join("log.db"),
        default_partitions: 4,
        durability: tally_sqlite::Durability::Normal,
    })
    .expect("log");
    let store = SqliteStore::open(SqliteStoreOptions {
        path: dir.path().join("state.db"),
        durability: tally_sqlite::Durability::Normal,
    })
    .expect("store")
    .documents("fraud");
    store.migrate().await.expect("migrate");
    let cache = MemoryCache::new(64 << 20, Duration::from_secs(3600));
    let server = ModelServer::open(root().join("models"), Duration::from_micros(100), None);
    let client = Arc::new(ModelClient::new(
        Transport::Local(server.clone()),
        ScoreConfig {
            model: "fraud".into(),
            input: "features".into(),
            output: "probabilities".into(),
            column: 1,
            deadline: Duration::from_millis(deadline_ms),
            retries: 1,
            batch_max_rows: 512,
            batch_window: Duration::from_micros(300),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(200),
        },
    ));
    let cfg = FraudConfig {
        models: root().join("models/fraud").display().to_string(),
        flags_poll_ms: 50,
        flush_interval_ms: 20,
        ..FraudConfig::default()
    };
    let engine = FraudEngine::new(bus.clone(), store, cache, cfg, client, Arc::new(Health::default()));
    engine.create_topics(4).await.expect("topics");
    let cancel = CancellationToken::new();
    tokio::spawn(engine.clone().run(cancel.clone()));
    Stack { engine, server, bus, cancel, _dir: dir }
}

fn topic_of(ty: &str) -> &'static str {
    match ty {
        types::TRANSACTION => "payments.transactions",
        types::PROFILE => "customers.profiles",
        _ => "fraud.labels",
    }
}

async fn publish(bus: &EmbeddedLog, events: &[Envelope]) {
    let mut by_topic: HashMap<&str, Vec<OutRecord>> = HashMap::new();
    for e in events {
        let (headers, payload) = e.to_binary();
        let key = e.subject.clone().expect("keyed by account");
        by_topic.entry(topic_of(&e.ty)).or_default().push(OutRecord::keyed(&key, headers, payload));
    }
    for (topic, records) in by_topic {
        bus.publish(topic, records).await.expect("publish");
    }
}

/// Publishes the simulator's profiles (they come first) and waits until every one is stored,
/// then the rest. Published together, the profile and transaction partitions race and a
/// transaction may be decided before its account's profile lands — features the test did not
/// mean to give it; in production profiles precede payments by days.
async fn publish_profiles_first(s: &Stack, events: &[Envelope]) {
    let split = events.iter().position(|e| e.ty != types::PROFILE).expect("transactions");
    let applied = || tally_runtime::ConsumerStats::get(&s.engine.consumer_stats.applied);
    let before = applied();
    publish(&s.bus, &events[..split]).await;
    let started = Instant::now();
    while applied() < before + split as u64 {
        assert!(started.elapsed() < Duration::from_secs(30), "profiles not stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publish(&s.bus, &events[split..]).await;
}

fn simulate(seed: u64, n: usize) -> (Vec<Envelope>, HashMap<String, Pattern>) {
    let mut sim = Payments::new(PaymentsConfig { seed, accounts: 300, fraud_rate: 0.02, ..PaymentsConfig::default() });
    let mut patterns = HashMap::new();
    let events: Vec<Envelope> = sim
        .next_batch(n)
        .into_iter()
        .map(|g| {
            if let Some(p) = g.pattern {
                patterns.insert(g.event.id.clone(), p);
            }
            g.event
        })
        .collect();
    (events, patterns)
}

/// The features each transaction should have been scored on: every transaction applied once,
/// in order per account, against the profiles sent before it.
fn oracle(events: &[Envelope]) -> HashMap<String, Vec<f32>> {
    let schema = FeatureSchema::v1();
    let (mut profiles, mut histories) = (HashMap::new(), HashMap::<String, History>::new());
    let mut features = HashMap::new();
    for e in events {
        let payload = serde_json::to_vec(&e.data).expect("json");
        match e.ty.as_str() {
            types::PROFILE => {
                let (a, p) = Profile::from_payload(&payload).expect("profile");
                profiles.insert(a.as_str().to_owned(), p);
            }
            types::TRANSACTION => {
                let tx = Transaction::from_payload(&payload).expect("tx");
                let account = tx.account_id.as_str().to_owned();
                let h = histories.entry(account.clone()).or_default();
                let a = assess(&schema, &HardRules::default(), h, &tx, profiles.get(&account));
                features.insert(tx.transaction_id.as_str().to_owned(), a.features.expect("v1"));
            }
            _ => {}
        }
    }
    features
}

/// A transaction's decision, once readable (the counters move when a poll is decided; the
/// cache and the store a moment later).
async fn decision_of(engine: &Engine, transaction: &str) -> tally_fraud_engine::DecisionRecord {
    let started = Instant::now();
    loop {
        if let Some(d) = engine.decision(transaction).await.expect("read") {
            return d;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no decision for {transaction}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for(engine: &Engine, decisions: u64, within: Duration) {
    let started = Instant::now();
    while engine.stats.decisions() < decisions {
        assert!(started.elapsed() < within, "{} of {decisions} decisions after {within:?}", engine.stats.decisions());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_is_decided_once_on_the_features_an_oracle_computes() {
    let s = stack(MODEL_UP_DEADLINE_MS).await;
    let (events, patterns) = simulate(11, 6_000);
    publish_profiles_first(&s, &events).await;
    let txs: Vec<&Envelope> = events.iter().filter(|e| e.ty == types::TRANSACTION).collect();
    wait_for(&s.engine, txs.len() as u64, Duration::from_secs(60)).await;

    // Redelivered events (same ids) are dropped by the runtime; the same transaction under a
    // new event id reuses its decision: no new decision, no model call, no history change.
    publish(&s.bus, &txs[..200].iter().map(|e| (*e).clone()).collect::<Vec<_>>()).await;
    let mut resent: Vec<Envelope> = txs[200..300].iter().map(|e| (*e).clone()).collect();
    for e in &mut resent {
        e.id = format!("{}-again", e.id);
    }
    publish(&s.bus, &resent).await;
    let started = Instant::now();
    while s.engine.stats.duplicates.load(Ordering::Relaxed) < 100 {
        assert!(started.elapsed() < Duration::from_secs(20), "duplicates not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let want = oracle(&events);
    let mut scores = Vec::new();
    let mut by = HashMap::new();
    for e in &txs {
        let d = decision_of(&s.engine, &e.id).await;
        assert_eq!(d.features, want[&e.id], "features of {}", e.id);
        assert_eq!((d.decision.model_version.as_str(), d.decision.schema_version), ("1", 1));
        *by.entry(d.decision.decided_by).or_insert(0) += 1;
        if d.decision.decided_by != DecidedBy::Rules && d.decision.verdict != tally_fraud::Verdict::Approve {
            assert!(
                d.decision.reasons.iter().any(|r| r.feature.is_some()),
                "a model decision names the features that pushed it: {:?}",
                d.decision.reasons
            );
        }
        let fraud = patterns.get(&e.id).is_some_and(|p| *p != Pattern::Legitimate);
        scores.push(tally_fraud::Labelled { score: d.decision.score, fraud });
    }
    // The store holds exactly one decision per transaction.
    let rows = s.engine.store.appended(format!("tx/{}", txs[250].id)).await.expect("rows");
    assert_eq!(rows.iter().filter(|(id, _)| id.starts_with("decision/")).count(), 1);
    assert_eq!(s.engine.stats.decisions(), txs.len() as u64, "redeliveries and duplicates decided nothing new");
    assert!(by.get(&DecidedBy::Rules).copied().unwrap_or(0) == 0, "the model was up: {by:?}");
    let auc = tally_fraud::roc_auc(&scores).expect("both classes");
    assert!(auc > 0.9, "the reference model separates simulated fraud: {auc}");
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_model_hands_over_to_the_rules_and_takes_over_again() {
    let s = stack(500).await;
    let (events, _) = simulate(12, 3_000);
    let split = events.iter().position(|e| e.ty != types::PROFILE).expect("transactions");
    publish(&s.bus, &events[..split]).await;
    let txs: Vec<Envelope> = events[split..].iter().filter(|e| e.ty == types::TRANSACTION).cloned().collect();
    let third = txs.len() / 3;

    publish(&s.bus, &txs[..third]).await;
    wait_for(&s.engine, third as u64, Duration::from_secs(30)).await;
    s.server.faults.set(FaultSettings { down: true, ..FaultSettings::default() });
    let started = Instant::now();
    publish(&s.bus, &txs[third..2 * third]).await;
    wait_for(&s.engine, 2 * third as u64, Duration::from_secs(30)).await;
    let down_took = started.elapsed();
    s.server.faults.set(FaultSettings::default());
    tokio::time::sleep(Duration::from_millis(300)).await; // the breaker's cool-down
    publish(&s.bus, &txs[2 * third..]).await;
    wait_for(&s.engine, txs.len() as u64, Duration::from_secs(30)).await;

    let mut by_phase = [HashMap::new(), HashMap::new(), HashMap::new()];
    for (i, e) in txs.iter().enumerate() {
        let d = decision_of(&s.engine, &e.id).await;
        *by_phase[(i / third).min(2)].entry(d.decision.decided_by).or_insert(0usize) += 1;
    }
    let up = by_phase[0].get(&DecidedBy::Model).copied().unwrap_or(0);
    assert!(up * 10 >= third * 9, "up: the model decides: {:?}", by_phase[0]);
    let rules = by_phase[1].get(&DecidedBy::Rules).copied().unwrap_or(0);
    assert!(rules * 10 >= third * 9, "down: the rules decided (most of) it: {:?}", by_phase[1]);
    let model = by_phase[2].get(&DecidedBy::Model).copied().unwrap_or(0)
        + by_phase[2].get(&DecidedBy::Cache).copied().unwrap_or(0);
    assert!(model * 10 >= (txs.len() - 2 * third) * 9, "back up: the model decides again: {:?}", by_phase[2]);
    assert!(down_took < Duration::from_secs(20), "the flow never stalled: {down_took:?}");
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_version_flagged_at_runtime_is_scored_and_stored_beside_the_deciding_one() {
    let s = stack(MODEL_UP_DEADLINE_MS).await;
    // Version 2: the same card under another name (a retrained model would differ).
    let flags = Flags { shadow: Some("1".into()), ..Flags::active("1") };
    let set = s.engine.set_flags(flags).await.expect("flags");
    assert!(set.revision >= 1);
    let (events, _) = simulate(13, 800);
    publish(&s.bus, &events).await;
    let txs: Vec<&Envelope> = events.iter().filter(|e| e.ty == types::TRANSACTION).collect();
    wait_for(&s.engine, txs.len() as u64, Duration::from_secs(30)).await;
    let d = decision_of(&s.engine, &txs[0].id).await;
    let shadow = d.shadow.expect("the shadow version scored it");
    assert_eq!(shadow.version, "1");
    assert!(shadow.score.is_some());
    assert!(s.engine.set_flags(Flags::active("nope")).await.is_err(), "an unknown version is refused");
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flag_writers_each_get_a_revision_of_their_own_or_a_conflict() {
    let s = stack(MODEL_UP_DEADLINE_MS).await;
    let start = s.engine.set_flags(Flags::active("1")).await.expect("flags").revision;
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let engine = s.engine.clone();
            let flags = Flags { canary: Some("2".into()), canary_percent: 10 + i, ..Flags::active("1") };
            tokio::spawn(async move { engine.set_flags(flags).await })
        })
        .collect();
    let mut revisions = Vec::new();
    let mut conflicts = 0;
    for w in writers {
        match w.await.expect("writer") {
            Ok(flags) => revisions.push(flags.revision),
            Err(tally_fraud_engine::FlagsError::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    revisions.sort_unstable();
    let unique = revisions.len();
    revisions.dedup();
    assert_eq!(revisions.len(), unique, "two writers were told they set the same revision: {revisions:?}");
    s.engine.refresh_flags().await.expect("refresh");
    let now = s.engine.flags.get();
    assert_eq!(now.revision, start + unique as i64, "every success is one revision ({conflicts} conflicts)");
    assert_eq!(Some(now.revision), revisions.last().copied(), "the last success is in force");
    s.cancel.cancel();
}

fn label(tx: &Envelope, fraud: bool) -> Envelope {
    let mut e = Envelope::new(
        "/test/labels",
        types::LABEL,
        serde_json::json!({"transaction_id": tx.id, "account_id": tx.subject, "fraud": fraud}),
    );
    e.id = format!("label-{}", tx.id);
    e.subject = tx.subject.clone();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_join_decisions_and_a_drifted_feature_moves_its_psi() {
    let s = stack(MODEL_UP_DEADLINE_MS).await;
    let (events, patterns) = simulate(14, 4_000);
    publish_profiles_first(&s, &events).await;
    let txs: Vec<Envelope> = events.iter().filter(|e| e.ty == types::TRANSACTION).cloned().collect();
    wait_for(&s.engine, txs.len() as u64, Duration::from_secs(30)).await;

    // Labels for every transaction, days later in real life.
    let labels: Vec<Envelope> =
        txs.iter().map(|t| label(t, patterns.get(&t.id).is_some_and(|p| *p != Pattern::Legitimate))).collect();
    publish(&s.bus, &labels).await;
    let started = Instant::now();
    let report = loop {
        let report = s.engine.quality.report();
        if report.iter().any(|r| r.labels.labelled >= txs.len() * 9 / 10) {
            break report;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "labels not joined: {report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v1 = report.iter().find(|r| r.version == "1").expect("version 1");
    assert!(v1.labels.roc_auc.is_some_and(|auc| auc > 0.9), "{v1:?}");
    assert!(v1.labels.recall.is_some() && v1.labels.precision.is_some());
    let psi_of = |r: &tally_fraud_engine::VersionQuality, f: &str| {
        r.drift.iter().find(|d| d.feature == f).map(|d| d.psi).expect("a reference for the feature")
    };
    let before = psi_of(v1, "amount");
    assert!(before < 0.25, "simulated traffic is like the training data: PSI(amount) = {before}");

    // The same customers, suddenly paying 40× their amounts: the drift watch sees it.
    let drifted: Vec<Envelope> = txs
        .iter()
        .take(2_000)
        .map(|t| {
            let mut e = t.clone();
            e.id = format!("{}-drift", t.id);
            e.data["transaction_id"] = serde_json::Value::String(e.id.clone());
            let minor = e.data["amount"]["minor"].as_i64().expect("amount");
            e.data["amount"]["minor"] = serde_json::Value::from(minor * 40);
            e
        })
        .collect();
    let decided = s.engine.stats.decisions();
    publish(&s.bus, &drifted).await;
    wait_for(&s.engine, decided + drifted.len() as u64, Duration::from_secs(30)).await;
    let after = s.engine.quality.report().into_iter().find(|r| r.version == "1").map(|r| psi_of(&r, "amount"));
    let after = after.expect("version 1");
    assert!(after > 0.25 && after > 3.0 * before, "PSI(amount) moved from {before} to {after}");
    s.cancel.cancel();
}

fn twin(id: &str, account: &str) -> Envelope {
    let data = serde_json::json!({
        "transaction_id": id, "account_id": account, "card_id": "card-t",
        "amount": {"minor": 4_200, "currency": "EUR"}, "merchant_id": "m-twin", "mcc": "5999",
        "country": "DE", "channel": "ecom", "device_id": "dev-t", "occurred_at": "2026-11-30T12:00:00Z",
    });
    let mut e = Envelope::new("/test/twins", types::TRANSACTION, data);
    e.id = id.to_owned();
    e.subject = Some(account.to_owned());
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_failing_model_leaves_the_decision_to_the_score_cache_or_the_rules() {
    let s = stack(150).await;
    // Two fresh accounts paying the same at the same time: the same feature vector.
    publish(&s.bus, &[twin("twin-1", "acct-twin-1")]).await;
    assert_eq!(decision_of(&s.engine, "twin-1").await.decision.decided_by, DecidedBy::Model);

    // Slow (past the deadline): the vector scored a moment ago is reused, the model not asked.
    s.server.faults.set(FaultSettings { latency_ms: 2_000, ..FaultSettings::default() });
    publish(&s.bus, &[twin("twin-2", "acct-twin-2")]).await;
    let cached = decision_of(&s.engine, "twin-2").await;
    assert_eq!(cached.decision.decided_by, DecidedBy::Cache);
    assert_eq!(cached.decision.score, decision_of(&s.engine, "twin-1").await.decision.score);
    // A vector never scored: the deadline passes, the rules decide — and nothing waited longer.
    let started = Instant::now();
    let (events, _) = simulate(15, 400);
    publish(&s.bus, &events).await;
    let txs: Vec<&Envelope> = events.iter().filter(|e| e.ty == types::TRANSACTION).collect();
    wait_for(&s.engine, 2 + txs.len() as u64, Duration::from_secs(30)).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the slow model never held the flow: {:?}", started.elapsed());
    let slow_rules = decision_of(&s.engine, &txs.last().expect("some").id).await;
    assert_eq!(slow_rules.decision.decided_by, DecidedBy::Rules);

    // Failing (every call an error): the rules decide; then it heals and the model is back.
    s.server.faults.set(FaultSettings { error_rate: 1.0, ..FaultSettings::default() });
    // Another day's payments: new transaction ids (the simulator numbers them from 1 per run,
    // and an id reused for another payment is dead-lettered, never decided).
    let (mut events, _) = simulate(16, 400);
    events.retain(|e| e.ty == types::TRANSACTION);
    for e in &mut events {
        e.id = format!("day2-{}", e.id);
        e.data["transaction_id"] = serde_json::Value::String(e.id.clone());
    }
    let decided = s.engine.stats.decisions();
    publish(&s.bus, &events).await;
    let failing: Vec<&Envelope> = events.iter().collect();
    wait_for(&s.engine, decided + failing.len() as u64, Duration::from_secs(30)).await;
    for e in &failing {
        assert_ne!(decision_of(&s.engine, &e.id).await.decision.decided_by, DecidedBy::Model, "{}", e.id);
    }
    s.server.faults.set(FaultSettings::default());
    tokio::time::sleep(Duration::from_millis(300)).await; // the breaker's cool-down
    publish(&s.bus, &[twin("twin-3", "acct-twin-3")]).await;
    let back = decision_of(&s.engine, "twin-3").await;
    assert_ne!(back.decision.decided_by, DecidedBy::Rules, "the model (or its cached score) decides again");
    s.cancel.cancel();
}
