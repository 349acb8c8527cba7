//! The durable store. Its layout is the architecture's:
//! - [`ledger`]: what every subsystem's consumer needs — positions per partition and
//!   idempotency records — behind traits the consumer runtime uses without knowing any
//!   domain type;
//! - [`demand`]: demand forecasting's staging tables (events partitioned by month, the daily
//!   rollup, parked events, reference data);
//! - [`inventory`]: the inventory engine's tables (latest state per SKU, read-model rows, the
//!   audit trail that doubles as its idempotency records), written with the ledger's
//!   positions in one transaction.
//!
//! Two backends implement both, [`sqlite`] (embedded) and [`postgres`] (production), and pass
//! one conformance suite. Writes are set-based — one statement per table per flush — and a row
//! lands only if its version is newer than the stored one, so effects and offsets can never
//! disagree after a crash.

#[cfg(feature = "inventory")]
mod any;
mod any_documents;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod demand;
#[cfg(feature = "inventory")]
pub mod inventory;
pub mod ledger;
pub mod postgres;
pub mod sqlite;

#[cfg(feature = "inventory")]
pub use any::AnyStore;
pub use any_documents::AnyDocuments;
#[cfg(feature = "inventory")]
pub use inventory::{AuditRecord, InventoryEffects, InventoryFlush, InventoryStore, StateRow, serialize_state};
pub use ledger::{ConsumerOffset, Effects, Flush, Journal, Ledger, ProcessedEvent, RawOutcome};
pub use postgres::{PostgresStore, PostgresStoreOptions};
pub use sqlite::{SqliteStore, SqliteStoreOptions};

pub use tally_core::RetryHint;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed; [`StoreError::retry_hint`] says whether a retry can help.
    #[error("the database failed ({hint:?}) while {during}")]
    Backend {
        /// What the store was doing.
        during: &'static str,
        /// Whether a retry can help.
        hint: RetryHint,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stored data could not be decoded (a bug or a foreign write).
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// Decoder error.
        detail: String,
    },
}

impl StoreError {
    /// Whether retrying can help.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Backend { hint, .. } => *hint,
            Self::Corrupt { .. } => RetryHint::Permanent,
        }
    }

    /// Whether retrying can help.
    pub fn is_transient(&self) -> bool {
        self.retry_hint() == RetryHint::Transient
    }
}

/// A stored JSON value; `what` names it in the error if it does not decode.
#[cfg(feature = "inventory")]
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(what: &'static str, raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}

/// An idempotency record from its stored columns (`outcome` as JSON text).
pub(crate) fn decode_processed(
    topic: String,
    partition: u32,
    source: String,
    id: String,
    offset: u64,
    outcome: Option<String>,
    digest: Option<i64>,
) -> Result<ProcessedEvent, StoreError> {
    let outcome = match outcome {
        None => None,
        Some(raw) if raw == "null" => None,
        Some(raw) => Some(RawOutcome::from_json(raw)?),
    };
    Ok(ProcessedEvent { key: tally_core::EventKey { source, id }, topic, partition, offset, outcome, digest })
}
