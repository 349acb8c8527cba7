//! What the fraud engine stores, caches and publishes: the decision record (the domain's
//! decision plus what makes it auditable and replayable), and its keys.

use serde::{Deserialize, Serialize};
use tally_fraud::{Decision, Verdict};

/// A shadow version's opinion: scored and stored, never acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowScore {
    /// The version.
    pub version: String,
    /// Its score (`None`: it could not score).
    pub score: Option<f32>,
    /// What it would have decided.
    pub verdict: Option<Verdict>,
}

/// A decision as stored (first wins, by transaction id), cached and published on
/// `fraud.decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
    /// The features scored, in the schema's order (the audit trail: what the model saw).
    pub features: Vec<f32>,
    /// The shadow version's opinion, if one was flagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowScore>,
    /// The offset of the transaction event that was decided (a later delivery of the same
    /// transaction at another offset is a duplicate; at the same offset, a replay).
    pub offset: u64,
    /// Topic partition it was decided on.
    pub partition: u32,
}

/// What applying an event yields (kept with its idempotency record, answered to a waiting
/// caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FraudOutcome {
    /// A transaction's decision.
    Decided(Box<DecisionRecord>),
    /// A profile stored.
    ProfileStored,
    /// A label stored (and joined to its decision when found).
    LabelStored {
        /// Whether the transaction's decision was found.
        joined: bool,
    },
}

impl FraudOutcome {
    /// Outcome codes (`outcome` label values).
    pub const CODES: [&'static str; 5] = ["approve", "review", "decline", "profile_stored", "label_stored"];

    /// Its code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Decided(d) => d.decision.verdict.code(),
            Self::ProfileStored => "profile_stored",
            Self::LabelStored { .. } => "label_stored",
        }
    }
}

/// Cache key of a transaction's decision.
pub fn decision_key(transaction: &str) -> String {
    format!("fraud:decision:{transaction}")
}

/// Cache key of an account's profile.
pub fn profile_key(account: &str) -> String {
    format!("fraud:profile:{account}")
}

pub use tally_core::fnv1a;

/// Store document key of an account's history.
pub fn history_doc(account: &str) -> String {
    format!("history/{account}")
}

/// Store document key of an account's profile.
pub fn profile_doc(account: &str) -> String {
    format!("profile/{account}")
}

/// Store key of a transaction's appended rows (its decision, its label).
pub fn transaction_rows(transaction: &str) -> String {
    format!("tx/{transaction}")
}

/// The flags' document key (each revision is claimed by the row `flags/<revision>`,
/// `ledger::claim_version`).
pub const FLAGS_DOC: &str = "flags";
