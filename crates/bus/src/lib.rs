//! The event bus: a small trait that Kafka (partitions, offsets, consumer groups, rebalances)
//! and the embedded durable log both implement, so domain workers never see which one runs.
//!
//! Contract every implementation keeps (checked by the conformance tests):
//! - records with the same key land on the same partition, in publish order;
//! - `publish` returns only once the records are durable;
//! - a partition reader yields records in offset order, from the position it was seeked to;
//! - `commit` records a consumer group's position; nothing is committed implicitly.

use std::future::Future;

mod any;
#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod kafka;

pub use any::{AnyBus, AnyConsumer, AnyPartition};
pub use embedded::{EmbeddedLog, EmbeddedLogOptions};
pub use kafka::{KafkaBus, KafkaBusOptions};
pub use tally_core::RetryHint;

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Partition key (the SKU for inventory topics); `None` only when dead-lettering a record
    /// that arrived without one.
    pub key: Option<String>,
    /// Headers (CloudEvents binary-mode attributes, trace context, DLQ reason).
    pub headers: Vec<(String, String)>,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition within the topic.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// Partition key; `None` for a record produced without one.
    pub key: Option<String>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// When the bus accepted the record (Unix ms).
    pub timestamp_ms: i64,
    /// The first part of the record (`key` or a header name) whose bytes were not UTF-8. Such
    /// a part is held above in a lossy decoding, which must not be trusted: two different
    /// byte strings can decode to the same text.
    pub undecodable: Option<String>,
}

impl OutRecord {
    /// A record with a key.
    pub fn keyed(key: impl Into<String>, headers: Vec<(String, String)>, payload: Vec<u8>) -> Self {
        Self { key: Some(key.into()), headers, payload }
    }
}

impl Record {
    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Errors a bus operation can end with.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The backend failed (I/O, broker); [`BusError::retry_hint`] says whether a retry can help.
    #[error("bus backend failed ({hint:?}): {source}")]
    Backend {
        /// Whether a retry can help.
        hint: RetryHint,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The bus was shut down.
    #[error("bus is closed")]
    Closed,
    /// A topic was used with an incompatible definition.
    #[error("topic {topic}: {reason}")]
    Topic {
        /// Topic name.
        topic: String,
        /// What is wrong.
        reason: String,
    },
}

impl BusError {
    /// A failure a retry may get past (I/O, a broker restarting, a timeout).
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend { hint: RetryHint::Transient, source: source.into() }
    }

    /// Whether retrying can help.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Backend { hint, .. } => *hint,
            // Closed: the process is stopping; a topic defined otherwise stays so.
            Self::Closed | Self::Topic { .. } => RetryHint::Permanent,
        }
    }
}

/// A change of the partitions assigned to a consumer.
#[derive(Debug)]
pub enum Assignment<P> {
    /// These partitions are now ours: spawn one ordered worker each.
    Assigned(Vec<P>),
    /// These partitions (topic, partition) are being taken away: drain and commit their
    /// workers first.
    Revoked(Vec<(String, u32)>),
}

/// A bus backend.
pub trait Bus: Clone + Send + Sync + 'static {
    /// The consumer-group member type.
    type Consumer: Consumer;

    /// Creates a topic with `partitions` partitions if it does not exist.
    fn create_topic(&self, topic: &str, partitions: u32) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Appends records, each to the partition its key maps to. Returns once durable.
    fn publish(&self, topic: &str, records: Vec<OutRecord>) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Joins consumer group `group` on `topics` (one member for all of them: the group
    /// spreads their partitions over its members).
    fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> impl Future<Output = Result<Self::Consumer, BusError>> + Send;

    /// Each partition's end: the offset the next record published to it will get (an empty
    /// topic's are all 0). For lag tooling, and for tests that must show nothing was published.
    fn end_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<u64>, BusError>> + Send;

    /// Checks the backend answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// A consumer-group member: reports partition assignments as they change.
pub trait Consumer: Send + 'static {
    /// The per-partition reader type.
    type Partition: PartitionReader;

    /// Waits for the next assignment change.
    fn next_assignment(&mut self) -> impl Future<Output = Result<Assignment<Self::Partition>, BusError>> + Send;
}

/// Ordered access to one assigned partition.
pub trait PartitionReader: Send + 'static {
    /// Topic name.
    fn topic(&self) -> &str;
    /// Partition number.
    fn partition(&self) -> u32;
    /// How many partitions the topic had when this partition was assigned: with the key, it
    /// says which partition a record belongs on. 0 when the bus could not tell.
    fn partition_count(&self) -> u32;
    /// The group's committed position (next offset to read), if any.
    fn committed(&self) -> impl Future<Output = Result<Option<u64>, BusError>> + Send;
    /// Moves the read position to `next_offset`.
    fn seek(&mut self, next_offset: u64);
    /// Waits until at least one record is available, then returns up to `max` in order.
    fn poll(&mut self, max: usize) -> impl Future<Output = Result<Vec<Record>, BusError>> + Send;
    /// Records the group's position: every record before `next_offset` is done.
    fn commit(&mut self, next_offset: u64) -> impl Future<Output = Result<(), BusError>> + Send;
    /// The offset the next published record will get (for lag = end − committed).
    fn end_offset(&self) -> u64;
}
