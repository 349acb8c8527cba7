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
    let publisher = tokio::spawn(run(bus.clone(), outputs, flush_tx, None, rx, CancellationToken::new()));
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
