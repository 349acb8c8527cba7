//! One ordered worker per assigned partition. It alone writes the SKUs of its partition, so
//! it keeps their aggregates in memory and applies events without locks.
//!
//! Per poll: decode (poison → dead-letter topic with the reason), skip what is already
//! applied (per-key offset watermark) or already seen (idempotency window), apply, then make
//! the result visible (cache, availability topic, waiting HTTP callers) and hand the latest
//! state per SKU to the batcher. The bus offset is committed only when the batcher reports
//! the flush durable.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tally_bus::{Bus, OutRecord, PartitionReader, Record};
use tally_cache::Cache;
use tally_core::partition::partition_for_key;
use tally_core::{Attributes, EventKey, Sku, headers};
use tally_inventory::aggregate::EventMeta;
use tally_inventory::aggregate::LocationLevel;
use tally_inventory::event::ReservationReleased;
use tally_inventory::{ChannelAvailability, InventoryEvent, Outcome, SkuState};
use tally_store::{AppliedEvent, InventoryStore, ProcessedEvent, StateRow};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batcher::FlushPart;
use super::dedupe::DedupeWindow;
use super::publisher::{self, Outbox, OutputTopics};
use super::records::{self, AvailabilityMessage};
use super::window::{self, WindowKeys, WindowWriter};
use super::{EngineError, EngineStats, InventoryEngine, Resolution, cache_key, now_us};
use crate::metrics::inventory as m;

/// Above this many SKUs in memory, aggregates already flushed are dropped (they reload from
/// the cache or the store on their next event).
const MAX_WORKING_SET: usize = 200_000;

/// Batches a worker may run ahead of its publisher; the publisher sends what queued up in one
/// publish, so a deeper queue means fewer, larger publishes under load (and back-pressure
/// beyond it).
const OUTBOX_DEPTH: usize = 4;

struct Entry {
    state: SkuState,
    /// Availability last published for this SKU by this worker.
    published: Option<Vec<ChannelAvailability>>,
    /// Read-model rows last handed to the batcher; only changed ones are flushed again.
    flushed_levels: Vec<LocationLevel>,
    flushed_availability: Vec<ChannelAvailability>,
}

impl Entry {
    fn new(state: SkuState) -> Self {
        Self { state, published: None, flushed_levels: Vec::new(), flushed_availability: Vec::new() }
    }
}

enum Decoded {
    Event(Box<Attributes>, InventoryEvent),
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

/// Decodes a record and checks it belongs on `partition` of a topic of `partition_count`.
fn decode(rec: &Record, partition_count: u32) -> Decoded {
    if let Some(part) = &rec.undecodable {
        // Two different byte strings can decode to the same lossy text, so such a record's
        // idempotency key or SKU cannot be trusted.
        let detail = format!("the record's {part} is not valid UTF-8");
        return Decoded::Poison { reason: "invalid_encoding", detail, key: None };
    }
    // A record without a timestamp (Kafka's -1, or 0) stands in with the time it is read.
    let received = Some(rec.timestamp_ms)
        .filter(|&ms| ms > 0)
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    let env = match Attributes::from_headers(&rec.headers, received) {
        Ok(env) => env,
        Err(e) => {
            let key = rec
                .header(headers::ID)
                .zip(rec.header(headers::SOURCE))
                .map(|(id, source)| EventKey { source: source.to_owned(), id: id.to_owned() });
            return Decoded::Poison { reason: "invalid_envelope", detail: e.to_string(), key };
        }
    };
    let ev = match InventoryEvent::from_payload(&env.ty, env.subject.as_deref(), &rec.payload) {
        Ok(ev) => ev,
        Err(e) => return Decoded::Poison { reason: e.code, detail: e.detail, key: Some(env.key()) },
    };
    let Some(key) = rec.key.as_deref() else {
        let detail = format!("the record has no key; it must be the event's sku {:?}", ev.sku().as_str());
        return Decoded::Poison { reason: "key_mismatch", detail, key: Some(env.key()) };
    };
    if key != ev.sku().as_str() {
        let detail = format!("record key {key:?} is not the event's sku {:?}", ev.sku().as_str());
        return Decoded::Poison { reason: "key_mismatch", detail, key: Some(env.key()) };
    }
    // An unknown count (0: the bus could not read it) cannot tell a misplaced record; the
    // record is applied where it is, as before forwarding existed.
    let owner = partition_for_key(key.as_bytes(), partition_count.max(1));
    if partition_count > 0 && owner != rec.partition {
        if rec.header(headers::FORWARDED_FROM).is_some() {
            // Forwarded once already and still not home: the producer and tally disagree on the
            // partition count. Forwarding again could loop; the record goes to the DLQ instead.
            let detail = format!(
                "forwarded record is on partition {} but its key belongs on {owner} of {partition_count}",
                rec.partition
            );
            return Decoded::Poison { reason: "wrong_partition", detail, key: Some(env.key()) };
        }
        return Decoded::Misrouted { owner };
    }
    Decoded::Event(Box::new(env), ev)
}

/// The worker of one partition.
pub struct PartitionWorker<B, S, C> {
    engine: InventoryEngine<B, S, C>,
    flush: mpsc::Sender<FlushPart>,
    outbox: Option<mpsc::Sender<Outbox>>,
    working: HashMap<Sku, Entry>,
    dedupe: DedupeWindow,
    /// The window's copy in a shared cache, for the partition's next owner.
    shared_window: Option<WindowWriter>,
    with_expiry: HashSet<Sku>,
    next: u64,
    acked: u64,
}

impl<B: Bus, S: InventoryStore, C: Cache> PartitionWorker<B, S, C> {
    /// A worker that hands its flushes to `flush`.
    pub fn new(engine: InventoryEngine<B, S, C>, flush: mpsc::Sender<FlushPart>) -> Self {
        let window = engine.cfg.dedupe_window as usize;
        Self {
            engine,
            flush,
            outbox: None,
            working: HashMap::new(),
            dedupe: DedupeWindow::new(window),
            shared_window: None,
            with_expiry: HashSet::new(),
            next: 0,
            acked: 0,
        }
    }

    /// Consumes the partition until `cancel`, then drains: the last batch is flushed and its
    /// offset committed before returning.
    #[tracing::instrument(skip_all, fields(topic = reader.topic(), partition = reader.partition()))]
    pub async fn run<P: PartitionReader>(mut self, mut reader: P, cancel: CancellationToken) {
        let topic = reader.topic().to_owned();
        let partition = reader.partition();
        let Some(start) = self.resume(&topic, partition, &cancel).await else { return };
        reader.seek(start);
        (self.next, self.acked) = (start, start);
        tracing::info!(start, remembered = self.dedupe.len(), "partition worker resuming");

        let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX_DEPTH);
        self.outbox = Some(outbox_tx);
        let topics = &self.engine.cfg.topics;
        let outputs = OutputTopics {
            events: topics.events.clone(),
            availability: topics.availability.clone(),
            outcomes: topics.outcomes.clone(),
            dead_letters: format!("{}.dlq", topics.events),
        };
        let publisher = tokio::spawn(publisher::run(
            self.engine.bus.clone(),
            outputs,
            self.flush.clone(),
            self.engine.stats.clone(),
            outbox_rx,
            cancel.clone(),
        ));
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let mut expiry = tokio::time::interval(Duration::from_millis(self.engine.cfg.expiry_check_interval_ms.max(10)));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max = self.engine.cfg.poll_max_records;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(done) = ack_rx.recv() => self.on_flushed(&mut reader, done).await,
                polled = reader.poll(max) => match polled {
                    Ok(batch) if batch.is_empty() => {}
                    Ok(batch) => {
                        let first = batch[0].offset;
                        let partitions = reader.partition_count();
                        if let Err(e) = self.process(&topic, partition, partitions, batch, &ack_tx, &cancel).await {
                            tracing::warn!(error = %e, offset = first, "batch failed before any effect; retrying it");
                            reader.seek(first);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        metrics::gauge!(m::CONSUMER_LAG_RECORDS, "partition" => partition.to_string())
                            .set(reader.end_offset().saturating_sub(self.next) as f64);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "poll failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = expiry.tick() => self.expire_reservations(&cancel).await,
            }
        }
        self.drain(&mut reader, &topic, partition, ack_tx, &mut ack_rx).await;
        drop(self.outbox.take()); // the publisher ends once it has forwarded everything
        let _ = publisher.await;
    }

    /// Where to resume: the position stored with the effects (authoritative), and the
    /// idempotency window before it.
    async fn resume(&mut self, topic: &str, partition: u32, cancel: &CancellationToken) -> Option<u64> {
        let (store, cache) = (&self.engine.store, &self.engine.cache);
        let group = &self.engine.cfg.consumer_group;
        let window = self.engine.cfg.dedupe_window;
        let keys = WindowKeys::new(group, topic, partition);
        loop {
            let attempt = async {
                let start = store.committed_offset(group, topic, partition).await?.unwrap_or(0);
                let from = start.saturating_sub(window);
                // A shared cache (Redis) holds the window the previous owner wrote; what it does
                // not cover comes from the store. A process-local cache died with that owner.
                let seen = if cache.shared() {
                    let (seen, from_store) = window::load(cache, store, &keys, from, start).await?;
                    tracing::info!(events = seen.len(), from_store, "idempotency window loaded");
                    seen
                } else {
                    store.processed_between(topic, partition, from, start).await?
                };
                Ok::<_, EngineError>((start, from, seen))
            };
            match attempt.await {
                Ok((start, from, seen)) => {
                    if cache.shared() {
                        self.shared_window = Some(WindowWriter::new(keys, from, start, &seen));
                    }
                    for p in seen {
                        self.dedupe.insert(&p.key, p.outcome, p.digest);
                    }
                    return Some(start);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the resume position; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return None,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    async fn process(
        &mut self,
        topic: &str,
        partition: u32,
        partition_count: u32,
        batch: Vec<Record>,
        ack: &mpsc::UnboundedSender<u64>,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let decoded: Vec<Decoded> = batch.iter().map(|rec| decode(rec, partition_count)).collect();
        self.load_missing(&decoded).await?;

        let stats = self.engine.stats.clone();
        let rules = self.engine.rules.clone();
        let mut dirty: Vec<Sku> = Vec::new();
        // The trace context of the newest event that changed each dirty SKU: its availability
        // message continues that trace.
        let mut causes: HashMap<Sku, Option<String>> = HashMap::new();
        let mut forced: HashSet<Sku> = HashSet::new();
        let mut applied_events = Vec::new();
        let (mut outcomes, mut dead, mut forwarded) = (Vec::new(), Vec::new(), Vec::new());
        let mut resolutions = Vec::new();
        let mut event_times_us = Vec::with_capacity(batch.len());
        let mut refuse = |rec: &Record, reason: DeadLetterReason, detail: String, key: Option<EventKey>| {
            let reason = reason.code();
            tracing::warn!(offset = rec.offset, reason, detail = %detail, "dead-lettering a record");
            metrics::counter!(m::DEAD_LETTERED_TOTAL, "reason" => reason).increment(1);
            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            dead.push(records::dead_letter(rec, reason, &detail));
            key.map(|key| (key, Resolution::DeadLettered { reason, detail }))
        };
        for (rec, dec) in batch.iter().zip(decoded) {
            let (env, ev) = match dec {
                Decoded::Event(env, ev) => (env, ev),
                Decoded::Poison { reason, detail, key } => {
                    resolutions.extend(refuse(rec, DeadLetterReason::Invalid(reason), detail, key));
                    continue;
                }
                Decoded::Misrouted { owner } => {
                    tracing::debug!(offset = rec.offset, owner, "forwarding a record to its key's partition");
                    metrics::counter!(m::RECORDS_FORWARDED_TOTAL).increment(1);
                    forwarded.push(records::forward(rec));
                    continue;
                }
            };
            let key = env.key();
            let entry =
                self.working.entry(ev.sku().clone()).or_insert_with(|| Entry::new(SkuState::new(ev.sku().clone())));
            if rec.offset as i64 <= entry.state.applied_offset {
                // Already applied before a crash or rebalance; the state includes it.
                metrics::counter!(m::REPLAYS_SKIPPED_TOTAL).increment(1);
                stats.replays_skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let digest = ev.digest();
            if let Some(previous) = self.dedupe.get(&key) {
                if previous.digest.is_some_and(|d| d != digest) {
                    // The same source + id for a different request: applying it would lose it,
                    // answering it with the first request's outcome would lie.
                    let detail = format!(
                        "event {} from {} was already used for a different {} request",
                        key.id,
                        key.source,
                        previous.outcome.map_or("earlier", Outcome::code)
                    );
                    resolutions.extend(refuse(rec, DeadLetterReason::IdempotencyKeyReused, detail, Some(key)));
                    continue;
                }
                metrics::counter!(m::DUPLICATES_DROPPED_TOTAL).increment(1);
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
                let resolution = previous.outcome.cloned().map_or(Resolution::DuplicateUnknown, Resolution::Applied);
                resolutions.push((key, resolution));
                continue;
            }
            let meta = EventMeta { source: &env.source, id: &env.id, time_ms: env.time_ms() };
            let applied = match entry.state.apply(&ev, meta, &rules) {
                Ok(applied) => applied,
                Err(e) => {
                    resolutions.extend(refuse(rec, DeadLetterReason::QuantityOutOfRange, e.to_string(), Some(key)));
                    continue;
                }
            };
            entry.state.applied_offset = rec.offset as i64;
            event_times_us.push((env.time.unix_timestamp_nanos() / 1000) as i64);
            count_outcome(&stats, &applied.outcome);
            if let Outcome::Reconciled { delta } = &applied.outcome
                && let InventoryEvent::ChannelReported(r) = &ev
            {
                metrics::gauge!(m::CHANNEL_DELTA_UNITS, "channel" => r.channel.to_string()).set(*delta as f64);
                if *delta != 0 {
                    metrics::counter!(m::CHANNEL_DRIFT_TOTAL, "channel" => r.channel.to_string()).increment(1);
                    // Heal the drift: re-publish the truth even though it did not change.
                    forced.insert(r.sku.clone());
                }
            }
            if let InventoryEvent::ReservationRequested(r) = &ev
                && let Some(out) = records::reservation_outcome(
                    &r.sku,
                    &r.reservation_id,
                    &key,
                    &applied.outcome,
                    env.traceparent.as_deref(),
                )
            {
                outcomes.push(out);
            }
            if applied.changed || forced.contains(ev.sku()) {
                if causes.insert(ev.sku().clone(), env.traceparent.clone()).is_none() {
                    dirty.push(ev.sku().clone());
                }
                if entry.state.reservations.values().any(|r| r.expires_at_ms.is_some()) {
                    self.with_expiry.insert(ev.sku().clone());
                } else {
                    self.with_expiry.remove(ev.sku());
                }
            }
            if self.engine.waiters.is_waiting(&key) {
                resolutions.push((key.clone(), Resolution::Applied(applied.outcome.clone())));
            }
            self.dedupe.insert(&key, Some(applied.outcome.clone()), Some(digest));
            applied_events.push(AppliedEvent {
                processed: ProcessedEvent {
                    key,
                    topic: topic.to_owned(),
                    partition,
                    offset: rec.offset,
                    outcome: Some(applied.outcome),
                    digest: Some(digest),
                },
                audit: applied.audit,
            });
        }

        if let Some(shared) = &mut self.shared_window {
            shared.applied(applied_events.iter().map(|a| &a.processed));
        }
        let (rows, availability, visible_us) = self.make_visible(&dirty, &forced, &causes).await;
        if !event_times_us.is_empty() {
            let mut visible = stats.visible_latency_us.lock().unwrap_or_else(|p| p.into_inner());
            for t in &event_times_us {
                let us = (visible_us - t).max(1) as u64;
                let _ = visible.record(us);
                metrics::histogram!(m::EVENT_TO_VISIBLE_SECONDS).record(us as f64 / 1e6);
            }
        }
        for (key, resolution) in resolutions {
            self.engine.waiters.resolve(&key, resolution);
        }
        let next_offset = batch.last().map_or(self.next, |r| r.offset + 1);
        self.next = next_offset;
        let part = FlushPart {
            topic: topic.to_owned(),
            partition,
            rows,
            applied: applied_events,
            next_offset,
            urgent: false,
            ack: ack.clone(),
        };
        let item = Outbox { availability, outcomes, dead_letters: dead, forwarded, event_times_us, part };
        // Awaiting a full outbox is the back-pressure: a slow bus or store slows consumption,
        // never drops work.
        let sent = match &self.outbox {
            Some(outbox) => outbox.send(item).await.is_ok(),
            None => false,
        };
        if !sent {
            tracing::error!("the partition's publisher stopped; stopping consumption of this partition");
            cancel.cancel();
        }
        Ok(())
    }

    /// Loads the aggregates of SKUs this worker has not seen yet, in one round trip to the store.
    async fn load_missing(&mut self, decoded: &[Decoded]) -> Result<(), EngineError> {
        let missing: HashSet<&Sku> = decoded
            .iter()
            .filter_map(|d| match d {
                Decoded::Event(_, ev) if !self.working.contains_key(ev.sku()) => Some(ev.sku()),
                _ => None,
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let missing: Vec<Sku> = missing.into_iter().cloned().collect();
        // From the store, never the cache: after a crash a shared cache (Redis) can hold states
        // ahead of the committed offset, and resuming from one would skip the replayed events'
        // audit rows and availability messages. The store is consistent with the offset the
        // worker resumes from; an entry leaves the working set only once flushed there.
        let loaded = self.engine.store.load_states(missing).await?;
        for state in loaded {
            let sku = state.sku.clone();
            if state.reservations.values().any(|r| r.expires_at_ms.is_some()) {
                self.with_expiry.insert(sku.clone());
            }
            self.working.insert(sku, Entry::new(state));
        }
        Ok(())
    }

    /// Writes changed aggregates to the cache (readable from then on). Returns the rows to
    /// flush, the availability records to publish and when the changes became readable (µs).
    async fn make_visible(
        &mut self,
        dirty: &[Sku],
        forced: &HashSet<Sku>,
        causes: &HashMap<Sku, Option<String>>,
    ) -> (Vec<StateRow>, Vec<OutRecord>, i64) {
        let rules = self.engine.rules.clone();
        let mut rows = Vec::with_capacity(dirty.len());
        let mut cache_entries = Vec::with_capacity(dirty.len());
        let mut availability = Vec::new();
        for sku in dirty {
            let Some(entry) = self.working.get_mut(sku) else { continue };
            let ats = entry.state.availability(&rules);
            if forced.contains(sku) || entry.published.as_ref() != Some(&ats) {
                let msg = AvailabilityMessage {
                    sku: sku.clone(),
                    version: entry.state.version,
                    channels: ats.clone(),
                    last_event_ms: entry.state.last_event_ms,
                };
                let traceparent = causes.get(sku).and_then(Option::as_deref);
                availability.push(records::availability(&msg, traceparent));
                entry.published = Some(ats.clone());
            }
            let json = tally_store::serialize_state(&entry.state);
            cache_entries.push((cache_key(sku), json.get().as_bytes().to_vec()));
            let levels = entry.state.levels();
            let mut row = StateRow::new(&entry.state, Some(json), Vec::new());
            row.levels = levels.iter().filter(|l| !entry.flushed_levels.contains(l)).cloned().collect();
            row.availability = ats.iter().filter(|a| !entry.flushed_availability.contains(a)).cloned().collect();
            entry.flushed_levels = levels;
            entry.flushed_availability = ats;
            rows.push(row);
        }
        if !cache_entries.is_empty()
            && let Err(e) = self.engine.cache.set_many(cache_entries).await
        {
            // Readers fall back to the store, which catches up at the next flush.
            tracing::warn!(error = %e, "cache write failed; reads may lag until the next flush");
        }
        (rows, availability, now_us())
    }

    async fn on_flushed<P: PartitionReader>(&mut self, reader: &mut P, done: u64) {
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
        if self.working.len() > MAX_WORKING_SET {
            let acked = self.acked as i64;
            let keep = &self.with_expiry;
            self.working.retain(|sku, e| e.state.applied_offset >= acked || keep.contains(sku));
        }
    }

    /// Emits a release for each lapsed reservation. The event id is derived from the
    /// reservation, so repeated scans before it is applied are deduplicated.
    async fn expire_reservations(&mut self, cancel: &CancellationToken) {
        if self.with_expiry.is_empty() {
            return;
        }
        let now = tally_core::now_ms();
        let mut releases = Vec::new();
        for sku in &self.with_expiry {
            let Some(entry) = self.working.get(sku) else { continue };
            for r in entry.state.expired_reservations(now) {
                let ev = InventoryEvent::ReservationReleased(ReservationReleased {
                    reservation_id: r.id.clone(),
                    sku: sku.clone(),
                    reason: Some("expired".into()),
                    channel: None,
                });
                let mut env = ev.into_envelope(records::ENGINE_SOURCE);
                // Deterministic, so repeated scans before it is applied are one event; with the
                // expiry time in it, so a reservation id held again later (once it has left the
                // closed list) gets a release of its own instead of a duplicate of the first.
                env.id = format!("expire:{sku}:{}:{}", r.id, r.expires_at_ms.unwrap_or_default());
                let (headers, payload) = env.to_binary();
                releases.push(OutRecord::keyed(sku.to_string(), headers, payload));
            }
        }
        if !releases.is_empty() {
            let n = releases.len() as u64;
            let topic = self.engine.cfg.topics.events.clone();
            publisher::publish(&self.engine.bus, &topic, releases, cancel).await;
            metrics::counter!(m::RESERVATIONS_EXPIRED_TOTAL).increment(n);
            self.engine.stats.reservations_expired.fetch_add(n, Ordering::Relaxed);
        }
    }

    async fn drain<P: PartitionReader>(
        &mut self,
        reader: &mut P,
        topic: &str,
        partition: u32,
        ack_tx: mpsc::UnboundedSender<u64>,
        ack_rx: &mut mpsc::UnboundedReceiver<u64>,
    ) {
        if self.acked < self.next {
            let part = FlushPart {
                topic: topic.to_owned(),
                partition,
                rows: Vec::new(),
                applied: Vec::new(),
                next_offset: self.next,
                urgent: true,
                ack: ack_tx,
            };
            let item = Outbox {
                availability: Vec::new(),
                outcomes: Vec::new(),
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
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while self.acked < self.next {
                    match tokio::time::timeout_at(deadline, ack_rx.recv()).await {
                        Ok(Some(done)) => self.on_flushed(reader, done).await,
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

/// Why the worker dead-letters a record (the `tally_dlq_reason` header and the metric label).
#[derive(Debug, Clone, Copy)]
enum DeadLetterReason {
    /// The record is not a valid event: a code of the decoder or the event parser.
    Invalid(&'static str),
    /// Applying it would take a stored level past the documented maximum.
    QuantityOutOfRange,
    /// Its `source` + `id` already belongs to a different request.
    IdempotencyKeyReused,
}

impl DeadLetterReason {
    fn code(self) -> &'static str {
        match self {
            Self::Invalid(code) => code,
            Self::QuantityOutOfRange => "quantity_out_of_range",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
}

fn count_outcome(stats: &EngineStats, outcome: &Outcome) {
    stats.applied.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(m::EVENTS_APPLIED_TOTAL, "outcome" => outcome.code()).increment(1);
    let counter = match outcome {
        Outcome::StaleSnapshot { .. } => {
            metrics::counter!(m::STALE_VERSIONS_IGNORED_TOTAL).increment(1);
            &stats.stale_snapshots
        }
        Outcome::CoveredBySnapshot { .. } => &stats.covered_adjustments,
        Outcome::ReservationAccepted { .. } => &stats.reservations_accepted,
        Outcome::ReservationRejected { reason, .. } => {
            let reason = match reason.as_str() {
                "insufficient_stock" => "insufficient_stock",
                "unknown_channel" => "unknown_channel",
                "location_not_in_channel" => "location_not_in_channel",
                "reservation_closed" => "reservation_closed",
                "reservation_conflict" => "reservation_conflict",
                _ => "other",
            };
            metrics::counter!(m::RESERVATIONS_REJECTED_TOTAL, "reason" => reason).increment(1);
            &stats.reservations_rejected
        }
        Outcome::CasMismatch { .. } => &stats.cas_mismatches,
        _ => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
