//! MSTL (Bandara, Hyndman & Bergmeir 2021): the series split into a seasonal component per
//! period by repeated STL (the `stlrs` crate, set up as statsmodels' STL that statsforecast
//! calls), the seasonally adjusted rest forecast by a non-seasonal ETS, each season repeated.

use super::Forecast;
use super::ets::{self, SeasonKind, Spec};

/// statsmodels' STL for a period and a seasonal window (statsforecast passes the window
/// `7 + 4k` and degree 0; the rest are statsmodels' defaults, which differ from `stlrs`'s) —
/// but with R's jumps and inner loops.
fn stl(period: usize, seasonal_window: usize) -> stlrs::StlParams {
    let odd = |v: usize| if v.is_multiple_of(2) { v + 1 } else { v };
    let trend = odd((1.5 * period as f64 / (1.0 - 1.5 / seasonal_window as f64)).ceil() as usize);
    // R's `stl` defaults where statsmodels' differ: each smoother evaluated every tenth of its
    // window and interpolated between (statsmodels: every point), two inner loops (five). The
    // yearly trend's ~600-day window evaluated at every day made the whole per-series choice
    // 2–3× slower, the extra loops another 10 %, for the same held-out WAPE on the simulator
    // (docs/forecast.md).
    let jump = |len: usize| len.div_ceil(10);
    let mut params = stlrs::params();
    params
        .seasonal_length(seasonal_window)
        .trend_length(trend)
        .low_pass_length(odd(period + 1))
        .seasonal_degree(0)
        .trend_degree(1)
        .low_pass_degree(1)
        .seasonal_jump(jump(seasonal_window))
        .trend_jump(jump(trend))
        .low_pass_jump(jump(odd(period + 1)))
        .inner_loops(2)
        .outer_loops(0)
        .robust(false);
    params
}

/// A series split into seasons and the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    /// Each period's seasonal component, shortest period first.
    pub seasons: Vec<(usize, Vec<f64>)>,
    /// The series without them (trend + remainder).
    pub adjusted: Vec<f64>,
}

/// The seasonal components and the seasonally adjusted series; periods the series does not
/// cover twice are left out. `None` when none is left.
pub fn decompose(y: &[f64], periods: &[usize]) -> Option<Decomposition> {
    let mut periods: Vec<usize> = periods.iter().copied().filter(|&p| p >= 2 && y.len() >= 2 * p).collect();
    periods.sort_unstable();
    periods.dedup();
    if periods.is_empty() {
        return None;
    }
    let iterations = if periods.len() > 1 { 2 } else { 1 };
    let mut seasons: Vec<Vec<f64>> = vec![vec![0.0; y.len()]; periods.len()];
    let mut adjusted = y.to_vec();
    for _ in 0..iterations {
        for (k, &period) in periods.iter().enumerate() {
            for (a, s) in adjusted.iter_mut().zip(&seasons[k]) {
                *a += s;
            }
            let fit = stl(period, 7 + 4 * (k + 1)).fit(&adjusted, period).ok()?;
            seasons[k] = fit.seasonal().to_vec();
            for (a, s) in adjusted.iter_mut().zip(&seasons[k]) {
                *a -= s;
            }
        }
    }
    Some(Decomposition { seasons: periods.into_iter().zip(seasons).collect(), adjusted })
}

/// Forecasts `h` steps: the adjusted series by the non-seasonal ETS with the least AICc, plus
/// each seasonal component's last cycle repeated; the spread is the ETS forecast's.
pub fn forecast(y: &[f64], periods: &[usize], h: usize) -> Option<Forecast> {
    forecast_among(y, periods, h, None).map(|(f, _, _)| f)
}

/// The same with the adjusted series' ETS model given (`Some`, with the parameters its search
/// starts from) or chosen by AICc (`None`); the forecast, the model used and its parameters.
pub fn forecast_among(
    y: &[f64],
    periods: &[usize],
    h: usize,
    pinned: Option<(Spec, ets::Params)>,
) -> Option<(Forecast, Spec, ets::Params)> {
    let Decomposition { seasons, adjusted } = decompose(y, periods)?;
    let fitted = match pinned {
        Some((spec, warm)) => ets::fit_from(spec, &adjusted, 1, Some(warm))?,
        None => {
            let positive = adjusted.iter().all(|&v| v > 0.0);
            let specs: Vec<Spec> =
                Spec::candidates(1, positive).into_iter().filter(|s| s.season == SeasonKind::N).collect();
            ets::auto_among(&specs, &adjusted, 1)?
        }
    };
    let mut f = fitted.forecast(h);
    for (period, season) in &seasons {
        let last = &season[season.len() - period..];
        for (j, v) in f.mean.iter_mut().enumerate() {
            *v += last[j % period];
        }
    }
    Some((f, fitted.spec, fitted.params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_seasons_are_separated_and_continued() {
        let weekly = [2.0, -1.0, 0.5, -1.5, 1.0, -0.5, -0.5];
        let truth = |t: usize| 50.0 + weekly[t % 7] + 6.0 * (2.0 * std::f64::consts::PI * t as f64 / 30.0).sin();
        let y: Vec<f64> = (0..240).map(truth).collect();
        let seasons = decompose(&y, &[30, 7]).expect("decomposed").seasons;
        assert_eq!(seasons.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![7, 30], "shortest first");
        let f = forecast(&y, &[7, 30], 14).expect("forecast");
        for (j, v) in f.mean.iter().enumerate() {
            assert!((v - truth(240 + j)).abs() < 1.0, "step {j}: {v} vs {}", truth(240 + j));
        }
        assert!(decompose(&y[..10], &[7]).is_none(), "fewer than two cycles");
    }
}
