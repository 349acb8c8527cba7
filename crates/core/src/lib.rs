//! Shared primitives of tally: the CloudEvents envelope every subsystem speaks, validated
//! identifiers, and the key → partition mapping that both bus backends agree on.

pub mod envelope;
pub mod ids;
pub mod partition;
pub mod whole;

pub use envelope::{Attributes, Envelope, EnvelopeError, EventKey, headers};
pub use ids::{ChannelId, IdError, LocationId, Sku};

/// Milliseconds since the Unix epoch, the one clock unit stored and compared inside tally.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}
