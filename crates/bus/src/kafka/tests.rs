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

fn unique(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
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
