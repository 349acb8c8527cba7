//! The fraud scoring domain, without I/O: payment transactions parsed at the boundary, the
//! per-account history they build, and the features the model scores. The engine that runs it
//! on the consumer runtime, the model client and the model server are other crates
//! (`docs/fraud.md`).

pub mod features;
pub mod history;
pub mod transaction;

pub use features::{FeatureSchema, Profile};
pub use history::{History, Observed, Windows};
pub use transaction::{Channel, Country, Currency, Transaction, TransactionError};
