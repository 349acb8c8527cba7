//! The Kafka bus of the production mode (any Kafka-protocol broker), on librdkafka.
//!
//! - **Producer**: idempotent (`enable.idempotence`, `acks=all`), keyed with Kafka's murmur2
//!   partitioner (the same mapping as the embedded log and Java producers), CloudEvents
//!   binary-mode attributes and `traceparent` as headers. `publish` returns once every record
//!   is acknowledged.
//! - **Consumer**: one group member per process; each assigned partition gets its own queue
//!   (`split_partition_queue`) and so its own ordered worker. Nothing is committed
//!   automatically: offsets are committed by the worker after its effects are durable.
//!   Revocation is blocked until the engine has drained and committed the revoked partitions
//!   (the rebalance callback waits for the next `next_assignment` call, which the engine makes
//!   only after draining).
//! - Any other librdkafka setting (`security.protocol`, `sasl.*`, `ssl.*`, …) passes through
//!   from configuration.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, mpsc as sync_mpsc};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList, TopicPartitionListElem};
use tokio::sync::{Notify, mpsc};

use crate::{Assignment, Bus, BusError, Consumer, OutRecord, PartitionReader, Record, RetryHint};

/// How to reach the brokers and what to ask of them.
#[derive(Debug, Clone)]
pub struct KafkaBusOptions {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// `client.id` (shows in broker logs and quotas).
    pub client_id: String,
    /// Replication factor of topics tally creates.
    pub replication_factor: i32,
    /// Extra librdkafka settings for every client (security, SASL, TLS, tuning).
    pub properties: BTreeMap<String, String>,
    /// How long a publish may take before it fails (`message.timeout.ms`).
    pub publish_timeout: Duration,
    /// Longest a rebalance waits for the revoked partitions to drain and commit.
    pub drain_timeout: Duration,
}

/// Handle to the Kafka bus; cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    opts: KafkaBusOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
}

fn backend(e: impl std::fmt::Display) -> BusError {
    BusError::transient(e.to_string())
}

/// A failed produce, classified: what the broker refuses for the record itself or for this
/// client (too large, invalid, not authorised, a bad topic name) repeats; the rest (timeouts,
/// brokers down, leaders moving) may clear.
fn produce_error(e: KafkaError) -> BusError {
    use RDKafkaErrorCode as C;
    let permanent = e.rdkafka_error_code().is_some_and(|code| {
        matches!(
            code,
            C::MessageSizeTooLarge
                | C::InvalidMessage
                | C::InvalidMessageSize
                | C::InvalidRecord
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::PolicyViolation
                | C::UnsupportedVersion
                | C::Fatal
        )
    });
    let hint = if permanent { RetryHint::Permanent } else { RetryHint::Transient };
    BusError::Backend { hint, source: Box::new(e) }
}

/// Seeks to one position before a gap after it is believed (see `KafkaPartition::sought`).
const MAX_SEEKS: u32 = 5;

/// Metadata and admin calls are blocking in librdkafka; this bounds them.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaBus {
    /// Creates the producer and admin clients (they connect lazily).
    pub fn connect(opts: KafkaBusOptions) -> Result<Self, BusError> {
        let producer: FutureProducer = client_config(&opts, &[])
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("message.timeout.ms", opts.publish_timeout.as_millis().to_string())
            .create()
            .map_err(backend)?;
        let admin = client_config(&opts, &[]).create().map_err(backend)?;
        Ok(Self { inner: Arc::new(Inner { opts, producer, admin }) })
    }

    /// The options the clients were made with.
    pub fn options(&self) -> &KafkaBusOptions {
        &self.inner.opts
    }

    /// Partitions of `topic`, or `None` if it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<u32>, BusError> {
        let (inner, topic) = (self.inner.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let metadata = inner.producer.client().fetch_metadata(Some(&topic), METADATA_TIMEOUT).map_err(backend)?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len() as u32)
                .filter(|&n| n > 0))
        })
        .await
        .map_err(backend)?
    }

    /// Deletes the records of each `(partition, offset)` of `topic` below that offset (Kafka's
    /// DeleteRecords, what retention does on its own schedule) — for good: no consumer can read
    /// them again. Benchmarks trim what was consumed and committed so that consecutive phases
    /// meet the broker with the same log behind them; nothing in the engines calls it.
    pub async fn delete_records_before(&self, topic: &str, offsets: &[(u32, u64)]) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        for &(partition, offset) in offsets {
            let offset = rdkafka::Offset::Offset(i64::try_from(offset).unwrap_or(i64::MAX));
            tpl.add_partition_offset(topic, i32::try_from(partition).unwrap_or(i32::MAX), offset).map_err(backend)?;
        }
        let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
        let deleted = self.inner.admin.delete_records(&tpl, &options).await.map_err(backend)?;
        match deleted.elements().iter().find_map(|e| e.error().err()) {
            Some(e) => Err(BusError::Topic { topic: topic.to_owned(), reason: format!("deleting records: {e}") }),
            None => Ok(()),
        }
    }
}

/// Consumer defaults that configuration may override.
///
/// `fetch.wait.max.ms`: how long the broker may hold a fetch that found nothing new. Kafka
/// answers as soon as records arrive, so a short wait only costs idle round trips there; but
/// brokers that poll their storage instead (nisshi sleeps half the remaining wait between
/// reads) add up to the whole wait to every record's latency: 500 ms, librdkafka's default,
/// put the channel desync at p50 145 ms / p99 272 ms; 10 ms puts it at 13 / 29 ms
/// (docs/benchmarks.md).
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[("fetch.wait.max.ms", "10")];

/// The client settings: `defaults`, then the configured properties (which win), then what
/// tally itself needs (set by the caller afterwards, so it always wins).
fn client_config(opts: &KafkaBusOptions, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &opts.brokers).set("client.id", &opts.client_id);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in &opts.properties {
        config.set(key, value);
    }
    config
}

fn headers_of(record: &OutRecord) -> OwnedHeaders {
    record.headers.iter().fold(OwnedHeaders::new_with_capacity(record.headers.len()), |h, (key, value)| {
        h.insert(Header { key, value: Some(value.as_bytes()) })
    })
}

impl Bus for KafkaBus {
    type Consumer = KafkaConsumer;

    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let new = NewTopic::new(
            topic,
            i32::try_from(partitions.max(1)).unwrap_or(i32::MAX),
            TopicReplication::Fixed(self.inner.opts.replication_factor),
        );
        let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
        let results = self.inner.admin.create_topics([&new], &options).await.map_err(backend)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(BusError::Topic { topic: name, reason: code.to_string() }),
            }
        }
        // Metadata can lag creation by a moment; an existing topic must match the count.
        let deadline = Instant::now() + METADATA_TIMEOUT;
        loop {
            match self.partitions(topic).await? {
                Some(n) if n == partitions.max(1) => return Ok(()),
                Some(n) => {
                    return Err(BusError::Topic {
                        topic: topic.to_owned(),
                        reason: format!("exists with {n} partitions, {partitions} requested"),
                    });
                }
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                None => {
                    return Err(BusError::Topic {
                        topic: topic.to_owned(),
                        reason: "not visible after creation".into(),
                    });
                }
            }
        }
    }

    async fn publish(&self, topic: &str, records: Vec<OutRecord>) -> Result<(), BusError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let mut message = FutureRecord::to(topic).payload(&record.payload).headers(headers_of(record));
            if let Some(key) = &record.key {
                message = message.key(key);
            }
            // Enqueue everything first so the batch is pipelined, then wait for the acks.
            loop {
                match self.inner.producer.send_result(message) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        message = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(produce_error(e)),
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(produce_error(e)),
                Err(_) => return Err(BusError::Closed),
            }
        }
        Ok(())
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<KafkaConsumer, BusError> {
        // The partition count says which partition each key belongs on; it is read once here,
        // off the assignment path (an assignment must never wait on, or fail with, a metadata
        // request), and refreshed at each assignment when the broker answers quickly.
        // A topic that does not exist yet has no count (0, unknown) until its first assignment.
        let mut counts = HashMap::new();
        for topic in topics {
            let count = self.partitions(topic).await?.unwrap_or(0);
            counts.insert(topic.clone(), Arc::new(AtomicU32::new(count)));
        }
        let mut consumer = KafkaConsumer::start(&self.inner.opts, group, topics)?;
        consumer.partition_counts = counts;
        consumer.bus = Some(self.clone());
        Ok(consumer)
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, BusError> {
        let partitions = self
            .partitions(topic)
            .await?
            .ok_or_else(|| BusError::Topic { topic: topic.to_owned(), reason: "no such topic".into() })?;
        let (inner, topic) = (self.inner.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|p| {
                    let (_, high) = inner
                        .producer
                        .client()
                        .fetch_watermarks(&topic, i32::try_from(p).unwrap_or(i32::MAX), METADATA_TIMEOUT)
                        .map_err(backend)?;
                    Ok(u64::try_from(high).unwrap_or(0))
                })
                .collect()
        })
        .await
        .map_err(backend)?
    }

    async fn ping(&self) -> Result<(), BusError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.producer.client().fetch_metadata(None, Duration::from_secs(2)).map(drop).map_err(backend)
        })
        .await
        .map_err(backend)?
    }
}

/// What the rebalance callbacks tell the consumer handle.
enum GroupEvent {
    Assigned(Vec<(String, u32)>),
    /// Revoked partitions, and where to say they are drained.
    Revoked(Vec<(String, u32)>, sync_mpsc::SyncSender<()>),
}

/// Runs on the polling thread inside librdkafka's rebalance handling.
struct GroupContext {
    topics: Vec<String>,
    events: mpsc::UnboundedSender<GroupEvent>,
    drain_timeout: Duration,
}

impl GroupContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<(String, u32)> {
        tpl.elements()
            .iter()
            .filter(|e| self.topics.iter().any(|t| t == e.topic()))
            .filter_map(|e| Some((e.topic().to_owned(), u32::try_from(e.partition()).ok()?)))
            .collect()
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = self.partitions(tpl);
            if partitions.is_empty() {
                return;
            }
            let (done, drained) = sync_mpsc::sync_channel(1);
            if self.events.send(GroupEvent::Revoked(partitions, done)).is_ok() {
                // Hold the rebalance until the workers flushed and committed, so the next owner
                // starts exactly where this one stopped. Bounded: a stuck drain must not stall
                // the whole group (the next owner then replays, which is safe, just slower).
                if drained.recv_timeout(self.drain_timeout).is_err() {
                    tracing::warn!("revoked partitions did not drain in time; the next owner replays them");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = self.partitions(tpl);
            if !partitions.is_empty() {
                let _ = self.events.send(GroupEvent::Assigned(partitions));
            }
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // The store holds the authoritative position; a failed broker commit only means a
            // longer replay (filtered by the worker) after a restart.
            tracing::warn!(error = %e, "kafka offset commit failed");
        }
    }
}

/// A consumer-group member.
pub struct KafkaConsumer {
    consumer: Arc<BaseConsumer<GroupContext>>,
    events: mpsc::UnboundedReceiver<GroupEvent>,
    /// The last revocation, acknowledged when the engine asks for the next change.
    revoked: Option<sync_mpsc::SyncSender<()>>,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
    /// Each topic's partition count, as last read.
    partition_counts: HashMap<String, Arc<AtomicU32>>,
    /// The bus, to refresh `partition_count` with its producer's metadata.
    bus: Option<KafkaBus>,
}

impl KafkaConsumer {
    fn start(opts: &KafkaBusOptions, group: &str, topics: &[String]) -> Result<Self, BusError> {
        let (tx, events) = mpsc::unbounded_channel();
        let context = GroupContext { topics: topics.to_vec(), events: tx, drain_timeout: opts.drain_timeout };
        let consumer: BaseConsumer<GroupContext> = client_config(opts, CONSUMER_DEFAULTS)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create_with_context(context)
            .map_err(backend)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(backend)?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        // The main queue only carries rebalances, errors and records of partitions not split off
        // yet; those are dropped (their reader seeks back to its start position). This thread
        // may block inside a revocation while the engine drains, so it is not a runtime thread.
        let (polled, stopping) = (consumer.clone(), stop.clone());
        let poller = std::thread::Builder::new()
            .name("tally-kafka-poll".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    if let Some(Err(e)) = polled.poll(Duration::from_millis(100)) {
                        tracing::warn!(error = %e, "kafka consumer error");
                    }
                }
            })
            .map_err(backend)?;
        Ok(Self {
            consumer,
            events,
            revoked: None,
            stop,
            poller: Some(poller),
            partition_counts: HashMap::new(),
            bus: None,
        })
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Let a revocation in progress (the final one at close) go on without waiting.
        drop(self.revoked.take());
        self.events.close();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

impl KafkaConsumer {
    /// Refreshes the partition count in the background, keeping the last known one when the
    /// broker does not answer (partitions are rarely added, and never to a keyed topic on
    /// purpose). Never on the assignment's path: until a partition's queue is split off, its
    /// records land in the main queue and are dropped, so the split must follow at once.
    fn refresh_partition_count(&self, topic: &str) {
        let Some(bus) = self.bus.clone() else { return };
        let Some(count) = self.partition_counts.get(topic).cloned() else { return };
        let topic = topic.to_owned();
        tokio::spawn(async move {
            match bus.partitions(&topic).await {
                Ok(Some(n)) => count.store(n, Ordering::Relaxed),
                Ok(None) | Err(_) => tracing::debug!(topic = %topic, "partition count not refreshed"),
            }
        });
    }
}

impl Consumer for KafkaConsumer {
    type Partition = KafkaPartition;

    async fn next_assignment(&mut self) -> Result<Assignment<KafkaPartition>, BusError> {
        // Being asked again means the previous revocation has been drained.
        if let Some(done) = self.revoked.take() {
            let _ = done.send(());
        }
        match self.events.recv().await {
            Some(GroupEvent::Assigned(partitions)) => {
                let mut readers = Vec::with_capacity(partitions.len());
                let mut topics: Vec<&str> = Vec::new();
                for (topic, partition) in &partitions {
                    let partition = *partition;
                    let Some(mut queue) =
                        self.consumer.split_partition_queue(topic, i32::try_from(partition).unwrap_or(i32::MAX))
                    else {
                        return Err(BusError::transient(format!("cannot split off partition {partition} of {topic}")));
                    };
                    if !topics.contains(&topic.as_str()) {
                        topics.push(topic);
                    }
                    let partition_count = self.partition_counts.get(topic).cloned().unwrap_or_default();
                    let arrived = Arc::new(Notify::new());
                    let wake = arrived.clone();
                    queue.set_nonempty_callback(move || wake.notify_one());
                    readers.push(KafkaPartition {
                        consumer: self.consumer.clone(),
                        queue,
                        arrived,
                        topic: topic.clone(),
                        partition,
                        partition_count,
                        position: None,
                        seek_pending: false,
                        sought: None,
                        seeks: 0,
                        high_watermark: Arc::new(AtomicU64::new(0)),
                        watermark_checked: None,
                        behind_since: None,
                    });
                }
                for topic in topics {
                    self.refresh_partition_count(topic);
                }
                Ok(Assignment::Assigned(readers))
            }
            Some(GroupEvent::Revoked(partitions, done)) => {
                self.revoked = Some(done);
                Ok(Assignment::Revoked(partitions))
            }
            None => Err(BusError::Closed),
        }
    }
}

/// Ordered access to one assigned partition.
pub struct KafkaPartition {
    consumer: Arc<BaseConsumer<GroupContext>>,
    queue: rdkafka::consumer::base_consumer::PartitionQueue<GroupContext>,
    arrived: Arc<Notify>,
    topic: String,
    partition: u32,
    /// The topic's partition count, shared with the consumer that refreshes it (0: unknown).
    partition_count: Arc<AtomicU32>,
    /// Next offset to hand out; records below it are redeliveries and are skipped.
    position: Option<u64>,
    /// The broker must be told to fetch from `position` (a gap ahead of it was seen).
    seek_pending: bool,
    /// The last position sought to, and how many seeks to it found the stream starting later.
    /// Tally's topics have no gaps (no compaction, no transactions), so a start past the
    /// position is an in-flight fetch racing the seek: seek again. Only after several tries is
    /// a genuine gap (a compacted or transactional topic) accepted, loudly.
    sought: Option<u64>,
    seeks: u32,
    high_watermark: Arc<AtomicU64>,
    watermark_checked: Option<Instant>,
    /// Since when the reader has been waiting with records known to exist at or past its
    /// position (see `poll`).
    behind_since: Option<Instant>,
}

/// How long a reader waits, with the partition's end past its position and nothing arriving,
/// before it asks the broker to fetch from its position again.
const STALL_RESEEK: Duration = Duration::from_secs(2);

fn record_of(m: &BorrowedMessage<'_>, topic: &str, partition: u32) -> Record {
    // Bytes that are not UTF-8 are kept in a lossy decoding for the dead-letter copy, and the
    // record says so: the consumer must not trust such a key or header.
    let mut undecodable = None;
    let mut text = |what: &str, bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            undecodable.get_or_insert_with(|| what.to_owned());
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    let key = m.key().map(|k| text("key", k));
    let headers = m
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(|v| text(h.key, v)).unwrap_or_default())).collect())
        .unwrap_or_default();
    Record {
        topic: topic.to_owned(),
        partition,
        offset: u64::try_from(m.offset()).unwrap_or_default(),
        key,
        undecodable,
        headers,
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or_default(),
    }
}

impl KafkaPartition {
    fn tpl(&self, offset: Option<u64>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let partition = i32::try_from(self.partition).unwrap_or(i32::MAX);
        let mut elem: TopicPartitionListElem<'_> = tpl.add_partition(&self.topic, partition);
        if let Some(offset) = offset {
            let _ = elem.set_offset(Offset::Offset(i64::try_from(offset).unwrap_or(i64::MAX)));
        }
        tpl
    }

    /// Asks the broker to fetch from `to` (blocking in librdkafka, so off the runtime).
    async fn seek_broker(&mut self, to: u64) -> Result<(), BusError> {
        let (consumer, topic, partition) = (self.consumer.clone(), self.topic.clone(), self.partition);
        tokio::task::spawn_blocking(move || {
            consumer.seek(
                &topic,
                i32::try_from(partition).unwrap_or(i32::MAX),
                Offset::Offset(i64::try_from(to).unwrap_or(i64::MAX)),
                Duration::from_secs(5),
            )
        })
        .await
        .map_err(backend)?
        .map_err(backend)?;
        if self.sought == Some(to) {
            self.seeks += 1;
        } else {
            (self.sought, self.seeks) = (Some(to), 1);
        }
        Ok(())
    }

    /// Refreshes the partition's end offset (for lag) at most once a second, off the runtime.
    fn refresh_watermark(&mut self) {
        if self.watermark_checked.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.watermark_checked = Some(Instant::now());
        let (consumer, topic, partition, hwm) =
            (self.consumer.clone(), self.topic.clone(), self.partition, self.high_watermark.clone());
        tokio::task::spawn_blocking(move || {
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&topic, i32::try_from(partition).unwrap_or(i32::MAX), Duration::from_secs(2))
            {
                hwm.store(u64::try_from(high).unwrap_or_default(), Ordering::Relaxed);
            }
        });
    }
}

impl PartitionReader for KafkaPartition {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> u32 {
        self.partition
    }

    fn partition_count(&self) -> u32 {
        self.partition_count.load(Ordering::Relaxed)
    }

    async fn committed(&self) -> Result<Option<u64>, BusError> {
        let (consumer, tpl) = (self.consumer.clone(), self.tpl(None));
        let committed = tokio::task::spawn_blocking(move || consumer.committed_offsets(tpl, METADATA_TIMEOUT))
            .await
            .map_err(backend)?
            .map_err(backend)?;
        Ok(committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(n) => u64::try_from(n).ok(),
            _ => None,
        }))
    }

    fn seek(&mut self, next_offset: u64) {
        // Records below the position are skipped as they arrive; the broker is asked to seek
        // only if the stream turns out to start beyond it (see `poll`).
        self.position = Some(next_offset);
        (self.sought, self.seeks) = (None, 0);
    }

    async fn poll(&mut self, max: usize) -> Result<Vec<Record>, BusError> {
        loop {
            self.refresh_watermark();
            if self.seek_pending
                && let Some(to) = self.position
            {
                self.seek_pending = false;
                self.seek_broker(to).await?;
            }
            let mut out = Vec::new();
            while out.len() < max.max(1) {
                match self.queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(e)) => return Err(backend(e)),
                    Some(Ok(message)) => {
                        let offset = u64::try_from(message.offset()).unwrap_or_default();
                        match self.position {
                            Some(p) if offset < p => continue, // redelivered below the position
                            Some(p) if offset > p && !(self.sought == Some(p) && self.seeks >= MAX_SEEKS) => {
                                // The fetch started past where this reader must resume (the
                                // broker's committed offset is ahead of the store's, or records
                                // went to the main queue before this partition was split off).
                                self.seek_pending = true;
                                break;
                            }
                            _ => {}
                        }
                        if let Some(p) = self.position
                            && offset > p
                        {
                            tracing::warn!(
                                topic = %self.topic,
                                partition = self.partition,
                                from = p,
                                to = offset,
                                "offsets missing from the partition after repeated seeks; continuing past the gap"
                            );
                        }
                        self.position = Some(offset + 1);
                        out.push(record_of(&message, &self.topic, self.partition));
                    }
                }
            }
            if !out.is_empty() {
                self.high_watermark.fetch_max(self.position.unwrap_or_default(), Ordering::Relaxed);
                self.behind_since = None;
                return Ok(out);
            }
            // Records fetched before this partition's queue was split off went to the main
            // queue and were dropped; a later record would show the gap, but on a quiet
            // partition none comes. So a reader that knows records exist at or past its
            // position (the end offset, refreshed every second) and receives nothing for a
            // while asks the broker to fetch from its position again.
            let behind = self.position.is_some_and(|p| self.high_watermark.load(Ordering::Relaxed) > p);
            if !behind {
                self.behind_since = None;
            } else if self.behind_since.get_or_insert_with(Instant::now).elapsed() >= STALL_RESEEK {
                self.behind_since = None;
                self.seek_pending = true;
                continue;
            }
            if !self.seek_pending {
                // The callback fires when the queue goes from empty to non-empty; the timeout
                // covers a wake-up that raced with the last poll.
                let _ = tokio::time::timeout(Duration::from_millis(100), self.arrived.notified()).await;
            }
        }
    }

    async fn commit(&mut self, next_offset: u64) -> Result<(), BusError> {
        // Asynchronous: librdkafka sends it in the background, in order, so the worker does not
        // stall a round trip per flush (a synchronous commit added its latency to every record
        // arriving meanwhile). The store's offset is the authority: a member that starts before
        // this reaches the broker fetches from an older offset and skips up to the store's.
        self.consumer.commit(&self.tpl(Some(next_offset)), CommitMode::Async).map_err(backend)
    }

    fn end_offset(&self) -> u64 {
        self.high_watermark.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
