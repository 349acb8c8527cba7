//! Reservations: stock a channel holds for an order until it ships or gives it back.

use serde::{Deserialize, Serialize};
use tally_core::{ChannelId, LocationId};

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// Held for an order; may be released or expire.
    Held,
    /// Shipped by the channel, waiting for the warehouse to confirm (a shipment adjustment
    /// or a snapshot referencing the order). Still counted as reserved so it is deducted
    /// exactly once: on confirmation on_hand drops and the reservation disappears together.
    Committed,
}

/// An active reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Reservation id.
    pub id: String,
    /// The channel holding stock.
    pub channel: ChannelId,
    /// Where stock is held.
    pub location: LocationId,
    /// Units held.
    pub quantity: i64,
    /// Life-cycle state.
    pub state: ReservationState,
    /// Order reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// When a held reservation lapses (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
}

impl Reservation {
    /// Whether a held reservation has lapsed at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.state == ReservationState::Held && self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}
