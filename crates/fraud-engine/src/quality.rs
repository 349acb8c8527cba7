//! The model's quality in production, per model version: labels joined to the scores the
//! version gave (a sliding window: precision, recall at its review threshold, ROC-AUC, score
//! histogram) and the distribution of what it was asked to score against its training
//! reference (PSI per feature). Shared by the partitions of this process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use tally_fraud::quality::bin_of;
use tally_fraud::{Labelled, QualityReport, QualityWindow, psi};

use crate::cards::Card;

/// One version's watch.
#[derive(Debug)]
struct Watch {
    window: QualityWindow,
    review: f32,
    features: Vec<String>,
    /// Per feature (schema order): its reference and what production brought (None: no
    /// reference shipped).
    bins: Vec<Option<FeatureBins>>,
    scored: u64,
}

/// One feature's bins: the training reference and the production counts.
#[derive(Debug)]
struct FeatureBins {
    edges: Vec<f64>,
    share: Vec<f64>,
    counts: Vec<f64>,
}

/// Per-feature drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// The feature.
    pub feature: String,
    /// PSI of production against the training reference (under 0.1 stable, over 0.25 drifted).
    pub psi: f64,
}

/// A version's quality report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionQuality {
    /// The model version.
    pub version: String,
    /// Vectors it scored in this process.
    pub scored: u64,
    /// Labelled decisions in the window, and what they say.
    #[serde(flatten)]
    pub labels: QualityReport,
    /// The review threshold precision and recall are taken at.
    pub threshold: f32,
    /// Drift per feature with a reference.
    pub drift: Vec<Drift>,
}

/// Quality per model version.
#[derive(Debug)]
pub struct Quality {
    window: usize,
    versions: Mutex<BTreeMap<String, Watch>>,
}

impl Quality {
    /// Windows of `window` labelled decisions per version.
    pub fn new(window: usize) -> Self {
        Self { window, versions: Mutex::new(BTreeMap::new()) }
    }

    fn with<T>(&self, card: &Card, f: impl FnOnce(&mut Watch) -> T) -> T {
        let mut versions = self.versions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let watch = versions.entry(card.version.clone()).or_insert_with(|| Watch {
            window: QualityWindow::new(self.window),
            review: card.thresholds.review,
            features: card.schema.names.clone(),
            bins: card
                .reference
                .iter()
                .map(|r| {
                    r.as_ref().map(|r| FeatureBins {
                        edges: r.edges.clone(),
                        share: r.share.clone(),
                        counts: vec![0.0; r.share.len()],
                    })
                })
                .collect(),
            scored: 0,
        });
        f(watch)
    }

    /// `card`'s version was asked to score these rows (row-major).
    pub fn scored(&self, card: &Card, rows: &[f32]) {
        let width = card.schema.names.len().max(1);
        self.with(card, |w| {
            for row in rows.chunks_exact(width) {
                w.scored += 1;
                for (value, bins) in row.iter().zip(w.bins.iter_mut()) {
                    if let Some(b) = bins {
                        let at = bin_of(&b.edges, f64::from(*value)).min(b.counts.len().saturating_sub(1));
                        b.counts[at] += 1.0;
                    }
                }
            }
        });
    }

    /// A label arrived for a transaction `card`'s version scored `score`.
    pub fn labelled(&self, card: &Card, score: f32, fraud: bool) {
        self.with(card, |w| w.window.push(Labelled { score, fraud }));
    }

    /// Every version's report.
    pub fn report(&self) -> Vec<VersionQuality> {
        let versions = self.versions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        versions
            .iter()
            .map(|(version, w)| VersionQuality {
                version: version.clone(),
                scored: w.scored,
                labels: w.window.report(w.review),
                threshold: w.review,
                drift: w
                    .features
                    .iter()
                    .zip(&w.bins)
                    .filter_map(|(f, b)| {
                        let b = b.as_ref()?;
                        (b.counts.iter().sum::<f64>() > 0.0)
                            .then(|| Drift { feature: f.clone(), psi: psi(&b.share, &b.counts) })
                    })
                    .collect(),
            })
            .collect()
    }
}
