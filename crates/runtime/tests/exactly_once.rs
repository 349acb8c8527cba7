//! The runtime's guarantees, shown with a handler of its own — not inventory's: a counter per
//! key whose state is a ledger document and whose every event appends a row. After duplicates,
//! redeliveries, a worker that panics, a process killed mid-stream and a store that refuses one
//! partition's rows, every key's total and rows equal applying each distinct event once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tally_bus::{Bus, EmbeddedLog, EmbeddedLogOptions, OutRecord, Record};
use tally_cache::MemoryCache;
use tally_core::{Attributes, Envelope, EventKey};
use tally_runtime::{
    ConsumerMetrics, ConsumerSpec, ConsumerStats, Engine, FlushSettings, Fresh, Handler, HandlerError, Health, Output,
    OutputId, OutputTopic, Parsed, Refusal,
};
use tally_store::ledger::{AppendedRow, Document, DocumentStore, Documents};
use tally_store::sqlite::SqliteDocuments;
use tally_store::{Flush, Journal, Ledger, ProcessedEvent, RetryHint, SqliteStore, SqliteStoreOptions, StoreError};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "counters";
const PARTITIONS: u32 = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Add {
    key: String,
    amount: i64,
    /// Sets the total instead of adding to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    set: Option<i64>,
}

/// No total may pass this: an addition that would is refused (`over_cap`), so whether an event
/// is refused depends on the events before it.
const CAP: i64 = 1_000_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Total {
    total: i64,
    applied_offset: i64,
}

/// The test subsystem's handler: per key, a running total.
struct CounterHandler<S> {
    store: S,
    totals: HashMap<String, Total>,
    /// Panics at the first event with this amount, once per test.
    panic_at: Option<(i64, Arc<AtomicBool>)>,
}

impl<S: DocumentStore> Handler for CounterHandler<S> {
    type Event = Add;
    type Outcome = Total;
    type Effects = Documents;

    fn parse(&self, attributes: &Attributes, record: &Record) -> Result<Parsed<Add>, Refusal> {
        if attributes.ty != "counter.add" {
            return Err(Refusal { reason: "unknown_type", detail: format!("no such type {}", attributes.ty) });
        }
        let add: Add = serde_json::from_slice(&record.payload)
            .map_err(|e| Refusal { reason: "invalid_payload", detail: e.to_string() })?;
        let digest = add.amount.wrapping_mul(31).wrapping_add(add.key.len() as i64).wrapping_add(add.set.unwrap_or(-1));
        Ok(Parsed { partition_key: add.key.clone(), digest, event: add })
    }

    async fn prepare(&mut self, events: &[&Add]) -> Result<(), HandlerError> {
        let missing: Vec<String> = events
            .iter()
            .map(|e| e.key.clone())
            .filter(|k| !self.totals.contains_key(k))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for (key, _, body) in self.store.documents(missing).await? {
            let total = serde_json::from_str(&body).map_err(|e| HandlerError {
                during: "decoding a total",
                hint: RetryHint::Permanent,
                source: Box::new(e),
            })?;
            self.totals.insert(key, total);
        }
        Ok(())
    }

    fn already_applied(&self, event: &Add, offset: u64) -> bool {
        self.totals.get(&event.key).is_some_and(|t| offset as i64 <= t.applied_offset)
    }

    async fn apply(&mut self, events: Vec<Fresh<Add>>, out: &mut Output<Documents>) -> Vec<Result<Total, Refusal>> {
        let mut answers = Vec::new();
        for Fresh { event, attributes, offset } in events {
            if let Some((amount, fired)) = &self.panic_at
                && event.amount == *amount
                && !fired.swap(true, Ordering::SeqCst)
            {
                panic!("a bug in the handler, at amount {amount}");
            }
            let total = self.totals.entry(event.key.clone()).or_default();
            if event.set.is_none() && total.total + event.amount > CAP {
                answers.push(Err(Refusal { reason: "over_cap", detail: format!("the total may not pass {CAP}") }));
                continue;
            }
            total.total = event.set.unwrap_or(total.total + event.amount);
            total.applied_offset = offset as i64;
            let body = serde_json::to_string(&*total).expect("json");
            out.effects.put(event.key.clone(), Document { version: offset as i64, body: body.clone() });
            out.effects.appended.push(AppendedRow {
                id: format!("{}/{}", attributes.source, attributes.id),
                key: event.key.clone(),
                body: format!("{{\"amount\":{}}}", event.amount),
            });
            out.publish(OutputId(0), OutRecord::keyed(event.key.clone(), Vec::new(), body.into_bytes()));
            answers.push(Ok(total.clone()));
        }
        answers
    }
}

/// A ledger that refuses, permanently, every flush carrying `refused` partition's rows.
#[derive(Clone)]
struct Refusing {
    inner: SqliteDocuments,
    refused: Option<u32>,
}

impl Ledger for Refusing {
    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.inner.migrate().await
    }
    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        self.inner.pending_migrations().await
    }
    async fn committed_offset(&self, g: &str, t: &str, p: u32) -> Result<Option<u64>, StoreError> {
        self.inner.committed_offset(g, t, p).await
    }
    async fn processed_between(&self, t: &str, p: u32, a: u64, b: u64) -> Result<Vec<ProcessedEvent>, StoreError> {
        self.inner.processed_between(t, p, a, b).await
    }
    async fn processed_many(&self, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
        self.inner.processed_many(keys).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn statements(&self) -> u64 {
        self.inner.statements()
    }
}

impl Journal<Documents> for Refusing {
    async fn flush(&self, batch: &[Flush<Documents>]) -> Result<(), StoreError> {
        let refused = batch.iter().flat_map(|f| &f.offsets).any(|o| Some(o.partition) == self.refused);
        if refused {
            let source = "new row for relation \"ledger_documents\" violates check constraint \"sabotage\"";
            return Err(StoreError::Backend { during: "a test", hint: RetryHint::Permanent, source: source.into() });
        }
        self.inner.flush(batch).await
    }
}

impl DocumentStore for Refusing {
    async fn documents(&self, keys: Vec<String>) -> Result<Vec<(String, i64, String)>, StoreError> {
        self.inner.documents(keys).await
    }
    async fn appended(&self, key: String) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.appended(key).await
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runtime.db");
        Self { _dir: dir, path }
    }

    fn bus(&self) -> EmbeddedLog {
        EmbeddedLog::open(EmbeddedLogOptions {
            path: self.path.clone(),
            default_partitions: PARTITIONS,
            durability: tally_sqlite::Durability::Normal,
        })
        .expect("log")
    }

    async fn ledger(&self) -> SqliteDocuments {
        ledger_at(&self.path).await
    }
}

async fn ledger_at(path: &std::path::Path) -> SqliteDocuments {
    let store =
        SqliteStore::open(SqliteStoreOptions { path: path.to_owned(), durability: tally_sqlite::Durability::Normal })
            .expect("store")
            .documents("counter");
    store.migrate().await.expect("migrate");
    store
}

type TestEngine<B, S> = Engine<B, S, MemoryCache, CounterHandler<S>>;

fn counter_engine<B: Bus, S: DocumentStore>(
    bus: B,
    store: S,
    panic_at: Option<(i64, Arc<AtomicBool>)>,
) -> (TestEngine<B, S>, Arc<ConsumerStats>) {
    let spec = ConsumerSpec {
        subsystem: "counter",
        group: "counters".into(),
        topics: vec![TOPIC.into()],
        outputs: vec![OutputTopic { name: "totals".into(), latest_per_key: true }],
        cache_prefix: "ctr".into(),
        poll_max_records: 50,
        dedupe_window: 10_000,
        flush: FlushSettings {
            group: "counters".into(),
            interval: Duration::from_millis(20),
            max_rows: 200,
            parallelism: 2,
        },
    };
    let stats = Arc::new(ConsumerStats::default());
    let metrics = Arc::new(ConsumerMetrics::new("counter", stats.clone()));
    let factory = {
        let store = store.clone();
        Arc::new(move |_: &str, _: u32| CounterHandler {
            store: store.clone(),
            totals: HashMap::new(),
            panic_at: panic_at.clone(),
        })
    };
    let cache = MemoryCache::new(1 << 20, Duration::from_secs(60));
    let engine = Engine::new(
        bus,
        store,
        cache,
        Arc::new(spec),
        Arc::default(),
        metrics,
        Arc::new(Health::default()),
        None,
        factory,
    );
    (engine, stats)
}

/// `n` distinct events over `keys` keys, amounts 1..=n (so every event's contribution shows).
fn events(n: i64, keys: i64, first_id: i64) -> Vec<(String, Envelope)> {
    (0..n)
        .map(|i| {
            let key = format!("k{}", (first_id + i) % keys);
            let add = Add { key: key.clone(), amount: first_id + i + 1, set: None };
            let mut env = Envelope::new("/test", "counter.add", serde_json::to_value(&add).expect("json"));
            env.id = format!("e{}", first_id + i);
            (key, env)
        })
        .collect()
}

fn records(events: &[(String, Envelope)]) -> Vec<OutRecord> {
    events
        .iter()
        .map(|(key, env)| {
            let (headers, payload) = env.to_binary();
            OutRecord::keyed(key.clone(), headers, payload)
        })
        .collect()
}

/// Per key: the sum of each distinct event's amount, and the ids of its rows.
fn oracle(events: &[(String, Envelope)]) -> BTreeMap<String, (i64, Vec<String>)> {
    let mut seen = HashSet::new();
    let mut want: BTreeMap<String, (i64, Vec<String>)> = BTreeMap::new();
    for (key, env) in events {
        if !seen.insert(env.id.clone()) {
            continue;
        }
        let add: Add = serde_json::from_value(env.data.clone()).expect("json");
        let entry = want.entry(key.clone()).or_default();
        entry.0 = add.set.unwrap_or(entry.0 + add.amount);
        entry.1.push(format!("/test/{}", env.id));
    }
    for (_, ids) in want.values_mut() {
        ids.sort();
    }
    want
}

async fn stored(
    store: &impl DocumentStore,
    keys: impl Iterator<Item = String>,
) -> BTreeMap<String, (i64, Vec<String>)> {
    let mut got = BTreeMap::new();
    for key in keys {
        let docs = store.documents(vec![key.clone()]).await.expect("documents");
        let total: Total = docs.first().map(|d| serde_json::from_str(&d.2).expect("json")).unwrap_or_default();
        let mut ids: Vec<String> =
            store.appended(key.clone()).await.expect("appended").into_iter().map(|(id, _)| id).collect();
        ids.sort();
        got.insert(key, (total.total, ids));
    }
    got
}

async fn wait_committed(store: &impl Ledger, bus: &EmbeddedLog, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = true;
        for p in 0..PARTITIONS {
            let end = bus.end_offset(TOPIC, p).unwrap_or(0);
            let committed = store.committed_offset("counters", TOPIC, p).await.expect("offset").unwrap_or(0);
            done &= committed >= end;
        }
        if done {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not everything was committed in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_redeliveries_apply_once_and_a_panicking_worker_is_restarted() {
    let setup = Setup::new();
    let (bus, store) = (setup.bus(), setup.ledger().await);
    let panicked = Arc::new(AtomicBool::new(false));
    let (engine, stats) = counter_engine(bus.clone(), store.clone(), Some((150, panicked.clone())));
    engine.create_topics(PARTITIONS).await.expect("topics");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().supervise(shutdown.clone()));

    let mut sent = events(400, 37, 0);
    // Duplicates: the same events again, at new offsets, some in the same poll as the first.
    sent.extend(events(100, 37, 120));
    sent.extend(events(60, 37, 380));
    bus.publish(TOPIC, records(&sent)).await.expect("publish");
    // While the engine waits to restart, readiness says why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let report = engine.health.report();
        if let Some(tally_runtime::EngineState::Restarting { reason }) = report.engines.get("counter") {
            assert!(!report.ready, "a restarting engine is not ready");
            break reason.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the engine never reported its restart");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(reason.contains("a bug in the handler, at amount 150"), "the panic is the reason: {reason}");
    wait_committed(&store, &bus, "first run").await;
    assert!(panicked.load(Ordering::SeqCst), "the handler never reached the event it panics at");
    let restarts = engine.health.report();
    assert!(restarts.ready, "the engine runs again after its restart: {restarts:?}");
    assert!(stats.duplicates.load(Ordering::SeqCst) > 0, "the duplicates reached the window");
    shutdown.cancel();
    running.await.expect("supervisor");

    let want = oracle(&sent);
    assert_eq!(stored(&store, want.keys().cloned()).await, want, "each distinct event counted and appended once");
    let processed = store.processed_between(TOPIC, 0, 0, i64::MAX as u64).await.expect("records").len()
        + store.processed_between(TOPIC, 1, 0, i64::MAX as u64).await.expect("records").len()
        + store.processed_between(TOPIC, 2, 0, i64::MAX as u64).await.expect("records").len()
        + store.processed_between(TOPIC, 3, 0, i64::MAX as u64).await.expect("records").len();
    let distinct: usize = want.values().map(|(_, ids)| ids.len()).sum();
    assert_eq!(distinct, 440, "e0..e439, the rest duplicates");
    assert_eq!(processed, distinct, "one idempotency record per distinct event");
}

/// Set in the child process of the kill test: the SQLite file it consumes.
const CHILD_DB: &str = "TALLY_RUNTIME_TEST_CHILD_DB";

/// The kill test's child: publishes the first events, consumes them and reports how many it
/// applied, until it is killed.
async fn run_child(path: std::path::PathBuf) -> ! {
    let bus = EmbeddedLog::open(EmbeddedLogOptions {
        path: path.clone(),
        default_partitions: PARTITIONS,
        durability: tally_sqlite::Durability::Normal,
    })
    .expect("log");
    let (engine, stats) = counter_engine(bus.clone(), ledger_at(&path).await, None);
    engine.create_topics(PARTITIONS).await.expect("topics");
    tokio::spawn(engine.supervise(CancellationToken::new()));
    bus.publish(TOPIC, records(&events(3000, 53, 0))).await.expect("publish");
    loop {
        println!("applied {}", stats.applied.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn a_killed_process_resumes_where_its_effects_were_committed_and_applies_nothing_twice() {
    if let Some(path) = std::env::var_os(CHILD_DB) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run_child(path.into()));
    }
    // A process killed with SIGKILL mid-stream: no drain, no flush, nothing after the signal.
    let setup = Setup::new();
    let first = events(3000, 53, 0);
    let mut child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "a_killed_process_resumes_where_its_effects_were_committed_and_applies_nothing_twice"])
        .args(["--nocapture", "--test-threads", "1"])
        .env(CHILD_DB, &setup.path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let applied = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .filter_map(|line| line.strip_prefix("applied ").and_then(|n| n.parse::<u64>().ok()))
        .find(|&n| n >= 1000);
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(applied.is_some(), "the child stopped before applying 1,000 events");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let (bus, store) = (setup.bus(), setup.ledger().await);
        let committed: u64 = {
            let mut sum = 0;
            for p in 0..PARTITIONS {
                sum += store.committed_offset("counters", TOPIC, p).await.expect("offset").unwrap_or(0);
            }
            sum
        };
        assert!(committed < 3000, "the kill came before everything was committed ({committed})");
        let (engine, _) = counter_engine(bus.clone(), store.clone(), None);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(engine.supervise(shutdown.clone()));
        // Producer retries after the crash: some of the first events again.
        let mut all = first.clone();
        let again = events(500, 53, 2000);
        bus.publish(TOPIC, records(&again)).await.expect("publish");
        all.extend(again);
        wait_committed(&store, &bus, "after the restart").await;
        shutdown.cancel();
        running.await.expect("supervisor");
        let want = oracle(&all);
        assert_eq!(stored(&store, want.keys().cloned()).await, want, "the kill lost or doubled nothing");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_store_error_stops_only_its_partition_and_loses_nothing() {
    let setup = Setup::new();
    let (bus, ledger) = (setup.bus(), setup.ledger().await);
    let refusing = Refusing { inner: ledger.clone(), refused: Some(2) };
    let (engine, stats) = counter_engine(bus.clone(), refusing, None);
    engine.create_topics(PARTITIONS).await.expect("topics");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().supervise(shutdown.clone()));
    let sent = events(800, 41, 0);
    bus.publish(TOPIC, records(&sent)).await.expect("publish");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let report = engine.health.report();
        if !report.stopped_partitions.is_empty() {
            break report;
        }
        assert!(tokio::time::Instant::now() < deadline, "the refused partition never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!report.ready, "a stopped partition makes the role not ready");
    let stopped = &report.stopped_partitions[0];
    assert_eq!((stopped.topic.as_str(), stopped.partition), (TOPIC, 2));
    assert!(stopped.reason.contains("sabotage"), "the cause is reported: {}", stopped.reason);
    // The others are not held back.
    for p in [0, 1, 3] {
        let end = bus.end_offset(TOPIC, p).unwrap_or(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while ledger.committed_offset("counters", TOPIC, p).await.expect("offset").unwrap_or(0) < end {
            assert!(tokio::time::Instant::now() < deadline, "partition {p} was held back by partition 2");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(ledger.committed_offset("counters", TOPIC, 2).await.expect("offset"), None, "partition 2 moved");
    assert!(stats.store_retries.load(Ordering::SeqCst) == 0, "a permanent error is not retried");
    shutdown.cancel();
    running.await.expect("supervisor");
    assert!(engine.health.report().stopped_partitions.is_empty(), "a member that no longer runs reports none");

    // The cause fixed, a restart resumes partition 2 from its committed offset: nothing lost.
    let (engine, _) = counter_engine(bus.clone(), ledger.clone(), None);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().supervise(shutdown.clone()));
    wait_committed(&ledger, &bus, "after the fix").await;
    assert!(engine.health.report().ready);
    shutdown.cancel();
    running.await.expect("supervisor");
    let want = oracle(&sent);
    assert_eq!(stored(&ledger, want.keys().cloned()).await, want);
}

fn event(id: &str, add: &Add) -> (String, Envelope) {
    let mut env = Envelope::new("/test", "counter.add", serde_json::to_value(add).expect("json"));
    env.id = id.to_owned();
    (add.key.clone(), env)
}

/// A retry of a refused event, in the same poll as an event after it that would change its
/// fate, is judged in offset order: refused again, not applied after the later event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_refused_event_in_the_same_poll_is_judged_in_offset_order() {
    let setup = Setup::new();
    let (bus, store) = (setup.bus(), setup.ledger().await);
    let add = |amount: i64, set: Option<i64>| Add { key: "x".into(), amount, set };
    let sent = vec![
        event("start", &add(0, Some(500_000))),
        event("big", &add(600_000, None)), // refused: 1,100,000 > CAP
        event("big", &add(600_000, None)), // its retry: refused again at this point
        event("reset", &add(0, Some(0))),  // would let it through if it were applied later
    ];
    let (engine, _) = counter_engine(bus.clone(), store.clone(), None);
    engine.create_topics(PARTITIONS).await.expect("topics");
    // Published before the engine starts: one poll holds all four.
    bus.publish(TOPIC, records(&sent)).await.expect("publish");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.supervise(shutdown.clone()));
    wait_committed(&store, &bus, "the poll").await;
    shutdown.cancel();
    running.await.expect("supervisor");
    let docs = store.documents(vec!["x".into()]).await.expect("documents");
    let total: Total = serde_json::from_str(&docs[0].2).expect("json");
    assert_eq!(total.total, 0, "the retry was applied after the reset");
    let dead: u64 = bus.end_offsets(&format!("{TOPIC}.dlq")).await.expect("ends").iter().sum();
    assert_eq!(dead, 2, "the refused event and its retry are both dead-lettered");
}

/// A bus that refuses the output topic's records for good (as a broker refuses a record past
/// its size limit), and passes everything else to the embedded log.
#[derive(Clone)]
struct RefusingOutputs(EmbeddedLog);

impl Bus for RefusingOutputs {
    type Consumer = <EmbeddedLog as Bus>::Consumer;

    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), tally_bus::BusError> {
        self.0.create_topic(topic, partitions).await
    }
    async fn publish(&self, topic: &str, records: Vec<OutRecord>) -> Result<(), tally_bus::BusError> {
        if topic == "totals" {
            return Err(tally_bus::BusError::Backend {
                hint: RetryHint::Permanent,
                source: "message size too large".into(),
            });
        }
        self.0.publish(topic, records).await
    }
    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Self::Consumer, tally_bus::BusError> {
        self.0.subscribe(group, topics).await
    }
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, tally_bus::BusError> {
        self.0.end_offsets(topic).await
    }
    async fn ping(&self) -> Result<(), tally_bus::BusError> {
        self.0.ping().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_the_bus_refuses_for_good_stop_the_partition_and_readiness_says_why() {
    let setup = Setup::new();
    let (log, store) = (setup.bus(), setup.ledger().await);
    let (engine, _) = counter_engine(RefusingOutputs(log.clone()), store.clone(), None);
    engine.create_topics(PARTITIONS).await.expect("topics");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().supervise(shutdown.clone()));
    log.publish(TOPIC, records(&events(40, 7, 0))).await.expect("publish");
    let with_records = log.end_offsets(TOPIC).await.expect("ends").iter().filter(|&&end| end > 0).count();
    assert!(with_records > 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let report = engine.health.report();
        if report.stopped_partitions.len() == with_records {
            break report;
        }
        assert!(tokio::time::Instant::now() < deadline, "the partitions with records were not all stopped: {report:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(!report.ready);
    assert!(report.stopped_partitions.iter().all(|p| p.reason.contains("totals")), "{report:?}");
    for p in 0..PARTITIONS {
        let committed = store.committed_offset("counters", TOPIC, p).await.expect("offset");
        assert_eq!(committed, None, "no offset moves past outputs that were not published");
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("shutdown is not held").expect("supervisor");
    assert!(engine.health.report().stopped_partitions.is_empty(), "a member that no longer runs reports none");
}
