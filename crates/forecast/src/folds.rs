//! Rolling-origin folds, cut exactly as statsforecast's `cross_validation` cuts them, so that
//! tally and the peer are scored on the same windows.
//!
//! With `h` steps, `windows` folds and `step` between origins, the last
//! `test = h + step·(windows − 1)` points are the test span; fold `w` (0-based) trains on
//! `y[..n − test + w·step]` (an expanding window from the start) and is scored on the `h`
//! points after it.

/// One fold: train on `y[..train_end]`, score on `y[train_end..train_end + h]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fold {
    /// End (exclusive) of the training span.
    pub train_end: usize,
    /// Points scored after it.
    pub h: usize,
}

/// The folds of a series of length `n`, oldest origin first; empty when the series is not
/// longer than the test span (statsforecast refuses such a series).
pub fn folds(n: usize, h: usize, windows: usize, step: usize) -> Vec<Fold> {
    if h == 0 || windows == 0 {
        return Vec::new();
    }
    let step = step.max(1);
    let test = h + step * (windows - 1);
    if n <= test {
        return Vec::new();
    }
    (0..windows).map(|w| Fold { train_end: n - test + w * step, h }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_match_statsforecasts_cross_validation_cut() {
        // statsforecast: n = 20, h = 3, n_windows = 3, step_size = 2 → train lengths 13, 15, 17;
        // targets 13–15, 15–17, 17–19.
        let f = folds(20, 3, 3, 2);
        assert_eq!(f.iter().map(|f| f.train_end).collect::<Vec<_>>(), vec![13, 15, 17]);
        assert!(f.iter().all(|f| f.h == 3));
        assert_eq!(f.last().map(|f| f.train_end + f.h), Some(20), "the last fold ends with the series");
        assert!(folds(7, 3, 3, 2).is_empty(), "a series no longer than the test span has no folds");
        assert_eq!(folds(10, 2, 1, 1), vec![Fold { train_end: 8, h: 2 }]);
    }
}
