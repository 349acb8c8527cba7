//! One transaction measured: its account's history observed (then extended), the feature
//! vector of a schema, the hard rules' verdict and the rule-based score. What the engine does
//! before asking the model, and what the training set is made of — one function, so the model
//! is trained on exactly the features it is served.

use crate::decision::{Reason, Verdict};
use crate::features::FeatureSchema;
use crate::history::{History, Observed};
use crate::profile::Profile;
use crate::rules::{HardRules, rule_score};
use crate::transaction::Transaction;

/// What is known of a transaction before any model is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessed {
    /// What the history said about it (before it was added).
    pub observed: Observed,
    /// Its features in the schema's order; `None` if the schema names a feature this build does
    /// not compute (the model version cannot score here; the rules decide).
    pub features: Option<Vec<f32>>,
    /// The hard rules' verdict, if one decides.
    pub hard: Option<(Verdict, Reason)>,
    /// The rule-based score and the rules that raised it.
    pub rule_score: f32,
    /// Those rules.
    pub rule_reasons: Vec<Reason>,
}

/// Measures `tx` against `history` (which then includes it) and `profile`.
pub fn assess(
    schema: &FeatureSchema,
    rules: &HardRules,
    history: &mut History,
    tx: &Transaction,
    profile: Option<&Profile>,
) -> Assessed {
    let observed = history.observe(tx);
    let features = schema.vector(tx, &observed, profile);
    let hard = rules.decide(tx, &observed);
    let (score, rule_reasons) = rule_score(tx, &observed, profile);
    Assessed { observed, features, hard, rule_score: score, rule_reasons }
}
