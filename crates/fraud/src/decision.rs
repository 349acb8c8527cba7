//! Decisions: a score and the thresholds of the model version that made it give `approve`,
//! `review` or `decline`; hard rules come first; every decision says why.

use serde::{Deserialize, Serialize};
use tally_core::{AccountId, TransactionId};

/// What happens to the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let it through.
    Approve,
    /// Let a person look (or step up authentication).
    Review,
    /// Refuse it.
    Decline,
}

impl Verdict {
    /// Its code (a metric label).
    pub fn code(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Review => "review",
            Self::Decline => "decline",
        }
    }
}

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The model scored it now.
    Model,
    /// A score kept from an earlier call (the same transaction, or the same features recently).
    Cache,
    /// The rules: a hard rule fired, or the model was down, slow without a cached score, or its
    /// circuit open.
    Rules,
}

/// Score thresholds of one model version: at or above `decline` → decline, at or above
/// `review` → review, else approve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Lowest score reviewed.
    pub review: f32,
    /// Lowest score declined.
    pub decline: f32,
}

impl Thresholds {
    /// The verdict for `score`.
    pub fn verdict(&self, score: f32) -> Verdict {
        if score >= self.decline {
            Verdict::Decline
        } else if score >= self.review {
            Verdict::Review
        } else {
            Verdict::Approve
        }
    }
}

/// One reason behind a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// A code: a rule (`deny_list`, `amount_limit`, `new_device_foreign_country` …) or
    /// `feature` for a feature that pushed the model's score.
    pub code: String,
    /// The feature, for `feature` reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// How much it pushed the score (the model's own units), for `feature` reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contribution: Option<f32>,
}

impl Reason {
    /// A rule that fired.
    pub fn rule(code: &str) -> Self {
        Self { code: code.to_owned(), feature: None, contribution: None }
    }

    /// A feature that pushed the score by `contribution`.
    pub fn feature(name: &str, contribution: f32) -> Self {
        Self { code: "feature".to_owned(), feature: Some(name.to_owned()), contribution: Some(contribution) }
    }
}

/// The features that pushed a score up most: up to `k` of the positive contributions, largest
/// first (ties by name, so the same contributions always give the same reasons).
pub fn top_features(names: &[String], contributions: &[f32], k: usize) -> Vec<Reason> {
    let mut pushed: Vec<(&String, f32)> =
        names.iter().zip(contributions.iter().copied()).filter(|(_, c)| *c > 0.0 && c.is_finite()).collect();
    pushed.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    pushed.into_iter().take(k).map(|(name, c)| Reason::feature(name, c)).collect()
}

/// The decision about one transaction, as stored, cached and published on `fraud.decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The transaction.
    pub transaction_id: TransactionId,
    /// Its account (the key of `fraud.decisions`).
    pub account_id: AccountId,
    /// What happens to it.
    pub verdict: Verdict,
    /// The score (0 to 1) behind it.
    pub score: f32,
    /// Who decided.
    pub decided_by: DecidedBy,
    /// The model version whose thresholds applied (and that scored it, unless the rules did).
    pub model_version: String,
    /// The feature schema version of the vector scored.
    pub schema_version: u32,
    /// Why: rules that fired, then the features that pushed the score most.
    pub reasons: Vec<Reason>,
    /// When it was decided (Unix ms).
    pub decided_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_split_scores_into_verdicts() {
        let t = Thresholds { review: 0.5, decline: 0.9 };
        assert_eq!(
            [0.0, 0.49, 0.5, 0.89, 0.9, 1.0].map(|s| t.verdict(s)),
            [Verdict::Approve, Verdict::Approve, Verdict::Review, Verdict::Review, Verdict::Decline, Verdict::Decline,]
        );
    }

    #[test]
    fn reasons_name_the_features_that_pushed_the_score_most() {
        let names: Vec<String> = ["amount", "new_device", "hour_of_day", "country_mismatch"].map(String::from).to_vec();
        let reasons = top_features(&names, &[0.8, 1.5, -2.0, 0.8], 3);
        let named: Vec<&str> = reasons.iter().filter_map(|r| r.feature.as_deref()).collect();
        assert_eq!(named, ["new_device", "amount", "country_mismatch"], "largest first, ties by name, none negative");
        assert!(top_features(&names, &[0.0, -1.0, f32::NAN, 0.0], 3).is_empty());
    }
}
