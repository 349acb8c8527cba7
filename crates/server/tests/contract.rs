//! The Kafka contract as a producer outside tally sees it, with librdkafka directly: a
//! producer using another partitioner than murmur2 (librdkafka's default, CRC32), headers
//! that break the CloudEvents binding, bytes that are not UTF-8, records without a key.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tally_core::Envelope;

fn producer(partitioner: &str) -> FutureProducer {
    let brokers = std::env::var("TEST_TALLY_KAFKA_BROKERS").expect("TEST_TALLY_KAFKA_BROKERS (scripts/test.sh)");
    ClientConfig::new().set("bootstrap.servers", brokers).set("partitioner", partitioner).create().unwrap()
}

/// Produces `headers` and `payload` under `key` (none: a null key).
async fn produce(p: &FutureProducer, topic: &str, key: Option<&str>, headers: &[(&str, &[u8])], payload: &[u8]) {
    let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(*v) }));
    let mut record = FutureRecord::<str, [u8]>::to(topic).payload(payload).headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    p.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
}

async fn produce_event(p: &FutureProducer, topic: &str, env: &Envelope) {
    let (headers, payload) = env.to_binary();
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    produce(p, topic, env.subject.as_deref(), &headers, &payload).await;
}

fn stock_event(id: &str, ty: &str, data: Value) -> Envelope {
    let mut env = Envelope::new("/wms-kafka", ty, data);
    env.id = id.into();
    env.subject = env.data["sku"].as_str().map(str::to_owned);
    env
}

async fn stored_on_hand(pool: &sqlx::PgPool, sku: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT on_hand FROM stock_levels WHERE sku = $1 AND location = 'wh-1'")
        .bind(sku)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Kafka snapshot 10, HTTP +5, Kafka +1 on 40 SKUs, the Kafka records produced with
/// librdkafka's default CRC32 partitioner: most land on a partition their key does not
/// belong to. Each SKU still has one writer: the API and PostgreSQL both say 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_with_another_partitioner_loses_nothing() {
    let app = spawn_app_on(Stack::KafkaPostgresRedis).await;
    let topic = app.config.inventory.topics.events.clone();
    let crc32 = producer("consistent_random");
    let skus: Vec<String> = (0..40).map(|i| format!("XP-{i}")).collect();
    for sku in &skus {
        let data = json!({"sku": sku, "location": "wh-1", "on_hand": 10, "source_version": 1});
        produce_event(&crc32, &topic, &stock_event(&format!("snap-{sku}"), "stock.snapshot", data)).await;
    }
    for sku in &skus {
        app.eventually(&format!("/v1/stock/{sku}"), |b| on_hand(b, "wh-1") == Some(10)).await;
        let path = format!("/v1/stock/{sku}/locations/wh-1/adjustments");
        let resp =
            app.post_with_key(&path, WMS_KEY, &format!("http-{sku}"), &json!({"delta": 5, "reason": "receipt"})).await;
        assert_eq!(resp.status(), 200);
    }
    for sku in &skus {
        let data = json!({"sku": sku, "location": "wh-1", "delta": 1, "reason": "receipt"});
        produce_event(&crc32, &topic, &stock_event(&format!("adj-{sku}"), "stock.adjusted", data)).await;
    }
    let url = match &app.config.store {
        tally_config::StoreConfig::Postgres { url, .. } => url.expose().to_owned(),
        other => panic!("not PostgreSQL: {other:?}"),
    };
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for sku in &skus {
        app.eventually(&format!("/v1/stock/{sku}"), |b| on_hand(b, "wh-1") == Some(16)).await;
        while stored_on_hand(&pool, sku).await != Some(16) {
            assert!(Instant::now() < deadline, "{sku}: PostgreSQL has {:?}", stored_on_hand(&pool, sku).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let metrics = app.get("/metrics", "").await.text().await.unwrap();
    let forwarded: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_inventory_records_forwarded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(forwarded >= 20.0, "most of 80 CRC32-partitioned records belong elsewhere; forwarded {forwarded}");
    let dlq = format!("{topic}.dlq");
    let dead = read_topic(&app, &dlq, |_| true).await;
    assert!(dead.is_empty(), "nothing is dead-lettered: {dead:?}");
}

/// The CloudEvents Kafka binding: `ce_specversion` is required, `ce_time` optional. Bytes that
/// are not UTF-8 are refused, never decoded lossily into someone else's key, and a record
/// without a key keeps its null key in the dead-letter topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_checked_as_the_cloudevents_kafka_binding_says() {
    let app = spawn_app_on(Stack::KafkaPostgresRedis).await;
    let topic = app.config.inventory.topics.events.clone();
    let p = producer("murmur2_random");
    let payload = |sku: &str| json!({"sku": sku, "location": "wh-1", "on_hand": 3, "source_version": 1}).to_string();
    let base = |id: &'static str| -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("ce_specversion", b"1.0"),
            ("ce_id", id.as_bytes()),
            ("ce_source", b"/wms-kafka"),
            ("ce_type", b"stock.snapshot"),
        ]
    };
    // No ce_time: applied, stamped with the record's time.
    produce(&p, &topic, Some("HB-TIME"), &base("no-time"), payload("HB-TIME").as_bytes()).await;
    // No ce_specversion: refused.
    let no_version: Vec<_> = base("no-version").into_iter().filter(|(k, _)| *k != "ce_specversion").collect();
    produce(&p, &topic, Some("HB-VER"), &no_version, payload("HB-VER").as_bytes()).await;
    // A source that is not UTF-8.
    let mut latin1 = base("latin1");
    latin1[2] = ("ce_source", b"/wms-\xe9");
    produce(&p, &topic, Some("HB-UTF"), &latin1, payload("HB-UTF").as_bytes()).await;
    // No key at all.
    produce(&p, &topic, None, &base("no-key"), payload("HB-NOKEY").as_bytes()).await;

    app.eventually("/v1/stock/HB-TIME", |b| on_hand(b, "wh-1") == Some(3)).await;
    let dlq = format!("{topic}.dlq");
    let dead = read_topic(&app, &dlq, |rs| rs.len() >= 3).await;
    let reason = |id: &str| {
        let r = dead.iter().find(|r| r.header("ce_id") == Some(id)).unwrap_or_else(|| panic!("{id} not dead-lettered"));
        (r.header("tally_dlq_reason").unwrap().to_owned(), r.key.clone())
    };
    assert_eq!(reason("no-version").0, "invalid_envelope");
    assert_eq!(reason("latin1").0, "invalid_encoding");
    assert_eq!(reason("no-key"), ("key_mismatch".to_owned(), None), "the null key stays null");
    for sku in ["HB-VER", "HB-UTF", "HB-NOKEY"] {
        assert_eq!(app.get(&format!("/v1/stock/{sku}"), ADMIN_KEY).await.status(), 404, "{sku} applied");
    }
}
