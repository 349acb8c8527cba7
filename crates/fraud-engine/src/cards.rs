//! Model cards: what the fraud engine needs to know of a model version besides its scores —
//! the feature schema it was trained on (the version's tensor layout), its thresholds, the
//! training reference distributions for drift, and its trees (for per-feature contributions).
//! Read from `<models>/<version>/config.toml` (its `[fraud]` section) and `model.onnx`: the
//! schema travels with the model version, whichever server evaluates it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tally_fraud::{FeatureSchema, Thresholds};

/// One feature's training distribution: bin `i` holds `edges[i-1] <= value < edges[i]`, the
/// last bin the rest (as [`tally_fraud::quality::bin_of`] counts); `share[i]` of the training
/// rows fell in it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The feature.
    pub feature: String,
    /// Upper edges of all but the last bin.
    pub edges: Vec<f64>,
    /// Share of training rows per bin.
    pub share: Vec<f64>,
}

#[derive(Deserialize)]
struct FraudSection {
    schema_version: u32,
    features: Vec<String>,
    thresholds: Thresholds,
    #[serde(default)]
    reference: Vec<Reference>,
}

#[derive(Deserialize)]
struct VersionFile {
    #[serde(default)]
    file: Option<String>,
    fraud: Option<FraudSection>,
}

/// A model version as the engine knows it.
#[derive(Debug)]
pub struct Card {
    /// The version.
    pub version: String,
    /// Its feature schema.
    pub schema: FeatureSchema,
    /// Its thresholds.
    pub thresholds: Thresholds,
    /// Training distributions per feature (schema order; `None` where the card has none).
    pub reference: Vec<Option<Reference>>,
    /// Its trees, when the card ships them: per-feature contributions for reason codes.
    pub trees: Option<tally_trees::Model>,
}

/// Why a version cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model card {version}: {detail}")]
pub struct CardError {
    /// The version.
    pub version: String,
    /// What is wrong.
    pub detail: String,
}

impl Card {
    /// Contributions of each row's features to its margin (`rows` × width, the bias dropped),
    /// when the card has trees.
    pub fn contributions(&self, rows: usize, data: &[f32]) -> Option<Vec<Vec<f32>>> {
        let width = self.schema.names.len();
        let all = self.trees.as_ref()?.contributions(data, rows).ok()??;
        Some(all.chunks_exact(width + 1).map(|c| c[..width].to_vec()).collect())
    }
}

/// The cards of a model directory, loaded on first use (a version's files never change once
/// published; a new model is a new version).
#[derive(Debug)]
pub struct Cards {
    dir: PathBuf,
    loaded: RwLock<HashMap<String, Arc<Card>>>,
}

impl Cards {
    /// The cards under `dir` (`<dir>/<version>/config.toml`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), loaded: RwLock::new(HashMap::new()) }
    }

    /// The card of `version`.
    pub fn get(&self, version: &str) -> Result<Arc<Card>, CardError> {
        if let Some(card) = self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(version) {
            return Ok(Arc::clone(card));
        }
        let card = Arc::new(self.load(version)?);
        self.loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(version.to_owned(), Arc::clone(&card));
        Ok(card)
    }

    fn load(&self, version: &str) -> Result<Card, CardError> {
        let err = |detail: String| CardError { version: version.to_owned(), detail };
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(err("a version is letters, digits, - and _".into()));
        }
        let dir = self.dir.join(version);
        let text = std::fs::read_to_string(dir.join("config.toml"))
            .map_err(|e| err(format!("reading {}: {e}", dir.join("config.toml").display())))?;
        let file: VersionFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let section = file.fraud.ok_or_else(|| err("config.toml has no [fraud] section".into()))?;
        let schema = FeatureSchema { version: section.schema_version, names: section.features };
        if !(0.0..=1.0).contains(&section.thresholds.review)
            || !(section.thresholds.review..=1.0).contains(&section.thresholds.decline)
        {
            return Err(err("thresholds must satisfy 0 <= review <= decline <= 1".into()));
        }
        let reference =
            schema.names.iter().map(|n| section.reference.iter().find(|r| &r.feature == n).cloned()).collect();
        let trees = match file.file {
            Some(f) => {
                let bytes = std::fs::read(dir.join(&f)).map_err(|e| err(format!("reading {f}: {e}")))?;
                let model = tally_trees::Model::from_onnx(&bytes).map_err(|e| err(e.to_string()))?;
                if model.width() != Some(schema.names.len()) {
                    return Err(err(format!(
                        "the model takes {:?} features, the schema names {}",
                        model.width(),
                        schema.names.len()
                    )));
                }
                Some(model)
            }
            None => None,
        };
        Ok(Card { version: version.to_owned(), schema, thresholds: section.thresholds, reference, trees })
    }
}
