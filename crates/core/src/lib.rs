//! Shared primitives of tally: the CloudEvents envelope every subsystem speaks, validated
//! identifiers, and the key → partition mapping that both bus backends agree on.

pub mod envelope;
pub mod ids;
pub mod partition;
pub mod whole;

pub use envelope::{Attributes, Envelope, EnvelopeError, EventKey, headers};
pub use ids::{AccountId, ChannelId, IdError, LocationId, Sku, TransactionId};

/// Whether retrying a failed backend operation can help: every backend error says which, so
/// a retry loop never spins on a failure that repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// The connection was lost, a timeout or lock wait expired, a broker or database was
    /// restarting or chose this transaction as a serialization or deadlock victim: the same
    /// operation may succeed later.
    Transient,
    /// The data can never be written as it is (a constraint the rows violate, a missing table,
    /// topic or privilege, a record too large, a corrupt row): retrying repeats the failure.
    Permanent,
}

/// The largest quantity tally accepts or holds, in units, for every quantity field of an event
/// (`on_hand`, `delta`, `safety_stock`, `quantity`, `shown`, `change_from_quantity`), every
/// stored level and every configured cap or buffer. Far above any real stock, and far enough
/// below `i64::MAX` that sums over locations and channel shares cannot overflow. An event that
/// would take a stored level past it is dead-lettered (`quantity_out_of_range`).
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;

/// Milliseconds since the Unix epoch, the one clock unit stored and compared inside tally.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// FNV-1a (64-bit) of `bytes`: stable across processes and releases, unlike the std hasher —
/// what request digests and stable ids are made of.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
