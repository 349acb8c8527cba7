//! Inventory's handler on the consumer runtime: one per assigned partition. It alone writes
//! the SKUs of its partition, so it keeps their aggregates in memory and applies events
//! without locks; it makes each change visible at once (cache + `inventory.availability`) and
//! hands the latest state per SKU, with one audit row per applied event, to the runtime's
//! batcher.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tally_bus::{OutRecord, Record};
use tally_cache::Cache;
use tally_config::InventoryConfig;
use tally_core::{Attributes, Sku};
use tally_inventory::aggregate::{EventMeta, LocationLevel};
use tally_inventory::event::ReservationReleased;
use tally_inventory::{ChannelAvailability, ChannelRules, InventoryEvent, Outcome, SkuState};
use tally_runtime::{Fresh, Handler, HandlerError, Output, OutputId, Parsed, Refusal};
use tally_store::{InventoryEffects, InventoryStore, StateRow};

use crate::cache_key;
use crate::metrics::InventoryMetrics;
use crate::records::{self, AvailabilityMessage};

/// Above this many SKUs in memory, aggregates already flushed are dropped (they reload from
/// the store on their next event).
const MAX_WORKING_SET: usize = 200_000;

/// `inventory.availability`, the first output topic.
pub const AVAILABILITY: OutputId = OutputId(0);
/// Reservation outcomes, the second.
pub const OUTCOMES: OutputId = OutputId(1);

/// The refusal reason of an event that would take a level past the documented maximum.
pub const QUANTITY_OUT_OF_RANGE: &str = "quantity_out_of_range";

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

/// What a poll changed, gathered over its rounds and made visible once ([`Handler::finish`]).
#[derive(Default)]
struct PollChanges {
    /// SKUs whose state changed (or must be re-published), in the order they first changed.
    dirty: Vec<Sku>,
    /// The trace context of the newest event that changed each dirty SKU: its availability
    /// message continues that trace.
    causes: HashMap<Sku, Option<String>>,
    /// SKUs whose availability is re-published even if unchanged (to heal a channel's drift).
    forced: HashSet<Sku>,
    /// Event times (µs) of the events applied, for the event → visible latency.
    event_times_us: Vec<i64>,
}

/// The inventory handler of one partition.
pub struct InventoryHandler<S, C> {
    store: S,
    cache: C,
    rules: Arc<ChannelRules>,
    cfg: Arc<InventoryConfig>,
    metrics: Arc<InventoryMetrics>,
    working: HashMap<Sku, Entry>,
    with_expiry: HashSet<Sku>,
    poll: PollChanges,
}

impl<S: InventoryStore, C: Cache> InventoryHandler<S, C> {
    /// A handler with an empty working set.
    pub fn new(
        store: S,
        cache: C,
        rules: Arc<ChannelRules>,
        cfg: Arc<InventoryConfig>,
        metrics: Arc<InventoryMetrics>,
    ) -> Self {
        Self {
            store,
            cache,
            rules,
            cfg,
            metrics,
            working: HashMap::new(),
            with_expiry: HashSet::new(),
            poll: PollChanges::default(),
        }
    }

    fn track_expiry(&mut self, sku: &Sku) {
        let expiring =
            self.working.get(sku).is_some_and(|e| e.state.reservations.values().any(|r| r.expires_at_ms.is_some()));
        if expiring {
            self.with_expiry.insert(sku.clone());
        } else {
            self.with_expiry.remove(sku);
        }
    }

    /// Writes changed aggregates to the cache (readable from then on) and records their rows
    /// and availability messages in `out`. Returns when the changes became readable (µs).
    async fn make_visible(
        &mut self,
        dirty: &[Sku],
        forced: &HashSet<Sku>,
        causes: &HashMap<Sku, Option<String>>,
        out: &mut Output<InventoryEffects>,
    ) -> i64 {
        let mut cache_entries = Vec::with_capacity(dirty.len());
        for sku in dirty {
            let Some(entry) = self.working.get_mut(sku) else { continue };
            let ats = entry.state.availability(&self.rules);
            if forced.contains(sku) || entry.published.as_ref() != Some(&ats) {
                let msg = AvailabilityMessage {
                    sku: sku.clone(),
                    version: entry.state.version,
                    channels: ats.clone(),
                    last_event_ms: entry.state.last_event_ms,
                };
                let traceparent = causes.get(sku).and_then(Option::as_deref);
                out.publish(AVAILABILITY, records::availability(&msg, traceparent));
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
            out.effects.put(row);
        }
        if !cache_entries.is_empty()
            && let Err(e) = self.cache.set_many(cache_entries).await
        {
            // Readers fall back to the store, which catches up at the next flush.
            tracing::warn!(error = %e, "cache write failed; reads may lag until the next flush");
        }
        tally_runtime::now_us()
    }
}

impl<S: InventoryStore, C: Cache> Handler for InventoryHandler<S, C> {
    type Event = InventoryEvent;
    type Outcome = Outcome;
    type Effects = InventoryEffects;

    fn parse(&self, attributes: &Attributes, record: &Record) -> Result<Parsed<InventoryEvent>, Refusal> {
        let event = InventoryEvent::from_payload(&attributes.ty, attributes.subject.as_deref(), &record.payload)
            .map_err(|e| Refusal { reason: e.code, detail: e.detail })?;
        Ok(Parsed { partition_key: event.sku().to_string(), digest: event.digest(), event })
    }

    /// Loads the aggregates of SKUs this worker has not seen yet, in one round trip to the
    /// store — never the cache: after a crash a shared cache (Redis) can hold states ahead of
    /// the committed offset, and resuming from one would skip the replayed events' audit rows
    /// and availability messages. The store is consistent with the offset the worker resumes
    /// from; an entry leaves the working set only once flushed there.
    async fn prepare(&mut self, events: &[&InventoryEvent]) -> Result<(), HandlerError> {
        let missing: HashSet<&Sku> =
            events.iter().map(|e| e.sku()).filter(|s| !self.working.contains_key(*s)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let missing: Vec<Sku> = missing.into_iter().cloned().collect();
        for state in self.store.load_states(missing).await? {
            let sku = state.sku.clone();
            self.working.insert(sku.clone(), Entry::new(state));
            self.track_expiry(&sku);
        }
        Ok(())
    }

    fn already_applied(&self, event: &InventoryEvent, offset: u64) -> bool {
        self.working.get(event.sku()).is_some_and(|e| offset as i64 <= e.state.applied_offset)
    }

    async fn apply(
        &mut self,
        events: Vec<Fresh<InventoryEvent>>,
        out: &mut Output<InventoryEffects>,
    ) -> Vec<Result<Outcome, Refusal>> {
        let rules = self.rules.clone();
        let mut answers = Vec::with_capacity(events.len());
        for Fresh { event: ev, attributes: env, offset } in events {
            let sku = ev.sku().clone();
            let entry = self.working.entry(sku.clone()).or_insert_with(|| Entry::new(SkuState::new(sku.clone())));
            let meta = EventMeta { source: &env.source, id: &env.id, time_ms: env.time_ms() };
            let applied = match entry.state.apply(&ev, meta, &rules) {
                Ok(applied) => applied,
                Err(e) => {
                    answers.push(Err(Refusal { reason: QUANTITY_OUT_OF_RANGE, detail: e.to_string() }));
                    continue;
                }
            };
            entry.state.applied_offset = offset as i64;
            let time_us = (env.time.unix_timestamp_nanos() / 1000) as i64;
            self.poll.event_times_us.push(time_us);
            out.event_times_us.push(time_us);
            self.metrics.outcome(&applied.outcome);
            if let Outcome::Reconciled { delta } = &applied.outcome
                && let InventoryEvent::ChannelReported(r) = &ev
            {
                self.metrics.channel_reported(&r.channel, *delta);
                if *delta != 0 {
                    // Heal the drift: re-publish the truth even though it did not change.
                    self.poll.forced.insert(sku.clone());
                }
            }
            if let InventoryEvent::ReservationRequested(r) = &ev
                && let Some(record) = records::reservation_outcome(
                    &r.sku,
                    &r.reservation_id,
                    &env.key(),
                    &applied.outcome,
                    env.traceparent.as_deref(),
                )
            {
                out.publish(OUTCOMES, record);
            }
            if applied.changed || self.poll.forced.contains(&sku) {
                if self.poll.causes.insert(sku.clone(), env.traceparent.clone()).is_none() {
                    self.poll.dirty.push(sku.clone());
                }
                self.track_expiry(&sku);
            }
            out.effects.audit.push(applied.audit);
            answers.push(Ok(applied.outcome));
        }
        answers
    }

    /// Makes the poll's changes visible: the cache, one availability message per SKU whose
    /// per-channel values changed, the read-model rows.
    async fn finish(&mut self, out: &mut Output<InventoryEffects>) {
        let PollChanges { dirty, causes, forced, event_times_us } = std::mem::take(&mut self.poll);
        if dirty.is_empty() && event_times_us.is_empty() {
            return;
        }
        let visible_us = self.make_visible(&dirty, &forced, &causes, out).await;
        self.metrics.visible(&event_times_us, visible_us);
    }

    fn key_name(&self) -> &'static str {
        "sku"
    }

    fn outcome_code(&self, outcome: &Outcome) -> &'static str {
        outcome.code()
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.cfg.expiry_check_interval_ms.max(10)))
    }

    /// Emits a release for each lapsed reservation. The event id is derived from the
    /// reservation, so repeated scans before it is applied are deduplicated.
    async fn tick(&mut self) -> Vec<(String, Vec<OutRecord>)> {
        if self.with_expiry.is_empty() {
            return Vec::new();
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
        if releases.is_empty() {
            return Vec::new();
        }
        self.metrics.reservations_expired(releases.len() as u64);
        vec![(self.cfg.topics.events.clone(), releases)]
    }

    fn durable(&mut self, next_offset: u64) {
        if self.working.len() > MAX_WORKING_SET {
            let acked = next_offset as i64;
            let keep = &self.with_expiry;
            self.working.retain(|sku, e| e.state.applied_offset >= acked || keep.contains(sku));
        }
    }
}
