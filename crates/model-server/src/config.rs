//! A model version's `config.toml`: what the server needs to serve it (the file, inputs,
//! outputs, largest batch), plus sections for the model's consumers that the server passes over
//! (`[fraud]`: the feature schema, thresholds and drift reference the fraud engine reads).

use std::path::Path;

use serde::Deserialize;
use tally_model::DataType;

/// One tensor as the config declares it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorConfig {
    /// Its name.
    pub name: String,
    /// Its datatype.
    pub datatype: DataType,
    /// Its shape, -1 for the batch (and any variable) dimension.
    pub shape: Vec<i64>,
}

/// `<root>/<model>/<version>/config.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// `onnx` (tree ensembles) or `tally-demand` (the demand model, configured by `[demand]`).
    pub platform: String,
    /// The model file, relative to the version's directory (none for `tally-demand`).
    #[serde(default)]
    pub file: String,
    /// Most rows one evaluation takes (dynamic batching stops there; a larger request is
    /// refused).
    #[serde(default = "default_max_batch")]
    pub max_batch_size: usize,
    /// Inputs (exactly one FP32 `[-1, width]` for tree models).
    pub inputs: Vec<TensorConfig>,
    /// Outputs.
    pub outputs: Vec<TensorConfig>,
    /// The fraud engine's section (schema, thresholds, reference): not the server's business.
    #[serde(default)]
    pub fraud: Option<toml::Table>,
    /// The demand model's section.
    #[serde(default)]
    pub demand: Option<toml::Table>,
}

fn default_max_batch() -> usize {
    1024
}

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or not the expected keys.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
}

impl VersionConfig {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })
    }
}
