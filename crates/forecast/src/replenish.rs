//! Replenishment (SPEC §5.6): from a forecast's mean and one-step spread, lead-time statistics
//! and the stock on hand, the classic periodic-review order-up-to policy —
//!
//! - demand over a lead time `L` is normal with mean `d̄·L` and deviation
//!   `√(L·σ_d² + d̄²·σ_L²)` (demand and lead time both uncertain);
//! - safety stock `z·√(L·σ_d² + d̄²·σ_L²)` at the service level's `z`;
//! - reorder point: lead-time demand + safety stock;
//! - order-up-to level: the same over `L + R` (the review period `R`: the next chance to order);
//! - suggested order: up to that level from the stock on hand, at least the minimum order,
//!   in whole packs;
//! - days of cover: on hand ÷ mean daily demand;
//! - stock-out probability: the chance that demand before the next receipt exceeds what is on
//!   hand.

use serde::{Deserialize, Serialize};

use crate::select::normal_quantile;

/// The policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Probability of not running out in a replenishment cycle (0.5 … 0.9999).
    pub service_level: f64,
    /// Days between ordering opportunities.
    pub review_days: f64,
    /// Lead time assumed when a series has no receipts yet.
    pub default_lead_time_days: f64,
}

/// What the policy needs to know about one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Position<'a> {
    /// Forecast mean per day.
    pub mean: &'a [f64],
    /// One-step forecast error deviation (daily demand uncertainty).
    pub sigma_daily: f64,
    /// Mean lead time (days), if known.
    pub lead_time_mean: Option<f64>,
    /// Its deviation, if known.
    pub lead_time_std: Option<f64>,
    /// Units on hand now.
    pub on_hand: i64,
    /// Units per pack.
    pub pack_size: u32,
    /// Minimum order (units).
    pub moq: u32,
}

/// A suggestion for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Suggestion {
    /// Lead time used (days).
    pub lead_time_days: f64,
    /// Mean daily demand over the lead time and review period.
    pub daily_demand: f64,
    /// Safety stock (units).
    pub safety_stock: f64,
    /// Reorder point (units).
    pub reorder_point: f64,
    /// Order-up-to level (units).
    pub order_up_to: f64,
    /// Suggested order (units; whole packs, at least the minimum order; 0: none).
    pub order_quantity: i64,
    /// Units on hand.
    pub on_hand: i64,
    /// Days the stock on hand lasts at the forecast demand (`None`: no demand forecast).
    pub days_of_cover: Option<f64>,
    /// Probability of running out before the next receipt could arrive.
    pub stockout_probability: f64,
}

/// The standard normal distribution function (via the complementary error function, W. J.
/// Cody's rational Chebyshev approximation as in Numerical Recipes' `erfcc`; |error| < 1.2e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 { 1.0 - 0.5 * erfc } else { 0.5 * erfc }
}

/// Mean daily demand over the first `days` of the forecast (fractional days pro rata); past
/// the horizon, the mean of its last week continues.
fn mean_over(mean: &[f64], days: f64) -> f64 {
    if mean.is_empty() || days <= 0.0 {
        return 0.0;
    }
    let tail = &mean[mean.len().saturating_sub(7)..];
    let tail = tail.iter().sum::<f64>() / tail.len() as f64;
    let (mut total, mut left, mut i) = (0.0, days, 0);
    while left > 0.0 {
        let v = mean.get(i).copied().unwrap_or(tail);
        total += v * left.min(1.0);
        left -= 1.0;
        i += 1;
    }
    total / days
}

/// The suggestion for one series under `policy`.
pub fn suggest(p: &Position<'_>, policy: &Policy) -> Suggestion {
    let z = normal_quantile(policy.service_level.clamp(0.5, 0.9999));
    let lead = p.lead_time_mean.unwrap_or(policy.default_lead_time_days).max(0.0);
    let lead_std = p.lead_time_std.unwrap_or(0.0).max(0.0);
    let protect = lead + policy.review_days.max(0.0);
    let d = mean_over(p.mean, protect.max(1.0)).max(0.0);
    let sigma = p.sigma_daily.max(0.0);
    let spread = |days: f64| (days * sigma * sigma + d * d * lead_std * lead_std).sqrt();
    let safety_stock = z * spread(lead);
    let reorder_point = d * lead + safety_stock;
    let order_up_to = d * protect + z * spread(protect);
    let on_hand = p.on_hand.max(0);
    let pack = i64::from(p.pack_size.max(1));
    let wanted = (order_up_to - on_hand as f64).ceil() as i64;
    let order_quantity = if wanted <= 0 {
        0
    } else {
        let units = wanted.max(i64::from(p.moq));
        (units + pack - 1) / pack * pack
    };
    let lead_mean = d * lead;
    let lead_spread = spread(lead);
    let stockout_probability = if lead_spread > 0.0 {
        1.0 - normal_cdf((on_hand as f64 - lead_mean) / lead_spread)
    } else if lead_mean > on_hand as f64 {
        1.0
    } else {
        0.0
    };
    Suggestion {
        lead_time_days: lead,
        daily_demand: d,
        safety_stock,
        reorder_point,
        order_up_to,
        order_quantity,
        on_hand,
        days_of_cover: (d > 0.0).then(|| on_hand as f64 / d),
        stockout_probability,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { service_level: 0.95, review_days: 7.0, default_lead_time_days: 7.0 };

    #[test]
    fn the_normal_distribution_function_matches_its_table() {
        for (x, p) in
            [(0.0, 0.5), (1.0, 0.841_344_746), (-1.644_853_627, 0.05), (2.326_347_874, 0.99), (-3.0, 0.001_349_898)]
        {
            assert!((normal_cdf(x) - p).abs() < 2e-7, "Φ({x}) = {} not {p}", normal_cdf(x));
        }
    }

    #[test]
    fn the_textbook_case_gives_the_textbook_numbers() {
        // 10 a day ± 3, lead time 4 ± 1 days, 7-day review, 95 %: σ_L = √(4·9 + 100·1) = √136.
        let mean = vec![10.0; 28];
        let p = Position {
            mean: &mean,
            sigma_daily: 3.0,
            lead_time_mean: Some(4.0),
            lead_time_std: Some(1.0),
            on_hand: 30,
            pack_size: 12,
            moq: 50,
        };
        let s = suggest(&p, &POLICY);
        let z = 1.644_853_627;
        assert!((s.safety_stock - z * 136f64.sqrt()).abs() < 1e-6);
        assert!((s.reorder_point - (40.0 + z * 136f64.sqrt())).abs() < 1e-6);
        let up_to = 110.0 + z * (11.0 * 9.0 + 100.0f64).sqrt();
        assert!((s.order_up_to - up_to).abs() < 1e-6);
        // 133.2 − 30 → 104 units → 9 packs of 12 = 108.
        assert_eq!(s.order_quantity, 108);
        assert_eq!(s.days_of_cover, Some(3.0));
        assert!((s.stockout_probability - (1.0 - normal_cdf((30.0 - 40.0) / 136f64.sqrt()))).abs() < 1e-9);
    }

    #[test]
    fn enough_stock_orders_nothing_and_a_small_need_orders_the_minimum_in_packs() {
        let mean = vec![2.0; 28];
        let base = Position {
            mean: &mean,
            sigma_daily: 1.0,
            lead_time_mean: None,
            lead_time_std: None,
            on_hand: 500,
            pack_size: 6,
            moq: 40,
        };
        let s = suggest(&base, &POLICY);
        assert_eq!(s.order_quantity, 0);
        assert!(s.stockout_probability < 1e-6);
        assert_eq!(s.lead_time_days, 7.0, "the default lead time");
        let short = suggest(&Position { on_hand: 30, ..base }, &POLICY);
        assert_eq!(short.order_quantity, 42, "the 40-unit minimum in packs of 6");
        let none = suggest(&Position { mean: &[0.0; 28], sigma_daily: 0.0, ..base }, &POLICY);
        assert_eq!((none.order_quantity, none.days_of_cover, none.stockout_probability), (0, None, 0.0));
    }
}
