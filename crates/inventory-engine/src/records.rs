//! The records the inventory engine publishes: availability and reservation outcomes (the
//! runtime publishes dead letters and forwarded records).

use serde::Serialize;
use tally_bus::OutRecord;
use tally_core::{Envelope, EventKey, Sku};
use tally_inventory::{ChannelAvailability, Outcome, types};

/// Source attribute of events the engine emits.
pub const ENGINE_SOURCE: &str = "/tally/inventory";

/// Payload of `inventory.availability`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AvailabilityMessage {
    /// SKU.
    #[schema(value_type = String)]
    pub sku: Sku,
    /// Aggregate version this reflects; consumers keep the highest.
    pub version: u64,
    /// Per-channel available-to-sell.
    pub channels: Vec<ChannelAvailability>,
    /// Event time of the newest event included (Unix ms).
    pub last_event_ms: i64,
}

fn to_record(key: &str, env: &Envelope) -> OutRecord {
    let (headers, payload) = env.to_binary();
    OutRecord::keyed(key, headers, payload)
}

/// An availability record for the output topic, in the trace of the newest event behind it.
pub fn availability(msg: &AvailabilityMessage, traceparent: Option<&str>) -> OutRecord {
    let mut env =
        Envelope::new(ENGINE_SOURCE, types::AVAILABILITY_CHANGED, serde_json::to_value(msg).unwrap_or_default());
    env.subject = Some(msg.sku.to_string());
    env.traceparent = traceparent.map(str::to_owned);
    to_record(msg.sku.as_str(), &env)
}

/// A reservation outcome record (accepted or rejected), keyed by SKU, in the trace of the
/// request that caused it.
pub fn reservation_outcome(
    sku: &Sku,
    reservation_id: &str,
    cause: &EventKey,
    outcome: &Outcome,
    traceparent: Option<&str>,
) -> Option<OutRecord> {
    let ty = match outcome {
        Outcome::ReservationAccepted { .. } => types::RESERVATION_ACCEPTED,
        Outcome::ReservationRejected { .. } => types::RESERVATION_REJECTED,
        _ => return None,
    };
    let data = serde_json::json!({
        "sku": sku,
        "reservation_id": reservation_id,
        "cause": {"source": cause.source, "id": cause.id},
        "result": outcome,
    });
    let mut env = Envelope::new(ENGINE_SOURCE, ty, data);
    // Deterministic id: a replay after a crash republishes the same event, which consumers dedupe.
    env.id = outcome_id(ty, cause);
    env.subject = Some(sku.to_string());
    env.traceparent = traceparent.map(str::to_owned);
    Some(to_record(sku.as_str(), &env))
}

/// The id of the outcome of `cause`: `<type>:<source>:<id>`, or, when that would pass the
/// event id limit tally sets for its own input (long sources and ids), `<type>:sha256:<hex>` of
/// the source and id — deterministic either way.
fn outcome_id(ty: &str, cause: &EventKey) -> String {
    let plain = format!("{ty}:{}:{}", cause.source, cause.id);
    if plain.chars().count() <= tally_core::envelope::MAX_EVENT_ID_LEN {
        return plain;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::new().chain_update(&cause.source).chain_update([0]).chain_update(&cause.id).finalize();
    format!("{ty}:sha256:{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_ids_are_deterministic_and_within_the_event_id_limit() {
        let short = EventKey { source: "/api/ozon".into(), id: "reserve:r-1".into() };
        assert_eq!(outcome_id(types::RESERVATION_ACCEPTED, &short), "reservation.accepted:/api/ozon:reserve:r-1");
        let long = EventKey { source: "s".repeat(256), id: "i".repeat(256) };
        let id = outcome_id(types::RESERVATION_REJECTED, &long);
        assert!(id.len() <= tally_core::envelope::MAX_EVENT_ID_LEN, "{id}");
        assert_eq!(id, outcome_id(types::RESERVATION_REJECTED, &long));
        let other = EventKey { source: "s".repeat(256), id: format!("{}j", "i".repeat(255)) };
        assert_ne!(id, outcome_id(types::RESERVATION_REJECTED, &other));
    }
}
