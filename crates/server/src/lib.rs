//! tally's services: the inventory engine's partition workers and flush batcher, the HTTP
//! API, and the wiring that builds them from configuration. Domain rules live in
//! `tally-inventory`; backends in `tally-bus`, `tally-store` and `tally-cache`.

pub mod api;
pub mod app;
pub mod inventory;
pub mod metrics;
pub mod telemetry;

pub use app::{App, RunningApp};
