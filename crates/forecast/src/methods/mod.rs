//! The forecasting methods of the `demand` model. Each is a pure function of a daily series
//! (oldest first) and a horizon; [`Method`] names them, so a forecast can record which method
//! made it.

pub mod ets;
mod intermittent;
pub mod mstl;
mod naive;
pub mod theta;

pub use intermittent::{adida, croston_classic, croston_optimized, croston_sba, imapa, tsb};
pub use naive::seasonal_naive;

use serde::{Deserialize, Serialize};

/// A forecast over a horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// The point forecast per step.
    pub mean: Vec<f64>,
    /// The standard deviation of the forecast error per step, where the method defines one
    /// (intermittent-demand methods do not; their spread comes from backtest errors).
    pub sigma: Option<Vec<f64>>,
}

impl Forecast {
    /// A forecast of `value` at every step, without a spread of its own.
    pub fn flat(value: f64, h: usize) -> Self {
        Self { mean: vec![value; h], sigma: None }
    }
}

/// A forecasting method and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// The value one season ago.
    SeasonalNaive {
        /// Season length in days.
        period: usize,
    },
    /// Croston's method, smoothing 0.1.
    CrostonClassic,
    /// Croston's method, smoothing chosen in [0.1, 0.3].
    CrostonOptimized,
    /// Syntetos–Boylan: Croston's forecast × 0.95 (its bias corrected).
    CrostonSba,
    /// Teunter–Syntetos–Babai: demand size × probability of demand, each smoothed.
    Tsb {
        /// Smoothing of the demand sizes.
        alpha_d: f64,
        /// Smoothing of the demand probability.
        alpha_p: f64,
    },
    /// Aggregate–disaggregate: SES on sums over the mean inter-demand interval.
    Adida,
    /// Multiple aggregation levels (1 … the mean interval), averaged.
    Imapa,
    /// ETS, the model chosen by AICc among statsforecast's AutoETS candidates.
    AutoEts {
        /// Season length in days.
        period: usize,
    },
    /// Theta, the variant chosen by in-sample error, deseasonalised when the series is
    /// seasonal.
    AutoTheta {
        /// Season length in days.
        period: usize,
    },
    /// MSTL: a weekly (and, over two years or more, a yearly) season by STL, the rest by a
    /// non-seasonal ETS.
    Mstl {
        /// Season length in days.
        period: usize,
        /// Also a 365-day season when the series covers it twice.
        yearly: bool,
    },
}

/// The structure an automatic method chose on one stretch of a series (the ETS model, the
/// Theta variant, MSTL's ETS model), to be refitted — parameters only — on another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pin {
    /// Nothing to pin (the method has no structure to choose, or it fell back).
    None,
    /// ETS with this model, and the parameters it was fitted with (the refit's start).
    Ets(ets::Spec, ets::Params),
    /// Theta with this variant.
    Theta(theta::Variant, theta::Start),
    /// MSTL with this model for the adjusted series, and its fitted parameters.
    Mstl(ets::Spec, ets::Params),
}

impl Method {
    /// Forecasts `h` steps after `y` with the structure `pin` (or chooses one when `pin` is
    /// `None`); returns the forecast and the structure used. Choosing is what costs: AutoETS
    /// fits 15 models, a pinned ETS one.
    pub fn forecast_pinned(&self, y: &[f64], h: usize, pin: Option<Pin>) -> (Forecast, Pin) {
        let naive = |period: usize| (seasonal_naive(y, period, h), Pin::None);
        match (*self, pin) {
            (Self::AutoEts { period }, Some(Pin::Ets(spec, params))) => {
                match ets::fit_from(spec, y, period, Some(params)) {
                    Some(f) => (f.forecast(h), Pin::Ets(spec, f.params)),
                    // The pinned model no longer fits (a zero arrived for a multiplicative one):
                    // choose again.
                    None => self.forecast_pinned(y, h, None),
                }
            }
            (Self::AutoEts { period }, _) => {
                ets::auto(y, period).map_or_else(|| naive(period), |f| (f.forecast(h), Pin::Ets(f.spec, f.params)))
            }
            (Self::AutoTheta { period }, Some(Pin::Theta(variant, start))) => {
                theta::auto_among(y, period, h, &[variant], Some(start))
                    .map_or_else(|| naive(period), |(f, v, s)| (f, Pin::Theta(v, s)))
            }
            (Self::AutoTheta { period }, _) => theta::auto_among(y, period, h, &theta::Variant::ALL, None)
                .map_or_else(|| naive(period), |(f, v, s)| (f, Pin::Theta(v, s))),
            (Self::Mstl { period, yearly }, pin) => {
                let periods: &[usize] = if yearly { &[period, 365] } else { &[period] };
                let pinned = match pin {
                    Some(Pin::Mstl(spec, params)) => Some((spec, params)),
                    _ => None,
                };
                match (mstl::forecast_among(y, periods, h, pinned), pinned) {
                    (Some((f, s, p)), _) => (f, Pin::Mstl(s, p)),
                    (None, Some(_)) => self.forecast_pinned(y, h, None),
                    (None, None) => naive(period),
                }
            }
            (method, _) => (method.forecast(y, h), Pin::None),
        }
    }

    /// A short name (`seasonal_naive`, `croston_sba` …), as forecasts record it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SeasonalNaive { .. } => "seasonal_naive",
            Self::CrostonClassic => "croston_classic",
            Self::CrostonOptimized => "croston_optimized",
            Self::CrostonSba => "croston_sba",
            Self::Tsb { .. } => "tsb",
            Self::Adida => "adida",
            Self::Imapa => "imapa",
            Self::AutoEts { .. } => "auto_ets",
            Self::AutoTheta { .. } => "auto_theta",
            Self::Mstl { .. } => "mstl",
        }
    }

    /// Forecasts `h` steps after `y` (`y` must not be empty). A model that cannot be fitted to
    /// the series (too short, say) answers with the seasonal naive forecast.
    pub fn forecast(&self, y: &[f64], h: usize) -> Forecast {
        match *self {
            Self::SeasonalNaive { period } => seasonal_naive(y, period, h),
            Self::CrostonClassic => Forecast::flat(croston_classic(y), h),
            Self::CrostonOptimized => Forecast::flat(croston_optimized(y), h),
            Self::CrostonSba => Forecast::flat(croston_sba(y), h),
            Self::Tsb { alpha_d, alpha_p } => Forecast::flat(tsb(y, alpha_d, alpha_p), h),
            Self::Adida => Forecast::flat(adida(y), h),
            Self::Imapa => Forecast::flat(imapa(y), h),
            Self::AutoEts { period } => {
                ets::auto(y, period).map_or_else(|| seasonal_naive(y, period, h), |f| f.forecast(h))
            }
            Self::AutoTheta { period } => theta::auto(y, period, h).unwrap_or_else(|| seasonal_naive(y, period, h)),
            Self::Mstl { period, yearly } => {
                let periods: &[usize] = if yearly { &[period, 365] } else { &[period] };
                mstl::forecast(y, periods, h).unwrap_or_else(|| seasonal_naive(y, period, h))
            }
        }
    }
}
