//! The publisher of one partition worker: it publishes each poll's outputs, then hands the
//! poll's effects to the flush batcher, so no offset is committed past an unpublished output
//! (a crash in between republishes at least once rather than loses an output).
//!
//! The worker does not wait for it. Polls that queue while a publish is in flight go out
//! together in the next one — keeping only the latest record per key on state topics — so a
//! slow bus costs one round trip per burst rather than per poll, and the topics are published
//! concurrently.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tally_bus::{Bus, OutRecord, RetryHint};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::batcher::{FlushPart, source_chain};
use crate::handler::OutputTopic;
use crate::metrics::{ConsumerMetrics, Stage};

/// Most polls merged into one publish: bounds a publish's size after a long stall.
const MAX_MERGED: usize = 64;

/// What was published for some polls, for the subsystem's own metrics.
pub struct Published<'a> {
    /// Records published per output topic (in the subsystem's order).
    pub records: &'a [usize],
    /// Event times (µs) of the events applied in those polls.
    pub event_times_us: &'a [i64],
    /// When they were published (µs since the epoch).
    pub published_us: i64,
}

/// Called after each publish (the subsystem's "event → published" latency, say).
pub type PublishHook = Arc<dyn Fn(&Published<'_>) + Send + Sync>;

/// What a worker hands its publisher for one poll.
pub struct Outbox<E> {
    /// Records per output topic.
    pub outputs: Vec<Vec<OutRecord>>,
    /// Poison records, by dead-letter topic.
    pub dead_letters: Vec<(String, OutRecord)>,
    /// Records that arrived on a partition other than their key's, by input topic (which puts
    /// them on their key's partition).
    pub forwarded: Vec<(String, OutRecord)>,
    /// Event times (µs) of the events applied.
    pub event_times_us: Vec<i64>,
    /// The poll's effects, to flush once everything above is published.
    pub part: FlushPart<E>,
}

/// Several outboxes as one publish per topic.
struct Merged<E> {
    by_topic: BTreeMap<String, Vec<OutRecord>>,
    counts: Vec<usize>,
    event_times_us: Vec<i64>,
    parts: Vec<FlushPart<E>>,
}

impl<E> Merged<E> {
    fn new(items: Vec<Outbox<E>>, outputs: &[OutputTopic]) -> Self {
        let several = items.len() > 1;
        let mut per_output: Vec<Vec<OutRecord>> = vec![Vec::new(); outputs.len()];
        let mut by_topic: BTreeMap<String, Vec<OutRecord>> = BTreeMap::new();
        let mut event_times_us = Vec::new();
        let mut parts = Vec::with_capacity(items.len());
        for item in items {
            for (i, records) in item.outputs.into_iter().enumerate() {
                if let Some(all) = per_output.get_mut(i) {
                    all.extend(records);
                }
            }
            for (topic, record) in item.dead_letters.into_iter().chain(item.forwarded) {
                by_topic.entry(topic).or_default().push(record);
            }
            event_times_us.extend(item.event_times_us);
            parts.push(item.part);
        }
        let mut counts = Vec::with_capacity(outputs.len());
        for (topic, records) in outputs.iter().zip(per_output) {
            let records = if several && topic.latest_per_key { latest_per_key(records) } else { records };
            counts.push(records.len());
            if !records.is_empty() {
                by_topic.entry(topic.name.clone()).or_default().extend(records);
            }
        }
        Self { by_topic, counts, event_times_us, parts }
    }
}

/// Keeps the last record of each key, in the order of those last records: a consumer that
/// reads every message still ends with the latest state of each key.
fn latest_per_key(records: Vec<OutRecord>) -> Vec<OutRecord> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut kept: Vec<OutRecord> = records.into_iter().rev().filter(|r| seen.insert(r.key.clone())).collect();
    kept.reverse();
    kept
}

/// Why records were not published. Either way the poll is not flushed, so its offset does not
/// move and a restart replays and republishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpublished {
    /// Shutdown or revocation came while retrying.
    Cancelled,
    /// The bus refuses them for good (too large, not authorised …): the reason, with its cause.
    Permanent(String),
}

/// Publishes with capped, jittered retries on transient errors (counted) until it succeeds, a
/// permanent error comes, or `cancel` fires.
pub async fn publish<B: Bus>(
    bus: &B,
    topic: &str,
    records: Vec<OutRecord>,
    cancel: &CancellationToken,
    metrics: &ConsumerMetrics,
) -> Result<(), Unpublished> {
    if records.is_empty() {
        return Ok(());
    }
    let mut backoff = Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_secs(5));
    loop {
        match bus.publish(topic, records.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.retry_hint() == RetryHint::Permanent && !cancel.is_cancelled() => {
                return Err(Unpublished::Permanent(format!("publishing to {topic}: {e}: {}", source_chain(&e))));
            }
            Err(e) => {
                metrics.bus_retry();
                tracing::warn!(error = %e, cause = source_chain(&e), topic, "publish failed; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return Err(Unpublished::Cancelled),
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// Where a publisher runs: its bus, the subsystem's output topics, and where its polls go next.
pub struct PublisherSetup<B, E> {
    /// The bus.
    pub bus: B,
    /// The subsystem's output topics.
    pub outputs: Arc<[OutputTopic]>,
    /// The flush batcher.
    pub flush: mpsc::Sender<FlushPart<E>>,
    /// The subsystem's publish hook.
    pub hook: Option<PublishHook>,
    /// Retries are counted here.
    pub metrics: Arc<ConsumerMetrics>,
    /// Told the reason when the bus refuses outputs for good.
    pub failed: oneshot::Sender<String>,
}

/// Runs until the worker drops its sender. Stops forwarding at the first poll it could not
/// publish, so no offset passes an unpublished output; a permanent refusal is reported on
/// `failed` (the worker then stops its partition).
pub async fn run<B: Bus, E>(setup: PublisherSetup<B, E>, mut rx: mpsc::Receiver<Outbox<E>>, cancel: CancellationToken) {
    let PublisherSetup { bus, outputs, flush, hook, metrics, failed } = setup;
    let mut items = Vec::new();
    while rx.recv_many(&mut items, MAX_MERGED).await > 0 {
        let merged = Merged::new(std::mem::take(&mut items), &outputs);
        let publishes = merged.by_topic.into_iter().map(|(topic, records)| {
            let (bus, cancel, metrics) = (&bus, &cancel, &metrics);
            async move { publish(bus, &topic, records, cancel, metrics).await }
        });
        let started = std::time::Instant::now();
        let all = futures_util::future::join_all(publishes).await;
        metrics.stage(Stage::Publish, started.elapsed());
        if let Some(Err(why)) = all.into_iter().find(Result::is_err) {
            tracing::warn!("stopping with unpublished outputs; they are republished after restart");
            if let Unpublished::Permanent(reason) = why {
                let _ = failed.send(reason);
            }
            return;
        }
        if let Some(hook) = &hook {
            hook(&Published {
                records: &merged.counts,
                event_times_us: &merged.event_times_us,
                published_us: crate::now_us(),
            });
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
mod tests;
