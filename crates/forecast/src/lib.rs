//! Demand forecasting's domain, without I/O (`docs/forecast.md`): demand events parsed and
//! normalised against the [`reference`] data into business days ([`demand`], [`day`]); the
//! forecasting methods of the `demand` model, rolling-origin folds to choose among them, and
//! the accuracy measures they are judged by.
//!
//! Series are daily demand, oldest first, as `f64`. Every method returns a point forecast and a
//! spread per step of the horizon ([`Forecast`]); methods follow Nixtla's statsforecast 2.1
//! (the peer the accuracy is measured against), checked value for value in
//! `tests/reference.rs` against what statsforecast computes for the same series
//! (`scripts/forecast/reference.py`).

pub mod accuracy;
pub mod day;
pub mod decompose;
pub mod demand;
pub mod features;
pub mod folds;
pub mod methods;
pub mod model;
pub mod optimize;
pub mod reference;
pub mod replenish;
pub mod select;
pub mod workers;

pub use methods::{Forecast, Method};
