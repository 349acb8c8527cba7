//! Seasonal naive: the value one season ago, the benchmark every other method must beat.

use super::Forecast;

/// The last full season repeated over `h` steps, with statsforecast's spread: σ is the root
/// mean square of the season-lag differences, growing with each full season ahead
/// (`σ·√(⌊i/m⌋ + 1)` at step `i`, 0-based). A series shorter than one season forecasts its
/// mean, with the spread of its values (statsforecast leaves such steps empty).
pub fn seasonal_naive(y: &[f64], period: usize, h: usize) -> Forecast {
    let m = period.max(1);
    let n = y.len();
    if n < m {
        let mean = y.iter().sum::<f64>() / n.max(1) as f64;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.max(1) as f64;
        return Forecast { mean: vec![mean; h], sigma: Some(vec![var.sqrt(); h]) };
    }
    let season = &y[n - m..];
    let mean = (0..h).map(|i| season[i % m]).collect();
    let sigma = if n > m {
        let sse: f64 = y.windows(m + 1).map(|w| (w[m] - w[0]).powi(2)).sum();
        (sse / (n - m) as f64).sqrt()
    } else {
        0.0
    };
    let sigma = (0..h).map(|i| sigma * (((i / m) + 1) as f64).sqrt()).collect();
    Forecast { mean, sigma: Some(sigma) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_the_last_season_and_widens_each_season_ahead() {
        // statsforecast: y = [3,5,2,8,4,6,1,9,5,7,3,8,6,5], m = 4 → σ = 1.26491; the 80 %
        // half-width is 1.62105 for steps 1–4 and 2.29251 for steps 5–6.
        let y = [3.0, 5.0, 2.0, 8.0, 4.0, 6.0, 1.0, 9.0, 5.0, 7.0, 3.0, 8.0, 6.0, 5.0];
        let f = seasonal_naive(&y, 4, 6);
        assert_eq!(f.mean, vec![3.0, 8.0, 6.0, 5.0, 3.0, 8.0]);
        let sigma = f.sigma.expect("sigma");
        let z80 = 1.281_551_565_544_600_4;
        assert!((sigma[0] * z80 - 1.62105).abs() < 1e-4, "{}", sigma[0] * z80);
        assert!((sigma[4] * z80 - 2.29251).abs() < 1e-4, "{}", sigma[4] * z80);
    }
}
