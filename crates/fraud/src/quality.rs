//! Watching the model in production: labels (chargebacks and confirmed-legitimate outcomes,
//! days later) joined to the decisions they concern give, per model version and over a sliding
//! window, precision and recall at the version's thresholds, ROC-AUC and the score
//! distribution; per-feature drift is the population stability index against the training
//! reference shipped with the model.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One labelled decision: the score the model gave and what the transaction turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Labelled {
    /// The score (0 to 1).
    pub score: f32,
    /// Whether it was fraud.
    pub fraud: bool,
}

/// The last `capacity` labelled decisions of one model version.
#[derive(Debug, Clone)]
pub struct QualityWindow {
    recent: VecDeque<Labelled>,
    capacity: usize,
}

/// What the window says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Labelled decisions in the window.
    pub labelled: usize,
    /// Of them, fraud.
    pub fraud: usize,
    /// Share of flagged (score ≥ threshold) that were fraud; `None` when nothing was flagged.
    pub precision: Option<f64>,
    /// Share of fraud that was flagged; `None` without fraud.
    pub recall: Option<f64>,
    /// Area under the ROC curve; `None` without both classes.
    pub roc_auc: Option<f64>,
    /// Scores in ten bins of 0.1.
    pub score_histogram: [usize; 10],
}

impl QualityWindow {
    /// An empty window of `capacity` labelled decisions.
    pub fn new(capacity: usize) -> Self {
        Self { recent: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Adds a labelled decision, forgetting the oldest past the capacity.
    pub fn push(&mut self, labelled: Labelled) {
        self.recent.push_back(labelled);
        while self.recent.len() > self.capacity {
            self.recent.pop_front();
        }
    }

    /// The report at `threshold` (the version's review threshold: what it flags).
    pub fn report(&self, threshold: f32) -> QualityReport {
        let all: Vec<Labelled> = self.recent.iter().copied().collect();
        let fraud = all.iter().filter(|l| l.fraud).count();
        let flagged = all.iter().filter(|l| l.score >= threshold).count();
        let caught = all.iter().filter(|l| l.fraud && l.score >= threshold).count();
        let mut score_histogram = [0usize; 10];
        for l in &all {
            let bin = ((l.score.clamp(0.0, 1.0) * 10.0) as usize).min(9);
            score_histogram[bin] += 1;
        }
        QualityReport {
            labelled: all.len(),
            fraud,
            precision: (flagged > 0).then(|| caught as f64 / flagged as f64),
            recall: (fraud > 0).then(|| caught as f64 / fraud as f64),
            roc_auc: roc_auc(&all),
            score_histogram,
        }
    }
}

/// ROC-AUC: the probability that a random fraud scores above a random legitimate transaction
/// (ties count half), by ranking. `None` without both classes.
pub fn roc_auc(labelled: &[Labelled]) -> Option<f64> {
    let positives = labelled.iter().filter(|l| l.fraud).count();
    let negatives = labelled.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<Labelled> = labelled.to_vec();
    sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
    // Mann–Whitney U with average ranks for ties.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].score == sorted[i].score {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += sorted[i..=j].iter().filter(|l| l.fraud).count() as f64 * average_rank;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Population stability index of `actual` against `expected`, two distributions over the same
/// bins (counts or shares): Σ (a − e) · ln(a / e) over shares, with empty bins floored at a
/// small share so an unseen bin counts heavily but finitely. Under 0.1 is stable; over 0.25, the
/// feature has drifted.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    const FLOOR: f64 = 1e-4;
    let total = |v: &[f64]| v.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let (te, ta) = (total(expected), total(actual));
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            let (e, a) = ((e / te).max(FLOOR), (a / ta).max(FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The bin of `value` among ascending `edges` (n edges make n + 1 bins).
pub fn bin_of(edges: &[f64], value: f64) -> usize {
    edges.partition_point(|&edge| edge <= value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(score: f32, fraud: bool) -> Labelled {
        Labelled { score, fraud }
    }

    #[test]
    fn roc_auc_ranks_fraud_above_legitimate() {
        assert_eq!(roc_auc(&[l(0.9, true), l(0.8, true), l(0.2, false), l(0.1, false)]), Some(1.0));
        assert_eq!(roc_auc(&[l(0.1, true), l(0.9, false)]), Some(0.0));
        assert_eq!(roc_auc(&[l(0.5, true), l(0.5, false)]), Some(0.5), "a tie counts half");
        // 3 of the 4 pairs ordered right.
        assert_eq!(roc_auc(&[l(0.9, true), l(0.3, true), l(0.5, false), l(0.1, false)]), Some(0.75));
        assert_eq!(roc_auc(&[l(0.9, true)]), None);
    }

    #[test]
    fn the_window_reports_precision_recall_and_the_score_distribution() {
        let mut w = QualityWindow::new(4);
        for x in [l(0.05, false), l(0.95, true), l(0.7, false), l(0.8, true), l(0.3, true)] {
            w.push(x);
        }
        let r = w.report(0.5);
        // Left: 0.95 fraud, 0.7 legitimate, 0.8 fraud, 0.3 fraud (the 0.05 one left).
        assert_eq!((r.labelled, r.fraud), (4, 3), "the oldest left the window");
        assert_eq!(r.precision, Some(2.0 / 3.0), "0.95 and 0.8 of the three flagged");
        assert_eq!(r.recall, Some(2.0 / 3.0), "0.3 was missed");
        assert_eq!(r.score_histogram[9] + r.score_histogram[8] + r.score_histogram[7] + r.score_histogram[3], 4);
    }

    #[test]
    fn psi_is_zero_for_the_same_distribution_and_grows_with_drift() {
        let reference = [10.0, 20.0, 40.0, 20.0, 10.0];
        assert!(psi(&reference, &reference).abs() < 1e-12);
        let slight = psi(&reference, &[12.0, 20.0, 38.0, 20.0, 10.0]);
        let drifted = psi(&reference, &[40.0, 30.0, 20.0, 5.0, 5.0]);
        assert!(slight < 0.1 && drifted > 0.25, "{slight} {drifted}");
        assert_eq!([bin_of(&[1.0, 2.0], 0.5), bin_of(&[1.0, 2.0], 1.0), bin_of(&[1.0, 2.0], 9.0)], [0, 1, 2]);
    }
}
