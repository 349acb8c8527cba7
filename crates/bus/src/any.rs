//! The bus chosen by configuration: one closed set of backends, selected at startup, so the
//! engine is compiled once for all of them.

use crate::{
    Assignment, Bus, BusError, Consumer, EmbeddedLog, KafkaBus, OutRecord, PartitionReader, Record,
    embedded::{EmbeddedConsumer, EmbeddedPartition},
    kafka::{KafkaConsumer, KafkaPartition},
};

/// Either bus backend.
#[derive(Clone)]
pub enum AnyBus {
    /// The durable log in the embedded SQLite file.
    Embedded(EmbeddedLog),
    /// A Kafka-protocol cluster.
    Kafka(KafkaBus),
}

/// A consumer-group member of either backend.
pub enum AnyConsumer {
    /// On the embedded log.
    Embedded(EmbeddedConsumer),
    /// On Kafka.
    Kafka(KafkaConsumer),
}

/// A partition reader of either backend.
pub enum AnyPartition {
    /// On the embedded log.
    Embedded(EmbeddedPartition),
    /// On Kafka.
    Kafka(KafkaPartition),
}

/// Calls the same method on whichever backend this is.
macro_rules! delegate {
    ($enum:ident, $self:ident, $inner:ident => $call:expr) => {
        match $self {
            $enum::Embedded($inner) => $call,
            $enum::Kafka($inner) => $call,
        }
    };
}

impl Bus for AnyBus {
    type Consumer = AnyConsumer;

    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        delegate!(AnyBus, self, b => b.create_topic(topic, partitions).await)
    }

    async fn publish(&self, topic: &str, records: Vec<OutRecord>) -> Result<(), BusError> {
        delegate!(AnyBus, self, b => b.publish(topic, records).await)
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<AnyConsumer, BusError> {
        match self {
            Self::Embedded(b) => b.subscribe(group, topics).await.map(AnyConsumer::Embedded),
            Self::Kafka(b) => b.subscribe(group, topics).await.map(AnyConsumer::Kafka),
        }
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, BusError> {
        match self {
            Self::Embedded(b) => b.end_offsets(topic).await,
            Self::Kafka(b) => b.end_offsets(topic).await,
        }
    }

    async fn ping(&self) -> Result<(), BusError> {
        delegate!(AnyBus, self, b => b.ping().await)
    }
}

fn wrap<P>(change: Assignment<P>, into: fn(P) -> AnyPartition) -> Assignment<AnyPartition> {
    match change {
        Assignment::Assigned(parts) => Assignment::Assigned(parts.into_iter().map(into).collect()),
        Assignment::Revoked(parts) => Assignment::Revoked(parts),
    }
}

impl Consumer for AnyConsumer {
    type Partition = AnyPartition;

    async fn next_assignment(&mut self) -> Result<Assignment<AnyPartition>, BusError> {
        Ok(match self {
            Self::Embedded(c) => wrap(c.next_assignment().await?, AnyPartition::Embedded),
            Self::Kafka(c) => wrap(c.next_assignment().await?, AnyPartition::Kafka),
        })
    }
}

impl PartitionReader for AnyPartition {
    fn topic(&self) -> &str {
        delegate!(AnyPartition, self, p => p.topic())
    }

    fn partition(&self) -> u32 {
        delegate!(AnyPartition, self, p => p.partition())
    }

    async fn committed(&self) -> Result<Option<u64>, BusError> {
        delegate!(AnyPartition, self, p => p.committed().await)
    }

    fn seek(&mut self, next_offset: u64) {
        delegate!(AnyPartition, self, p => p.seek(next_offset))
    }

    async fn poll(&mut self, max: usize) -> Result<Vec<Record>, BusError> {
        delegate!(AnyPartition, self, p => p.poll(max).await)
    }

    async fn commit(&mut self, next_offset: u64) -> Result<(), BusError> {
        delegate!(AnyPartition, self, p => p.commit(next_offset).await)
    }

    fn end_offset(&self) -> u64 {
        delegate!(AnyPartition, self, p => p.end_offset())
    }

    fn partition_count(&self) -> u32 {
        delegate!(AnyPartition, self, p => p.partition_count())
    }
}
