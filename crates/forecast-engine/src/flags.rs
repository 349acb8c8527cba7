//! Which version of the `demand` model forecasts: a flag every instance follows, switched by
//! an administrator (`PUT /v1/forecast/flags`) as fraud's are. Stored as a document that only
//! a newer revision replaces, each revision claimed first-wins (`ledger::claim_version`), so of
//! two administrators writing at once exactly one wins and the other is told.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// Document key of the flags.
pub const FLAGS_DOC: &str = "forecast/flags";

/// The flags in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForecastFlags {
    /// Bumped by every change.
    pub revision: i64,
    /// The model version every forecast is made with.
    pub active: String,
}

/// The flags as this instance knows them.
#[derive(Debug)]
pub struct FlagsView(RwLock<Arc<ForecastFlags>>);

impl FlagsView {
    /// Starting with `flags`.
    pub fn new(flags: ForecastFlags) -> Self {
        Self(RwLock::new(Arc::new(flags)))
    }

    /// The flags in force.
    pub fn get(&self) -> Arc<ForecastFlags> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Takes `flags` if they are a newer revision; whether they were.
    pub fn offer(&self, flags: ForecastFlags) -> bool {
        let mut current = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if flags.revision > current.revision {
            *current = Arc::new(flags);
            true
        } else {
            false
        }
    }
}

/// Why flags were not set.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    /// The version is not valid or the model does not answer with it.
    #[error("{0}")]
    Invalid(String),
    /// Another writer set the flags at the same time and won; nothing changed.
    #[error(
        "the flags were changed by another writer at the same time (revision {revision} is in force); read them and try again"
    )]
    Conflict {
        /// The revision in force.
        revision: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] tally_runtime::EngineError),
}
