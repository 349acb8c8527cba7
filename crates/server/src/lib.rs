//! tally's HTTP API and the wiring that builds each role from configuration. Domain rules
//! live in `tally-inventory`, its engine in `tally-inventory-engine`, the consumer machinery
//! in `tally-runtime`; backends in `tally-bus`, `tally-store` and `tally-cache`.

pub mod api;
pub mod app;
pub mod metrics;
pub mod scheduling;
pub mod telemetry;

pub use app::{App, RunningApp};
