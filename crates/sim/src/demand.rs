//! Demand for the forecasting pipeline: SKUs × locations whose daily sales follow a Zipf
//! popularity, a weekly pattern, a yearly season, a trend, promotions (weeks of uplift) and —
//! for the long tail — intermittent demand; supplies arrive after supplier lead times; a few
//! sales come back as returns. Each series-day is drawn from its own seeded generator, so any
//! day of any series is reproducible on its own: the truth a test or the accuracy comparison
//! checks the pipeline's rollup and forecasts against.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};
use serde_json::json;
use tally_core::Envelope;
use tally_forecast::day;
use tally_forecast::demand::types;
use tally_forecast::reference::{LocationInfo, SkuInfo};

/// Settings.
#[derive(Debug, Clone)]
pub struct DemandConfig {
    /// Seed.
    pub seed: u64,
    /// SKUs (each sold at every location).
    pub skus: usize,
    /// Locations (cycled through a few real time zones).
    pub locations: usize,
    /// First day of history (days since 1970-01-01).
    pub first_day: i32,
    /// Share of SKUs with intermittent demand (the long tail).
    pub intermittent_share: f64,
    /// Chance a week is a promotion week for a series.
    pub promo_rate: f64,
    /// Mean sales uplift of a promotion.
    pub promo_uplift: f64,
    /// Names the SKUs (default `sku-00000`…; the demo uses the inventory simulator's, so
    /// suggestions read real stock).
    pub sku_name: fn(usize) -> String,
    /// Locations as (name, region, IANA zone); empty: a few real cities.
    pub location_names: Vec<(String, String, String)>,
}

fn default_sku_name(i: usize) -> String {
    format!("sku-{i:05}")
}

impl Default for DemandConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            skus: 50,
            locations: 3,
            first_day: day::from_civil(2024, 1, 1),
            intermittent_share: 0.4,
            promo_rate: 0.08,
            promo_uplift: 1.8,
            sku_name: default_sku_name,
            location_names: Vec::new(),
        }
    }
}

const ZONES: [(&str, &str, &str); 4] = [
    ("berlin", "EU", "Europe/Berlin"),
    ("lisbon", "EU", "Europe/Lisbon"),
    ("newyork", "US", "America/New_York"),
    ("tokyo", "APAC", "Asia/Tokyo"),
];
const CATEGORIES: [&str; 5] = ["dairy", "bakery", "household", "beverages", "snacks"];

/// One series' hidden parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSpec {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Its time zone.
    pub time_zone: String,
    /// Mean daily units at the start (before season and promotions).
    pub base: f64,
    /// Multiplier per weekday (Monday first).
    pub weekly: [f64; 7],
    /// Yearly amplitude (share of the base), peaking at `peak_day` of the year.
    pub yearly: f64,
    /// Day of the year of the yearly peak.
    pub peak_day: f64,
    /// Growth per day (share of the base).
    pub trend: f64,
    /// Chance of any demand on a day (1 for smooth series).
    pub demand_chance: f64,
    /// Supplier lead time: mean and deviation (days).
    pub lead_time: (f64, f64),
    /// Days between orders.
    pub order_every: i32,
}

/// The demand simulator.
#[derive(Debug, Clone)]
pub struct DemandSim {
    cfg: DemandConfig,
    /// Every series, SKU-major.
    pub series: Vec<SeriesSpec>,
    skus: Vec<SkuInfo>,
    locations: Vec<LocationInfo>,
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    tally_core::fnv1a(seed.to_le_bytes().into_iter().chain(a.to_le_bytes()).chain(b.to_le_bytes()))
}

/// One simulated day of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimDay {
    /// Units sold.
    pub sold: i64,
    /// Whether it was a promotion day.
    pub promo: bool,
    /// Units returned (of earlier sales).
    pub returned: i64,
}

impl DemandSim {
    /// A simulator for `cfg`.
    pub fn new(cfg: DemandConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let named: Vec<(String, String, String)> = if cfg.location_names.is_empty() {
            (0..cfg.locations.max(1))
                .map(|i| {
                    let (name, region, zone) = ZONES[i % ZONES.len()];
                    let suffix = if i < ZONES.len() { String::new() } else { format!("-{}", i / ZONES.len()) };
                    (format!("{name}{suffix}"), region.to_owned(), zone.to_owned())
                })
                .collect()
        } else {
            cfg.location_names.clone()
        };
        let locations: Vec<LocationInfo> = named
            .into_iter()
            .filter_map(|(name, region, time_zone)| {
                Some(LocationInfo { location: tally_core::LocationId::parse(name).ok()?, region, time_zone })
            })
            .collect();
        let mut skus = Vec::new();
        let mut series = Vec::new();
        for s in 0..cfg.skus.max(1) {
            let pack_size = [1, 6, 12, 24][rng.random_range(0..4)];
            let sku = (cfg.sku_name)(s);
            let Ok(id) = tally_core::Sku::parse(sku.clone()) else { continue };
            skus.push(SkuInfo {
                sku: id,
                category: CATEGORIES[s % CATEGORIES.len()].into(),
                brand: format!("brand-{}", s % 7),
                price: (rng.random_range(0.5..30.0f64) * 100.0).round() / 100.0,
                pack_size,
                moq: pack_size * rng.random_range(1..4),
            });
            // Zipf-like popularity: the first SKUs sell most.
            let popularity = 60.0 / (1.0 + s as f64).powf(0.9);
            let intermittent = rng.random_bool(cfg.intermittent_share.clamp(0.0, 1.0)) && s > 2;
            let weekend = rng.random_range(1.1..1.8);
            for l in &locations {
                let weekly = [0.9, 0.85, 0.9, 1.0, 1.15, weekend, 0.6 + rng.random_range(0.0..0.3)];
                series.push(SeriesSpec {
                    sku: sku.clone(),
                    location: l.location.as_str().to_owned(),
                    time_zone: l.time_zone.clone(),
                    base: if intermittent {
                        rng.random_range(1.0..4.0)
                    } else {
                        popularity * rng.random_range(0.6..1.4) + 2.0
                    },
                    weekly,
                    yearly: rng.random_range(0.0..0.35),
                    peak_day: rng.random_range(0.0..365.0),
                    trend: rng.random_range(-0.0004..0.0012),
                    demand_chance: if intermittent { rng.random_range(0.08..0.45) } else { 1.0 },
                    lead_time: (rng.random_range(2.0..12.0), rng.random_range(0.0..2.5)),
                    order_every: rng.random_range(7..21),
                });
            }
        }
        Self { cfg, series, skus, locations }
    }

    /// The catalogue.
    pub fn skus(&self) -> &[SkuInfo] {
        &self.skus
    }

    /// The locations.
    pub fn locations(&self) -> &[LocationInfo] {
        &self.locations
    }

    /// The first day of history.
    pub fn first_day(&self) -> i32 {
        self.cfg.first_day
    }

    fn promo_week(&self, i: usize, day: i32) -> bool {
        let week = (day - self.cfg.first_day).div_euclid(7) as u64;
        let r = mix(self.cfg.seed ^ 0x9e37, i as u64, week);
        (r % 10_000) as f64 / 10_000.0 < self.cfg.promo_rate
    }

    /// Series `i` on `day`.
    pub fn day(&self, i: usize, day: i32) -> SimDay {
        let s = &self.series[i];
        let mut rng = SmallRng::seed_from_u64(mix(self.cfg.seed, i as u64, day as u64));
        let promo = self.promo_week(i, day);
        let t = f64::from(day - self.cfg.first_day);
        let season = 1.0 + s.yearly * (2.0 * std::f64::consts::PI * (t - s.peak_day) / 365.25).cos();
        let mean = (s.base * s.weekly[day::weekday(day)] * season * (1.0 + s.trend * t)).max(0.05)
            * if promo { self.cfg.promo_uplift } else { 1.0 };
        let sold = if rng.random_bool(s.demand_chance.clamp(0.0, 1.0)) {
            // An intermittent series' demand, when there is any, is at least one unit.
            Poisson::new(mean.max(0.01)).map_or(0, |p| p.sample(&mut rng) as i64) + i64::from(s.demand_chance < 1.0)
        } else {
            0
        };
        let returned = if sold > 0 && rng.random_bool(0.03) { 1 } else { 0 };
        SimDay { sold, promo, returned }
    }

    /// The true daily units of series `i` over `days` from the first day.
    pub fn truth(&self, i: usize, days: usize) -> Vec<f64> {
        (0..days).map(|d| self.day(i, self.cfg.first_day + d as i32).sold as f64).collect()
    }

    fn at(&self, zone: &str, day: i32, seconds: i64) -> String {
        // A local wall-clock time in the zone, as an instant.
        let (y, m, d) = day::to_civil(day);
        let local = jiff::civil::date(y as i16, m as i8, d as i8).at(0, 0, 0, 0);
        let tz = jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let start = tz.to_timestamp(local).map_or(i64::from(day) * 86_400, |t| t.as_second());
        jiff::Timestamp::from_second(start + seconds).map_or_else(|_| String::new(), |t| t.to_string())
    }

    /// Every event of `day` for every series: one sale event per series with sales (at a
    /// local business hour), its returns, and supplies received that day.
    pub fn events(&self, day: i32) -> Vec<Envelope> {
        let mut out = Vec::new();
        for (i, s) in self.series.iter().enumerate() {
            let d = self.day(i, day);
            let hour = 9 * 3600 + (mix(self.cfg.seed, i as u64, day as u64 ^ 0x51) % (10 * 3600)) as i64;
            if d.sold > 0 {
                let mut e = Envelope::new(
                    "/sim/pos",
                    types::SALE,
                    json!({"sku": s.sku, "location": s.location, "quantity": d.sold, "promo": d.promo,
                           "occurred_at": self.at(&s.time_zone, day, hour)}),
                );
                e.id = format!("sale-{}-{}-{day}", s.sku, s.location);
                e.subject = Some(format!("{}@{}", s.sku, s.location));
                out.push(e);
            }
            if d.returned > 0 {
                let mut e = Envelope::new(
                    "/sim/pos",
                    types::RETURN,
                    json!({"sku": s.sku, "location": s.location, "quantity": d.returned,
                           "occurred_at": self.at(&s.time_zone, day, hour + 1800)}),
                );
                e.id = format!("return-{}-{}-{day}", s.sku, s.location);
                e.subject = Some(format!("{}@{}", s.sku, s.location));
                out.push(e);
            }
            if (day - self.cfg.first_day).rem_euclid(s.order_every) == s.order_every - 1 {
                let mut rng = SmallRng::seed_from_u64(mix(self.cfg.seed ^ 0x5u64, i as u64, day as u64));
                let lead = (s.lead_time.0 + rng.random_range(-1.0..1.0) * s.lead_time.1).round().max(1.0) as i32;
                let units = (s.base * f64::from(s.order_every)).ceil().max(1.0) as i64;
                let mut e = Envelope::new(
                    "/sim/wms",
                    types::SUPPLY,
                    json!({"sku": s.sku, "location": s.location, "quantity": units,
                           "ordered_at": self.at(&s.time_zone, day - lead, 8 * 3600),
                           "received_at": self.at(&s.time_zone, day, 7 * 3600)}),
                );
                e.id = format!("supply-{}-{}-{day}", s.sku, s.location);
                e.subject = Some(format!("{}@{}", s.sku, s.location));
                out.push(e);
            }
        }
        out
    }
}

/// The topic of a demand event type (the default names).
pub fn topic_of(ty: &str) -> &'static str {
    match ty {
        types::SALE => "demand.sales",
        types::SUPPLY => "demand.supplies",
        _ => "demand.returns",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_days_and_the_tail_is_intermittent() {
        let a = DemandSim::new(DemandConfig::default());
        let b = DemandSim::new(DemandConfig::default());
        assert_eq!(a.series, b.series);
        assert_eq!(a.truth(5, 100), b.truth(5, 100));
        let zero_share = |i: usize| a.truth(i, 365).iter().filter(|v| **v == 0.0).count() as f64 / 365.0;
        assert!(zero_share(0) < 0.05, "the best seller sells every day");
        assert!((0..a.series.len()).any(|i| zero_share(i) > 0.4), "some series are intermittent");
        let events = a.events(a.first_day() + 10);
        assert!(events.iter().all(|e| e.subject.is_some()));
        assert!(events.iter().any(|e| e.ty == types::SALE));
    }
}
