//! The `demand` model: what the model server (OIP v2) and the in-process path both run, and
//! its tensor contract.
//!
//! - input `history`, FP32 `[N, L]`: one series per row, oldest day first, **left-padded with
//!   −1** (a series shorter than `L` starts at its first value ≥ 0; JSON has no NaN, so
//!   padding is a negative number — NaN is read as padding too, for binary clients);
//! - outputs `mean` and `sigma`, FP32 `[N, H]` (point forecast and error deviation per day
//!   ahead), `quantiles`, FP32 `[N, H, Q]` at the version's quantile levels, and `method`,
//!   INT64 `[N]` (an index into [`METHODS`]).
//!
//! Per series: the candidates of its demand pattern, chosen by rolling-origin backtest
//! ([`crate::select::choose`]).

use crate::select::{self, Choice};
use crate::workers::Workers;

/// Input tensor name.
pub const INPUT: &str = "history";
/// Output: point forecast per day.
pub const MEAN: &str = "mean";
/// Output: error deviation per day.
pub const SIGMA: &str = "sigma";
/// Output: quantiles per day.
pub const QUANTILES: &str = "quantiles";
/// Output: the method chosen.
pub const METHOD: &str = "method";

/// Method names by their code in the `method` output (append only: codes are the contract).
pub const METHODS: [&str; 10] = [
    "seasonal_naive",
    "croston_classic",
    "croston_optimized",
    "croston_sba",
    "tsb",
    "adida",
    "imapa",
    "auto_ets",
    "auto_theta",
    "mstl",
];

/// The code of a method name.
pub fn method_code(name: &str) -> i64 {
    METHODS.iter().position(|m| *m == name).map_or(-1, |i| i as i64)
}

/// A version's settings (its `config.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Season length (days).
    pub period: usize,
    /// Days forecast.
    pub horizon: usize,
    /// Backtest folds, at least (a horizon under four weeks gets more, up to eight).
    pub windows: usize,
    /// Quantile levels of the `quantiles` output.
    pub quantiles: Vec<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self { period: 7, horizon: 28, windows: 2, quantiles: vec![0.1, 0.5, 0.9] }
    }
}

/// One series' forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesForecast {
    /// The method chosen (a name of [`METHODS`]).
    pub method: &'static str,
    /// Point forecast per day.
    pub mean: Vec<f64>,
    /// Error deviation per day.
    pub sigma: Vec<f64>,
    /// Per quantile level (as in the settings), per day.
    pub quantiles: Vec<Vec<f64>>,
}

impl SeriesForecast {
    /// The forecast of a chosen method.
    pub fn of(choice: &Choice, levels: &[f64]) -> Self {
        Self {
            method: choice.method.name(),
            mean: choice.forecast.mean.clone(),
            sigma: choice.spread.clone(),
            quantiles: levels.iter().map(|&q| choice.quantile(q)).collect(),
        }
    }

    /// The `q` quantile per day (normal, clipped at zero), at any level.
    pub fn quantile(&self, q: f64) -> Vec<f64> {
        let z = select::normal_quantile(q);
        self.mean.iter().zip(&self.sigma).map(|(m, s)| (m + z * s).max(0.0)).collect()
    }
}

/// Forecasts one series (an empty one forecasts zero).
pub fn forecast(history: &[f64], settings: &Settings) -> SeriesForecast {
    if history.is_empty() {
        let zeros = vec![0.0; settings.horizon];
        return SeriesForecast {
            method: METHODS[0],
            mean: zeros.clone(),
            sigma: zeros.clone(),
            quantiles: settings.quantiles.iter().map(|_| zeros.clone()).collect(),
        };
    }
    let cfg = select::Config { period: settings.period, horizon: settings.horizon, windows: settings.windows };
    SeriesForecast::of(&select::choose(history, cfg), &settings.quantiles)
}

/// Forecasts many series, spread over the machine's cores at the normal policy (blocking:
/// call it off async threads). One forecast per history, in order.
pub fn forecast_many(histories: &[Vec<f64>], settings: &Settings) -> Vec<SeriesForecast> {
    forecast_many_on(histories, settings, Workers::ALL_CORES)
}

/// The same on `workers` (a panicking forecast is a bug: its chunk comes back empty and the
/// caller, finding fewer forecasts than series, treats the batch as failed).
pub fn forecast_many_on(histories: &[Vec<f64>], settings: &Settings, workers: Workers) -> Vec<SeriesForecast> {
    workers.map(histories, |h| forecast(h, settings))
}

/// Settings from a model version's `[demand]` section (absent keys take the defaults).
pub fn settings_from(
    period: Option<usize>,
    horizon: Option<usize>,
    windows: Option<usize>,
    quantiles: Option<Vec<f64>>,
) -> Result<Settings, String> {
    let d = Settings::default();
    let s = Settings {
        period: period.unwrap_or(d.period),
        horizon: horizon.unwrap_or(d.horizon),
        windows: windows.unwrap_or(d.windows),
        quantiles: quantiles.unwrap_or(d.quantiles),
    };
    if s.period == 0 || s.horizon == 0 || s.horizon > 366 {
        return Err(format!("period must be > 0 and horizon 1 to 366, got {} and {}", s.period, s.horizon));
    }
    if s.quantiles.iter().any(|q| !(0.0 < *q && *q < 1.0)) {
        return Err("quantile levels must be within 0 and 1 (exclusive)".into());
    }
    Ok(s)
}

/// The padding value before a series' first day.
pub const PADDING: f32 = -1.0;

/// Histories as the `history` tensor: values and shape `[N, L]`, left-padded with
/// [`PADDING`]. A history's own negative days (returns exceeding sales) are sent as 0 — the
/// model counts them as no demand anyway — so padding stays unambiguous.
pub fn encode(histories: &[Vec<f64>]) -> (Vec<f32>, [i64; 2]) {
    let width = histories.iter().map(Vec::len).max().unwrap_or(0);
    let mut data = Vec::with_capacity(histories.len() * width);
    for h in histories {
        data.extend(std::iter::repeat_n(PADDING, width - h.len()));
        data.extend(h.iter().map(|&v| v.max(0.0) as f32));
    }
    (data, [histories.len() as i64, width as i64])
}

/// The histories of a `history` tensor (each from its first value ≥ 0); `None` if the shape
/// does not match the data or a value after the padding is not finite.
pub fn decode(data: &[f32], rows: usize, width: usize) -> Option<Vec<Vec<f64>>> {
    if data.len() != rows.checked_mul(width)? {
        return None;
    }
    let mut out = Vec::with_capacity(rows);
    for row in data.chunks(width.max(1)).take(rows) {
        let start = row.iter().position(|v| *v >= 0.0).unwrap_or(row.len());
        let values = &row[start..];
        if values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        out.push(values.iter().map(|&v| f64::from(v)).collect());
    }
    if rows > 0 && width == 0 {
        out.resize(rows, Vec::new());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_round_trip_through_the_padded_tensor() {
        let histories = vec![vec![1.0, 2.0, 3.0], vec![4.0], vec![]];
        let (data, shape) = encode(&histories);
        assert_eq!(shape, [3, 3]);
        assert!(data[3] == PADDING && data[4] == PADDING && data[5] == 4.0);
        assert_eq!(decode(&data, 3, 3), Some(histories));
        assert_eq!(decode(&data, 2, 3), None, "shape and data disagree");
        assert_eq!(decode(&[1.0, f32::NAN], 1, 2), None, "a gap inside a series is not padding");
        assert_eq!(decode(&[f32::NAN, 2.0], 1, 2), Some(vec![vec![2.0]]), "NaN pads too (binary clients)");
    }

    #[test]
    fn a_forecast_has_the_horizon_its_quantiles_and_a_named_method() {
        let y: Vec<f64> = (0..120).map(|i| 10.0 + [0.0, 1.0, 2.0, 3.0, 2.0, 8.0, -4.0][i % 7]).collect();
        let f = forecast(&y, &Settings::default());
        assert_eq!((f.mean.len(), f.sigma.len(), f.quantiles.len()), (28, 28, 3));
        assert!(method_code(f.method) >= 0);
        for d in 0..28 {
            assert!(f.quantiles[0][d] <= f.quantiles[1][d] && f.quantiles[1][d] <= f.quantiles[2][d]);
        }
        assert_eq!(forecast(&[], &Settings::default()).mean, vec![0.0; 28]);
    }
}
