//! The worker shell of one assigned partition: resume, decode, filter, hand the fresh events
//! to the subsystem's [`Handler`], publish, flush, commit, drain.
//!
//! Per poll: each record is checked against the event contract (encoding, CloudEvents
//! attributes, the handler's parse, key and partition) — poison goes to `<topic>.dlq` with the
//! reason, a record on the wrong partition is forwarded to its key's —, redeliveries the
//! handler's state already holds are skipped, duplicates within the idempotency window are
//! dropped, and the rest is applied by the handler, at most one event per key per round so a
//! duplicate within the poll is judged against the first's fate. Outputs go to the worker's
//! publisher, which hands the poll's effects to the batcher only once they are published; the
//! bus offset is committed only when the batcher reports the flush durable.

use std::collections::HashSet;
use std::time::Duration;

use tally_bus::{PartitionReader, Record};
use tally_cache::Cache;
use tally_core::partition::partition_for_key;
use tally_core::{Attributes, EventKey, headers};
use tally_store::{Journal, ProcessedEvent, RawOutcome, RetryHint};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::backoff::Backoff;
use crate::batcher::{Ack, FlushPart, source_chain};
use crate::dedupe::DedupeWindow;
use crate::handler::{Fresh, Handler, HandlerError, Output, Parsed, Refusal};
use crate::health::StoppedPartition;
use crate::metrics::{ContractViolation, Stage};
use crate::publisher::{self, Outbox};
use crate::waiters::Resolution;
use crate::window::{self, WindowKeys, WindowWriter};

/// Polls a worker may run ahead of its publisher; the publisher sends what queued up in one
/// publish, so a deeper queue means fewer, larger publishes under load (and back-pressure
/// beyond it).
const OUTBOX_DEPTH: usize = 4;

/// How long a draining worker waits for its last flush.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

enum Decoded<E> {
    Event(Box<Attributes>, Parsed<E>),
    Poison {
        reason: &'static str,
        detail: String,
        key: Option<EventKey>,
    },
    /// A valid event produced to a partition other than its key's (a producer with another
    /// partitioner, e.g. librdkafka's default CRC32): it is applied only where its key lives.
    Misrouted {
        owner: u32,
    },
}

/// Why a worker stopped before it was told to.
enum Stop {
    /// A permanent error: the partition stays stopped until the role restarts.
    Permanent(String),
}

/// A fresh event waiting for its round, with what the shell needs to answer for it.
struct Candidate<E> {
    fresh: Fresh<E>,
    key: EventKey,
    digest: i64,
    record: usize,
}

/// Sleeps `delay` unless `cancel` fires first; false if it did.
async fn sleep_unless_cancelled(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// What the shell keeps of an event while the handler applies it.
struct Answering {
    key: EventKey,
    digest: i64,
    /// Index of its record in the poll.
    record: usize,
}

/// The worker of one partition.
pub(crate) struct PartitionWorker<B, S, C, H: Handler> {
    engine: Engine<B, S, C, H>,
    handler: H,
    topic: String,
    partition: u32,
    flush: mpsc::Sender<FlushPart<H::Effects>>,
    outbox: Option<mpsc::Sender<Outbox<H::Effects>>>,
    dedupe: DedupeWindow<H::Outcome>,
    /// The window's copy in a shared cache, for the partition's next owner.
    shared_window: Option<WindowWriter>,
    next: u64,
    acked: u64,
    stopped: Option<Stop>,
    lag: metrics::Gauge,
}

impl<B, S, C, H> PartitionWorker<B, S, C, H>
where
    B: tally_bus::Bus,
    S: Journal<H::Effects>,
    C: Cache,
    H: Handler,
{
    pub(crate) fn new(
        engine: Engine<B, S, C, H>,
        handler: H,
        topic: String,
        partition: u32,
        flush: mpsc::Sender<FlushPart<H::Effects>>,
    ) -> Self {
        let window = engine.spec.dedupe_window as usize;
        let lag = engine.metrics.lag_gauge(&topic, partition);
        Self {
            engine,
            handler,
            topic,
            partition,
            flush,
            outbox: None,
            dedupe: DedupeWindow::new(window),
            shared_window: None,
            next: 0,
            acked: 0,
            stopped: None,
            lag,
        }
    }

    /// Consumes the partition until `cancel`, then drains: the last poll is flushed and its
    /// offset committed before returning. A permanent error stops it earlier, recorded in the
    /// engine's health.
    #[tracing::instrument(skip_all, fields(subsystem = self.engine.spec.subsystem, topic = %self.topic, partition = self.partition))]
    pub(crate) async fn run<P: PartitionReader>(mut self, mut reader: P, cancel: CancellationToken) {
        // A stop recorded for this partition before is history now.
        self.engine.release(&(self.topic.clone(), self.partition));
        let start = match self.resume(&cancel).await {
            Ok(Some(start)) => start,
            Ok(None) => return,
            Err(stop) => return self.stop(stop),
        };
        reader.seek(start);
        (self.next, self.acked) = (start, start);
        tracing::info!(start, remembered = self.dedupe.len(), "partition worker resuming");

        let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX_DEPTH);
        self.outbox = Some(outbox_tx);
        let (failed, mut publisher_failed) = oneshot::channel();
        let setup = publisher::PublisherSetup {
            bus: self.engine.bus.clone(),
            outputs: self.engine.outputs.clone(),
            flush: self.flush.clone(),
            hook: self.engine.hook.clone(),
            metrics: self.engine.metrics.clone(),
            failed,
        };
        // Its own token: a worker that stops on a permanent error stops its publisher's retries
        // too, instead of waiting on them.
        let publishing = cancel.child_token();
        let publisher = tokio::spawn(publisher::run(setup, outbox_rx, publishing.clone()));
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let tick_every =
            self.handler.tick_interval().unwrap_or(Duration::from_secs(3600)).max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval(tick_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ticking = self.handler.tick_interval().is_some();
        let max = self.engine.spec.poll_max_records;
        let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            tokio::select! {
                biased;
                // Before cancellation: a publisher that stopped on a permanent refusal has said
                // why before its outbox closed, and the partition must be reported stopped.
                refused = &mut publisher_failed => {
                    match refused {
                        Ok(reason) => self.stopped = Some(Stop::Permanent(reason)),
                        Err(_) if cancel.is_cancelled() => {}
                        Err(_) => tracing::error!("the partition's publisher stopped; stopping consumption of this partition"),
                    }
                    break;
                }
                () = cancel.cancelled() => break,
                Some(ack) = ack_rx.recv() => {
                    self.on_ack(&mut reader, ack).await;
                    if self.stopped.is_some() {
                        break;
                    }
                }
                polled = reader.poll(max) => match polled {
                    Ok(batch) if batch.is_empty() => {}
                    Ok(batch) => {
                        let first = batch[0].offset;
                        let partitions = reader.partition_count();
                        match self.process(partitions, batch, &ack_tx).await {
                            Ok(()) => retry.reset(Duration::from_millis(200)),
                            Err(e) if e.hint == RetryHint::Transient => {
                                let delay = retry.next_delay();
                                tracing::warn!(error = %e, cause = source_chain(&e), offset = first, "poll failed before any effect; retrying it");
                                self.engine.metrics.store_retry();
                                reader.seek(first);
                                if !sleep_unless_cancelled(delay, &cancel).await {
                                    break;
                                }
                            }
                            Err(e) => {
                                self.stopped = Some(Stop::Permanent(format!("{e}: {}", source_chain(&e))));
                                break;
                            }
                        }
                        self.lag.set(reader.end_offset().saturating_sub(self.next) as f64);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "poll failed; retrying");
                        if !sleep_unless_cancelled(retry.next_delay(), &cancel).await {
                            break;
                        }
                    }
                },
                _ = ticks.tick(), if ticking => self.tick(&cancel).await,
            }
        }
        if self.stopped.is_none() {
            self.drain(&mut reader, ack_tx, &mut ack_rx).await;
        }
        if self.stopped.is_some() {
            publishing.cancel();
        }
        drop(self.outbox.take()); // the publisher ends once it has forwarded everything
        let _ = publisher.await;
        if let Some(stop) = self.stopped.take() {
            self.stop(stop);
        }
    }

    /// Records a permanent stop: logged at ERROR with its cause, on the metric and `/readyz`.
    fn stop(&self, stop: Stop) {
        let Stop::Permanent(reason) = stop;
        tracing::error!(
            reason = %reason, committed = self.acked,
            "partition stopped by a permanent error; nothing past the committed offset is lost, and a restart \
             resumes there once the cause is fixed"
        );
        self.engine.metrics.partitions_stopped(1.0);
        self.engine.health.partition_stopped(StoppedPartition {
            subsystem: self.engine.spec.subsystem,
            topic: self.topic.clone(),
            partition: self.partition,
            reason,
        });
    }

    /// Where to resume: the position stored with the effects (authoritative), and the
    /// idempotency window before it. `Ok(None)`: cancelled while retrying.
    async fn resume(&mut self, cancel: &CancellationToken) -> Result<Option<u64>, Stop> {
        let (store, cache) = (&self.engine.store, &self.engine.cache);
        let spec = &self.engine.spec;
        let window = spec.dedupe_window;
        let keys = WindowKeys::new(&spec.cache_prefix, &spec.group, &self.topic, self.partition);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let attempt = async {
                let start = store.committed_offset(&spec.group, &self.topic, self.partition).await?.unwrap_or(0);
                let from = start.saturating_sub(window);
                // A shared cache (Redis) holds the window the previous owner wrote; what it does
                // not cover comes from the store. A process-local cache died with that owner.
                let seen = if cache.shared() {
                    let (seen, from_store) = window::load(cache, store, &keys, from, start).await?;
                    tracing::info!(events = seen.len(), from_store, "idempotency window loaded");
                    seen
                } else {
                    store.processed_between(&self.topic, self.partition, from, start).await?
                };
                Ok::<_, tally_store::StoreError>((start, from, seen))
            };
            match attempt.await {
                Ok((start, from, seen)) => {
                    if cache.shared() {
                        self.shared_window = Some(WindowWriter::new(keys, from, start, &seen));
                    }
                    for p in seen {
                        let outcome = p.outcome.as_ref().and_then(|o| o.decode::<H::Outcome>().ok());
                        self.dedupe.insert(&p.key, outcome, p.digest);
                    }
                    return Ok(Some(start));
                }
                Err(e) if e.is_transient() => {
                    self.engine.metrics.store_retry();
                    tracing::warn!(error = %e, cause = source_chain(&e), "cannot read the resume position; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(None),
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
                Err(e) => {
                    return Err(Stop::Permanent(format!("reading the resume position: {e}: {}", source_chain(&e))));
                }
            }
        }
    }

    /// Decodes a record and checks it belongs on this partition of a topic of
    /// `partition_count` partitions.
    fn decode(&self, rec: &Record, partition_count: u32) -> Decoded<H::Event> {
        if let Some(part) = &rec.undecodable {
            // Two different byte strings can decode to the same lossy text, so such a record's
            // idempotency key or partition key cannot be trusted.
            let detail = format!("the record's {part} is not valid UTF-8");
            return Decoded::Poison { reason: ContractViolation::InvalidEncoding.code(), detail, key: None };
        }
        // A record without a timestamp (Kafka's -1, or 0) stands in with the time it is read.
        let received = Some(rec.timestamp_ms)
            .filter(|&ms| ms > 0)
            .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
            .unwrap_or_else(OffsetDateTime::now_utc);
        let attributes = match Attributes::from_headers(&rec.headers, received) {
            Ok(attributes) => attributes,
            Err(e) => {
                let key = rec
                    .header(headers::ID)
                    .zip(rec.header(headers::SOURCE))
                    .map(|(id, source)| EventKey { source: source.to_owned(), id: id.to_owned() });
                return Decoded::Poison {
                    reason: ContractViolation::InvalidEnvelope.code(),
                    detail: e.to_string(),
                    key,
                };
            }
        };
        let parsed = match self.handler.parse(&attributes, rec) {
            Ok(parsed) => parsed,
            Err(Refusal { reason, detail }) => return Decoded::Poison { reason, detail, key: Some(attributes.key()) },
        };
        let mismatch = ContractViolation::KeyMismatch.code();
        let noun = self.handler.key_name();
        let Some(key) = rec.key.as_deref() else {
            let detail = format!("the record has no key; it must be the event's {noun} {:?}", parsed.partition_key);
            return Decoded::Poison { reason: mismatch, detail, key: Some(attributes.key()) };
        };
        if key != parsed.partition_key {
            let detail = format!("record key {key:?} is not the event's {noun} {:?}", parsed.partition_key);
            return Decoded::Poison { reason: mismatch, detail, key: Some(attributes.key()) };
        }
        // An unknown count (0: the bus could not read it) cannot tell a misplaced record; the
        // record is applied where it is.
        let owner = partition_for_key(key.as_bytes(), partition_count.max(1));
        if partition_count > 0 && owner != rec.partition {
            if rec.header(headers::FORWARDED_FROM).is_some() {
                // Forwarded once already and still not home: the producer and tally disagree on
                // the partition count. Forwarding again could loop; the record goes to the DLQ.
                let detail = format!(
                    "forwarded record is on partition {} but its key belongs on {owner} of {partition_count}",
                    rec.partition
                );
                let reason = ContractViolation::WrongPartition.code();
                return Decoded::Poison { reason, detail, key: Some(attributes.key()) };
            }
            return Decoded::Misrouted { owner };
        }
        Decoded::Event(Box::new(attributes), parsed)
    }

    async fn process(
        &mut self,
        partition_count: u32,
        batch: Vec<Record>,
        ack: &mpsc::UnboundedSender<Ack>,
    ) -> Result<(), HandlerError> {
        let decoded: Vec<Decoded<H::Event>> = batch.iter().map(|rec| self.decode(rec, partition_count)).collect();
        let events: Vec<&H::Event> = decoded
            .iter()
            .filter_map(|d| match d {
                Decoded::Event(_, parsed) => Some(&parsed.event),
                _ => None,
            })
            .collect();
        let metrics = self.engine.metrics.clone();
        if let Some(oldest) = batch.iter().map(|r| r.timestamp_ms).filter(|&ms| ms > 0).min() {
            let waited_ms = u64::try_from(tally_core::now_ms() - oldest).unwrap_or(0);
            metrics.stage(Stage::Delivery, Duration::from_millis(waited_ms));
        }
        let started = std::time::Instant::now();
        if !events.is_empty() {
            self.handler.prepare(&events).await?;
        }
        metrics.stage(Stage::Prepare, started.elapsed());
        let applying = std::time::Instant::now();

        let dlq = crate::records::dead_letter_topic(&self.topic);
        let (mut dead, mut forwarded, mut resolutions) = (Vec::new(), Vec::new(), Vec::new());
        let mut refuse = |rec: &Record, reason: &'static str, detail: String, key: Option<EventKey>| {
            tracing::warn!(offset = rec.offset, reason, detail = %detail, "dead-lettering a record");
            metrics.dead_lettered(reason);
            dead.push((dlq.clone(), crate::records::dead_letter(rec, reason, &detail)));
            key.map(|key| (key, Resolution::<H::Outcome>::DeadLettered { reason, detail }))
        };
        let mut candidates: Vec<Candidate<H::Event>> = Vec::new();
        for (i, (rec, dec)) in batch.iter().zip(decoded).enumerate() {
            match dec {
                Decoded::Poison { reason, detail, key } => resolutions.extend(refuse(rec, reason, detail, key)),
                Decoded::Misrouted { owner } => {
                    tracing::debug!(offset = rec.offset, owner, "forwarding a record to its key's partition");
                    self.engine.metrics.forwarded();
                    forwarded.push((self.topic.clone(), crate::records::forward(rec)));
                }
                Decoded::Event(attributes, parsed) => {
                    if self.handler.already_applied(&parsed.event, rec.offset) {
                        // Already applied before a crash or rebalance; the state includes it.
                        self.engine.metrics.replay_skipped();
                        continue;
                    }
                    let key = attributes.key();
                    let fresh = Fresh { event: parsed.event, attributes: *attributes, offset: rec.offset };
                    candidates.push(Candidate { fresh, key, digest: parsed.digest, record: i });
                }
            }
        }

        // Rounds: contiguous stretches of the poll in which no idempotency key repeats. A
        // round ends where a key of it comes again; that event starts the next round, judged
        // against the window once the first one's fate is known (a duplicate if it was applied,
        // applied itself if the first was refused). Contiguous, so every event is applied after
        // every earlier one of the poll: per-key order holds across rounds.
        let mut out = Output::new(self.engine.outputs.len());
        let mut processed = Vec::new();
        let mut candidates = candidates.into_iter().peekable();
        while candidates.peek().is_some() {
            let mut round: Vec<Candidate<H::Event>> = Vec::new();
            let mut in_round: HashSet<EventKey> = HashSet::new();
            while let Some(c) = candidates.next_if(|c| !in_round.contains(&c.key)) {
                let rec = &batch[c.record];
                if let Some(previous) = self.dedupe.get(&c.key) {
                    if previous.digest.is_some_and(|d| d != c.digest) {
                        // The same source + id for a different request: applying it would lose
                        // it, answering it with the first request's outcome would lie.
                        let detail = format!(
                            "event {} from {} was already used for a different {} request",
                            c.key.id,
                            c.key.source,
                            previous.outcome.map_or("earlier", |o| self.handler.outcome_code(o))
                        );
                        let reason = ContractViolation::IdempotencyKeyReused.code();
                        resolutions.extend(refuse(rec, reason, detail, Some(c.key)));
                        continue;
                    }
                    self.engine.metrics.duplicate_dropped();
                    let resolution =
                        previous.outcome.cloned().map_or(Resolution::DuplicateUnknown, Resolution::Applied);
                    resolutions.push((c.key, resolution));
                    continue;
                }
                in_round.insert(c.key.clone());
                round.push(c);
            }
            if round.is_empty() {
                continue;
            }
            let (fresh, meta): (Vec<Fresh<H::Event>>, Vec<Answering>) = round
                .into_iter()
                .map(|c| (c.fresh, Answering { key: c.key, digest: c.digest, record: c.record }))
                .unzip();
            let expected = meta.len();
            let answers = self.handler.apply(fresh, &mut out).await;
            // A handler that does not answer every event breaks its contract (a bug): the worker
            // panics, the supervisor restarts the engine and the poll is replayed, with `/readyz`
            // reporting it — rather than dropping events silently.
            assert_eq!(answers.len(), expected, "the handler must answer every event it is given");
            for (Answering { key, digest, record }, answer) in meta.into_iter().zip(answers) {
                let rec = &batch[record];
                match answer {
                    Ok(outcome) => {
                        self.engine.metrics.applied(self.handler.outcome_code(&outcome));
                        if self.engine.waiters.is_waiting(&key) {
                            resolutions.push((key.clone(), Resolution::Applied(outcome.clone())));
                        }
                        processed.push(ProcessedEvent {
                            key: key.clone(),
                            topic: self.topic.clone(),
                            partition: self.partition,
                            offset: rec.offset,
                            outcome: Some(RawOutcome::of(&outcome)),
                            digest: Some(digest),
                        });
                        self.dedupe.insert(&key, Some(outcome), Some(digest));
                    }
                    Err(Refusal { reason, detail }) => resolutions.extend(refuse(rec, reason, detail, Some(key))),
                }
            }
        }
        // Once per poll, whatever the rounds: the changes become visible (and are coalesced)
        // before any waiting caller hears of them.
        metrics.stage(Stage::Apply, applying.elapsed());
        let finishing = std::time::Instant::now();
        self.handler.finish(&mut out).await;
        metrics.stage(Stage::Finish, finishing.elapsed());

        if let Some(shared) = &mut self.shared_window {
            shared.applied(processed.iter());
        }
        for (key, resolution) in resolutions {
            self.engine.waiters.resolve(&key, resolution);
        }
        let next_offset = batch.last().map_or(self.next, |r| r.offset + 1);
        self.next = next_offset;
        let (effects, outputs, event_times_us) = out.into_parts();
        let part = FlushPart {
            topic: self.topic.clone(),
            partition: self.partition,
            effects,
            processed,
            next_offset,
            urgent: false,
            ack: ack.clone(),
        };
        let item = Outbox { outputs, dead_letters: dead, forwarded, event_times_us, part };
        // Awaiting a full outbox is the back-pressure: a slow bus or store slows consumption,
        // never drops work.
        // A send fails only when the publisher stopped; it has said why (or shutdown stopped it),
        // and the worker's loop hears of it next and stops the partition.
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send(item).await;
        }
        Ok(())
    }

    async fn on_ack<P: PartitionReader>(&mut self, reader: &mut P, ack: Ack) {
        let done = match ack {
            Ack::Durable(done) => done,
            Ack::Failed(reason) => {
                self.stopped = Some(Stop::Permanent(format!("flushing to the store: {reason}")));
                return;
            }
            Ack::Abandoned => return,
        };
        self.acked = self.acked.max(done);
        if let Some(shared) = &mut self.shared_window {
            let writes = shared.durable(self.acked);
            if !writes.is_empty() {
                // Off the worker's path; a write lost or overtaken only makes the next owner
                // read more from the store.
                let cache = self.engine.cache.clone();
                tokio::spawn(async move {
                    if let Err(e) = cache.set_many(writes).await {
                        tracing::warn!(error = %e, "cannot write the idempotency window to the cache");
                    }
                });
            }
        }
        if let Err(e) = reader.commit(self.acked).await {
            // The store holds the authoritative position; a lost bus commit only means a
            // longer (harmless) replay after a restart.
            tracing::warn!(error = %e, offset = done, "bus commit failed");
        }
        self.handler.durable(self.acked);
    }

    /// The handler's periodic work; its records are published with retries. A record the bus
    /// refuses for good is logged and left: the next tick produces it again.
    async fn tick(&mut self, cancel: &CancellationToken) {
        for (topic, records) in self.handler.tick().await {
            if let Err(publisher::Unpublished::Permanent(reason)) =
                publisher::publish(&self.engine.bus, &topic, records, cancel, &self.engine.metrics).await
            {
                tracing::error!(reason = %reason, "the bus refuses the records of a periodic task");
            }
        }
    }

    async fn drain<P: PartitionReader>(
        &mut self,
        reader: &mut P,
        ack_tx: mpsc::UnboundedSender<Ack>,
        ack_rx: &mut mpsc::UnboundedReceiver<Ack>,
    ) {
        if self.acked < self.next {
            let part = FlushPart {
                topic: self.topic.clone(),
                partition: self.partition,
                effects: H::Effects::default(),
                processed: Vec::new(),
                next_offset: self.next,
                urgent: true,
                ack: ack_tx,
            };
            let item = Outbox {
                outputs: vec![Vec::new(); self.engine.outputs.len()],
                dead_letters: Vec::new(),
                forwarded: Vec::new(),
                event_times_us: Vec::new(),
                part,
            };
            let sent = match &self.outbox {
                Some(outbox) => outbox.send(item).await.is_ok(),
                None => false,
            };
            if sent {
                let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
                while self.acked < self.next {
                    match tokio::time::timeout_at(deadline, ack_rx.recv()).await {
                        Ok(Some(Ack::Durable(done))) => self.on_ack(reader, Ack::Durable(done)).await,
                        // A failed or abandoned flush will not be followed by another.
                        Ok(Some(other)) => {
                            self.on_ack(reader, other).await;
                            break;
                        }
                        _ => break,
                    }
                }
            }
        }
        if self.acked < self.next {
            tracing::warn!(acked = self.acked, next = self.next, "drain incomplete; the rest will be replayed");
        } else {
            tracing::info!(committed = self.acked, "partition drained and committed");
        }
    }
}
