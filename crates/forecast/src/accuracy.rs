//! How accurate a forecast was: the measures `docs/forecast.md` reports per method and data set.

/// Weighted absolute percentage error: Σ|y − ŷ| / Σ|y| (`None` when every actual is 0).
pub fn wape(actual: &[f64], forecast: &[f64]) -> Option<f64> {
    let (err, total) = actual.iter().zip(forecast).fold((0.0, 0.0), |(e, t), (y, f)| (e + (y - f).abs(), t + y.abs()));
    (total > 0.0).then(|| err / total)
}

/// Bias: Σ(ŷ − y) / Σ|y| — positive when the forecast is too high (`None` when every actual
/// is 0).
pub fn bias(actual: &[f64], forecast: &[f64]) -> Option<f64> {
    let (err, total) = actual.iter().zip(forecast).fold((0.0, 0.0), |(e, t), (y, f)| (e + (f - y), t + y.abs()));
    (total > 0.0).then(|| err / total)
}

/// Mean absolute scaled error: the forecast's mean absolute error divided by the in-sample mean
/// absolute error of the seasonal naive forecast with period `m` on `history` (`None` when that
/// is 0 or the history is not longer than `m`).
pub fn mase(history: &[f64], actual: &[f64], forecast: &[f64], m: usize) -> Option<f64> {
    let m = m.max(1);
    if history.len() <= m || actual.is_empty() {
        return None;
    }
    let scale = history.windows(m + 1).map(|w| (w[m] - w[0]).abs()).sum::<f64>() / (history.len() - m) as f64;
    let mae = actual.iter().zip(forecast).map(|(y, f)| (y - f).abs()).sum::<f64>() / actual.len() as f64;
    (scale > 0.0).then(|| mae / scale)
}

/// Share of actuals inside their interval `[lo, hi]` (`None` for no actuals).
pub fn coverage(actual: &[f64], lo: &[f64], hi: &[f64]) -> Option<f64> {
    if actual.is_empty() {
        return None;
    }
    let inside = actual.iter().zip(lo.iter().zip(hi)).filter(|(y, (l, h))| *l <= *y && *y <= *h).count();
    Some(inside as f64 / actual.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_match_their_definitions_on_a_hand_computed_case() {
        let actual = [10.0, 0.0, 5.0, 5.0];
        let forecast = [8.0, 1.0, 5.0, 7.0];
        // |err| = 2 + 1 + 0 + 2 = 5 over Σ|y| = 20.
        assert_eq!(wape(&actual, &forecast), Some(0.25));
        // Σ(f − y) = −2 + 1 + 0 + 2 = 1 over 20.
        assert_eq!(bias(&actual, &forecast), Some(0.05));
        // Naive (m = 1) on [1, 3, 2]: |2| + |−1| = 3 over 2 steps = 1.5; MAE 5/4 = 1.25.
        let m = mase(&[1.0, 3.0, 2.0], &actual, &forecast, 1).expect("mase");
        assert!((m - 1.25 / 1.5).abs() < 1e-12);
        assert_eq!(coverage(&actual, &[9.0, 0.0, 6.0, 4.0], &[11.0, 0.5, 7.0, 6.0]), Some(0.75));
        assert_eq!(wape(&[0.0, 0.0], &[1.0, 2.0]), None);
        assert_eq!(mase(&[1.0, 1.0, 1.0], &actual, &forecast, 1), None, "a flat history scales nothing");
    }
}
