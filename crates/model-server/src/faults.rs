//! Fault injection for tests and game days: added latency, an error rate, hard down. Off by
//! default; set at start (`tally model-server --fault-…`) or at runtime (`PUT /v2/faults`, a
//! tally extension — no OIP client sends it by accident).

use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The faults in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSettings {
    /// Added to every inference, in milliseconds.
    pub latency_ms: u64,
    /// Share of inferences answered with an internal error (0 to 1).
    pub error_rate: f64,
    /// Not ready; every inference answered 503 / UNAVAILABLE.
    pub down: bool,
}

impl FaultSettings {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!("error_rate must be 0 to 1, got {}", self.error_rate));
        }
        if self.latency_ms > 600_000 {
            return Err(format!("latency_ms must be at most 600000, got {}", self.latency_ms));
        }
        Ok(())
    }
}

/// What an inference meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Nothing (after any added latency).
    Pass,
    /// An injected internal error.
    Error,
    /// Hard down.
    Down,
}

/// The server's fault settings, shared.
#[derive(Debug)]
pub struct Faults {
    settings: RwLock<FaultSettings>,
    rng: Mutex<SmallRng>,
}

impl Default for Faults {
    fn default() -> Self {
        Self { settings: RwLock::default(), rng: Mutex::new(SmallRng::seed_from_u64(0x7a11)) }
    }
}

impl Faults {
    /// The settings in force.
    pub fn get(&self) -> FaultSettings {
        *self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the settings.
    pub fn set(&self, settings: FaultSettings) {
        *self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
    }

    /// Applies the faults to one inference: sleeps the added latency, then says what happens.
    pub async fn apply(&self) -> Injected {
        let f = self.get();
        if f.down {
            return Injected::Down;
        }
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if f.error_rate > 0.0
            && self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random::<f64>() < f.error_rate
        {
            Injected::Error
        } else {
            Injected::Pass
        }
    }
}
