//! The Theta method and its optimised and dynamic variants (Fiorucci et al. 2016), as
//! statsforecast's `theta.cpp` runs them — but in O(n) per evaluation (statsforecast copies
//! every earlier state row at every step) — with its seasonality test and classical
//! multiplicative deseasonalising, and AutoTheta's choice among the four variants by in-sample
//! error.

use super::Forecast;
use crate::decompose::{self, Kind};
use crate::optimize::{self, Settings};

/// The four variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Standard Theta (θ = 2, A and B from a regression on the whole series).
    Standard,
    /// θ optimised.
    Optimized,
    /// Dynamic: A and B updated as the series goes.
    Dynamic,
    /// Dynamic with θ optimised.
    DynamicOptimized,
}

impl Variant {
    /// Every variant, in statsforecast's order.
    pub const ALL: [Variant; 4] = [Self::Standard, Self::Optimized, Self::Dynamic, Self::DynamicOptimized];

    fn dynamic(self) -> bool {
        matches!(self, Self::Dynamic | Self::DynamicOptimized)
    }

    fn optimizes_theta(self) -> bool {
        matches!(self, Self::Optimized | Self::DynamicOptimized)
    }
}

/// One row of the state: smoothed level, running mean, the line's intercept and slope, and
/// the one-step forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    level: f64,
    mean: f64,
    a: f64,
    b: f64,
    mu: f64,
}

/// The next row from `prev` at time `i` (≥ 1) and the observation — or, for a forecast, the
/// row's own prediction (`observed = None`). `decay_i` is `(1 − α)^i`, carried by the caller
/// (a running product: `powi` per step was a third of the fit's time).
fn step(prev: Row, i: usize, variant: Variant, alpha: f64, theta: f64, decay_i: f64, observed: Option<f64>) -> Row {
    let fi = i as f64;
    let decay = 1.0 - alpha;
    let mu = prev.level + (1.0 - 1.0 / theta) * (prev.a * decay_i + prev.b * (1.0 - decay_i * decay) / alpha);
    let y = observed.unwrap_or(mu);
    let level = alpha * y + decay * prev.level;
    let mean = (fi * prev.mean + y) / (fi + 1.0);
    let (a, b) = if variant.dynamic() {
        let b = ((fi - 1.0) * prev.b + 6.0 * (y - prev.mean) / (fi + 1.0)) / (fi + 2.0);
        (mean - b * (fi + 2.0) / 2.0, b)
    } else {
        (prev.a, prev.b)
    };
    Row { level, mean, a, b, mu }
}

fn first_row(y: &[f64], variant: Variant, level0: f64, alpha: f64, theta: f64) -> Row {
    let (a, b, mu) = if variant.dynamic() {
        (y[0], 0.0, y[0])
    } else {
        let n = y.len() as f64;
        let mean = y.iter().sum::<f64>() / n;
        let weighted = y.iter().enumerate().map(|(t, v)| (t + 1) as f64 * v).sum::<f64>() / n;
        let b = 6.0 * (2.0 * weighted - (n + 1.0) * mean) / (n * n - 1.0);
        let a = mean - (n + 1.0) * b / 2.0;
        (a, b, level0 + (1.0 - 1.0 / theta) * (a + b))
    };
    Row { level: alpha * y[0] + (1.0 - alpha) * level0, mean: y[0], a, b, mu }
}

/// Runs over `y`, handing each in-sample one-step error to `error`; the last row.
fn run(y: &[f64], variant: Variant, level0: f64, alpha: f64, theta: f64, mut error: impl FnMut(f64)) -> Row {
    let mut row = first_row(y, variant, level0, alpha, theta);
    error(y[0] - row.mu);
    let decay = 1.0 - alpha;
    let mut decay_i = decay;
    for (i, &obs) in y.iter().enumerate().skip(1) {
        row = step(row, i, variant, alpha, theta, decay_i, Some(obs));
        decay_i *= decay;
        error(obs - row.mu);
    }
    row
}

/// The in-sample one-step errors too.
fn run_with_errors(y: &[f64], variant: Variant, level0: f64, alpha: f64, theta: f64) -> (Row, Vec<f64>) {
    let mut errors = Vec::with_capacity(y.len());
    let row = run(y, variant, level0, alpha, theta, |e| errors.push(e));
    (row, errors)
}

/// The line (`A`, `B`) each row carries, in order. With the observations known it depends on
/// neither α, θ nor the starting level — only the level does — so a fit works it out once
/// instead of at each of the search's few hundred evaluations (two divisions per step).
fn lines(y: &[f64], variant: Variant) -> Vec<(f64, f64)> {
    let mut row = first_row(y, variant, 0.0, 0.5, 2.0);
    let mut out = Vec::with_capacity(y.len());
    out.push((row.a, row.b));
    for (i, &obs) in y.iter().enumerate().skip(1) {
        // α, θ and the decay only move the level and the forecast, not the line.
        row = step(row, i, variant, 0.5, 2.0, 0.5, Some(obs));
        out.push((row.a, row.b));
    }
    out
}

/// statsforecast's objective: squared one-step errors after the third, over the mean |y|
/// (`scale`) — [`run`]'s errors, from the lines worked out beforehand.
fn score(y: &[f64], lines: &[(f64, f64)], variant: Variant, level0: f64, alpha: f64, theta: f64, scale: f64) -> f64 {
    let first = first_row(y, variant, level0, alpha, theta);
    let decay = 1.0 - alpha;
    let pull = 1.0 - 1.0 / theta;
    let (mut level, mut decay_i, mut sum) = (first.level, decay, 0.0);
    // Step i forecasts with the line of row i − 1, as `step` does.
    for (k, (&obs, &(a, b))) in y[1..].iter().zip(lines).enumerate() {
        let i = k + 1;
        let mu = level + pull * (a * decay_i + b * (1.0 - decay_i * decay) / alpha);
        level = alpha * obs + decay * level;
        decay_i *= decay;
        if i >= 3 {
            let e = obs - mu;
            sum += e * e;
        }
    }
    sum / scale
}

/// Where a fit's search starts: the starting level, α and θ another fit found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start {
    level0: f64,
    alpha: f64,
    theta: f64,
}

/// A fitted Theta model on a (deseasonalised) series.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// Which variant.
    pub variant: Variant,
    /// What it was fitted with: its starting level, α and θ (a refit's starting point).
    pub start: Start,
    last: Row,
    n: usize,
    /// In-sample error (the selection criterion).
    pub score: f64,
    /// Standard deviation of the one-step errors after the third.
    pub sigma: f64,
}

/// Fits one variant (`y` at least 4 points), the search starting from `warm` when given (the
/// fit of a shorter stretch of the same series: a backtest fold).
pub fn fit(variant: Variant, y: &[f64], warm: Option<Start>) -> Option<Fitted> {
    if y.len() < 4 {
        return None;
    }
    let mut x0 = match warm {
        Some(w) => vec![w.level0, w.alpha],
        None => vec![y[0] / 2.0, 0.5],
    };
    let (mut lower, mut upper) = (vec![-1e10, 0.1], vec![1e10, 0.99]);
    if variant.optimizes_theta() {
        x0.push(warm.map_or(2.0, |w| w.theta));
        lower.push(1.0);
        upper.push(1e10);
    }
    let theta_of = |x: &[f64]| if variant.optimizes_theta() { x[2] } else { 2.0 };
    let scale = (y.iter().map(|v| v.abs()).sum::<f64>() / y.len() as f64).max(1e-10);
    let lines = lines(y, variant);
    let objective = |x: &[f64]| score(y, &lines, variant, x[0], x[1], theta_of(x), scale);
    let best = optimize::minimize(objective, &x0, &lower, &upper, Settings::starting(warm.is_some()));
    if !best.value.is_finite() {
        return None;
    }
    let (alpha, theta) = (best.x[1], theta_of(&best.x));
    let start = Start { level0: best.x[0], alpha, theta };
    let (last, errors) = run_with_errors(y, variant, best.x[0], alpha, theta);
    let tail = &errors[3.min(errors.len())..];
    let mean = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    let sigma = (tail.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (tail.len().max(2) - 1) as f64).sqrt();
    Some(Fitted { variant, start, last, n: y.len(), score: best.value, sigma })
}

impl Fitted {
    /// The point forecast: the model run on with its own predictions as observations; the
    /// spread is simple exponential smoothing's, `σ²(1 + α²(h − 1))` (statsforecast simulates
    /// 200 paths instead).
    fn forecast(&self, h: usize) -> Forecast {
        let mut row = self.last;
        let mut mean = Vec::with_capacity(h);
        let Start { alpha, theta, .. } = self.start;
        let decay = 1.0 - alpha;
        let mut decay_i = decay.powi(self.n as i32);
        for j in 0..h {
            row = step(row, self.n + j, self.variant, alpha, theta, decay_i, None);
            decay_i *= decay;
            mean.push(row.mu);
        }
        let sigma = (0..h).map(|j| self.sigma * (1.0 + alpha * alpha * j as f64).sqrt()).collect();
        Forecast { mean, sigma: Some(sigma) }
    }
}

/// Whether `y` is seasonal with period `m`: the autocorrelation at lag `m` beyond the 90 %
/// one-sided bound of its standard error (statsforecast's test).
fn seasonal(y: &[f64], m: usize) -> bool {
    let n = y.len();
    if m < 4 || n < 2 * m {
        return false;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let var: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    if var <= 0.0 {
        return false;
    }
    let acf = |k: usize| (0..n - k).map(|t| (y[t] - mean) * (y[t + k] - mean)).sum::<f64>() / var;
    let r: Vec<f64> = (1..=m).map(acf).collect();
    let stat = ((1.0 + 2.0 * r[..m - 1].iter().map(|v| v * v).sum::<f64>()) / n as f64).sqrt();
    r[m - 1].abs() / stat > 1.644_853_626_951_472_2
}

/// AutoTheta: deseasonalise when the test says so (multiplicatively, additively for data with
/// zeros or tiny indices), fit the four variants, keep the one with the least in-sample error,
/// reseasonalise its forecast.
pub fn auto(y: &[f64], m: usize, h: usize) -> Option<Forecast> {
    auto_among(y, m, h, &Variant::ALL, None).map(|(f, _, _)| f)
}

/// AutoTheta among `variants` (each search starting from `warm` when given); the forecast,
/// the variant that made it and its fit's starting point for a refit.
pub fn auto_among(
    y: &[f64],
    m: usize,
    h: usize,
    variants: &[Variant],
    warm: Option<Start>,
) -> Option<(Forecast, Variant, Start)> {
    let indices = if seasonal(y, m) {
        let positive = y.iter().all(|&v| v > 0.0);
        let multiplicative = positive
            .then(|| decompose::seasonal_indices(y, m, Kind::Multiplicative))
            .flatten()
            .filter(|s| s.iter().all(|&v| v >= 0.01));
        match multiplicative {
            Some(s) => Some((Kind::Multiplicative, s)),
            None => decompose::seasonal_indices(y, m, Kind::Additive).map(|s| (Kind::Additive, s)),
        }
    } else {
        None
    };
    let adjusted: Vec<f64> = match &indices {
        None => y.to_vec(),
        Some((Kind::Multiplicative, s)) => y.iter().enumerate().map(|(t, v)| v / s[t % m]).collect(),
        Some((Kind::Additive, s)) => y.iter().enumerate().map(|(t, v)| v - s[t % m]).collect(),
    };
    let best = variants
        .iter()
        .filter_map(|&v| fit(v, &adjusted, warm))
        .filter(|f| f.score.is_finite())
        .reduce(|best, f| if f.score < best.score { f } else { best })?;
    let mut forecast = best.forecast(h);
    if let Some((kind, s)) = &indices {
        let n = y.len();
        for (j, (mean, sigma)) in forecast.mean.iter_mut().zip(forecast.sigma.iter_mut().flatten()).enumerate() {
            let index = s[(n + j) % m];
            match kind {
                Kind::Multiplicative => {
                    *mean *= index;
                    *sigma *= index;
                }
                Kind::Additive => *mean += index,
            }
        }
    }
    Some((forecast, best.variant, best.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_straight_line_is_continued() {
        let y: Vec<f64> = (0..60).map(|t| 5.0 + 0.5 * t as f64).collect();
        let f = auto(&y, 7, 10).expect("forecast");
        for (j, v) in f.mean.iter().enumerate() {
            let want = 5.0 + 0.5 * (60 + j) as f64;
            assert!((v - want).abs() < 0.5, "step {j}: {v} vs {want}");
        }
    }

    #[test]
    fn the_seasonality_test_sees_a_weekly_pattern_and_not_noise() {
        let pattern = [1.4, 0.8, 0.9, 1.0, 1.1, 0.7, 1.1];
        let noise = |t: usize| ((t * 7919 % 101) as f64 / 101.0 - 0.5) * 2.0;
        let weekly: Vec<f64> = (0..140).map(|t| 30.0 * pattern[t % 7] + noise(t)).collect();
        assert!(seasonal(&weekly, 7));
        let flat: Vec<f64> = (0..140).map(|t| 30.0 + noise(t)).collect();
        assert!(!seasonal(&flat, 7));
    }

    #[test]
    fn the_one_step_forecast_follows_statsforecasts_recursion() {
        // Standard Theta, α = 0.5, θ = 2, ℓ0 = 1 on y = [2, 4, 6, 8]: A and B from the line
        // through (1,2)…(4,8) are 0 and 2; μ0 = ℓ0 + ½(A + B) = 2; level0 = 0.5·2 + 0.5·1 = 1.5.
        let y = [2.0, 4.0, 6.0, 8.0];
        let first = first_row(&y, Variant::Standard, 1.0, 0.5, 2.0);
        assert!((first.a - 0.0).abs() < 1e-12 && (first.b - 2.0).abs() < 1e-12, "{first:?}");
        assert_eq!((first.mu, first.level), (2.0, 1.5));
        // μ1 = 1.5 + ½(0·0.5 + 2·(1 − 0.25)/0.5) = 3.
        let next = step(first, 1, Variant::Standard, 0.5, 2.0, 0.5, Some(4.0));
        assert!((next.mu - 3.0).abs() < 1e-12, "{next:?}");
    }
    #[test]
    fn the_score_from_precomputed_lines_equals_the_full_recursions() {
        let y: Vec<f64> = (0..90).map(|t| 20.0 + 0.3 * t as f64 + ((t * 37 % 11) as f64 - 5.0)).collect();
        let scale = y.iter().map(|v| v.abs()).sum::<f64>() / y.len() as f64;
        for variant in Variant::ALL {
            let lines = lines(&y, variant);
            for (level0, alpha, theta) in [(10.0, 0.3, 2.0), (3.0, 0.9, 1.4), (25.0, 0.12, 3.5)] {
                let (_, errors) = run_with_errors(&y, variant, level0, alpha, theta);
                let want = errors[3..].iter().map(|e| e * e).sum::<f64>() / scale;
                let got = score(&y, &lines, variant, level0, alpha, theta, scale);
                assert_eq!(got, want, "{variant:?} α {alpha} θ {theta}");
            }
        }
    }
}
