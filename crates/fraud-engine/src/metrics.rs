//! Fraud's metrics (`tally_fraud_…`) and the counters the demo and the benchmark read.

#![allow(clippy::disallowed_macros)] // the one place fraud touches the `metrics` macros

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tally_fraud::{DecidedBy, Decision, Verdict};
use tally_model::ScoreError;
use tally_runtime::metrics::{Family, Kind};

use crate::handler::REFUSALS;
use crate::quality::VersionQuality;
use crate::records::FraudOutcome;

/// Metric names.
pub mod names {
    /// Decisions, by verdict and who decided.
    pub const DECISIONS_TOTAL: &str = "tally_fraud_decisions_total";
    /// Transactions seen again under another event id (their decision reused).
    pub const DUPLICATE_TRANSACTIONS_TOTAL: &str = "tally_fraud_duplicate_transactions_total";
    /// Rounds the model did not score, by reason (`open`, `deadline`, `failed`).
    pub const MODEL_UNAVAILABLE_TOTAL: &str = "tally_fraud_model_unavailable_total";
    /// One round's model calls (micro-batched), wall time.
    pub const MODEL_CALL_SECONDS: &str = "tally_fraud_model_call_seconds";
    /// Transaction time → decision published.
    pub const DECISION_LATENCY_SECONDS: &str = "tally_fraud_decision_latency_seconds";
    /// ROC-AUC over the quality window, by model version.
    pub const MODEL_ROC_AUC: &str = "tally_fraud_model_roc_auc";
    /// Precision at the review threshold over the window, by model version.
    pub const MODEL_PRECISION: &str = "tally_fraud_model_precision";
    /// Recall at the review threshold over the window, by model version.
    pub const MODEL_RECALL: &str = "tally_fraud_model_recall";
    /// Labelled decisions in the window, by model version.
    pub const MODEL_LABELLED: &str = "tally_fraud_model_labelled";
    /// Population stability index of a feature against the training reference, by model
    /// version and feature (a feature of the version's schema: a bounded set).
    pub const FEATURE_PSI: &str = "tally_fraud_feature_psi";
}

/// Fraud's metric families (help texts; zero series where the labels are known), its own and
/// its consumer runtime's.
pub fn families() -> Vec<Family> {
    use Kind::*;
    use names::*;
    let mut all = vec![
        Family {
            name: DECISIONS_TOTAL.into(),
            kind: Counter,
            help: "Fraud decisions, by verdict and who decided.",
            known: Some(("verdict", Vec::new())),
        },
        Family {
            name: DUPLICATE_TRANSACTIONS_TOTAL.into(),
            kind: Counter,
            help: "Transactions seen again under another event id (their decision reused).",
            known: None,
        },
        Family {
            name: MODEL_UNAVAILABLE_TOTAL.into(),
            kind: Counter,
            help: "Rounds the model did not score, by reason (open, deadline, failed).",
            known: Some(("reason", vec!["open", "deadline", "failed"])),
        },
        Family {
            name: MODEL_CALL_SECONDS.into(),
            kind: Histogram,
            help: "Seconds one round's model calls took (micro-batched).",
            known: None,
        },
        Family {
            name: DECISION_LATENCY_SECONDS.into(),
            kind: Histogram,
            help: "Seconds from a transaction's event time to its decision published.",
            known: None,
        },
        Family {
            name: MODEL_ROC_AUC.into(),
            kind: Gauge,
            help: "ROC-AUC of the labelled decisions in the quality window, by model version.",
            known: None,
        },
        Family {
            name: MODEL_PRECISION.into(),
            kind: Gauge,
            help: "Precision at the review threshold in the quality window, by model version.",
            known: None,
        },
        Family {
            name: MODEL_RECALL.into(),
            kind: Gauge,
            help: "Recall at the review threshold in the quality window, by model version.",
            known: None,
        },
        Family {
            name: MODEL_LABELLED.into(),
            kind: Gauge,
            help: "Labelled decisions in the quality window, by model version.",
            known: None,
        },
        Family {
            name: FEATURE_PSI.into(),
            kind: Gauge,
            help: "Population stability index of a feature against the training reference, by model version and feature.",
            known: None,
        },
    ];
    all.extend(tally_runtime::metrics::families("fraud", &FraudOutcome::CODES, &REFUSALS));
    all
}

/// Counters for the demo and the benchmark.
#[derive(Debug, Default)]
pub struct FraudStats {
    /// Decisions by who decided: model, cache, rules.
    pub by_model: AtomicU64,
    /// By the cache.
    pub by_cache: AtomicU64,
    /// By the rules.
    pub by_rules: AtomicU64,
    /// Approved.
    pub approved: AtomicU64,
    /// Reviewed.
    pub reviewed: AtomicU64,
    /// Declined.
    pub declined: AtomicU64,
    /// Duplicate transactions.
    pub duplicates: AtomicU64,
    /// Event time → published, in microseconds.
    pub latency_us: Mutex<Vec<u64>>,
}

impl FraudStats {
    /// Decisions so far.
    pub fn decisions(&self) -> u64 {
        self.approved.load(Ordering::Relaxed)
            + self.reviewed.load(Ordering::Relaxed)
            + self.declined.load(Ordering::Relaxed)
    }
}

/// Fraud's metric handles.
#[derive(Debug, Default)]
pub struct FraudMetrics {
    /// Counters.
    pub stats: std::sync::Arc<FraudStats>,
}

impl FraudMetrics {
    /// Metrics over `stats`.
    pub fn new(stats: std::sync::Arc<FraudStats>) -> Self {
        Self { stats }
    }

    /// Exports the quality report as gauges.
    pub fn quality(&self, report: &[VersionQuality]) {
        for v in report {
            let version = v.version.clone();
            let set = |name: &'static str, value: Option<f64>| {
                if let Some(value) = value {
                    metrics::gauge!(name, "version" => version.clone()).set(value);
                }
            };
            set(names::MODEL_ROC_AUC, v.labels.roc_auc);
            set(names::MODEL_PRECISION, v.labels.precision);
            set(names::MODEL_RECALL, v.labels.recall);
            set(names::MODEL_LABELLED, Some(v.labels.labelled as f64));
            for d in &v.drift {
                metrics::gauge!(names::FEATURE_PSI, "version" => version.clone(), "feature" => d.feature.clone())
                    .set(d.psi);
            }
        }
    }

    /// A decision was made (or a replayed one reused).
    pub fn decided(&self, d: &Decision) {
        let by = match d.decided_by {
            DecidedBy::Model => &self.stats.by_model,
            DecidedBy::Cache => &self.stats.by_cache,
            DecidedBy::Rules => &self.stats.by_rules,
        };
        by.fetch_add(1, Ordering::Relaxed);
        let verdict = match d.verdict {
            Verdict::Approve => &self.stats.approved,
            Verdict::Review => &self.stats.reviewed,
            Verdict::Decline => &self.stats.declined,
        };
        verdict.fetch_add(1, Ordering::Relaxed);
        let decided_by = match d.decided_by {
            DecidedBy::Model => "model",
            DecidedBy::Cache => "cache",
            DecidedBy::Rules => "rules",
        };
        metrics::counter!(names::DECISIONS_TOTAL, "verdict" => d.verdict.code(), "decided_by" => decided_by)
            .increment(1);
    }

    /// A duplicate transaction's decision was reused.
    pub fn duplicate_transaction(&self) {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::DUPLICATE_TRANSACTIONS_TOTAL).increment(1);
    }

    /// The model did not score a round.
    pub fn model_unavailable(&self, e: &ScoreError) {
        let reason = match e {
            ScoreError::Open => "open",
            ScoreError::Deadline => "deadline",
            ScoreError::Failed(_) => "failed",
        };
        metrics::counter!(names::MODEL_UNAVAILABLE_TOTAL, "reason" => reason).increment(1);
    }

    /// A round's model calls took `took`.
    pub fn model_call(&self, took: Duration) {
        metrics::histogram!(names::MODEL_CALL_SECONDS).record(took.as_secs_f64());
    }

    /// Decisions of transactions at `event_times_us` were published at `published_us`.
    pub fn published(&self, event_times_us: &[i64], published_us: i64) {
        let mut samples = self.stats.latency_us.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in event_times_us {
            let us = (published_us - t).max(0) as u64;
            metrics::histogram!(names::DECISION_LATENCY_SECONDS).record(us as f64 / 1e6);
            if samples.len() < 1_000_000 {
                samples.push(us);
            }
        }
    }
}
