//! Records the runtime itself publishes: dead letters and records forwarded to their key's
//! partition.

use tally_bus::{OutRecord, Record};
use tally_core::headers;

/// `topic/partition/offset` of a record.
fn origin(record: &Record) -> String {
    format!("{}/{}/{}", record.topic, record.partition, record.offset)
}

/// The dead-letter topic of an input topic.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The original record (its key — none if it had none —, headers and payload) with the
/// dead-letter reason added as headers.
pub fn dead_letter(record: &Record, reason: &str, detail: &str) -> OutRecord {
    let mut headers = record.headers.clone();
    headers.push((headers::DLQ_REASON.to_owned(), reason.to_owned()));
    headers.push((headers::DLQ_DETAIL.to_owned(), detail.chars().take(1000).collect()));
    headers.push((headers::DLQ_ORIGIN.to_owned(), origin(record)));
    OutRecord { key: record.key.clone(), headers, payload: record.payload.clone() }
}

/// A record produced to a partition other than its key's, to republish on the same topic:
/// the bus puts it on the key's own partition, whose worker applies it (deduplicated there by
/// `source` + `id` if it is forwarded twice after a crash). The header marks it, so a record
/// that still arrives on a wrong partition is dead-lettered rather than forwarded in a loop.
pub fn forward(record: &Record) -> OutRecord {
    let mut headers = record.headers.clone();
    headers.push((headers::FORWARDED_FROM.to_owned(), origin(record)));
    OutRecord { key: record.key.clone(), headers, payload: record.payload.clone() }
}
