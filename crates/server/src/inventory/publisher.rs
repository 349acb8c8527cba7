//! The publisher of one partition worker: it publishes each batch's outputs, then hands the
//! batch to the flush batcher, so no offset is committed past an unpublished output (a crash
//! in between republishes at least once rather than loses an availability update).
//!
//! The worker does not wait for it. Batches that queue while a publish is in flight go out
//! together in the next one, with only the latest availability per SKU, so a slow bus costs
//! one round trip per burst rather than per batch, and the three output topics are published
//! concurrently.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tally_bus::{Bus, OutRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::EngineStats;
use super::batcher::FlushPart;
use crate::metrics::inventory as m;

/// Most batches merged into one publish: bounds a publish's size after a long stall.
const MAX_MERGED: usize = 64;

/// What a worker hands its publisher for one batch.
pub struct Outbox {
    /// Latest availability of each SKU whose availability changed, one record per SKU.
    pub availability: Vec<OutRecord>,
    /// Reservation outcomes.
    pub outcomes: Vec<OutRecord>,
    /// Poison records with their reasons.
    pub dead_letters: Vec<OutRecord>,
    /// Records that arrived on a partition other than their key's, to republish on the input
    /// topic (which puts them on their key's partition).
    pub forwarded: Vec<OutRecord>,
    /// Event times (µs) of the events applied, for the desync histogram.
    pub event_times_us: Vec<i64>,
    /// The batch to flush once everything above is published.
    pub part: FlushPart,
}

/// Output topic names.
#[derive(Clone)]
pub struct OutputTopics {
    /// `inventory.events`, the input topic, for forwarded records.
    pub events: String,
    /// `inventory.availability`.
    pub availability: String,
    /// Reservation outcomes.
    pub outcomes: String,
    /// `<input topic>.dlq`.
    pub dead_letters: String,
}

/// Several outboxes as one publish per topic.
#[derive(Default)]
struct Merged {
    availability: Vec<OutRecord>,
    outcomes: Vec<OutRecord>,
    dead_letters: Vec<OutRecord>,
    forwarded: Vec<OutRecord>,
    event_times_us: Vec<i64>,
    parts: Vec<FlushPart>,
}

impl Merged {
    fn new(items: Vec<Outbox>) -> Self {
        let mut merged = Self::default();
        let several = items.len() > 1;
        for item in items {
            merged.availability.extend(item.availability);
            merged.outcomes.extend(item.outcomes);
            merged.dead_letters.extend(item.dead_letters);
            merged.forwarded.extend(item.forwarded);
            merged.event_times_us.extend(item.event_times_us);
            merged.parts.push(item.part);
        }
        if several {
            merged.availability = latest_per_key(merged.availability);
        }
        merged
    }
}

/// Keeps the last record of each key, in the order of those last records: a consumer that
/// reads every message still ends with the latest state of each SKU.
fn latest_per_key(records: Vec<OutRecord>) -> Vec<OutRecord> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut kept: Vec<OutRecord> = records.into_iter().rev().filter(|r| seen.insert(r.key.clone())).collect();
    kept.reverse();
    kept
}

/// Publishes with retries until it succeeds (true) or `cancel` fires (false: the batch is then
/// not flushed either, so a restart replays and republishes it).
pub async fn publish<B: Bus>(bus: &B, topic: &str, records: Vec<OutRecord>, cancel: &CancellationToken) -> bool {
    if records.is_empty() {
        return true;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        match bus.publish(topic, records.clone()).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, topic, "publish failed; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs until the worker drops its sender. Stops forwarding at the first batch it could not
/// publish, so no offset passes an unpublished output.
pub async fn run<B: Bus>(
    bus: B,
    topics: OutputTopics,
    flush: mpsc::Sender<FlushPart>,
    stats: Arc<EngineStats>,
    mut rx: mpsc::Receiver<Outbox>,
    cancel: CancellationToken,
) {
    let mut items = Vec::new();
    while rx.recv_many(&mut items, MAX_MERGED).await > 0 {
        let merged = Merged::new(std::mem::take(&mut items));
        let published = merged.availability.len() as u64;
        let (availability, outcomes, dead_letters, forwarded) = tokio::join!(
            publish(&bus, &topics.availability, merged.availability, &cancel),
            publish(&bus, &topics.outcomes, merged.outcomes, &cancel),
            publish(&bus, &topics.dead_letters, merged.dead_letters, &cancel),
            publish(&bus, &topics.events, merged.forwarded, &cancel),
        );
        if !(availability && outcomes && dead_letters && forwarded) {
            tracing::warn!("stopping with unpublished outputs; they are republished after restart");
            return;
        }
        if published > 0 {
            metrics::counter!(m::AVAILABILITY_PUBLISHED_TOTAL).increment(published);
            stats.availability_published.fetch_add(published, Ordering::Relaxed);
        }
        if !merged.event_times_us.is_empty() {
            let published_us = super::now_us();
            let mut desync = stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner());
            for t in &merged.event_times_us {
                let us = (published_us - t).max(1) as u64;
                let _ = desync.record(us);
                metrics::histogram!(m::CHANNEL_DESYNC_SECONDS).record(us as f64 / 1e6);
            }
        }
        for part in merged.parts {
            if flush.send(part).await.is_err() {
                tracing::error!("flush batcher is gone; stopping this partition's publisher");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tally_bus::{EmbeddedLog, EmbeddedLogOptions};

    use super::*;

    fn record(key: &str, payload: &str) -> OutRecord {
        OutRecord { key: Some(key.into()), headers: Vec::new(), payload: payload.as_bytes().to_vec() }
    }

    #[test]
    fn merged_availability_keeps_only_the_latest_message_of_each_sku() {
        let records =
            vec![record("a", "a1"), record("b", "b1"), record("a", "a2"), record("c", "c1"), record("b", "b2")];
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
        async fn subscribe(&self, group: &str, topic: &str) -> Result<Self::Consumer, tally_bus::BusError> {
            self.log.subscribe(group, topic).await
        }
        async fn ping(&self) -> Result<(), tally_bus::BusError> {
            self.log.ping().await
        }
    }

    #[tokio::test]
    async fn a_slow_bus_gets_fewer_larger_publishes_that_end_with_each_skus_latest_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(EmbeddedLogOptions {
            path: dir.path().join("t.db"),
            default_partitions: 1,
            durability: tally_sqlite::Durability::Normal,
        })
        .expect("log");
        let bus = SlowLog { log, published: Arc::default() };
        let topics = OutputTopics {
            events: "events".into(),
            availability: "avail".into(),
            outcomes: "outcomes".into(),
            dead_letters: "dlq".into(),
        };
        let (flush_tx, mut flush_rx) = mpsc::channel(64);
        let (tx, rx) = mpsc::channel(64);
        let publisher = tokio::spawn(run(bus.clone(), topics, flush_tx, Arc::default(), rx, CancellationToken::new()));
        let (ack, _acks) = mpsc::unbounded_channel();
        for i in 0..10u64 {
            let part = FlushPart {
                topic: "events".into(),
                partition: 0,
                rows: Vec::new(),
                applied: Vec::new(),
                next_offset: i + 1,
                urgent: false,
                ack: ack.clone(),
            };
            let outbox = Outbox {
                availability: vec![record("A", &format!("A{i}")), record("B", &format!("B{i}"))],
                outcomes: vec![record("A", &format!("accepted {i}"))],
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
        assert_eq!(forwarded, (1..=10).collect::<Vec<_>>(), "every batch reaches the flush, in order");
        let published = bus.published.lock().expect("lock").clone();
        let availability: Vec<&Vec<String>> = published.iter().filter(|(t, _)| t == "avail").map(|(_, p)| p).collect();
        assert!(availability.len() < 10, "batches queued behind a slow publish were not merged");
        let last = availability.iter().flat_map(|p| p.iter()).fold((None, None), |(a, b), m| match &m[..1] {
            "A" => (Some(m.clone()), b),
            _ => (a, Some(m.clone())),
        });
        assert_eq!(last, (Some("A9".into()), Some("B9".into())), "the last message of each SKU is its latest state");
        let outcomes: usize = published.iter().filter(|(t, _)| t == "outcomes").map(|(_, p)| p.len()).sum();
        assert_eq!(outcomes, 10, "outcomes are never coalesced");
    }
}
