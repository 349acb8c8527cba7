//! Per-series features (SPEC §5.3): what the forecast and the replenishment read, and what
//! people look at to judge a series — lags, rolling means and deviations over 7/28/91 days,
//! day-of-week and yearly seasonality indices, trend, intermittency (ADI, CV²), supply interval
//! and lead-time statistics, promotion uplift. A series' features are a pure function of its
//! daily history and its supplies, recomputed whenever the series changes.

use serde::{Deserialize, Serialize};

use crate::select::adi;

/// A series' daily history, dense from its first day to `as_of`.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Day (days since 1970-01-01) of `sold[0]`.
    pub first_day: i32,
    /// Units sold per day, oldest first.
    pub sold: Vec<f64>,
    /// Units sold on promotion per day.
    pub promo_sold: Vec<f64>,
    /// Receipts: `(day, lead time in days)`, oldest first.
    pub supplies: Vec<(i32, i32)>,
}

impl History {
    /// The business day of the last value.
    pub fn as_of(&self) -> i32 {
        self.first_day + self.sold.len() as i32 - 1
    }
}

/// Mean and standard deviation of a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rolling {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population).
    pub std: f64,
}

/// A series' features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Last day of the history.
    pub as_of: i32,
    /// Days of history.
    pub days: usize,
    /// Units sold 1, 7, 14 and 28 days before `as_of + 1`.
    pub lags: [f64; 4],
    /// Rolling mean and deviation over the last 7 days.
    pub rolling_7: Rolling,
    /// … 28 days.
    pub rolling_28: Rolling,
    /// … 91 days.
    pub rolling_91: Rolling,
    /// Mean per weekday (Monday first) over the last 52 weeks ÷ the overall mean (1 = average).
    pub weekday_index: [f64; 7],
    /// The next 28 days a year ago ÷ that year's daily mean (needs a year and 28 days).
    pub yearly_index: Option<f64>,
    /// Least-squares slope over the last 91 days (units per day per day).
    pub trend: f64,
    /// Average days between demands.
    pub adi: f64,
    /// Squared coefficient of variation of the non-zero demands.
    pub cv2: f64,
    /// Average days between receipts.
    pub supply_interval_days: Option<f64>,
    /// Mean order-to-receipt days.
    pub lead_time_mean: Option<f64>,
    /// Their standard deviation.
    pub lead_time_std: Option<f64>,
    /// Mean units on days with promotion sales ÷ mean on days without (needs both).
    pub promo_uplift: Option<f64>,
}

fn rolling(y: &[f64], n: usize) -> Rolling {
    let w = &y[y.len().saturating_sub(n)..];
    if w.is_empty() {
        return Rolling { mean: 0.0, std: 0.0 };
    }
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / w.len() as f64;
    Rolling { mean, std: var.sqrt() }
}

fn mean_std(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    Some((mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()))
}

fn slope(y: &[f64]) -> f64 {
    let n = y.len() as f64;
    if y.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        let dx = i as f64 - mx;
        sxy += dx * (v - my);
        sxx += dx * dx;
    }
    sxy / sxx
}

impl Features {
    /// The features of `h` (at least one day).
    pub fn of(h: &History) -> Self {
        let y = &h.sold;
        let n = y.len();
        let lag = |k: usize| if k <= n { y[n - k] } else { 0.0 };
        let year = &y[n.saturating_sub(364)..];
        let year_start = h.first_day + (n - year.len()) as i32;
        let overall = year.iter().sum::<f64>() / year.len().max(1) as f64;
        let mut by_day = [(0.0, 0usize); 7];
        for (i, v) in year.iter().enumerate() {
            let d = crate::day::weekday(year_start + i as i32);
            by_day[d].0 += v;
            by_day[d].1 += 1;
        }
        let weekday_index =
            by_day.map(|(sum, count)| if count == 0 || overall <= 0.0 { 1.0 } else { sum / count as f64 / overall });
        let yearly_index = (n >= 365 + 28).then(|| {
            let last_year = &y[n - 365..n - 365 + 28];
            let year_mean = y[n - 365..].iter().sum::<f64>() / 365.0;
            if year_mean > 0.0 { last_year.iter().sum::<f64>() / 28.0 / year_mean } else { 1.0 }
        });
        let demands: Vec<f64> = y.iter().copied().filter(|v| *v > 0.0).collect();
        let cv2 = mean_std(&demands).map_or(0.0, |(m, s)| if m > 0.0 { (s / m).powi(2) } else { 0.0 });
        let receipts: Vec<f64> = h.supplies.iter().map(|(d, _)| f64::from(*d)).collect();
        let supply_interval_days =
            (receipts.len() >= 2).then(|| (receipts[receipts.len() - 1] - receipts[0]) / (receipts.len() - 1) as f64);
        let leads: Vec<f64> = h.supplies.iter().map(|(_, l)| f64::from(*l)).collect();
        let lead = mean_std(&leads);
        let (mut promo, mut plain) = (Vec::new(), Vec::new());
        for (v, p) in y.iter().zip(&h.promo_sold) {
            if *p > 0.0 { promo.push(*v) } else { plain.push(*v) }
        }
        let promo_uplift = match (mean_std(&promo), mean_std(&plain)) {
            (Some((p, _)), Some((q, _))) if q > 0.0 => Some(p / q),
            _ => None,
        };
        Self {
            as_of: h.as_of(),
            days: n,
            lags: [lag(1), lag(7), lag(14), lag(28)],
            rolling_7: rolling(y, 7),
            rolling_28: rolling(y, 28),
            rolling_91: rolling(y, 91),
            weekday_index,
            yearly_index,
            trend: slope(&y[n.saturating_sub(91)..]),
            adi: adi(y),
            cv2,
            supply_interval_days,
            lead_time_mean: lead.map(|(m, _)| m),
            lead_time_std: lead.map(|(_, s)| s),
            promo_uplift,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_match_their_definitions_on_a_hand_built_series() {
        // 2026-01-05 is a Monday; 8 weeks of 10 on weekdays and 20 on Saturdays, 0 on Sundays.
        let first_day = crate::day::from_civil(2026, 1, 5);
        let sold: Vec<f64> = (0..56).map(|i| [10.0, 10.0, 10.0, 10.0, 10.0, 20.0, 0.0][i % 7]).collect();
        let promo_sold: Vec<f64> = (0..56).map(|i| if i % 7 == 5 { 20.0 } else { 0.0 }).collect();
        let h = History {
            first_day,
            sold,
            promo_sold,
            supplies: vec![(first_day + 10, 4), (first_day + 24, 6), (first_day + 38, 5)],
        };
        let f = Features::of(&h);
        assert_eq!(f.days, 56);
        // Forecasting Monday: yesterday was a Sunday; 7, 14 and 28 days before were Mondays.
        assert_eq!(f.lags, [0.0, 10.0, 10.0, 10.0]);
        assert!((f.rolling_7.mean - 10.0).abs() < 1e-12);
        assert!((f.weekday_index[5] - 2.0).abs() < 1e-12 && f.weekday_index[6] == 0.0);
        assert!(f.trend.abs() < 0.01, "no trend: {}", f.trend);
        assert!((f.adi - 7.0 / 6.0).abs() < 1e-12);
        assert!((f.supply_interval_days.expect("receipts") - 14.0).abs() < 1e-12);
        assert_eq!(f.lead_time_mean, Some(5.0));
        assert!((f.lead_time_std.expect("leads") - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // Promo days sell 20, the others 50/6 on average.
        assert!((f.promo_uplift.expect("uplift") - 20.0 / (50.0 / 6.0)).abs() < 1e-12);
        assert_eq!(f.yearly_index, None, "less than a year");
    }
}
