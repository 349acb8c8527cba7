//! The Kafka bus against a real Kafka-protocol broker (nisshi, started by `scripts/test.sh`),
//! with unique topic and group names per test.

use super::*;
use crate::conformance;

fn bus() -> KafkaBus {
    let brokers = std::env::var("TEST_TALLY_KAFKA_BROKERS")
        .expect("TEST_TALLY_KAFKA_BROKERS is not set: run the tests with scripts/test.sh, which starts a broker");
    KafkaBus::connect(KafkaBusOptions {
        brokers,
        client_id: "tally-test".into(),
        replication_factor: 1,
        properties: BTreeMap::new(),
        publish_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(10),
    })
    .expect("kafka clients")
}

/// Topic and group names no other test (in this run or an earlier one) uses; the sequence
/// number separates tests that read the same clock value.
fn unique(what: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    format!(
        "{what}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_keeps_per_key_order() {
    conformance::same_key_is_ordered_on_one_partition(bus(), &unique("order"), &unique("g")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_resumes_from_the_committed_position() {
    conformance::committed_position_is_where_the_group_resumes(bus(), &unique("resume"), &unique("g")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_wakes_readers_on_publish() {
    conformance::poll_wakes_when_a_record_arrives(bus(), &unique("wake"), &unique("g")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_topic_with_another_partition_count_is_reported() {
    let (bus, topic) = (bus(), unique("count"));
    bus.create_topic(&topic, 3).await.expect("create");
    bus.create_topic(&topic, 3).await.expect("creating it again is fine");
    let err = bus.create_topic(&topic, 5).await.expect_err("mismatch");
    assert!(err.to_string().contains("3 partitions"), "{err}");
}

/// librdkafka's in-process mock cluster, for what a real broker cannot be made to do on
/// demand: a broker that goes down and comes back while records are being published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_consuming_ride_out_a_broker_outage() {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    mock.create_topic("outage", 2, 1).expect("topic");
    let bus = KafkaBus::connect(KafkaBusOptions {
        brokers: mock.bootstrap_servers(),
        client_id: "outage-test".into(),
        replication_factor: 1,
        properties: BTreeMap::new(),
        publish_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(10),
    })
    .expect("clients");
    let rec =
        |i: usize| OutRecord { key: Some(format!("k{}", i % 5)), headers: vec![], payload: i.to_string().into_bytes() };
    bus.publish("outage", (0..100).map(rec).collect()).await.expect("publish before the outage");

    mock.broker_down(1).expect("broker down");
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish("outage", (100..200).map(rec).collect()).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!publisher.is_finished(), "a publish cannot complete while the broker is down");
    mock.broker_up(1).expect("broker up");
    publisher.await.expect("join").expect("the publish completes once the broker is back");

    let mut consumer = bus.subscribe("outage-group", &["outage".to_owned()]).await.expect("subscribe");
    let Assignment::Assigned(mut parts) = consumer.next_assignment().await.expect("assignment") else {
        panic!("assigned")
    };
    for p in &mut parts {
        p.seek(0);
    }
    let mut seen: Vec<usize> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 200 {
        assert!(Instant::now() < deadline, "only {} of 200 records", seen.len());
        for p in &mut parts {
            if let Ok(Ok(batch)) = tokio::time::timeout(Duration::from_millis(100), p.poll(500)).await {
                seen.extend(batch.iter().map(|r| String::from_utf8_lossy(&r.payload).parse::<usize>().expect("n")));
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>(), "nothing lost, nothing twice (idempotent producer)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bus_gives_one_member_every_partition_of_several_topics() {
    let (a, b) = (unique("sales"), unique("returns"));
    conformance::one_member_consumes_several_topics(bus(), [a.as_str(), b.as_str()], &unique("g")).await;
}
