//! The flush batcher shared by a subsystem's partition workers: it coalesces what the workers
//! hand over (the handler's [`Effects::merge`]) for up to `flush_interval` or `flush_max_rows`,
//! writes it with the consumer positions in one store transaction, and only then tells each
//! worker how far it may commit on the bus.
//!
//! Partitions are disjoint in keys and offsets, so a flush of some partitions is complete on
//! its own. Under light load one transaction per interval carries every partition (few
//! statements per event). When the store is the bottleneck, up to `flush_parallelism`
//! transactions run at once, each for its own partitions, and a partition whose flush just
//! finished starts the next one while others are still writing; PostgreSQL then works on
//! several cores. One partition is never in two flushes at once, so its effects and offsets
//! land in order.
//!
//! Failures: a transient error (connection lost, timeout, serialization failure) is retried
//! with capped, jittered backoff and counted; nothing is acknowledged meanwhile, so the
//! workers' back-pressure slows consumption. A permanent error (a constraint the rows can
//! never meet) is isolated to its partition — a flush of several is split and retried one
//! partition at a time — and that partition's worker is told to stop: its offset stays where
//! the store has it, so nothing is lost, and a restart resumes there. On shutdown, a flush
//! waiting to retry gives up at once rather than hold the drain for the grace period.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_store::{ConsumerOffset, Effects, Flush, Journal, ProcessedEvent};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::metrics::ConsumerMetrics;

/// What the batcher tells a worker about its flushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Everything before this offset is durable.
    Durable(u64),
    /// A permanent store error: the partition must stop (the reason, with its cause).
    Failed(String),
    /// Shutdown came while the flush waited to retry: the rest is replayed after restart.
    Abandoned,
}

/// What one worker hands over after applying a poll.
pub struct FlushPart<E> {
    /// Topic of the partition.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The poll's effects.
    pub effects: E,
    /// Idempotency records of the events applied.
    pub processed: Vec<ProcessedEvent>,
    /// Every record before this offset is applied.
    pub next_offset: u64,
    /// Flush now (a draining worker).
    pub urgent: bool,
    /// Where to report the outcome.
    pub ack: mpsc::UnboundedSender<Ack>,
}

/// Flush settings.
#[derive(Debug, Clone)]
pub struct FlushSettings {
    /// Consumer group whose positions are stored.
    pub group: String,
    /// Longest a change waits for its flush.
    pub interval: Duration,
    /// Rows that trigger a flush at once.
    pub max_rows: usize,
    /// Most flushes at once.
    pub parallelism: usize,
}

type PartitionKey = (String, u32);

/// What is pending for one partition.
struct PartitionPending<E> {
    effects: E,
    processed: Vec<ProcessedEvent>,
    next_offset: u64,
    ack: mpsc::UnboundedSender<Ack>,
    /// When the oldest of it arrived.
    since: tokio::time::Instant,
    urgent: bool,
}

impl<E: Effects> PartitionPending<E> {
    fn new(part: &FlushPart<E>) -> Self {
        Self {
            effects: E::default(),
            processed: Vec::new(),
            next_offset: part.next_offset,
            ack: part.ack.clone(),
            since: tokio::time::Instant::now(),
            urgent: false,
        }
    }

    fn add(&mut self, part: FlushPart<E>) {
        self.effects.merge(part.effects);
        self.processed.extend(part.processed);
        self.next_offset = self.next_offset.max(part.next_offset);
        self.ack = part.ack;
        self.urgent |= part.urgent;
    }

    fn size(&self) -> usize {
        self.effects.rows() + self.processed.len()
    }
}

/// Runs until every worker has dropped its sender, flushing what remains.
pub async fn run<S: Journal<E>, E: Effects>(
    store: S,
    settings: Arc<FlushSettings>,
    metrics: Arc<ConsumerMetrics>,
    mut rx: mpsc::Receiver<FlushPart<E>>,
    shutdown: CancellationToken,
) {
    let interval = settings.interval;
    let mut pending: HashMap<PartitionKey, PartitionPending<E>> = HashMap::new();
    // The partitions of each flush in flight, with their workers' ack channels (told if the
    // flush task dies).
    let mut flushing: HashMap<tokio::task::Id, Vec<(PartitionKey, mpsc::UnboundedSender<Ack>)>> = HashMap::new();
    let mut flushes = JoinSet::new();
    let mut open = true;
    let mut statements = store.statements();
    // Workers one of whose polls could not be flushed (see below).
    let mut dead: Vec<mpsc::UnboundedSender<Ack>> = Vec::new();
    loop {
        let busy: HashSet<&PartitionKey> = flushing.values().flatten().map(|(key, _)| key).collect();
        let ready: Vec<PartitionKey> = pending.keys().filter(|k| !busy.contains(k)).cloned().collect();
        let size: usize = ready.iter().map(|k| pending[k].size()).sum();
        let oldest = ready.iter().map(|k| pending[k].since).min();
        let slots = settings.parallelism.saturating_sub(flushes.len());
        let due = !open
            || size >= settings.max_rows
            || oldest.is_some_and(|t| t.elapsed() >= interval)
            || ready.iter().any(|k| pending[k].urgent);
        if !ready.is_empty() && slots > 0 && due {
            // A large flush means the store is behind: spread it over the free slots.
            let lanes = if size >= settings.max_rows / 2 { slots.min(ready.len()) } else { 1 };
            let mut groups: Vec<Vec<(PartitionKey, PartitionPending<E>)>> = (0..lanes).map(|_| Vec::new()).collect();
            for (i, key) in ready.into_iter().enumerate() {
                if let Some(p) = pending.remove(&key) {
                    groups[i % lanes].push((key, p));
                }
            }
            for partitions in groups {
                let keys = partitions.iter().map(|(k, p)| (k.clone(), p.ack.clone())).collect();
                let task = flushes.spawn(flush(
                    store.clone(),
                    settings.clone(),
                    metrics.clone(),
                    partitions,
                    shutdown.clone(),
                ));
                flushing.insert(task.id(), keys);
            }
            continue;
        }
        if !open && pending.is_empty() && flushes.is_empty() {
            break;
        }
        let wake = oldest.filter(|_| slots > 0).map(|t| t + interval);
        // Back-pressure: past this, workers wait (their outboxes fill) until flushes catch up.
        let full = pending.values().map(PartitionPending::size).sum::<usize>() >= 2 * settings.max_rows;
        tokio::select! {
            part = rx.recv(), if open && !full => match part {
                Some(part) if dead.iter().any(|d| d.same_channel(&part.ack)) => {
                    let _ = part.ack.send(Ack::Abandoned);
                }
                Some(part) => {
                    let key = (part.topic.clone(), part.partition);
                    pending.entry(key).or_insert_with(|| PartitionPending::new(&part)).add(part);
                }
                None => open = false,
            },
            Some(done) = flushes.join_next_with_id(), if !flushes.is_empty() => {
                let (id, failed) = match done {
                    Ok((id, failed)) => (id, failed),
                    Err(e) => {
                        // A panicking flush (a bug): whether its rows landed is unknown, so its
                        // workers stop as on a permanent error and replay after a restart.
                        tracing::error!(error = %e, "a store flush task failed");
                        let id = e.id();
                        let reason = format!("the flush task failed: {e}");
                        let lanes = flushing.get(&id).map(|lanes| lanes.iter().map(|(_, ack)| ack.clone()).collect());
                        let lanes: Vec<mpsc::UnboundedSender<Ack>> = lanes.unwrap_or_default();
                        for ack in &lanes {
                            let _ = ack.send(Ack::Failed(reason.clone()));
                        }
                        (id, lanes)
                    }
                };
                flushing.remove(&id);
                // A poll that was not flushed must not be skipped over by a later one of the same
                // worker (a later flush would commit an offset past it): what is pending from that
                // worker, and all it still sends, is dropped. Its partition resumes from the
                // committed offset when a new worker takes it.
                if !failed.is_empty() {
                    pending.retain(|_, p| !failed.iter().any(|f| f.same_channel(&p.ack)));
                    dead.extend(failed);
                }
                let now = store.statements();
                metrics.statements(now.saturating_sub(statements));
                statements = now;
            },
            () = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {},
        }
    }
}

/// Flushes some partitions; returns the ack channels of those it could not flush (a permanent
/// error, or shutdown during a retry wait): nothing of theirs may be flushed after this.
async fn flush<S: Journal<E>, E: Effects>(
    store: S,
    settings: Arc<FlushSettings>,
    metrics: Arc<ConsumerMetrics>,
    partitions: Vec<(PartitionKey, PartitionPending<E>)>,
    shutdown: CancellationToken,
) -> Vec<mpsc::UnboundedSender<Ack>> {
    let (batch, acks): (Vec<Flush<E>>, Vec<mpsc::UnboundedSender<Ack>>) = partitions
        .into_iter()
        .map(|((topic, partition), pending)| {
            let offset =
                ConsumerOffset { group: settings.group.clone(), topic, partition, next_offset: pending.next_offset };
            (Flush { effects: pending.effects, processed: pending.processed, offsets: vec![offset] }, pending.ack)
        })
        .unzip();
    let mut dead = Vec::new();
    let mut give_up = |ack: &mpsc::UnboundedSender<Ack>, why: Ack| {
        let _ = ack.send(why);
        dead.push(ack.clone());
    };
    match write(&store, &metrics, &batch, &shutdown).await {
        Written::Ok => acknowledge(&batch, &acks),
        Written::Abandoned => acks.iter().for_each(|ack| give_up(ack, Ack::Abandoned)),
        Written::Permanent(_) if batch.len() > 1 => {
            // One partition's rows may be the bad ones: find which, flushing each alone.
            for (one, ack) in batch.chunks(1).zip(&acks) {
                match write(&store, &metrics, one, &shutdown).await {
                    Written::Ok => acknowledge(one, std::slice::from_ref(ack)),
                    Written::Abandoned => give_up(ack, Ack::Abandoned),
                    Written::Permanent(reason) => give_up(ack, Ack::Failed(reason)),
                }
            }
        }
        Written::Permanent(reason) => acks.iter().for_each(|ack| give_up(ack, Ack::Failed(reason.clone()))),
    }
    dead
}

fn acknowledge<E>(batch: &[Flush<E>], acks: &[mpsc::UnboundedSender<Ack>]) {
    for (flush, ack) in batch.iter().zip(acks) {
        for offset in &flush.offsets {
            let _ = ack.send(Ack::Durable(offset.next_offset));
        }
    }
}

enum Written {
    Ok,
    Permanent(String),
    Abandoned,
}

/// Writes `batch`, retrying transient errors until it succeeds, a permanent error comes, or
/// shutdown interrupts a wait.
async fn write<S: Journal<E>, E: Effects>(
    store: &S,
    metrics: &ConsumerMetrics,
    batch: &[Flush<E>],
    shutdown: &CancellationToken,
) -> Written {
    let rows: u64 = batch.iter().map(|f| f.effects.rows() as u64).sum();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        let started = Instant::now();
        match store.flush(batch).await {
            Ok(()) => {
                metrics.flushed(rows, started.elapsed());
                return Written::Ok;
            }
            Err(e) if e.is_transient() => {
                // Nothing is lost: the workers keep their offsets uncommitted until this
                // succeeds, and back-pressure slows consumption meanwhile.
                metrics.flush_failed();
                metrics.store_retry();
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = %e, cause = source_chain(&e), rows, retry_in_ms = delay.as_millis() as u64,
                    "store flush failed; retrying"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Written::Abandoned,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => {
                metrics.flush_failed();
                return Written::Permanent(format!("{e}: {}", source_chain(&e)));
            }
        }
    }
}

/// The causes of an error, outermost first.
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    causes.join(": ")
}

#[cfg(test)]
mod tests;
