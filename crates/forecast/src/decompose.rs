//! Classical seasonal decomposition (a centred moving-average trend, then per-position means of
//! the detrended series), as statsmodels' `seasonal_decompose` — what statsforecast starts its
//! ETS states and Theta's deseasonalising from.

/// Additive (`y − trend`) or multiplicative (`y / trend`) seasonality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Seasonal effects added to the level.
    Additive,
    /// Seasonal factors multiplying the level.
    Multiplicative,
}

/// The seasonal index of each position in the cycle (`index[t mod m]` applies at time `t`),
/// normalised to sum 0 (additive) or average 1 (multiplicative); `None` when the series is
/// shorter than two cycles, or a multiplicative trend is not positive.
pub fn seasonal_indices(y: &[f64], m: usize, kind: Kind) -> Option<Vec<f64>> {
    let n = y.len();
    if m < 2 || n < 2 * m {
        return None;
    }
    // Centred moving average: m + 1 points weighted ½,1,…,1,½ for an even period; m points
    // for an odd one.
    let half = m / 2;
    let mut trend = vec![f64::NAN; n];
    for (t, slot) in trend.iter_mut().enumerate().take(n - half).skip(half) {
        *slot = if m.is_multiple_of(2) {
            let inner: f64 = y[t + 1 - half..t + half].iter().sum();
            (inner + 0.5 * (y[t - half] + y[t + half])) / m as f64
        } else {
            y[t - half..=t + half].iter().sum::<f64>() / m as f64
        };
    }
    let mut sums = vec![0.0; m];
    let mut counts = vec![0usize; m];
    for t in half..n - half {
        let detrended = match kind {
            Kind::Additive => y[t] - trend[t],
            Kind::Multiplicative if trend[t] > 0.0 => y[t] / trend[t],
            Kind::Multiplicative => return None,
        };
        sums[t % m] += detrended;
        counts[t % m] += 1;
    }
    let mut index: Vec<f64> = sums.iter().zip(&counts).map(|(s, &c)| s / c.max(1) as f64).collect();
    let mean = index.iter().sum::<f64>() / m as f64;
    match kind {
        Kind::Additive => index.iter_mut().for_each(|v| *v -= mean),
        Kind::Multiplicative if mean > 0.0 => index.iter_mut().for_each(|v| *v /= mean),
        Kind::Multiplicative => return None,
    }
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_an_exact_pattern_on_a_trend() {
        let pattern = [3.0, -1.0, 0.5, -2.5, 1.0, -0.5, -0.5];
        let y: Vec<f64> = (0..70).map(|t| 10.0 + 0.2 * t as f64 + pattern[t % 7]).collect();
        let index = seasonal_indices(&y, 7, Kind::Additive).expect("indices");
        for (got, want) in index.iter().zip(pattern) {
            assert!((got - want).abs() < 1e-9, "{index:?}");
        }
        let factors = [1.5, 0.5, 1.0, 1.2, 0.8, 1.0, 1.0];
        let y: Vec<f64> = (0..70).map(|t| 50.0 * factors[t % 7]).collect();
        let index = seasonal_indices(&y, 7, Kind::Multiplicative).expect("indices");
        for (got, want) in index.iter().zip(factors) {
            assert!((got - want).abs() < 1e-9, "{index:?}");
        }
        // Even period: the ½-weighted ends keep a linear trend out of the indices.
        let y: Vec<f64> = (0..48).map(|t| 5.0 + t as f64 + if t % 4 == 0 { 2.0 } else { -2.0 / 3.0 }).collect();
        let index = seasonal_indices(&y, 4, Kind::Additive).expect("indices");
        assert!((index[0] - 2.0).abs() < 1e-9 && (index[1] + 2.0 / 3.0).abs() < 1e-9, "{index:?}");
        assert!(seasonal_indices(&y[..7], 4, Kind::Additive).is_none());
    }
}
