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
    /// Event times (µs) of the events applied, for the desync histogram.
    pub event_times_us: Vec<i64>,
    /// The batch to flush once everything above is published.
    pub part: FlushPart,
}

/// Output topic names.
#[derive(Clone)]
pub struct OutputTopics {
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
        let (availability, outcomes, dead_letters) = tokio::join!(
            publish(&bus, &topics.availability, merged.availability, &cancel),
            publish(&bus, &topics.outcomes, merged.outcomes, &cancel),
            publish(&bus, &topics.dead_letters, merged.dead_letters, &cancel),
        );
        if !(availability && outcomes && dead_letters) {
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
    use super::*;

    fn record(key: &str, payload: &str) -> OutRecord {
        OutRecord { key: key.into(), headers: Vec::new(), payload: payload.as_bytes().to_vec() }
    }

    #[test]
    fn merged_availability_keeps_only_the_latest_message_of_each_sku() {
        let records =
            vec![record("a", "a1"), record("b", "b1"), record("a", "a2"), record("c", "c1"), record("b", "b2")];
        let kept: Vec<String> =
            latest_per_key(records).iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect();
        assert_eq!(kept, ["a2", "c1", "b2"]);
    }
}
