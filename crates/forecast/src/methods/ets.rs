//! Exponential smoothing in state-space form (ETS, Hyndman et al. 2008): error additive or
//! multiplicative, trend none / additive / damped, season none / additive / multiplicative —
//! the recursions statsforecast's `ets.cpp` runs, and the same choice among the models by AICc.
//!
//! One difference, for speed (`docs/forecast.md`): the initial level, trend and seasonal states
//! are set by classical decomposition and a regression on the first cycles (statsforecast's own
//! starting point) and kept, so Nelder–Mead searches only the 1–4 smoothing parameters instead
//! of up to 12 dimensions. Over two years of daily data the starting states are forgotten long
//! before the forecast origin.

use serde::{Deserialize, Serialize};

use super::Forecast;
use crate::decompose::{self, Kind};
use crate::optimize::{self, Settings};

/// Below this a divisor is treated as zero (statsforecast's `TOL`).
const TINY: f64 = 1e-10;

/// How the error enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Additive.
    A,
    /// Multiplicative (relative).
    M,
}

/// The trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrendKind {
    /// None.
    N,
    /// Additive.
    A,
    /// Additive, damped.
    Ad,
}

/// The season.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeasonKind {
    /// None.
    N,
    /// Additive.
    A,
    /// Multiplicative.
    M,
}

/// One ETS model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Error.
    pub error: ErrorKind,
    /// Trend.
    pub trend: TrendKind,
    /// Season.
    pub season: SeasonKind,
}

impl Spec {
    /// Its usual name: `ANN`, `AAdA`, `MNM` …
    pub fn name(&self) -> String {
        let e = match self.error {
            ErrorKind::A => "A",
            ErrorKind::M => "M",
        };
        let t = match self.trend {
            TrendKind::N => "N",
            TrendKind::A => "A",
            TrendKind::Ad => "Ad",
        };
        let s = match self.season {
            SeasonKind::N => "N",
            SeasonKind::A => "A",
            SeasonKind::M => "M",
        };
        format!("{e}{t}{s}")
    }

    /// The models statsforecast's AutoETS considers, in its order: additive error with any
    /// trend and an additive or no season; multiplicative error (positive data only) with any
    /// trend and season. Seasonal models only for `m > 1`.
    pub fn candidates(m: usize, positive: bool) -> Vec<Spec> {
        use ErrorKind as E;
        use SeasonKind as S;
        use TrendKind as T;
        let mut out = Vec::new();
        for error in [E::A, E::M] {
            for trend in [T::N, T::Ad, T::A] {
                for season in [S::N, S::A, S::M] {
                    let multiplicative = error == E::M || season == S::M;
                    let skip = (error == E::A && season == S::M)
                        || (multiplicative && !positive)
                        || (season != S::N && m <= 1);
                    if !skip {
                        out.push(Spec { error, trend, season });
                    }
                }
            }
        }
        out
    }
}

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    alpha: f64,
    beta: f64,
    gamma: f64,
    phi: f64,
}

/// Level, trend and the seasonal cycle (`season[t mod m]` applies at time `t`).
#[derive(Debug, Clone, PartialEq)]
struct State {
    level: f64,
    trend: f64,
    season: Vec<f64>,
}

/// What a run over the series yields.
struct Run {
    /// `n·ln(SSE)` (+ `2·Σ ln|f|` for a multiplicative error): −2 log-likelihood up to a
    /// constant.
    lik: f64,
    sse: f64,
    state: State,
}

/// Runs the recursions over `y` from `start`.
fn run(spec: Spec, p: Params, start: &State, y: &[f64]) -> Option<Run> {
    let m = start.season.len().max(1);
    let (mut l, mut b) = (start.level, start.trend);
    let mut season = start.season.clone();
    let phi = if spec.trend == TrendKind::Ad { p.phi } else { 1.0 };
    // Σ ln|f| as ln of a running product, taken only when the product leaves a safe range:
    // a logarithm per step was a third of all fitting time.
    let (mut sse, mut log_f, mut prod_f) = (0.0, 0.0, 1.0_f64);
    // The season's slot, wrapped by hand: a `t % m` per step was a tenth of the recursion.
    let mut slot = 0;
    for &obs in y {
        let (phib, q) = match spec.trend {
            TrendKind::N => (0.0, l),
            _ => (phi * b, l + phi * b),
        };
        let s = if spec.season == SeasonKind::N { 0.0 } else { season[slot] };
        let f = match spec.season {
            SeasonKind::N => q,
            SeasonKind::A => q + s,
            SeasonKind::M => q * s,
        };
        let e = match spec.error {
            ErrorKind::A => obs - f,
            ErrorKind::M => {
                let denom = if f.abs() < TINY { f + TINY } else { f };
                if !f.is_finite() {
                    return None;
                }
                let size = f.abs().max(1e-8);
                if size > 1e100 {
                    log_f += size.ln();
                } else {
                    prod_f *= size;
                    if !(1e-150..=1e150).contains(&prod_f) {
                        log_f += prod_f.ln();
                        prod_f = 1.0;
                    }
                }
                (obs - f) / denom
            }
        };
        sse += e * e;
        let deseasonalised = match spec.season {
            SeasonKind::N => obs,
            SeasonKind::A => obs - s,
            SeasonKind::M => {
                if s.abs() < TINY {
                    return None;
                }
                obs / s
            }
        };
        let l_new = q + p.alpha * (deseasonalised - q);
        if spec.trend != TrendKind::N {
            b = phib + (p.beta / p.alpha) * ((l_new - l) - phib);
        }
        match spec.season {
            SeasonKind::N => {}
            SeasonKind::A => season[slot] = s + p.gamma * ((obs - q) - s),
            SeasonKind::M => {
                if q.abs() < TINY {
                    return None;
                }
                season[slot] = s + p.gamma * (obs / q - s);
            }
        }
        l = l_new;
        slot += 1;
        if slot == m {
            slot = 0;
        }
        if !l.is_finite() || !b.is_finite() {
            return None;
        }
    }
    log_f += prod_f.ln();
    let n = y.len() as f64;
    let lik = n * (sse.max(1e-300)).ln() + 2.0 * log_f;
    Some(Run { lik, sse, state: State { level: l, trend: b, season } })
}

/// The starting states: seasonal indices by classical decomposition, then level (and trend) by
/// a regression on the first `max(10, 2m)` deseasonalised points, as statsforecast's
/// `initstate`.
fn initial_state(spec: Spec, y: &[f64], m: usize) -> Option<State> {
    let season = match spec.season {
        SeasonKind::N => Vec::new(),
        SeasonKind::A => decompose::seasonal_indices(y, m, Kind::Additive)?,
        SeasonKind::M => decompose::seasonal_indices(y, m, Kind::Multiplicative)?.iter().map(|s| s.max(0.01)).collect(),
    };
    let sa: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(t, &v)| match spec.season {
            SeasonKind::N => v,
            SeasonKind::A => v - season[t % m],
            SeasonKind::M => v / season[t % m],
        })
        .collect();
    let m_eff = if spec.season == SeasonKind::N { 1 } else { m };
    let k = (2 * m_eff).max(10).min(sa.len());
    let head = &sa[..k];
    let (level, trend) = if spec.trend == TrendKind::N {
        (head.iter().sum::<f64>() / k as f64, 0.0)
    } else {
        // Least squares of the head on t = 1..k; the level is the line at t = 0.
        let kt = k as f64;
        let mean_t = (kt + 1.0) / 2.0;
        let mean_y = head.iter().sum::<f64>() / kt;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, v) in head.iter().enumerate() {
            let dt = (i + 1) as f64 - mean_t;
            sxy += dt * (v - mean_y);
            sxx += dt * dt;
        }
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let (mut l, mut b) = (mean_y - slope * mean_t, slope);
        if (l + b).abs() < 1e-8 {
            l *= 1.001;
            b *= 0.999;
        }
        (l, b)
    };
    Some(State { level, trend, season })
}

/// A fitted ETS model.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// Which model.
    pub spec: Spec,
    /// Season length (1 without a season).
    pub m: usize,
    /// The smoothing parameters fitted.
    pub params: Params,
    state: State,
    /// Points fitted.
    pub n: usize,
    /// Variance of the (relative, for a multiplicative error) one-step errors.
    pub sigma2: f64,
    /// Corrected Akaike information criterion.
    pub aicc: f64,
}

/// Series shorter than this have their starting level and trend estimated too.
const OPTIMISE_STATES_BELOW: usize = 365;

/// Lower and upper bounds of α, β, γ, φ (statsforecast's).
const LOWER: [f64; 4] = [1e-4, 1e-4, 1e-4, 0.8];
const UPPER: [f64; 4] = [0.9999, 0.9999, 0.9999, 0.98];

/// Fits one model to `y` with season length `m`; `None` if the data cannot carry it (too
/// short, not positive for a multiplicative part) or no parameters give a finite likelihood.
pub fn fit(spec: Spec, y: &[f64], m: usize) -> Option<Fitted> {
    fit_from(spec, y, m, None)
}

/// [`fit`], the search starting from `warm` — the parameters fitted to a shorter stretch of
/// the same series (a backtest fold), where the optimum rarely moves far: the search then
/// ends in a fraction of the evaluations.
pub fn fit_from(spec: Spec, y: &[f64], m: usize, warm: Option<Params>) -> Option<Fitted> {
    let m = if spec.season == SeasonKind::N { 1 } else { m };
    let multiplicative = spec.error == ErrorKind::M || spec.season == SeasonKind::M;
    if y.len() < 4 || (multiplicative && y.iter().any(|&v| v <= 0.0)) {
        return None;
    }
    let start = initial_state(spec, y, m)?;
    // Free parameters: α, then β, γ, φ as the model has them.
    let has_trend = spec.trend != TrendKind::N;
    let has_season = spec.season != SeasonKind::N;
    let damped = spec.trend == TrendKind::Ad;
    let alpha0 = LOWER[0] + 0.2 * (UPPER[0] - LOWER[0]) / m as f64;
    let mut x0 = vec![alpha0];
    let (mut lower, mut upper) = (vec![LOWER[0]], vec![UPPER[0]]);
    if has_trend {
        let hi = UPPER[1].min(alpha0);
        x0.push(LOWER[1] + 0.1 * (hi - LOWER[1]));
        lower.push(LOWER[1]);
        upper.push(UPPER[1]);
    }
    if has_season {
        let hi = UPPER[2].min(1.0 - alpha0);
        x0.push(LOWER[2] + 0.05 * (hi - LOWER[2]));
        lower.push(LOWER[2]);
        upper.push(UPPER[2]);
    }
    if damped {
        x0.push(LOWER[3] + 0.99 * (UPPER[3] - LOWER[3]));
        lower.push(LOWER[3]);
        upper.push(UPPER[3]);
    }
    if let Some(w) = warm {
        let start = [w.alpha, w.beta, w.gamma, w.phi];
        let used = [true, has_trend, has_season, damped];
        for (x, v) in x0.iter_mut().zip(start.iter().zip(used).filter(|(_, u)| *u).map(|(v, _)| *v)) {
            *x = v;
        }
    }
    let smoothing = x0.len();
    // On a short series the starting states still matter at the forecast origin: they are
    // estimated with the smoothing parameters (all but one seasonal state, which keeps the
    // cycle normalised), as statsforecast does for every series.
    let free_states = y.len() < OPTIMISE_STATES_BELOW;
    if free_states {
        x0.push(start.level);
        lower.push(-1e10);
        upper.push(1e10);
        if has_trend {
            x0.push(start.trend);
            lower.push(-1e10);
            upper.push(1e10);
        }
        if has_season {
            let floor = if spec.season == SeasonKind::M { 1e-4 } else { -1e10 };
            for &v in &start.season[..m - 1] {
                x0.push(v);
                lower.push(floor);
                upper.push(1e10);
            }
        }
    }
    // Reads a point of the search into parameters and (on a short series) starting states.
    let unpack = |x: &[f64], state: &mut State| {
        let mut it = x.iter().copied();
        let alpha = it.next().unwrap_or(alpha0);
        let beta = if has_trend { it.next().unwrap_or(0.0) } else { 0.0 };
        let gamma = if has_season { it.next().unwrap_or(0.0) } else { 0.0 };
        let phi = if damped { it.next().unwrap_or(1.0) } else { 1.0 };
        if free_states {
            state.level = it.next().unwrap_or(start.level);
            if has_trend {
                state.trend = it.next().unwrap_or(start.trend);
            }
            if has_season {
                let mut sum = 0.0;
                for slot in &mut state.season[..m - 1] {
                    *slot = it.next().unwrap_or(0.0);
                    sum += *slot;
                }
                state.season[m - 1] = if spec.season == SeasonKind::M { m as f64 - sum } else { -sum };
            }
        }
        Params { alpha, beta, gamma, phi }
    };
    // The "usual" region (Hyndman et al.): a trend may not move faster than the level, nor the
    // season take more than the level leaves.
    let usual = |p: &Params| p.beta <= p.alpha && p.gamma <= 1.0 - p.alpha;
    let mut trial = start.clone();
    let objective = |x: &[f64]| {
        let p = unpack(x, &mut trial);
        if !usual(&p) || (spec.season == SeasonKind::M && trial.season.iter().any(|&s| s <= 0.0)) {
            return f64::INFINITY;
        }
        run(spec, p, &trial, y).map_or(f64::INFINITY, |r| r.lik)
    };
    // A looser tolerance (1e-2 on the −2 log-likelihood) was tried on long series: 8 % faster,
    // but the choice among the 15 models moved and held-out WAPE went 0.4045 → 0.4070.
    let settings = Settings { max_iter: 200 * x0.len(), ..Settings::starting(warm.is_some()) };
    let best = optimize::minimize(objective, &x0, &lower, &upper, settings);
    if !best.value.is_finite() {
        return None;
    }
    let mut start = start.clone();
    let params = unpack(&best.x, &mut start);
    let fitted = run(spec, params, &start, y)?;
    let n = y.len();
    // Parameters: the free smoothing parameters, the starting states, and σ — counted as
    // statsforecast counts them, so models with more states pay for them.
    let states = 1 + usize::from(has_trend) + if has_season { m - 1 } else { 0 };
    let k = (smoothing + states + 1) as f64;
    let nf = n as f64;
    let aicc =
        if nf - k - 1.0 > 0.0 { fitted.lik + 2.0 * k + 2.0 * k * (k + 1.0) / (nf - k - 1.0) } else { f64::INFINITY };
    let sigma2 = fitted.sse / (nf - k - 1.0).max(1.0);
    Some(Fitted { spec, m, params, state: fitted.state, n, sigma2, aicc })
}

/// Fits every candidate and keeps the one with the least AICc (the first of equals).
pub fn auto(y: &[f64], m: usize) -> Option<Fitted> {
    let positive = y.iter().all(|&v| v > 0.0);
    auto_among(&Spec::candidates(m, positive), y, m)
}

/// The least-AICc model among `specs`, searched in two steps: every trendless model first,
/// then the trended models only of the error and season kinds whose trendless model came
/// within [`TREND_MARGIN`] of the best (and the undamped trend only where the damped one
/// pressed against φ's upper bound). A trend moves each season kind's likelihood alike, so
/// a season kind far behind without a trend stays behind with one — and the trended models,
/// two to three times the search each, are most of the time spent.
pub fn auto_among(specs: &[Spec], y: &[f64], m: usize) -> Option<Fitted> {
    let mut best: Option<Fitted> = None;
    let mut trendless: Vec<(Spec, f64)> = Vec::new();
    let consider = |f: Option<Fitted>, best: &mut Option<Fitted>| {
        if let Some(f) = f
            && f.aicc.is_finite()
            && best.as_ref().is_none_or(|b| f.aicc < b.aicc)
        {
            *best = Some(f);
        }
    };
    for &spec in specs.iter().filter(|s| s.trend == TrendKind::N) {
        let f = fit(spec, y, m);
        if let Some(f) = &f {
            trendless.push((spec, f.aicc));
        }
        consider(f, &mut best);
    }
    let floor = trendless.iter().map(|(_, a)| *a).fold(f64::INFINITY, f64::min);
    // Kinds whose damped trend settled inside φ's range (candidates list damped first).
    let mut damped_inside: Vec<(ErrorKind, SeasonKind)> = Vec::new();
    for &spec in specs.iter().filter(|s| s.trend != TrendKind::N) {
        let base = trendless.iter().find(|(t, _)| t.error == spec.error && t.season == spec.season);
        // Without a trendless fit of the kind (all failed), the trended one is tried.
        if !base.is_none_or(|(_, a)| !a.is_finite() || *a <= floor + TREND_MARGIN) {
            continue;
        }
        // A damped trend whose φ settled inside its range had a better likelihood there than
        // at its top, nearer the undamped model: the undamped one could win on AICc only by
        // the one parameter it saves, as a near-copy of the damped fit.
        if spec.trend == TrendKind::A && damped_inside.contains(&(spec.error, spec.season)) {
            continue;
        }
        let f = fit(spec, y, m);
        if let Some(f) = &f
            && spec.trend == TrendKind::Ad
            && f.params.phi < UPPER[3] - 1e-3
        {
            damped_inside.push((spec.error, spec.season));
        }
        consider(f, &mut best);
    }
    best
}

/// How far (in AICc) a trendless model may trail the best trendless one for its trended
/// variants still to be fitted.
pub const TREND_MARGIN: f64 = 10.0;

impl Fitted {
    /// Forecasts `h` steps, with the error's standard deviation per step: analytic for an
    /// additive error (Hyndman et al. 2008, class 1) and for a multiplicative error with no or an
    /// additive season (class 2); with a multiplicative season, the class-2 variance of the
    /// deseasonalised forecast scaled by the seasonal factor (an approximation).
    pub fn forecast(&self, h: usize) -> Forecast {
        let Params { alpha: a, beta: b, gamma: g, phi } = self.params;
        let phi = if self.spec.trend == TrendKind::Ad { phi } else { 1.0 };
        let m = self.m.max(1);
        let mut mean = Vec::with_capacity(h);
        let mut base = Vec::with_capacity(h);
        let mut factors = Vec::with_capacity(h);
        let mut damp_sum = 0.0;
        for i in 0..h {
            damp_sum += phi.powi(i as i32 + 1);
            let q = match self.spec.trend {
                TrendKind::N => self.state.level,
                _ => self.state.level + damp_sum * self.state.trend,
            };
            let t = self.n + i;
            let (value, factor) = match self.spec.season {
                SeasonKind::N => (q, 1.0),
                SeasonKind::A => (q + self.state.season[t % m], 1.0),
                SeasonKind::M => (q * self.state.season[t % m], self.state.season[t % m]),
            };
            mean.push(value);
            base.push(q);
            factors.push(factor);
        }
        let s2 = self.sigma2;
        let sigma = match self.spec.error {
            ErrorKind::A => (1..=h)
                .map(|step| {
                    // v_h = σ²(1 + Σ_{j=1}^{h-1} c_j²), c_j the weight of an error j steps back.
                    let sum: f64 = (1..step).map(|j| self.weight(j, a, b, g, phi, m).powi(2)).sum();
                    (s2 * (1.0 + sum)).sqrt()
                })
                .collect(),
            ErrorKind::M => {
                // θ_1 = μ_1², θ_k = μ_k² + σ² Σ_{j<k} c_j² θ_{k−j}; v_k = (1 + σ²)θ_k − μ_k².
                let mut theta: Vec<f64> = Vec::with_capacity(h);
                let mut out = Vec::with_capacity(h);
                for k in 0..h {
                    let mu = base[k];
                    let tail: f64 = (1..=k).map(|j| self.weight(j, a, b, g, phi, m).powi(2) * theta[k - j]).sum();
                    let th = mu * mu + s2 * tail;
                    theta.push(th);
                    let v = ((1.0 + s2) * th - mu * mu).max(0.0);
                    out.push(v.sqrt() * factors[k]);
                }
                out
            }
        };
        Forecast { mean, sigma: Some(sigma) }
    }

    /// The weight `c_j` of an error `j` steps back in a forecast: α, plus β for each step of
    /// the (damped) trend since, plus γ when `j` is a whole number of seasons.
    fn weight(&self, j: usize, a: f64, b: f64, g: f64, phi: f64, m: usize) -> f64 {
        let trend = match self.spec.trend {
            TrendKind::N => 0.0,
            TrendKind::A => b * j as f64,
            TrendKind::Ad => b * (1..=j).map(|i| phi.powi(i as i32)).sum::<f64>(),
        };
        let season = if self.spec.season != SeasonKind::N && j.is_multiple_of(m) { g } else { 0.0 };
        a + trend + season
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> Spec {
        Spec::candidates(7, true).into_iter().find(|s| s.name() == name).expect("candidate")
    }

    #[test]
    fn ann_is_simple_exponential_smoothing() {
        let y = [3.0, 5.0, 4.0, 6.0, 5.5, 7.0, 6.5];
        let start = State { level: 3.0, trend: 0.0, season: Vec::new() };
        let p = Params { alpha: 0.3, beta: 0.0, gamma: 0.0, phi: 1.0 };
        let r = run(spec("ANN"), p, &start, &y).expect("run");
        let ses = y.iter().fold(3.0, |l, v| l + 0.3 * (v - l));
        assert!((r.state.level - ses).abs() < 1e-12);
    }

    #[test]
    fn an_exact_weekly_pattern_on_a_trend_is_forecast_exactly() {
        let pattern = [3.0, -1.0, 0.5, -2.5, 1.0, -0.5, -0.5];
        let truth = |t: usize| 20.0 + 0.1 * t as f64 + pattern[t % 7];
        let y: Vec<f64> = (0..140).map(truth).collect();
        let f = fit(spec("AAA"), &y, 7).expect("fit").forecast(14);
        for (i, v) in f.mean.iter().enumerate() {
            assert!((v - truth(140 + i)).abs() < 1e-3, "step {i}: {v} vs {}", truth(140 + i));
        }
    }

    #[test]
    fn auto_prefers_a_seasonal_model_for_seasonal_data_and_a_flat_one_for_noise() {
        let pattern = [1.4, 0.8, 0.9, 1.0, 1.1, 0.7, 1.1];
        let noise = |t: usize| ((t * 7919 % 101) as f64 / 101.0 - 0.5) * 2.0;
        let seasonal: Vec<f64> = (0..364).map(|t| 40.0 * pattern[t % 7] + noise(t)).collect();
        let chosen = auto(&seasonal, 7).expect("auto");
        assert_ne!(chosen.spec.season, SeasonKind::N, "{}", chosen.spec.name());
        let flat: Vec<f64> = (0..364).map(|t| 40.0 + noise(t)).collect();
        let chosen = auto(&flat, 7).expect("auto");
        assert_eq!(chosen.spec.season, SeasonKind::N, "{}", chosen.spec.name());
    }

    #[test]
    fn intervals_widen_with_the_horizon() {
        let noise = |t: usize| ((t * 7919 % 101) as f64 / 101.0 - 0.5) * 4.0;
        let y: Vec<f64> = (0..200).map(|t| 30.0 + noise(t)).collect();
        for name in ["ANN", "AAdN", "MNN", "ANA", "MAdM"] {
            let f = fit(spec(name), &y, 7).expect(name).forecast(28);
            let sigma = f.sigma.expect("sigma");
            assert!(sigma.iter().all(|s| s.is_finite() && *s > 0.0), "{name}: {sigma:?}");
            // Compared a whole number of weeks apart: a multiplicative season scales each day.
            assert!(sigma[21] >= sigma[0], "{name}: {sigma:?}");
        }
    }

    #[test]
    fn the_candidates_are_statsforecasts() {
        let names: Vec<String> = Spec::candidates(7, true).iter().map(Spec::name).collect();
        assert_eq!(names.len(), 15);
        assert_eq!(Spec::candidates(7, false).len(), 6, "with zeros only additive error and season");
        assert_eq!(Spec::candidates(1, true).len(), 6, "no season without a period");
        assert!(names.contains(&"MAdM".to_owned()) && !names.contains(&"AAM".to_owned()));
    }
    #[test]
    fn the_stepwise_search_finds_what_fitting_every_model_finds() {
        // Weekly multiplicative season on a trend; the same without a season; a damped rise.
        let week = [1.3, 0.8, 0.9, 1.0, 1.1, 0.7, 1.2];
        let noise = |t: usize| ((t * 7919 % 101) as f64 / 101.0 - 0.5) * 6.0;
        let series: [Vec<f64>; 3] = [
            (0..400).map(|t| (50.0 + 0.05 * t as f64) * week[t % 7] + noise(t)).collect(),
            (0..400).map(|t| 50.0 + 0.08 * t as f64 + noise(t)).collect(),
            (0..400).map(|t| 80.0 - 60.0 * 0.99_f64.powi(t as i32) + noise(t)).collect(),
        ];
        for y in &series {
            let exhaustive = Spec::candidates(7, true)
                .into_iter()
                .filter_map(|s| fit(s, y, 7))
                .map(|f| f.aicc)
                .fold(f64::INFINITY, f64::min);
            let stepwise = auto(y, 7).expect("a model").aicc;
            // The search may settle for a near-copy (undamped for damped) within 2.5 AICc.
            assert!(stepwise <= exhaustive + 2.5, "stepwise {stepwise} vs every model {exhaustive}");
        }
    }
}
