//! The fraud scoring domain, without I/O: payment transactions, profiles and labels parsed at
//! the boundary, the per-account history they build, the features the model scores, the rules,
//! decisions and quality statistics. The engine that runs it on the consumer runtime, the model
//! client and the model server are other crates (`docs/fraud.md`).

pub mod assess;
pub mod decision;
pub mod features;
pub mod history;
pub mod label;
pub mod profile;
pub mod quality;
pub mod rules;
pub mod transaction;

pub use assess::{Assessed, assess};
pub use decision::{DecidedBy, Decision, Reason, Thresholds, Verdict, top_features};
pub use features::FeatureSchema;
pub use history::{History, Observed, Windows};
pub use label::Label;
pub use profile::Profile;
pub use quality::{Labelled, QualityReport, QualityWindow, psi, roc_auc};
pub use rules::{HardRules, rule_score};
pub use transaction::{Channel, Country, Currency, Transaction, TransactionError};
