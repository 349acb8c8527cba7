//! The demand consumer's [`Handler`] on the shared runtime: one per partition of
//! `demand.sales`, `demand.supplies` and `demand.returns` (one consumer group over the three).
//! Each event is parsed at the boundary, enriched from the reference data and staged (an
//! event row and its rollup increment, written with the partition's offset in one
//! transaction); an event whose SKU or location is not known yet is parked whole, not
//! dropped; one the references make invalid (more units than allowed, a business day out of
//! range) is refused and dead-lettered with the reason.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tally_bus::Record;
use tally_core::Attributes;
use tally_forecast::day;
use tally_forecast::demand::{DemandEvent, DemandKind, Staged, types};
use tally_runtime::{Fresh, Handler, HandlerError, Output, Parsed, Refusal};
use tally_store::demand::{DemandEffects, DemandStore, ParkedRow, StagedRow};

use crate::metrics::ForecastMetrics;
use crate::ownership::Ownership;
use crate::references::References;
use crate::touched::Touched;

/// Dead-letter reasons of the demand handler (the runtime adds its own).
pub const REFUSALS: [&str; 3] = ["invalid_payload", "invalid_field", "unknown_type"];

/// A demand event with what parking it needs: the record as received.
#[derive(Debug)]
pub struct DemandInput {
    /// The event.
    pub event: DemandEvent,
    /// CloudEvents type.
    pub ty: &'static str,
    /// The record's headers.
    pub headers: Vec<(String, String)>,
    /// The record's payload (UTF-8: it parsed as JSON).
    pub payload: String,
}

/// What became of a demand event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DemandOutcome {
    /// Staged on its business day.
    Staged {
        /// Business day (`YYYY-MM-DD`).
        day: String,
        /// Units.
        units: i64,
    },
    /// Parked until its reference data arrives.
    Parked {
        /// What is missing: `sku`, `location` or `sku,location`.
        missing: String,
    },
}

impl DemandOutcome {
    /// Every outcome code.
    pub const CODES: [&'static str; 2] = ["staged", "parked"];

    /// Its code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Staged { .. } => "staged",
            Self::Parked { .. } => "parked",
        }
    }
}

/// What every partition's handler shares.
pub struct Shared<S> {
    /// The store.
    pub store: S,
    /// Reference data.
    pub references: Arc<References>,
    /// Series changed by durable events.
    pub touched: Arc<Touched>,
    /// Metrics.
    pub metrics: Arc<ForecastMetrics>,
}

/// The demand handler of one partition.
pub struct DemandHandler<S> {
    shared: Arc<Shared<S>>,
    topic: String,
    partition: u32,
    /// Kept while this handler lives when its topic is the sales topic.
    owns: Option<Arc<Ownership>>,
    /// Series staged by events not yet durable, with the offset after the event.
    pending: Vec<(u64, String, String)>,
}

impl<S> DemandHandler<S> {
    /// A handler for one partition of `topic`; `owns` records the partition as this
    /// instance's while the handler lives (given for the sales topic).
    pub fn new(shared: Arc<Shared<S>>, topic: &str, partition: u32, owns: Option<Arc<Ownership>>) -> Self {
        if let Some(o) = &owns {
            o.gained(partition);
        }
        Self { shared, topic: topic.to_owned(), partition, owns, pending: Vec::new() }
    }
}

impl<S> Drop for DemandHandler<S> {
    fn drop(&mut self) {
        if let Some(o) = &self.owns {
            o.lost(self.partition);
        }
    }
}

fn type_of(ty: &str) -> Option<(DemandKind, &'static str)> {
    DemandKind::of_type(ty).map(|kind| {
        let ty = match kind {
            DemandKind::Sale => types::SALE,
            DemandKind::Supply => types::SUPPLY,
            DemandKind::Return => types::RETURN,
        };
        (kind, ty)
    })
}

/// Where an event was consumed and under which idempotency key.
pub struct Origin<'a> {
    /// CloudEvents source.
    pub source: &'a str,
    /// CloudEvents id.
    pub id: &'a str,
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
}

/// The staged row of an event.
pub fn staged_row(event: &DemandEvent, staged: &Staged, origin: &Origin<'_>) -> StagedRow {
    StagedRow {
        source: origin.source.to_owned(),
        id: origin.id.to_owned(),
        kind: staged.kind.as_str().to_owned(),
        sku: event.sku.as_str().to_owned(),
        location: event.location.as_str().to_owned(),
        day: staged.day,
        units: staged.units,
        revenue: staged.revenue,
        promo: staged.promo,
        lead_time_days: staged.lead_time_days,
        event_time_ms: event.occurred_at.as_millisecond(),
        topic: origin.topic.to_owned(),
        partition: origin.partition,
        offset: origin.offset,
    }
}

/// Parses a parked or received record's payload as the demand event of CloudEvents type `ty`.
pub fn parse_payload(ty: &str, payload: &[u8]) -> Result<(DemandEvent, &'static str), Refusal> {
    let (kind, ty) = type_of(ty).ok_or_else(|| Refusal {
        reason: "unknown_type",
        detail: format!("demand consumes {}, {} and {}, not {ty:?}", types::SALE, types::SUPPLY, types::RETURN),
    })?;
    let event = DemandEvent::from_payload(kind, payload).map_err(|e| Refusal { reason: e.code, detail: e.detail })?;
    Ok((event, ty))
}

impl<S: DemandStore> Handler for DemandHandler<S> {
    type Event = DemandInput;
    type Outcome = DemandOutcome;
    type Effects = DemandEffects;

    fn parse(&self, attributes: &Attributes, record: &Record) -> Result<Parsed<DemandInput>, Refusal> {
        let (event, ty) = parse_payload(&attributes.ty, &record.payload)?;
        let payload = String::from_utf8(record.payload.clone())
            .map_err(|e| Refusal { reason: "invalid_payload", detail: e.to_string() })?;
        Ok(Parsed {
            partition_key: event.series_key(),
            digest: tally_core::fnv1a(record.payload.iter().copied()) as i64,
            event: DemandInput { event, ty, headers: record.headers.clone(), payload },
        })
    }

    async fn prepare(&mut self, events: &[&DemandInput]) -> Result<(), HandlerError> {
        let skus: BTreeSet<String> = events.iter().map(|e| e.event.sku.as_str().to_owned()).collect();
        let locations: BTreeSet<String> = events.iter().map(|e| e.event.location.as_str().to_owned()).collect();
        self.shared
            .references
            .load(&self.shared.store, skus.into_iter().collect(), locations.into_iter().collect())
            .await?;
        Ok(())
    }

    fn already_applied(&self, _event: &DemandInput, _offset: u64) -> bool {
        // No per-series watermark: the idempotency window drops redeliveries, and the event
        // table's key drops any that get past it (a row inserted twice counts once).
        false
    }

    async fn apply(
        &mut self,
        events: Vec<Fresh<DemandInput>>,
        out: &mut Output<DemandEffects>,
    ) -> Vec<Result<DemandOutcome, Refusal>> {
        let refs = &self.shared.references;
        let mut answers = Vec::with_capacity(events.len());
        for fresh in events {
            let input = &fresh.event;
            let (sku, location) = (refs.sku(input.event.sku.as_str()), refs.location(input.event.location.as_str()));
            let (topic, partition) = (self.topic.clone(), self.partition);
            let answer = match (sku, location) {
                (Some(sku), Some(location)) => match input.event.stage(&sku, &location) {
                    Ok(staged) => {
                        let origin = Origin {
                            source: &fresh.attributes.source,
                            id: &fresh.attributes.id,
                            topic: &topic,
                            partition,
                            offset: fresh.offset,
                        };
                        let row = staged_row(&input.event, &staged, &origin);
                        self.pending.push((fresh.offset + 1, row.sku.clone(), row.location.clone()));
                        self.shared.metrics.staged(staged.kind, row.event_time_ms);
                        out.effects.staged.push(row);
                        Ok(DemandOutcome::Staged { day: day::iso(staged.day), units: staged.units })
                    }
                    Err(e) => Err(Refusal { reason: e.code, detail: e.detail }),
                },
                (sku, location) => {
                    let missing = match (sku.is_none(), location.is_none()) {
                        (true, true) => "sku,location",
                        (true, false) => "sku",
                        _ => "location",
                    };
                    self.shared.metrics.parked();
                    out.effects.parked.push(ParkedRow {
                        source: fresh.attributes.source.clone(),
                        id: fresh.attributes.id.clone(),
                        ty: input.ty.to_owned(),
                        sku: input.event.sku.as_str().to_owned(),
                        location: input.event.location.as_str().to_owned(),
                        missing: missing.to_owned(),
                        headers: serde_json::to_string(&input.headers).unwrap_or_else(|_| "[]".into()),
                        payload: input.payload.clone(),
                        event_time_ms: input.event.occurred_at.as_millisecond(),
                        topic,
                        partition,
                        offset: fresh.offset,
                    });
                    Ok(DemandOutcome::Parked { missing: missing.to_owned() })
                }
            };
            answers.push(answer);
        }
        answers
    }

    fn key_name(&self) -> &'static str {
        "series"
    }

    fn outcome_code(&self, outcome: &DemandOutcome) -> &'static str {
        outcome.code()
    }

    fn durable(&mut self, next_offset: u64) {
        let split = self.pending.partition_point(|(after, _, _)| *after <= next_offset);
        if split > 0 {
            self.shared.touched.mark(self.pending.drain(..split).map(|(_, sku, location)| (sku, location)));
        }
    }
}
