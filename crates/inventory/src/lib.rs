//! The inventory sync engine's domain: stock per (sku, location), reservations, channel rules
//! and the rules that make snapshots, adjustments and shipments compose without double
//! counting. Pure logic — no bus, store or cache types appear here — so every backend
//! combination applies exactly the same rules.

pub mod aggregate;
pub mod channel;
pub mod event;
#[cfg(any(test, feature = "testing"))]
pub mod oracle;
pub mod reservation;
pub mod schema;
pub mod stock;

pub use aggregate::{Applied, AuditEntry, OutOfRange, Outcome, RejectionReason, SkuState};
pub use channel::{ChannelAvailability, ChannelRule, ChannelRules};
pub use event::{AdjustReason, EventError, InventoryEvent, MAX_QUANTITY};

/// Event types the engine consumes, as they appear in the CloudEvents `type` attribute.
pub mod types {
    /// A source states the on-hand quantity at a source version.
    pub const SNAPSHOT: &str = "stock.snapshot";
    /// A signed delta with a reason.
    pub const ADJUSTED: &str = "stock.adjusted";
    /// A channel holds stock for an order.
    pub const RESERVATION_REQUESTED: &str = "reservation.requested";
    /// A channel gives held stock back (or it expired).
    pub const RESERVATION_RELEASED: &str = "reservation.released";
    /// A channel shipped held stock; provisional until the warehouse confirms.
    pub const RESERVATION_COMMITTED: &str = "reservation.committed";
    /// A channel reports what it displays, for reconciliation.
    pub const CHANNEL_REPORTED: &str = "channel.reported";
    /// Published: per-channel available-to-sell of a SKU.
    pub const AVAILABILITY_CHANGED: &str = "inventory.availability.changed";
    /// Published: a reservation was accepted.
    pub const RESERVATION_ACCEPTED: &str = "reservation.accepted";
    /// Published: a reservation was rejected, with the reason.
    pub const RESERVATION_REJECTED: &str = "reservation.rejected";
}
