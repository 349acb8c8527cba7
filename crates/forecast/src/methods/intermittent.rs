//! Methods for intermittent demand (many days without a sale): Croston and its variants, TSB,
//! ADIDA and IMAPA — statsforecast's definitions (`models.py`, `src/ses.cpp`), step for step,
//! so that the same series gives the same forecast.

/// Simple exponential smoothing's one-step forecast: `f₀ = x₀`, `fᵢ = α·xᵢ₋₁ + (1 − α)·fᵢ₋₁`,
/// and the forecast `α·xₙ₋₁ + (1 − α)·fₙ₋₁` (`x₀` for a single point).
fn ses(x: &[f64], alpha: f64) -> f64 {
    match x {
        [] => 0.0,
        [only] => *only,
        _ => {
            let fitted = x[..x.len() - 1].iter().fold(x[0], |f, &v| alpha * v + (1.0 - alpha) * f);
            // `fold` above ends at fₙ₋₁ computed from xₙ₋₂; one more step gives the forecast.
            alpha * x[x.len() - 1] + (1.0 - alpha) * fitted
        }
    }
}

/// In-sample sum of squared one-step errors of SES (0 for fewer than two points).
fn ses_sse(x: &[f64], alpha: f64) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let mut forecast = x[0];
    let mut sse = 0.0;
    for i in 1..x.len() {
        forecast = alpha * x[i - 1] + (1.0 - alpha) * forecast;
        let err = x[i] - forecast;
        sse += err * err;
    }
    sse
}

/// The smoothing in `[lower, upper]` with the least SSE, by golden-section search.
fn golden_section(x: &[f64], lower: f64, upper: f64) -> f64 {
    let gr = (5f64.sqrt() + 1.0) / 2.0;
    let (mut a, mut b) = (lower, upper);
    let mut c = b - (b - a) / gr;
    let mut d = a + (b - a) / gr;
    let (mut fc, mut fd) = (ses_sse(x, c), ses_sse(x, d));
    while (b - a).abs() >= 1e-12 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - (b - a) / gr;
            fc = ses_sse(x, c);
        } else if fd < fc {
            a = c;
            c = d;
            fc = fd;
            d = a + (b - a) / gr;
            fd = ses_sse(x, d);
        } else {
            break;
        }
    }
    (a + b) / 2.0
}

/// SES with its smoothing chosen in [0.1, 0.3].
fn optimized_ses(x: &[f64]) -> f64 {
    ses(x, golden_section(x, 0.1, 0.3))
}

/// The non-zero demands.
fn demands(y: &[f64]) -> Vec<f64> {
    y.iter().copied().filter(|&v| v > 0.0).collect()
}

/// Intervals between demands: the first is the 1-based position of the first non-zero day.
fn intervals(y: &[f64]) -> Vec<f64> {
    let mut last = 0usize;
    let mut out = Vec::new();
    for (i, _) in y.iter().enumerate().filter(|(_, v)| **v != 0.0) {
        out.push((i + 1 - last) as f64);
        last = i + 1;
    }
    out
}

/// Python's `round`: halves go to the even neighbour (ADIDA and IMAPA depend on it).
fn round_half_even(x: f64) -> usize {
    let r = x.round_ties_even();
    if r < 1.0 { 1 } else { r as usize }
}

fn croston(y: &[f64], size: impl Fn(&[f64]) -> f64) -> f64 {
    let yd = demands(y);
    if yd.is_empty() {
        // No demand: statsforecast falls back to the last value.
        return y.last().copied().unwrap_or(0.0);
    }
    let (d, p) = (size(&yd), size(&intervals(y)));
    if p != 0.0 { d / p } else { d }
}

/// Croston's method: smoothed demand size over smoothed interval, smoothing 0.1.
pub fn croston_classic(y: &[f64]) -> f64 {
    croston(y, |x| ses(x, 0.1))
}

/// Croston's method with each smoothing chosen in [0.1, 0.3].
pub fn croston_optimized(y: &[f64]) -> f64 {
    croston(y, optimized_ses)
}

/// Syntetos–Boylan approximation: Croston × 0.95.
pub fn croston_sba(y: &[f64]) -> f64 {
    croston_classic(y) * 0.95
}

/// Teunter–Syntetos–Babai: smoothed probability of a demand × smoothed demand size.
pub fn tsb(y: &[f64], alpha_d: f64, alpha_p: f64) -> f64 {
    if y.iter().all(|&v| v == 0.0) {
        return 0.0;
    }
    let probability: Vec<f64> = y.iter().map(|&v| if v != 0.0 { 1.0 } else { 0.0 }).collect();
    ses(&probability, alpha_p) * ses(&demands(y), alpha_d)
}

/// Sums of consecutive blocks of `k`, dropping the oldest `n mod k` values.
fn block_sums(y: &[f64], k: usize) -> Vec<f64> {
    y[y.len() % k..].chunks_exact(k).map(|c| c.iter().sum()).collect()
}

/// ADIDA: SES on demand summed over the mean inter-demand interval, per day.
pub fn adida(y: &[f64]) -> f64 {
    if y.iter().all(|&v| v == 0.0) {
        return 0.0;
    }
    let iv = intervals(y);
    let k = round_half_even(iv.iter().sum::<f64>() / iv.len() as f64);
    let sums = block_sums(y, k);
    let total = match sums.len() {
        0 => y[y.len() - 1],
        1 => sums[0],
        _ => optimized_ses(&sums),
    };
    total / k as f64
}

/// IMAPA: ADIDA's per-day forecast at every aggregation level 1 … the mean interval, averaged.
pub fn imapa(y: &[f64]) -> f64 {
    if y.iter().all(|&v| v == 0.0) {
        return 0.0;
    }
    let iv = intervals(y);
    let levels = round_half_even(iv.iter().sum::<f64>() / iv.len() as f64);
    let per_level: Vec<f64> = (1..=levels)
        .filter_map(|k| {
            let sums = block_sums(y, k);
            (!sums.is_empty()).then(|| optimized_ses(&sums) / k as f64)
        })
        .collect();
    per_level.iter().sum::<f64>() / per_level.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_count_from_the_start_and_between_demands() {
        assert_eq!(intervals(&[0.0, 3.0, 0.0, 0.0, 1.0, 2.0]), vec![2.0, 3.0, 1.0]);
        assert_eq!(demands(&[0.0, 3.0, 0.0, 2.0]), vec![3.0, 2.0]);
    }

    #[test]
    fn ses_and_rounding_match_their_definitions() {
        // f0 = 1; f1 = 0.5·1 + 0.5·1 = 1; f2 = 0.5·3 + 0.5·1 = 2; forecast = 0.5·5 + 0.5·2.
        assert_eq!(ses(&[1.0, 3.0, 5.0], 0.5), 3.5);
        assert_eq!(ses(&[4.0], 0.3), 4.0);
        assert_eq!((round_half_even(2.5), round_half_even(3.5), round_half_even(0.2)), (2, 4, 1));
    }

    #[test]
    fn no_demand_forecasts_nothing() {
        let zeros = [0.0; 10];
        assert_eq!(croston_classic(&zeros), 0.0);
        assert_eq!((tsb(&zeros, 0.1, 0.1), adida(&zeros), imapa(&zeros)), (0.0, 0.0, 0.0));
    }
}
