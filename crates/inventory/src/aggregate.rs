//! The per-SKU aggregate: every location's stock, the active reservations and the channel
//! reports of one SKU. One ordered worker owns a SKU (its partition), so `apply` runs without
//! locks and its result depends only on the state and the event — replay gives the same result.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use tally_core::{ChannelId, LocationId, Sku};

use crate::channel::{ChannelAvailability, ChannelRules};
use crate::event::{AdjustReason, InventoryEvent, ReservationRequested, StockAdjusted, StockSnapshot};
use crate::reservation::{Reservation, ReservationState};
pub use crate::stock::OutOfRange;
use crate::stock::{LocationStock, StockChange};

/// How many closed reservation ids a SKU remembers, so a late duplicate request for a
/// finished reservation cannot hold stock again.
const CLOSED_RESERVATIONS_KEPT: usize = 64;

/// What applying one event did. Serialised into outcomes, audit rows and HTTP responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The event changed state as requested.
    Applied,
    /// A snapshot not newer than the stored source version; nothing changed.
    StaleSnapshot {
        /// Stored snapshot version.
        stored_version: u64,
    },
    /// An adjustment already included in a newer snapshot; nothing changed.
    CoveredBySnapshot {
        /// Stored snapshot version.
        stored_version: u64,
    },
    /// A compare-and-set adjustment whose expected quantity did not match.
    CasMismatch {
        /// `change_from_quantity` of the request.
        expected: i64,
        /// on_hand at the time it was applied.
        actual: i64,
    },
    /// The reservation holds stock at `location`.
    ReservationAccepted {
        /// Where the stock is held.
        #[schema(value_type = String)]
        location: LocationId,
    },
    /// The reservation was refused; nothing is held.
    ReservationRejected {
        /// Why it was refused.
        reason: RejectionReason,
        /// Human-readable explanation.
        detail: String,
    },
    /// The event was valid but had nothing to act on (e.g. releasing an unknown reservation).
    Ignored {
        /// `unknown_reservation`, `reservation_closed`, `already_committed`,
        /// `not_reservation_holder` (the event named another channel than the holder's),
        /// `unknown_channel` (a report for a channel not configured).
        reason: String,
    },
    /// A channel report was compared with the truth.
    Reconciled {
        /// shown − available_to_sell (positive: the channel oversells).
        delta: i64,
    },
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    /// Not enough available stock at any location the channel sells from.
    InsufficientStock,
    /// The channel is not configured.
    UnknownChannel,
    /// The requested location is not one the channel sells from.
    LocationNotInChannel,
    /// The reservation id was already released or committed.
    ReservationClosed,
    /// The reservation id is held with other terms.
    ReservationConflict,
}

impl RejectionReason {
    /// Every reason (a metric's label values).
    pub const ALL: [Self; 5] = [
        Self::InsufficientStock,
        Self::UnknownChannel,
        Self::LocationNotInChannel,
        Self::ReservationClosed,
        Self::ReservationConflict,
    ];

    /// Its code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InsufficientStock => "insufficient_stock",
            Self::UnknownChannel => "unknown_channel",
            Self::LocationNotInChannel => "location_not_in_channel",
            Self::ReservationClosed => "reservation_closed",
            Self::ReservationConflict => "reservation_conflict",
        }
    }
}

impl std::fmt::Display for RejectionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl Outcome {
    /// Every [`Outcome::code`] (a metric's label values).
    pub const CODES: [&'static str; 8] = [
        "applied",
        "stale_snapshot",
        "covered_by_snapshot",
        "cas_mismatch",
        "reservation_accepted",
        "reservation_rejected",
        "ignored",
        "reconciled",
    ];

    /// Bounded code for metrics and audit rows.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::StaleSnapshot { .. } => "stale_snapshot",
            Self::CoveredBySnapshot { .. } => "covered_by_snapshot",
            Self::CasMismatch { .. } => "cas_mismatch",
            Self::ReservationAccepted { .. } => "reservation_accepted",
            Self::ReservationRejected { .. } => "reservation_rejected",
            Self::Ignored { .. } => "ignored",
            Self::Reconciled { .. } => "reconciled",
        }
    }

    fn rejected(reason: RejectionReason, detail: String) -> Self {
        Self::ReservationRejected { reason, detail }
    }

    fn ignored(reason: &str) -> Self {
        Self::Ignored { reason: reason.to_owned() }
    }
}

/// One row of a SKU's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// SKU.
    #[schema(value_type = String)]
    pub sku: Sku,
    /// Location affected, if any.
    #[schema(value_type = Option<String>)]
    pub location: Option<LocationId>,
    /// Aggregate version after the event.
    pub version: u64,
    /// CloudEvents type.
    pub event_type: String,
    /// CloudEvents source.
    pub event_source: String,
    /// CloudEvents id.
    pub event_id: String,
    /// Outcome code.
    pub outcome: String,
    /// Change of on_hand.
    pub on_hand_delta: i64,
    /// on_hand after the event at the location.
    pub on_hand: i64,
    /// reserved after the event at the location.
    pub reserved: i64,
    /// available after the event at the location.
    pub available: i64,
    /// When the event happened (Unix ms).
    pub event_time_ms: i64,
}

/// The result of applying one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What happened.
    pub outcome: Outcome,
    /// Whether state changed (and the version moved).
    pub changed: bool,
    /// The audit row.
    pub audit: AuditEntry,
}

/// Identity and time of the event being applied.
#[derive(Debug, Clone, Copy)]
pub struct EventMeta<'a> {
    /// CloudEvents source.
    pub source: &'a str,
    /// CloudEvents id.
    pub id: &'a str,
    /// Event time (Unix ms).
    pub time_ms: i64,
}

/// Read-model of one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocationLevel {
    /// Location.
    #[schema(value_type = String)]
    pub location: LocationId,
    /// Units on hand.
    pub on_hand: i64,
    /// Units reserved (held and shipped-unconfirmed).
    pub reserved: i64,
    /// Units never offered.
    pub safety_stock: i64,
    /// on_hand − reserved − safety_stock.
    pub available: i64,
    /// Source version of the last snapshot.
    pub snapshot_version: u64,
}

/// Everything tally knows about one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuState {
    /// SKU.
    pub sku: Sku,
    /// Monotonic revision; bumps on every change. Stores keep the row with the highest.
    pub version: u64,
    /// Offset of the last event applied, in the SKU's partition (−1: none). Replays at or below
    /// it are skipped: the per-key applied-offset watermark.
    pub applied_offset: i64,
    /// When the state last changed (Unix ms, wall clock).
    pub updated_at_ms: i64,
    /// Event time of the last applied event (Unix ms), for desync measurement.
    pub last_event_ms: i64,
    /// Stock per location.
    pub locations: BTreeMap<LocationId, LocationStock>,
    /// Active reservations by id.
    #[serde(default)]
    pub reservations: BTreeMap<String, Reservation>,
    /// Recently closed reservation ids (released, expired or confirmed).
    #[serde(default)]
    pub closed_reservations: VecDeque<String>,
    /// Last value each channel reported showing.
    #[serde(default)]
    pub reported: BTreeMap<ChannelId, i64>,
}

impl SkuState {
    /// An empty SKU.
    pub fn new(sku: Sku) -> Self {
        Self {
            sku,
            version: 0,
            applied_offset: -1,
            updated_at_ms: 0,
            last_event_ms: 0,
            locations: BTreeMap::new(),
            reservations: BTreeMap::new(),
            closed_reservations: VecDeque::new(),
            reported: BTreeMap::new(),
        }
    }

    /// Units reserved at a location.
    pub fn reserved_at(&self, location: &LocationId) -> i64 {
        self.locations.get(location).map_or(0, |s| s.reserved)
    }

    /// on_hand − reserved − safety_stock at a location.
    pub fn available_at(&self, location: &LocationId) -> i64 {
        self.locations.get(location).map_or(0, |s| s.on_hand.saturating_sub(s.reserved).saturating_sub(s.safety_stock))
    }

    /// Read-model of every location.
    pub fn levels(&self) -> Vec<LocationLevel> {
        self.locations
            .iter()
            .map(|(loc, s)| LocationLevel {
                location: loc.clone(),
                on_hand: s.on_hand,
                reserved: self.reserved_at(loc),
                safety_stock: s.safety_stock,
                available: self.available_at(loc),
                snapshot_version: s.snapshot_version,
            })
            .collect()
    }

    /// Available-to-sell on every configured channel.
    pub fn availability(&self, rules: &ChannelRules) -> Vec<ChannelAvailability> {
        rules
            .iter()
            .map(|rule| ChannelAvailability {
                channel: rule.id.clone(),
                available_to_sell: self.available_to_sell(rules, &rule.id).unwrap_or(0),
            })
            .collect()
    }

    /// Available-to-sell on one channel; `None` for an unknown channel.
    pub fn available_to_sell(&self, rules: &ChannelRules, channel: &ChannelId) -> Option<i64> {
        let rule = rules.get(channel)?;
        Some(rule.available_to_sell(self.locations.keys().map(|loc| (loc, self.available_at(loc)))))
    }

    /// Held reservations that lapsed at `now_ms`.
    pub fn expired_reservations(&self, now_ms: i64) -> impl Iterator<Item = &Reservation> {
        self.reservations.values().filter(move |r| r.is_expired(now_ms))
    }

    /// Applies one event. Deterministic: the same state and event always give the same result.
    pub fn apply(
        &mut self,
        event: &InventoryEvent,
        meta: EventMeta<'_>,
        rules: &ChannelRules,
    ) -> Result<Applied, OutOfRange> {
        let (outcome, location, on_hand_delta, changed) = match event {
            InventoryEvent::Snapshot(s) => self.apply_snapshot(s)?,
            InventoryEvent::Adjusted(a) => self.apply_adjustment(a)?,
            InventoryEvent::ReservationRequested(r) => self.request_reservation(r, meta.time_ms, rules),
            InventoryEvent::ReservationReleased(r) => match self.reservations.get(&r.reservation_id) {
                Some(res) if r.channel.as_ref().is_some_and(|ch| *ch != res.channel) => {
                    (Outcome::ignored("not_reservation_holder"), Some(res.location.clone()), 0, false)
                }
                Some(res) if res.state == ReservationState::Held => {
                    let location = res.location.clone();
                    self.close_reservation(&r.reservation_id);
                    (Outcome::Applied, Some(location), 0, true)
                }
                Some(res) => (Outcome::ignored("already_committed"), Some(res.location.clone()), 0, false),
                None if self.closed_reservations.contains(&r.reservation_id) => {
                    (Outcome::ignored("reservation_closed"), None, 0, false)
                }
                None => (Outcome::ignored("unknown_reservation"), None, 0, false),
            },
            InventoryEvent::ReservationCommitted(c) => match self.reservations.get_mut(&c.reservation_id) {
                Some(res) if c.channel.as_ref().is_some_and(|ch| *ch != res.channel) => {
                    (Outcome::ignored("not_reservation_holder"), Some(res.location.clone()), 0, false)
                }
                Some(res) if res.state == ReservationState::Held => {
                    res.state = ReservationState::Committed;
                    if c.order_id.is_some() {
                        res.order_id.clone_from(&c.order_id);
                    }
                    (Outcome::Applied, Some(res.location.clone()), 0, true)
                }
                Some(res) => (Outcome::ignored("already_committed"), Some(res.location.clone()), 0, false),
                None if self.closed_reservations.contains(&c.reservation_id) => {
                    (Outcome::ignored("reservation_closed"), None, 0, false)
                }
                None => (Outcome::ignored("unknown_reservation"), None, 0, false),
            },
            InventoryEvent::ChannelReported(r) => {
                let truth = self.available_to_sell(rules, &r.channel);
                match truth {
                    Some(truth) => {
                        let delta = r.shown - truth;
                        // A drifting channel is healed by re-publishing the truth, and that
                        // message must carry a new version: a consumer that deduplicates by
                        // sku + version would otherwise drop it as already seen.
                        let changed = self.reported.insert(r.channel.clone(), r.shown) != Some(r.shown) || delta != 0;
                        (Outcome::Reconciled { delta }, None, 0, changed)
                    }
                    None => (Outcome::ignored("unknown_channel"), None, 0, false),
                }
            }
        };
        if changed {
            self.version += 1;
            self.updated_at_ms = tally_core::now_ms();
        }
        self.last_event_ms = self.last_event_ms.max(meta.time_ms);
        let (on_hand, reserved, available) = match &location {
            Some(loc) => {
                (self.locations.get(loc).map_or(0, |s| s.on_hand), self.reserved_at(loc), self.available_at(loc))
            }
            None => (0, 0, 0),
        };
        let audit = AuditEntry {
            sku: self.sku.clone(),
            location,
            version: self.version,
            event_type: event.type_name().to_owned(),
            event_source: meta.source.to_owned(),
            event_id: meta.id.to_owned(),
            outcome: outcome.code().to_owned(),
            on_hand_delta,
            on_hand,
            reserved,
            available,
            event_time_ms: meta.time_ms,
        };
        Ok(Applied { outcome, changed, audit })
    }

    /// Applies `change` to the stock at `location` (a new, empty one if there is none yet). A
    /// refused change leaves the state as it was: `LocationStock` changes nothing when it
    /// refuses, and a new location is kept only if the change went through.
    fn change_stock(
        &mut self,
        location: &LocationId,
        change: impl FnOnce(&mut LocationStock) -> Result<StockChange, OutOfRange>,
    ) -> Result<StockChange, OutOfRange> {
        if let Some(stock) = self.locations.get_mut(location) {
            return change(stock);
        }
        let mut stock = LocationStock::default();
        let result = change(&mut stock)?;
        self.locations.insert(location.clone(), stock);
        Ok(result)
    }

    fn apply_snapshot(&mut self, s: &StockSnapshot) -> Result<(Outcome, Option<LocationId>, i64, bool), OutOfRange> {
        let change = self.change_stock(&s.location, |stock| stock.apply_snapshot(s.on_hand, s.source_version))?;
        let confirmed = self.confirm_shipments(&s.location, &s.shipped_orders);
        match change {
            StockChange::Applied(delta) => {
                if let Some(ss) = s.safety_stock
                    && let Some(stock) = self.locations.get_mut(&s.location)
                {
                    stock.safety_stock = ss;
                }
                Ok((Outcome::Applied, Some(s.location.clone()), delta, true))
            }
            StockChange::StaleSnapshot { stored } | StockChange::Covered { stored } => {
                Ok((Outcome::StaleSnapshot { stored_version: stored }, Some(s.location.clone()), 0, confirmed))
            }
        }
    }

    fn apply_adjustment(&mut self, a: &StockAdjusted) -> Result<(Outcome, Option<LocationId>, i64, bool), OutOfRange> {
        let location = Some(a.location.clone());
        let current = self.locations.get(&a.location).map_or(0, |s| s.on_hand);
        if let Some(expected) = a.change_from_quantity
            && expected != current
        {
            return Ok((Outcome::CasMismatch { expected, actual: current }, location, 0, false));
        }
        let change = self.change_stock(&a.location, |stock| stock.apply_delta(a.delta, a.source_version))?;
        // A shipment referencing an order confirms that order's reservations here, whether or
        // not its delta was already covered by a snapshot: either way on_hand reflects it.
        let confirmed = match (&a.reference, a.reason) {
            (Some(order), AdjustReason::Shipment) => self.confirm_shipments(&a.location, std::slice::from_ref(order)),
            _ => false,
        };
        Ok(match change {
            StockChange::Applied(delta) => (Outcome::Applied, location, delta, true),
            StockChange::Covered { stored } | StockChange::StaleSnapshot { stored } => {
                (Outcome::CoveredBySnapshot { stored_version: stored }, location, 0, confirmed)
            }
        })
    }

    fn request_reservation(
        &mut self,
        r: &ReservationRequested,
        event_time_ms: i64,
        rules: &ChannelRules,
    ) -> (Outcome, Option<LocationId>, i64, bool) {
        if let Some(existing) = self.reservations.get(&r.reservation_id) {
            // The same reservation asked again (e.g. a client retry with a new event id).
            let same = existing.quantity == r.quantity && existing.channel == r.channel;
            let outcome = if same {
                Outcome::ReservationAccepted { location: existing.location.clone() }
            } else {
                Outcome::rejected(
                    RejectionReason::ReservationConflict,
                    format!("reservation {} exists with other terms", r.reservation_id),
                )
            };
            return (outcome, Some(existing.location.clone()), 0, false);
        }
        if self.closed_reservations.contains(&r.reservation_id) {
            let detail = format!("reservation {} was already released or shipped", r.reservation_id);
            return (Outcome::rejected(RejectionReason::ReservationClosed, detail), None, 0, false);
        }
        let Some(rule) = rules.get(&r.channel) else {
            return (
                Outcome::rejected(RejectionReason::UnknownChannel, format!("channel {} is not configured", r.channel)),
                None,
                0,
                false,
            );
        };
        let location = match &r.location {
            Some(loc) if !rule.sells_from(loc) => {
                let detail = format!("channel {} does not sell from location {loc}", r.channel);
                return (Outcome::rejected(RejectionReason::LocationNotInChannel, detail), Some(loc.clone()), 0, false);
            }
            Some(loc) => loc.clone(),
            // The channel's location with the most available; ties go to the smallest id.
            None => match self
                .locations
                .keys()
                .filter(|loc| rule.sells_from(loc))
                .max_by_key(|loc| (self.available_at(loc), std::cmp::Reverse(*loc)))
            {
                Some(loc) => loc.clone(),
                None => {
                    let detail = format!("no stock of {} at any location of channel {}", self.sku, r.channel);
                    return (Outcome::rejected(RejectionReason::InsufficientStock, detail), None, 0, false);
                }
            },
        };
        let available = self.available_at(&location);
        let ats = self.available_to_sell(rules, &r.channel).unwrap_or(0);
        if r.quantity > available || r.quantity > ats {
            let detail = format!(
                "requested {} of {} at {location}; available there {available}, available to sell on {} {ats}",
                r.quantity, self.sku, r.channel
            );
            return (Outcome::rejected(RejectionReason::InsufficientStock, detail), Some(location), 0, false);
        }
        self.locations.entry(location.clone()).or_default().reserved += r.quantity;
        self.reservations.insert(
            r.reservation_id.clone(),
            Reservation {
                id: r.reservation_id.clone(),
                channel: r.channel.clone(),
                location: location.clone(),
                quantity: r.quantity,
                state: ReservationState::Held,
                order_id: r.order_id.clone(),
                expires_at_ms: r
                    .expires_at
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .or_else(|| r.ttl_seconds.map(|ttl| event_time_ms.saturating_add(i64::from(ttl) * 1000))),
            },
        );
        (Outcome::ReservationAccepted { location: location.clone() }, Some(location), 0, true)
    }

    /// Removes the reservations of `orders` at `location`: the warehouse's stock now reflects
    /// their shipment, so keeping them reserved would count the shipment twice.
    fn confirm_shipments(&mut self, location: &LocationId, orders: &[String]) -> bool {
        if orders.is_empty() {
            return false;
        }
        let ids: Vec<String> = self
            .reservations
            .values()
            .filter(|r| &r.location == location && r.order_id.as_ref().is_some_and(|o| orders.contains(o)))
            .map(|r| r.id.clone())
            .collect();
        for id in &ids {
            self.close_reservation(id);
        }
        !ids.is_empty()
    }

    fn close_reservation(&mut self, id: &str) {
        if let Some(r) = self.reservations.remove(id)
            && let Some(stock) = self.locations.get_mut(&r.location)
        {
            stock.reserved -= r.quantity;
        }
        self.closed_reservations.push_back(id.to_owned());
        while self.closed_reservations.len() > CLOSED_RESERVATIONS_KEPT {
            self.closed_reservations.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
