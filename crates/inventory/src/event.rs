//! Typed inventory events, parsed from the CloudEvents envelope at the boundary.

use serde::{Deserialize, Serialize};
use tally_core::{ChannelId, Envelope, LocationId, Sku};
use time::OffsetDateTime;

use crate::types;

pub use tally_core::MAX_QUANTITY;
/// The largest source version accepted: versions are `int64` on the wire and in the store.
pub const MAX_SOURCE_VERSION: u64 = i64::MAX as u64;
/// Longest free-text field (order ids, references, release reasons), in characters.
pub const MAX_TEXT_LEN: usize = 128;
/// Longest reservation id, in bytes (ASCII letters, digits and `- _ . : / @`, like every id).
pub const MAX_RESERVATION_ID_LEN: usize = 100;
/// Most orders one snapshot may confirm in `shipped_orders`.
pub const MAX_SHIPPED_ORDERS: usize = 1000;
/// Longest reservation hold accepted: 30 days.
pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 3600;

/// Why an envelope is not a valid inventory event. `code` is machine-readable and bounded
/// (it becomes a metric label and a DLQ header); `detail` says exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct EventError {
    /// Bounded reason code: `unknown_type`, `invalid_payload`, `invalid_field`, `subject_mismatch`.
    pub code: &'static str,
    /// What exactly is wrong.
    pub detail: String,
}

impl EventError {
    fn field(detail: impl Into<String>) -> Self {
        Self { code: "invalid_field", detail: detail.into() }
    }
}

/// Why stock changed, as in Shopify's inventory adjustment reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdjustReason {
    /// Goods received from a supplier (positive).
    Receipt,
    /// Goods shipped to a customer (negative).
    Shipment,
    /// Goods returned by a customer (positive).
    Return,
    /// Goods damaged or lost (negative).
    Damage,
    /// A cycle-count correction (either sign).
    Count,
    /// A manual correction (either sign).
    Correction,
}

impl AdjustReason {
    /// The sign the delta must have, if the reason fixes one.
    fn required_sign(self) -> Option<i64> {
        match self {
            Self::Receipt | Self::Return => Some(1),
            Self::Shipment | Self::Damage => Some(-1),
            Self::Count | Self::Correction => None,
        }
    }
}

/// `stock.snapshot`: on_hand = N for sku@location at source version V.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockSnapshot {
    /// SKU.
    pub sku: Sku,
    /// Location.
    pub location: LocationId,
    /// Units physically on hand at the source version.
    #[serde(deserialize_with = "tally_core::whole::i64")]
    pub on_hand: i64,
    /// The source's sequence number; a snapshot applies only if newer than the stored one.
    #[serde(deserialize_with = "tally_core::whole::u64")]
    pub source_version: u64,
    /// Units never offered to any channel.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "tally_core::whole::opt_i64")]
    pub safety_stock: Option<i64>,
    /// Orders whose shipment this on_hand already reflects (confirms committed reservations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shipped_orders: Vec<String>,
}

/// `stock.adjusted`: a signed delta with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjusted {
    /// SKU.
    pub sku: Sku,
    /// Location.
    pub location: LocationId,
    /// Signed change of on_hand.
    #[serde(deserialize_with = "tally_core::whole::i64")]
    pub delta: i64,
    /// Why stock changed.
    pub reason: AdjustReason,
    /// The source version this adjustment belongs to; covered by any snapshot at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "tally_core::whole::opt_u64")]
    pub source_version: Option<u64>,
    /// Reference document (for shipments: the order id, which confirms a committed reservation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Compare-and-set: apply only if on_hand currently equals this (Shopify `changeFromQuantity`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "tally_core::whole::opt_i64")]
    pub change_from_quantity: Option<i64>,
}

/// `reservation.requested`: a channel holds stock for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequested {
    /// Unique per reservation; single use.
    pub reservation_id: String,
    /// SKU.
    pub sku: Sku,
    /// The channel holding the stock.
    pub channel: ChannelId,
    /// Where to hold it; when absent, the channel's location with most available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationId>,
    /// Units to hold (> 0).
    #[serde(deserialize_with = "tally_core::whole::i64")]
    pub quantity: i64,
    /// The order the stock is held for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// When an uncommitted hold lapses (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// When an uncommitted hold lapses, in seconds after the event's `time` (instead of
    /// `expires_at`; a retried request then carries the same terms).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "tally_core::whole::opt_u32")]
    pub ttl_seconds: Option<u32>,
}

/// `reservation.released`: held stock goes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationReleased {
    /// The reservation.
    pub reservation_id: String,
    /// SKU.
    pub sku: Sku,
    /// Why, e.g. `cancelled` or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The channel releasing it; when given, the release applies only if that channel holds
    /// the reservation. Without it, the writer needs the warehouse channel's scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
}

/// `reservation.committed`: the channel shipped the held stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationCommitted {
    /// The reservation.
    pub reservation_id: String,
    /// SKU.
    pub sku: Sku,
    /// The order; the warehouse's shipment references it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The channel committing it; when given, the commit applies only if that channel holds
    /// the reservation. Without it, the writer needs the warehouse channel's scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
}

/// `channel.reported`: what a channel currently displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelReported {
    /// SKU.
    pub sku: Sku,
    /// Reporting channel.
    pub channel: ChannelId,
    /// Units the channel shows as available.
    #[serde(deserialize_with = "tally_core::whole::i64")]
    pub shown: i64,
}

/// A validated inventory event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryEvent {
    /// See [`StockSnapshot`].
    Snapshot(StockSnapshot),
    /// See [`StockAdjusted`].
    Adjusted(StockAdjusted),
    /// See [`ReservationRequested`].
    ReservationRequested(ReservationRequested),
    /// See [`ReservationReleased`].
    ReservationReleased(ReservationReleased),
    /// See [`ReservationCommitted`].
    ReservationCommitted(ReservationCommitted),
    /// See [`ChannelReported`].
    ChannelReported(ChannelReported),
}

/// Where a payload is parsed from: an already parsed JSON value (HTTP) or raw bytes (bus).
trait Payload {
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error>;
}

impl Payload for serde_json::Value {
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self)
    }
}

impl Payload for [u8] {
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self)
    }
}

fn payload<T: serde::de::DeserializeOwned, P: Payload + ?Sized>(ty: &str, p: &P) -> Result<T, EventError> {
    p.parse().map_err(|e| EventError { code: "invalid_payload", detail: format!("{ty} payload: {e}") })
}

impl InventoryEvent {
    /// Parses and validates an envelope. Everything a consumer could choke on is rejected here.
    pub fn from_envelope(ev: &Envelope) -> Result<Self, EventError> {
        Self::parse(&ev.ty, ev.subject.as_deref(), &ev.data)
    }

    /// Parses a binary-mode payload straight into the typed event (no intermediate JSON tree).
    pub fn from_payload(ty: &str, subject: Option<&str>, payload: &[u8]) -> Result<Self, EventError> {
        Self::parse(ty, subject, payload)
    }

    fn parse<P: Payload + ?Sized>(ty: &str, subject: Option<&str>, data: &P) -> Result<Self, EventError> {
        let event = match ty {
            types::SNAPSHOT => Self::Snapshot(payload(ty, data)?),
            types::ADJUSTED => Self::Adjusted(payload(ty, data)?),
            types::RESERVATION_REQUESTED => Self::ReservationRequested(payload(ty, data)?),
            types::RESERVATION_RELEASED => Self::ReservationReleased(payload(ty, data)?),
            types::RESERVATION_COMMITTED => Self::ReservationCommitted(payload(ty, data)?),
            types::CHANNEL_REPORTED => Self::ChannelReported(payload(ty, data)?),
            other => {
                return Err(EventError {
                    code: "unknown_type",
                    detail: format!(
                        "event type {other:?} is not an inventory event; expected one of stock.snapshot, \
                         stock.adjusted, reservation.requested, reservation.released, \
                         reservation.committed, channel.reported"
                    ),
                });
            }
        };
        event.validate()?;
        if let Some(subject) = subject
            && subject != event.sku().as_str()
        {
            return Err(EventError {
                code: "subject_mismatch",
                detail: format!("subject {subject:?} differs from data.sku {:?}", event.sku().as_str()),
            });
        }
        Ok(event)
    }

    fn validate(&self) -> Result<(), EventError> {
        match self {
            Self::Snapshot(s) => {
                quantity("on_hand", s.on_hand, 0)?;
                version("source_version", s.source_version)?;
                if let Some(ss) = s.safety_stock {
                    quantity("safety_stock", ss, 0)?;
                }
                if s.shipped_orders.len() > MAX_SHIPPED_ORDERS {
                    return Err(EventError::field(format!(
                        "shipped_orders lists {} orders; the limit is {MAX_SHIPPED_ORDERS}",
                        s.shipped_orders.len()
                    )));
                }
                for order in &s.shipped_orders {
                    text("shipped_orders[]", order)?;
                }
            }
            Self::Adjusted(a) => {
                if a.delta == 0 {
                    return Err(EventError::field("delta must not be 0"));
                }
                quantity("delta", a.delta, -MAX_QUANTITY)?;
                if let Some(sign) = a.reason.required_sign()
                    && a.delta.signum() != sign
                {
                    let want = if sign > 0 { "positive" } else { "negative" };
                    return Err(EventError::field(format!(
                        "a {:?} adjustment must have a {want} delta, got {}",
                        a.reason, a.delta
                    )));
                }
                if let Some(from) = a.change_from_quantity {
                    quantity("change_from_quantity", from, 0)?;
                }
                if let Some(v) = a.source_version {
                    version("source_version", v)?;
                }
                optional_text("reference", a.reference.as_deref())?;
            }
            Self::ReservationRequested(r) => {
                quantity("quantity", r.quantity, 1)?;
                reservation_id(&r.reservation_id)?;
                optional_text("order_id", r.order_id.as_deref())?;
                if r.expires_at.is_some() && r.ttl_seconds.is_some() {
                    return Err(EventError::field("give expires_at or ttl_seconds, not both"));
                }
                if let Some(ttl) = r.ttl_seconds
                    && !(1..=MAX_TTL_SECONDS).contains(&ttl)
                {
                    return Err(EventError::field(format!("ttl_seconds must be 1 to {MAX_TTL_SECONDS}, got {ttl}")));
                }
                if let Some(t) = r.expires_at
                    && !(1970..=9999).contains(&t.year())
                {
                    return Err(EventError::field("expires_at must lie in the years 1970 to 9999"));
                }
            }
            Self::ReservationReleased(r) => {
                reservation_id(&r.reservation_id)?;
                optional_text("reason", r.reason.as_deref())?;
            }
            Self::ReservationCommitted(r) => {
                reservation_id(&r.reservation_id)?;
                optional_text("order_id", r.order_id.as_deref())?;
            }
            Self::ChannelReported(r) => quantity("shown", r.shown, 0)?,
        }
        Ok(())
    }

    /// The SKU, which is also the partition key.
    pub fn sku(&self) -> &Sku {
        match self {
            Self::Snapshot(e) => &e.sku,
            Self::Adjusted(e) => &e.sku,
            Self::ReservationRequested(e) => &e.sku,
            Self::ReservationReleased(e) => &e.sku,
            Self::ReservationCommitted(e) => &e.sku,
            Self::ChannelReported(e) => &e.sku,
        }
    }

    /// The channel that must be allowed to write this event (API scope `stock:write:<channel>`).
    /// Stock facts (snapshots and adjustments) belong to the warehouse channel.
    pub fn acting_channel<'a>(&'a self, warehouse: &'a ChannelId) -> &'a ChannelId {
        match self {
            Self::Snapshot(_) | Self::Adjusted(_) => warehouse,
            Self::ReservationRequested(e) => &e.channel,
            Self::ChannelReported(e) => &e.channel,
            // A release or commit that names its channel is checked against the reservation's
            // holder when applied; one that does not may come only from the warehouse.
            Self::ReservationReleased(e) => e.channel.as_ref().unwrap_or(warehouse),
            Self::ReservationCommitted(e) => e.channel.as_ref().unwrap_or(warehouse),
        }
    }

    /// The CloudEvents type of this event.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Snapshot(_) => types::SNAPSHOT,
            Self::Adjusted(_) => types::ADJUSTED,
            Self::ReservationRequested(_) => types::RESERVATION_REQUESTED,
            Self::ReservationReleased(_) => types::RESERVATION_RELEASED,
            Self::ReservationCommitted(_) => types::RESERVATION_COMMITTED,
            Self::ChannelReported(_) => types::CHANNEL_REPORTED,
        }
    }

    /// The JSON payload of this event (inverse of parsing).
    pub fn to_data(&self) -> serde_json::Value {
        let v = match self {
            Self::Snapshot(e) => serde_json::to_value(e),
            Self::Adjusted(e) => serde_json::to_value(e),
            Self::ReservationRequested(e) => serde_json::to_value(e),
            Self::ReservationReleased(e) => serde_json::to_value(e),
            Self::ReservationCommitted(e) => serde_json::to_value(e),
            Self::ChannelReported(e) => serde_json::to_value(e),
        };
        // These payloads are plain structs of strings and numbers: serialising cannot fail.
        v.unwrap_or_default()
    }

    /// A digest of what the event asks for (its type and payload; not its id, time or trace),
    /// stored with its idempotency key so that a key reused for a different request is
    /// refused instead of answered with another request's outcome.
    pub fn digest(&self) -> i64 {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.type_name().as_bytes());
        h.update([0]);
        // The typed payload, serialised field by field in declaration order: the same request
        // gives the same bytes whatever key order or whitespace it was sent with.
        let payload = match self {
            Self::Snapshot(e) => serde_json::to_vec(e),
            Self::Adjusted(e) => serde_json::to_vec(e),
            Self::ReservationRequested(e) => serde_json::to_vec(e),
            Self::ReservationReleased(e) => serde_json::to_vec(e),
            Self::ReservationCommitted(e) => serde_json::to_vec(e),
            Self::ChannelReported(e) => serde_json::to_vec(e),
        };
        h.update(payload.unwrap_or_default());
        let bytes = h.finalize();
        i64::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
    }

    /// Wraps the event in an envelope from `source` with subject = SKU.
    pub fn into_envelope(&self, source: &str) -> Envelope {
        let mut env = Envelope::new(source, self.type_name(), self.to_data());
        env.subject = Some(self.sku().to_string());
        env
    }
}

/// A quantity within `min..=MAX_QUANTITY`.
fn quantity(field: &str, v: i64, min: i64) -> Result<(), EventError> {
    if (min..=MAX_QUANTITY).contains(&v) {
        return Ok(());
    }
    Err(EventError::field(format!("{field} must be {min} to {MAX_QUANTITY}, got {v}")))
}

fn version(field: &str, v: u64) -> Result<(), EventError> {
    if v <= MAX_SOURCE_VERSION {
        return Ok(());
    }
    Err(EventError::field(format!("{field} must be at most {MAX_SOURCE_VERSION} (int64), got {v}")))
}

/// Free text: 1 to [`MAX_TEXT_LEN`] characters (as JSON Schema counts them), no control
/// characters.
fn text(field: &str, v: &str) -> Result<(), EventError> {
    if v.is_empty() {
        return Err(EventError::field(format!("{field} must not be empty")));
    }
    let chars = v.chars().count();
    if chars > MAX_TEXT_LEN {
        return Err(EventError::field(format!("{field} is {chars} characters long; the limit is {MAX_TEXT_LEN}")));
    }
    if v.chars().any(char::is_control) {
        return Err(EventError::field(format!("{field} must not contain control characters")));
    }
    Ok(())
}

fn optional_text(field: &str, v: Option<&str>) -> Result<(), EventError> {
    v.map_or(Ok(()), |v| text(field, v))
}

/// A reservation id: spelled like every id (letters, digits and `- _ . : / @`), at most
/// [`MAX_RESERVATION_ID_LEN`] bytes.
fn reservation_id(v: &str) -> Result<(), EventError> {
    if v.is_empty() {
        return Err(EventError::field("reservation_id must not be empty"));
    }
    if v.len() > MAX_RESERVATION_ID_LEN {
        return Err(EventError::field(format!(
            "reservation_id is {} bytes long; the limit is {MAX_RESERVATION_ID_LEN}",
            v.len()
        )));
    }
    if let Some(ch) = v.chars().find(|c| !tally_core::ids::is_id_char(*c)) {
        return Err(EventError::field(format!(
            "reservation_id contains {ch:?}; allowed are ASCII letters, digits and - _ . : / @"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(ty: &str, data: serde_json::Value) -> Envelope {
        Envelope::new("/test", ty, data)
    }

    #[test]
    fn bad_payloads_are_rejected_with_a_specific_reason() {
        let cases = [
            (
                types::SNAPSHOT,
                serde_json::json!({"sku": "A", "location": "w", "on_hand": -1, "source_version": 1}),
                "on_hand must be 0 to 1000000000000, got -1",
            ),
            (
                types::SNAPSHOT,
                serde_json::json!({"sku": "A", "location": "w", "on_hand": 1}),
                "missing field `source_version`",
            ),
            (
                types::ADJUSTED,
                serde_json::json!({"sku": "A", "location": "w", "delta": 5, "reason": "shipment"}),
                "negative delta",
            ),
            (
                types::ADJUSTED,
                serde_json::json!({"sku": "A", "location": "w", "delta": 5, "reason": "theft"}),
                "unknown variant `theft`",
            ),
            (
                types::RESERVATION_REQUESTED,
                serde_json::json!({"reservation_id": "r", "sku": "A", "channel": "web", "quantity": 0}),
                "quantity must be 1 to 1000000000000, got 0",
            ),
            (
                types::SNAPSHOT,
                serde_json::json!({"sku": "", "location": "w", "on_hand": 1, "source_version": 1}),
                "sku must not be empty",
            ),
            ("stock.teleported", serde_json::json!({}), "not an inventory event"),
        ];
        for (ty, data, want) in cases {
            let err = InventoryEvent::from_envelope(&env(ty, data)).expect_err(want);
            assert!(err.to_string().contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn a_subject_that_disagrees_with_the_sku_is_rejected() {
        let mut e =
            env(types::SNAPSHOT, serde_json::json!({"sku": "A", "location": "w", "on_hand": 1, "source_version": 1}));
        e.subject = Some("B".into());
        assert_eq!(InventoryEvent::from_envelope(&e).expect_err("mismatch").code, "subject_mismatch");
    }

    #[test]
    fn events_round_trip_through_the_envelope() {
        let ev = InventoryEvent::Adjusted(StockAdjusted {
            sku: Sku::parse("A").expect("valid"),
            location: LocationId::parse("w").expect("valid"),
            delta: -2,
            reason: AdjustReason::Shipment,
            source_version: Some(4),
            reference: Some("order-1".into()),
            change_from_quantity: None,
        });
        let env = ev.into_envelope("/wms");
        assert_eq!(InventoryEvent::from_envelope(&env).expect("valid"), ev);
    }
}
