//! What `/readyz` reports for the consumers: each role's engine (running, or restarting after
//! a failure, with why) and the partitions a permanent error stopped.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// The state of one role's consumer engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EngineState {
    /// Consuming.
    Running,
    /// Failed; restarting after a backoff.
    Restarting {
        /// The failure, with its cause.
        reason: String,
    },
    /// Stopped on shutdown.
    Stopped,
}

/// A partition a permanent error stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoppedPartition {
    /// Subsystem.
    pub subsystem: &'static str,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The error, with its cause.
    pub reason: String,
}

/// Readiness of every consumer in the process.
#[derive(Debug, Default)]
pub struct Health {
    engines: Mutex<BTreeMap<&'static str, EngineState>>,
    stopped: Mutex<BTreeMap<(String, u32), StoppedPartition>>,
}

/// A snapshot for `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// Whether every engine runs and no partition is stopped.
    pub ready: bool,
    /// Each subsystem's engine.
    pub engines: BTreeMap<&'static str, EngineState>,
    /// Partitions stopped by a permanent error.
    pub stopped_partitions: Vec<StoppedPartition>,
}

impl Health {
    /// Sets a subsystem's engine state.
    pub fn set_engine(&self, subsystem: &'static str, state: EngineState) {
        self.engines.lock().unwrap_or_else(|p| p.into_inner()).insert(subsystem, state);
    }

    /// Records a partition stopped by a permanent error.
    pub fn partition_stopped(&self, stopped: StoppedPartition) {
        let key = (stopped.topic.clone(), stopped.partition);
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).insert(key, stopped);
    }

    /// Forgets the stop of a partition (a worker starts on it again, or it moved to another
    /// member). Returns whether it had been stopped.
    pub fn clear_stopped(&self, topic: &str, partition: u32) -> bool {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).remove(&(topic.to_owned(), partition)).is_some()
    }

    /// The current report.
    pub fn report(&self) -> HealthReport {
        let engines = self.engines.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let stopped_partitions: Vec<StoppedPartition> =
            self.stopped.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let ready = stopped_partitions.is_empty()
            && engines.values().all(|s| matches!(s, EngineState::Running | EngineState::Stopped));
        HealthReport { ready, engines, stopped_partitions }
    }
}
