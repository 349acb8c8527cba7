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

/// Days the backtest scores per configured window: a horizon shorter than this gets
/// proportionally more folds, so that the choice rests on as many scored days whatever the
/// horizon. With few scored days the choice among nine methods is mostly noise: on M5's 21-day
/// series, two 7-day folds gave WAPE 0.7604, eight (a day apart) 0.7438.
pub const FOLD_DAYS: usize = 28;

/// The most folds a short horizon gets (each refits every candidate): a 1-day horizon would
/// otherwise take 56.
pub const MAX_FOLDS: usize = 8;

/// The backtest of a series of `n` days: at least `windows` folds of `h` days, more for a
/// horizon shorter than [`FOLD_DAYS`] (up to [`MAX_FOLDS`]); origins a horizon apart, or
/// closer (down to a day) where the series cannot hold them apart with `min_train` training
/// days before the first; fewer folds where it cannot hold them a day apart; none for a series
/// shorter than `min_train + h`.
pub fn plan(n: usize, h: usize, windows: usize, min_train: usize) -> Vec<Fold> {
    let (step, windows) = spacing(n, h, windows, min_train);
    folds(n, h, windows, step)
}

/// The `(step, windows)` of [`plan`] (`windows` 0 for no backtest) — what statsforecast's
/// `cross_validation` is given to cut the same folds.
pub fn spacing(n: usize, h: usize, windows: usize, min_train: usize) -> (usize, usize) {
    if h == 0 || windows == 0 || n < h + min_train.max(1) {
        return (h.max(1), 0);
    }
    let wanted = windows.max((windows * FOLD_DAYS).div_ceil(h).min(MAX_FOLDS));
    let room = n - h - min_train.max(1);
    let step = if wanted > 1 { (room / (wanted - 1)).clamp(1, h) } else { h };
    (step, wanted.min(room / step + 1))
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

    #[test]
    fn a_short_horizon_gets_more_folds_and_a_short_series_closer_origins() {
        let ends = |f: Vec<Fold>| f.iter().map(|f| f.train_end).collect::<Vec<_>>();
        // The default: two four-week folds, four weeks apart.
        assert_eq!(ends(plan(730, 28, 2, 7)), vec![674, 702]);
        // A week's horizon: eight folds a week apart score as many days.
        assert_eq!(spacing(730, 7, 2, 7), (7, 8));
        assert_eq!(plan(730, 7, 2, 7).len(), 8);
        // A day's horizon: no more than eight folds; more windows asked for are granted.
        assert_eq!(spacing(730, 1, 2, 7), (1, MAX_FOLDS));
        assert_eq!(spacing(730, 1, 10, 7), (1, 10));
        // M5's 21 days: eight origins a day apart after the first week.
        assert_eq!(ends(plan(21, 7, 2, 7)), (7..=14).collect::<Vec<_>>());
        // 40 days and four weeks: two folds five days apart instead of none.
        assert_eq!(ends(plan(40, 28, 2, 7)), vec![7, 12]);
        // Exactly one fold's room, and less than that.
        assert_eq!(ends(plan(35, 28, 2, 7)), vec![7]);
        assert!(plan(34, 28, 2, 7).is_empty());
        assert!(plan(730, 28, 0, 7).is_empty());
        // Every fold ends inside the series and the last one with it.
        for n in 1..120 {
            for h in [1, 7, 28] {
                let f = plan(n, h, 2, 7);
                assert!(f.iter().all(|f| f.train_end >= 7 && f.train_end + f.h <= n), "{n} {h} {f:?}");
                assert!(f.last().is_none_or(|f| f.train_end + f.h == n), "{n} {h} {f:?}");
            }
        }
    }
}
