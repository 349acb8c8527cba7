use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tally_core::EventKey;
use tally_store::ledger::{Document, DocumentStore, Documents};
use tally_store::sqlite::SqliteDocuments;
use tally_store::{Ledger, RetryHint, SqliteStore, SqliteStoreOptions, StoreError};

use super::*;
use crate::metrics::ConsumerStats;

/// The real SQLite ledger, slowed down and watched: which partitions are being flushed at any
/// moment, the most flushes seen at once, and — when told — a permanent failure for any flush
/// that carries one chosen partition.
#[derive(Clone)]
struct Watched {
    store: SqliteDocuments,
    in_flight: Arc<Mutex<Vec<u32>>>,
    overlaps: Arc<Mutex<Vec<u32>>>,
    most_at_once: Arc<AtomicUsize>,
    flushes_at_once: Arc<AtomicUsize>,
    poisoned: Option<u32>,
    transient_failures: Arc<AtomicUsize>,
    /// Panics in the next flush (a bug in a store).
    panics: Arc<std::sync::atomic::AtomicBool>,
}

impl Watched {
    fn new(store: SqliteDocuments) -> Self {
        Self {
            store,
            in_flight: Arc::default(),
            overlaps: Arc::default(),
            most_at_once: Arc::default(),
            flushes_at_once: Arc::default(),
            poisoned: None,
            transient_failures: Arc::default(),
            panics: Arc::default(),
        }
    }
}

fn failure(hint: RetryHint) -> StoreError {
    StoreError::Backend { during: "a test", hint, source: "sabotaged".into() }
}

impl Ledger for Watched {
    async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        self.store.migrate().await
    }
    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        self.store.pending_migrations().await
    }
    async fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        self.store.committed_offset(group, topic, partition).await
    }
    async fn processed_between(&self, t: &str, p: u32, from: u64, to: u64) -> Result<Vec<ProcessedEvent>, StoreError> {
        self.store.processed_between(t, p, from, to).await
    }
    async fn processed_many(&self, keys: Vec<EventKey>) -> Result<Vec<ProcessedEvent>, StoreError> {
        self.store.processed_many(keys).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
    fn statements(&self) -> u64 {
        self.store.statements()
    }
}

impl Journal<Documents> for Watched {
    async fn flush(&self, batch: &[Flush<Documents>]) -> Result<(), StoreError> {
        assert!(!self.panics.swap(false, Ordering::SeqCst), "a bug in the store");
        let partitions: Vec<u32> = batch.iter().flat_map(|f| &f.offsets).map(|o| o.partition).collect();
        // Like a constraint on a table: only a flush that writes the partition's rows fails.
        let poisoned_rows =
            batch.iter().any(|f| f.effects.rows() > 0 && f.offsets.iter().any(|o| Some(o.partition) == self.poisoned));
        if poisoned_rows {
            return Err(failure(RetryHint::Permanent));
        }
        if self.transient_failures.load(Ordering::SeqCst) > 0 {
            self.transient_failures.fetch_sub(1, Ordering::SeqCst);
            return Err(failure(RetryHint::Transient));
        }
        {
            let mut in_flight = self.in_flight.lock().expect("lock");
            let mut overlaps = self.overlaps.lock().expect("lock");
            overlaps.extend(partitions.iter().filter(|p| in_flight.contains(p)));
            in_flight.extend(&partitions);
        }
        let now = self.flushes_at_once.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let result = self.store.flush(batch).await;
        self.flushes_at_once.fetch_sub(1, Ordering::SeqCst);
        self.in_flight.lock().expect("lock").retain(|p| !partitions.contains(p));
        result
    }
}

fn part(partition: u32, round: u64, ack: &mpsc::UnboundedSender<Ack>) -> FlushPart<Documents> {
    let mut effects = Documents::default();
    for i in 0..50 {
        effects.put(format!("P{partition}-{i}"), Document { version: round as i64, body: format!("{round}") });
    }
    FlushPart {
        topic: "events".into(),
        partition,
        effects,
        processed: Vec::new(),
        next_offset: (round + 1) * 100,
        urgent: false,
        ack: ack.clone(),
    }
}

async fn ledger(dir: &tempfile::TempDir) -> SqliteDocuments {
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(SqliteStoreOptions { path, durability: tally_sqlite::Durability::Normal })
        .expect("store")
        .documents("test");
    store.migrate().await.expect("migrate");
    store
}

fn settings(max_rows: usize, parallelism: usize) -> Arc<FlushSettings> {
    Arc::new(FlushSettings { group: "g".into(), interval: Duration::from_millis(50), max_rows, parallelism })
}

fn metrics() -> Arc<ConsumerMetrics> {
    Arc::new(ConsumerMetrics::new("test", Arc::new(ConsumerStats::default())))
}

fn acks(n: usize) -> (Vec<mpsc::UnboundedSender<Ack>>, Vec<mpsc::UnboundedReceiver<Ack>>) {
    (0..n).map(|_| mpsc::unbounded_channel()).unzip()
}

#[tokio::test]
async fn a_store_that_falls_behind_gets_parallel_flushes_but_never_one_partition_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ledger(&dir).await;
    let watched = Watched::new(store.clone());
    let (tx, rx) = mpsc::channel(8);
    let batcher = tokio::spawn(run(watched.clone(), settings(100, 4), metrics(), rx, CancellationToken::new()));
    let (senders, receivers) = acks(4);
    // Every partition sends 20 large parts as fast as the batcher takes them.
    for round in 0..20 {
        for (partition, ack) in senders.iter().enumerate() {
            tx.send(part(partition as u32, round, ack)).await.expect("send");
        }
    }
    drop(tx);
    batcher.await.expect("batcher");

    assert!(watched.overlaps.lock().expect("lock").is_empty(), "a partition was in two flushes at once");
    assert!(watched.most_at_once.load(Ordering::SeqCst) > 1, "the flushes never ran in parallel");
    for (partition, mut ack) in receivers.into_iter().enumerate() {
        let mut last = 0;
        while let Ok(Ack::Durable(next)) = ack.try_recv() {
            assert!(next > last, "partition {partition}: ack {next} after {last}");
            last = next;
        }
        assert_eq!(last, 2000, "partition {partition} was not acknowledged to its end");
        let stored = store.committed_offset("g", "events", partition as u32).await.expect("offset");
        assert_eq!(stored, Some(2000));
    }
    let docs = store.documents(vec!["P3-49".into()]).await.expect("documents");
    assert_eq!(docs[0].1, 19, "the newest document of a key landed last");
}

#[tokio::test]
async fn light_load_is_one_flush_for_every_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ledger(&dir).await;
    let metrics = metrics();
    let (tx, rx) = mpsc::channel(8);
    let batcher = tokio::spawn(run(store, settings(1000, 4), metrics.clone(), rx, CancellationToken::new()));
    let (ack, _acks) = mpsc::unbounded_channel();
    for partition in 0..4 {
        tx.send(part(partition, 1, &ack)).await.expect("send");
    }
    drop(tx);
    batcher.await.expect("batcher");
    assert_eq!(ConsumerStats::get(&metrics.stats().flushes), 1, "200 rows over 4 partitions are one transaction");
}

#[tokio::test]
async fn transient_errors_are_retried_and_counted_and_a_permanent_one_stops_only_its_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ledger(&dir).await;
    let mut watched = Watched::new(store.clone());
    watched.poisoned = Some(2);
    watched.transient_failures.store(3, Ordering::SeqCst);
    let metrics = metrics();
    let (tx, rx) = mpsc::channel(8);
    let batcher = tokio::spawn(run(watched, settings(1000, 1), metrics.clone(), rx, CancellationToken::new()));
    let (senders, mut receivers) = acks(4);
    for (partition, ack) in senders.iter().enumerate() {
        tx.send(part(partition as u32, 1, ack)).await.expect("send");
    }
    drop(tx);
    batcher.await.expect("batcher");
    for (partition, ack) in receivers.iter_mut().enumerate() {
        let got = ack.try_recv().expect("an answer");
        if partition == 2 {
            assert!(matches!(&got, Ack::Failed(reason) if reason.contains("sabotaged")), "{got:?}");
            assert_eq!(store.committed_offset("g", "events", 2).await.expect("offset"), None, "nothing moved");
        } else {
            assert_eq!(got, Ack::Durable(200), "partition {partition} is not held back by partition 2");
            assert_eq!(store.committed_offset("g", "events", partition as u32).await.expect("offset"), Some(200));
        }
    }
    assert_eq!(ConsumerStats::get(&metrics.stats().store_retries), 3, "each transient failure was retried once");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_store_that_keeps_failing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let watched = Watched::new(ledger(&dir).await);
    watched.transient_failures.store(usize::MAX, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let batcher = tokio::spawn(run(watched, settings(1000, 1), metrics(), rx, shutdown.clone()));
    let (ack, mut acks) = mpsc::unbounded_channel();
    tx.send(FlushPart { urgent: true, ..part(0, 1, &ack) }).await.expect("send");
    drop(tx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), batcher).await.expect("the batcher stops at once").expect("batcher");
    assert_eq!(acks.try_recv().expect("an answer"), Ack::Abandoned);
}

#[tokio::test]
async fn nothing_of_a_worker_whose_poll_was_not_flushed_is_flushed_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ledger(&dir).await;
    let mut watched = Watched::new(store.clone());
    watched.poisoned = Some(2);
    let (tx, rx) = mpsc::channel(8);
    let batcher = tokio::spawn(run(watched, settings(1000, 1), metrics(), rx, CancellationToken::new()));
    let (ack, mut acks) = mpsc::unbounded_channel();
    tx.send(part(2, 1, &ack)).await.expect("send");
    let failed = tokio::time::timeout(Duration::from_secs(5), acks.recv()).await.expect("an answer");
    assert!(matches!(failed, Some(Ack::Failed(_))), "{failed:?}");
    // A later poll of the same worker that writes no rows would pass the constraint: flushing it
    // would commit an offset past the poll that failed, losing its events.
    let later = FlushPart { effects: Documents::default(), next_offset: 900, urgent: true, ..part(2, 8, &ack) };
    tx.send(later).await.expect("send");
    drop(tx);
    batcher.await.expect("batcher");
    assert_eq!(acks.try_recv().expect("an answer"), Ack::Abandoned);
    assert_eq!(store.committed_offset("g", "events", 2).await.expect("offset"), None, "the offset did not move");
}

#[tokio::test]
async fn a_flush_that_panics_stops_its_partitions_and_nothing_of_theirs_is_flushed_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ledger(&dir).await;
    let watched = Watched::new(store.clone());
    watched.panics.store(true, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel(8);
    let batcher = tokio::spawn(run(watched, settings(1000, 1), metrics(), rx, CancellationToken::new()));
    let (ack, mut acks) = mpsc::unbounded_channel();
    tx.send(part(1, 1, &ack)).await.expect("send");
    let failed = tokio::time::timeout(Duration::from_secs(5), acks.recv()).await.expect("an answer");
    assert!(matches!(&failed, Some(Ack::Failed(reason)) if reason.contains("flush task")), "{failed:?}");
    let later = FlushPart { effects: Documents::default(), next_offset: 900, urgent: true, ..part(1, 8, &ack) };
    tx.send(later).await.expect("send");
    drop(tx);
    batcher.await.expect("batcher");
    assert_eq!(acks.try_recv().expect("an answer"), Ack::Abandoned);
    assert_eq!(store.committed_offset("g", "events", 1).await.expect("offset"), None, "the offset did not move");
}
