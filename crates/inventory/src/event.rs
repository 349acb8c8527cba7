//! Typed inventory events, parsed from the CloudEvents envelope at the boundary.

use serde::{Deserialize, Serialize};
use tally_core::{ChannelId, Envelope, LocationId, Sku};
use time::OffsetDateTime;

use crate::types;

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
    pub on_hand: i64,
    /// The source's sequence number; a snapshot applies only if newer than the stored one.
    pub source_version: u64,
    /// Units never offered to any channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub delta: i64,
    /// Why stock changed.
    pub reason: AdjustReason,
    /// The source version this adjustment belongs to; covered by any snapshot at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<u64>,
    /// Reference document (for shipments: the order id, which confirms a committed reservation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Compare-and-set: apply only if on_hand currently equals this (Shopify `changeFromQuantity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub quantity: i64,
    /// The order the stock is held for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// When an uncommitted hold lapses.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
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
                if s.on_hand < 0 {
                    return Err(EventError::field(format!("on_hand must be >= 0, got {}", s.on_hand)));
                }
                if let Some(ss) = s.safety_stock
                    && ss < 0
                {
                    return Err(EventError::field(format!("safety_stock must be >= 0, got {ss}")));
                }
            }
            Self::Adjusted(a) => {
                if a.delta == 0 {
                    return Err(EventError::field("delta must not be 0"));
                }
                if let Some(sign) = a.reason.required_sign()
                    && a.delta.signum() != sign
                {
                    let want = if sign > 0 { "positive" } else { "negative" };
                    return Err(EventError::field(format!(
                        "a {:?} adjustment must have a {want} delta, got {}",
                        a.reason, a.delta
                    )));
                }
                if let Some(from) = a.change_from_quantity
                    && from < 0
                {
                    return Err(EventError::field(format!("change_from_quantity must be >= 0, got {from}")));
                }
            }
            Self::ReservationRequested(r) => {
                if r.quantity <= 0 {
                    return Err(EventError::field(format!("quantity must be > 0, got {}", r.quantity)));
                }
                non_empty("reservation_id", &r.reservation_id)?;
            }
            Self::ReservationReleased(r) => non_empty("reservation_id", &r.reservation_id)?,
            Self::ReservationCommitted(r) => non_empty("reservation_id", &r.reservation_id)?,
            Self::ChannelReported(r) => {
                if r.shown < 0 {
                    return Err(EventError::field(format!("shown must be >= 0, got {}", r.shown)));
                }
            }
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
            // Release and commit name only the reservation; the worker checks ownership.
            Self::ReservationReleased(_) | Self::ReservationCommitted(_) => warehouse,
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

    /// Wraps the event in an envelope from `source` with subject = SKU.
    pub fn into_envelope(&self, source: &str) -> Envelope {
        let mut env = Envelope::new(source, self.type_name(), self.to_data());
        env.subject = Some(self.sku().to_string());
        env
    }
}

fn non_empty(field: &str, v: &str) -> Result<(), EventError> {
    if v.trim().is_empty() { Err(EventError::field(format!("{field} must not be empty"))) } else { Ok(()) }
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
                "on_hand must be >= 0",
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
                "quantity must be > 0",
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
