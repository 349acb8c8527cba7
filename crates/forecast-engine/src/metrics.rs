//! Forecasting's metrics (`tally_forecast_…`) and the counters the demo and the benchmark
//! read.

#![allow(clippy::disallowed_macros)] // the one place forecast touches the `metrics` macros

use std::sync::atomic::{AtomicU64, Ordering};

use tally_forecast::demand::DemandKind;
use tally_runtime::metrics::{Family, Kind};

use crate::handler::{DemandOutcome, REFUSALS};

/// Metric names.
pub mod names {
    /// Demand events staged, by kind.
    pub const EVENTS_STAGED_TOTAL: &str = "tally_forecast_events_staged_total";
    /// Demand events parked for want of reference data.
    pub const EVENTS_PARKED_TOTAL: &str = "tally_forecast_events_parked_total";
    /// Parked events staged once their reference data arrived, by fate.
    pub const EVENTS_UNPARKED_TOTAL: &str = "tally_forecast_events_unparked_total";
    /// Events waiting in the parking table.
    pub const PARKED_EVENTS: &str = "tally_forecast_parked_events";
}

/// Forecasting's metric families, its own and its consumer runtime's.
pub fn families() -> Vec<Family> {
    use Kind::*;
    use names::*;
    let mut all = vec![
        Family {
            name: EVENTS_STAGED_TOTAL.into(),
            kind: Counter,
            help: "Demand events staged, by kind (sale, supply, return).",
            known: Some(("kind", vec!["sale", "supply", "return"])),
        },
        Family {
            name: EVENTS_PARKED_TOTAL.into(),
            kind: Counter,
            help: "Demand events parked because their SKU or location is not in the reference tables yet.",
            known: None,
        },
        Family {
            name: EVENTS_UNPARKED_TOTAL.into(),
            kind: Counter,
            help: "Parked demand events released once their reference data arrived, by fate (staged, dead_lettered).",
            known: Some(("fate", vec!["staged", "dead_lettered"])),
        },
        Family {
            name: PARKED_EVENTS.into(),
            kind: Gauge,
            help: "Demand events waiting for their reference data.",
            known: None,
        },
    ];
    all.extend(tally_runtime::metrics::families("forecast", &DemandOutcome::CODES, &REFUSALS));
    all
}

/// Counters for the demo and the benchmark.
#[derive(Debug, Default)]
pub struct ForecastStats {
    /// Events staged.
    pub staged: AtomicU64,
    /// Events parked.
    pub parked: AtomicU64,
    /// Parked events staged later.
    pub unparked: AtomicU64,
}

/// Forecasting's metric handles.
#[derive(Debug, Default)]
pub struct ForecastMetrics {
    /// Counters.
    pub stats: std::sync::Arc<ForecastStats>,
}

impl ForecastMetrics {
    /// Metrics over `stats`.
    pub fn new(stats: std::sync::Arc<ForecastStats>) -> Self {
        Self { stats }
    }

    /// An event was staged.
    pub fn staged(&self, kind: DemandKind) {
        self.stats.staged.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::EVENTS_STAGED_TOTAL, "kind" => kind.as_str()).increment(1);
    }

    /// An event was parked.
    pub fn parked(&self) {
        self.stats.parked.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::EVENTS_PARKED_TOTAL).increment(1);
    }

    /// Parked events were released: `staged` staged, `dead_lettered` refused.
    pub fn unparked(&self, staged: usize, dead_lettered: usize) {
        self.stats.unparked.fetch_add(staged as u64, Ordering::Relaxed);
        metrics::counter!(names::EVENTS_UNPARKED_TOTAL, "fate" => "staged").increment(staged as u64);
        metrics::counter!(names::EVENTS_UNPARKED_TOTAL, "fate" => "dead_lettered").increment(dead_lettered as u64);
    }

    /// Events waiting in the parking table.
    pub fn parked_now(&self, n: u64) {
        metrics::gauge!(names::PARKED_EVENTS).set(n as f64);
    }
}
