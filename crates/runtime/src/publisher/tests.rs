use std::sync::Mutex;
use std::time::Duration;

use tally_bus::{EmbeddedLog, EmbeddedLogOptions};
use tally_store::ledger::Documents;

use super::*;

fn record(key: &str, payload: &str) -> OutRecord {
    OutRecord { key: Some(key.into()), headers: Vec::new(), payload: payload.as_bytes().to_vec() }
}

#[test]
fn merged_state_topics_keep_only_the_latest_message_of_each_key() {
    let records = vec![record("a", "a1"), record("b", "b1"), record("a", "a2"), record("c", "c1"), record("b", "b2")];
    let kept: Vec<String> =
        latest_per_key(records).iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect();
    assert_eq!(kept, ["a2", "c1", "b2"]);
}

/// (topic, payloads) of each publish, in order.
type Published = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// The real embedded log behind a slow link that remembers what went through it.
#[derive(Clone)]
struct SlowLog {
    log: EmbeddedLog,
    published: Published,
}

impl Bus for SlowLog {
    type Consumer = <EmbeddedLog as Bus>::Consumer;

    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), tally_bus::BusError> {
        self.log.create_topic(topic, partitions).await
    }
    async fn publish(&self, topic: &str, records: Vec<OutRecord>) -> Result<(), tally_bus::BusError> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let payloads = records.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect();
        self.published.lock().expect("lock").push((topic.to_owned(), payloads));
        self.log.publish(topic, records).await
    }
    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Self::Consumer, tally_bus::BusError> {
        self.log.subscribe(group, topics).await
    }
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, tally_bus::BusError> {
        self.log.end_offsets(topic).await
    }
    async fn ping(&self) -> Result<(), tally_bus::BusError> {
        self.log.ping().await
    }
}

#[tokio::test]
async fn a_slow_bus_gets_fewer_larger_publishes_that_end_with_each_keys_latest_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(EmbeddedLogOptions {
        path: dir.path().join("t.db"),
        default_partitions: 1,
        durability: tally_sqlite::Durability::Normal,
    })
    .expect("log");
    let bus = SlowLog { log, published: Arc::default() };
    let outputs: Arc<[OutputTopic]> = vec![
        OutputTopic { name: "avail".into(), latest_per_key: true },
        OutputTopic { name: "outcomes".into(), latest_per_key: false },
    ]
    .into();
    let (flush_tx, mut flush_rx) = mpsc::channel(64);
    let (tx, rx) = mpsc::channel(64);
    let (failed, _) = oneshot::channel();
    let metrics = Arc::new(ConsumerMetrics::new("test", Arc::default()));
    let setup = PublisherSetup { bus: bus.clone(), outputs, flush: flush_tx, hook: None, metrics, failed };
    let publisher = tokio::spawn(run(setup, rx, CancellationToken::new()));
    let (ack, _acks) = mpsc::unbounded_channel();
    for i in 0..10u64 {
        let part = FlushPart {
            topic: "events".into(),
            partition: 0,
            effects: Documents::default(),
            processed: Vec::new(),
            next_offset: i + 1,
            urgent: false,
            ack: ack.clone(),
        };
        let outbox = Outbox {
            outputs: vec![
                vec![record("A", &format!("A{i}")), record("B", &format!("B{i}"))],
                vec![record("A", &format!("accepted {i}"))],
            ],
            dead_letters: Vec::new(),
            forwarded: Vec::new(),
            event_times_us: Vec::new(),
            part,
        };
        tx.send(outbox).await.expect("send");
    }
    drop(tx);
    publisher.await.expect("publisher");

    let mut forwarded = Vec::new();
    while let Ok(part) = flush_rx.try_recv() {
        forwarded.push(part.next_offset);
    }
    assert_eq!(forwarded, (1..=10).collect::<Vec<_>>(), "every poll reaches the flush, in order");
    let published = bus.published.lock().expect("lock").clone();
    let availability: Vec<&Vec<String>> = published.iter().filter(|(t, _)| t == "avail").map(|(_, p)| p).collect();
    assert!(availability.len() < 10, "polls queued behind a slow publish were not merged");
    let last = availability.iter().flat_map(|p| p.iter()).fold((None, None), |(a, b), m| match &m[..1] {
        "A" => (Some(m.clone()), b),
        _ => (a, Some(m.clone())),
    });
    assert_eq!(last, (Some("A9".into()), Some("B9".into())), "the last message of each key is its latest state");
    let outcomes: usize = published.iter().filter(|(t, _)| t == "outcomes").map(|(_, p)| p.len()).sum();
    assert_eq!(outcomes, 10, "records of an event topic are never coalesced");
}

/// A bus that refuses every record for good, as a broker refuses a record past its size limit.
#[derive(Clone)]
struct RefusingBus(EmbeddedLog);

impl Bus for RefusingBus {
    type Consumer = <EmbeddedLog as Bus>::Consumer;

    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), tally_bus::BusError> {
        self.0.create_topic(topic, partitions).await
    }
    async fn publish(&self, _topic: &str, _records: Vec<OutRecord>) -> Result<(), tally_bus::BusError> {
        Err(tally_bus::BusError::Backend { hint: RetryHint::Permanent, source: "message size too large".into() })
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

#[tokio::test]
async fn outputs_the_bus_refuses_for_good_stop_the_publisher_and_nothing_is_flushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(EmbeddedLogOptions {
        path: dir.path().join("t.db"),
        default_partitions: 1,
        durability: tally_sqlite::Durability::Normal,
    })
    .expect("log");
    let outputs: Arc<[OutputTopic]> = vec![OutputTopic { name: "decisions".into(), latest_per_key: false }].into();
    let (flush_tx, mut flush_rx) = mpsc::channel(8);
    let (failed, reason) = oneshot::channel();
    let metrics = Arc::new(ConsumerMetrics::new("test", Arc::default()));
    let setup = PublisherSetup { bus: RefusingBus(log), outputs, flush: flush_tx, hook: None, metrics, failed };
    let (tx, rx) = mpsc::channel(8);
    let publisher = tokio::spawn(run(setup, rx, CancellationToken::new()));
    let (ack, _acks) = mpsc::unbounded_channel();
    let part = FlushPart {
        topic: "events".into(),
        partition: 0,
        effects: Documents::default(),
        processed: Vec::new(),
        next_offset: 1,
        urgent: false,
        ack,
    };
    let outbox = Outbox {
        outputs: vec![vec![record("A", "a decision")]],
        dead_letters: Vec::new(),
        forwarded: Vec::new(),
        event_times_us: Vec::new(),
        part,
    };
    tx.send(outbox).await.expect("send");
    tokio::time::timeout(Duration::from_secs(5), publisher).await.expect("the publisher stops").expect("publisher");
    let reason = reason.await.expect("a reason");
    assert!(reason.contains("message size too large") && reason.contains("decisions"), "{reason}");
    assert!(flush_rx.try_recv().is_err(), "the poll whose outputs were refused was not flushed");
}
