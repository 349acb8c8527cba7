//! The model repository on disk: `<root>/<model>/<version>/config.toml` plus the model file it
//! names; versions are positive integers and the highest is the default (Triton's layout).
//! Rescanned on an interval: a new version directory is loaded, a removed one unloaded, a
//! changed file reloaded — no restart. A version that fails to load is reported and not
//! served; the others keep serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tally_trees::Model;

use tally_model::batch::Batcher;
use tally_trees::Tensor;

use crate::batching::{self, OnBatch};
use crate::config::VersionConfig;

/// A loaded model version.
#[derive(Debug)]
pub struct Loaded {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its config.
    pub config: VersionConfig,
    /// What evaluates it.
    pub evaluator: Evaluator,
    /// Newest modification time of its files when loaded (a newer one reloads it).
    stamp: SystemTime,
}

/// What evaluates a model version, by its config's `platform`.
#[derive(Debug)]
pub enum Evaluator {
    /// `onnx`: a tree ensemble, dynamically batched.
    Trees {
        /// The evaluator.
        model: Arc<Model>,
        /// Its dynamic-batching queue.
        batcher: Batcher<Vec<Tensor>>,
        /// Values per row.
        width: usize,
    },
    /// `tally-demand`: the demand model (`tally_forecast::model`) with the version's
    /// `[demand]` settings, evaluated on the threads it names.
    Demand(Arc<tally_forecast::model::Settings>, tally_forecast::workers::Workers),
}

/// The `[demand]` section of a `tally-demand` version.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DemandSection {
    period: Option<usize>,
    horizon: Option<usize>,
    windows: Option<usize>,
    quantiles: Option<Vec<f64>>,
    /// Evaluation threads per call (0 or absent: one per core).
    threads: Option<usize>,
    /// `idle` (absent: `SCHED_IDLE`, so a refresh yields the CPU to fraud scoring in the same
    /// server) or `normal`.
    priority: Option<tally_forecast::workers::Priority>,
}

/// The platform of the demand model.
pub const DEMAND_PLATFORM: &str = "tally-demand";

type Versions = BTreeMap<u64, Arc<Loaded>>;

/// Makes the batch callback of a (model, version).
type BatchHook = Box<dyn Fn(&str, &str) -> OnBatch + Send + Sync>;

/// The repository.
pub struct Repository {
    root: PathBuf,
    window: Duration,
    on_batch: BatchHook,
    models: RwLock<BTreeMap<String, Versions>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository").field("root", &self.root).finish_non_exhaustive()
    }
}

/// Why a name does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

fn stamp(dir: &Path) -> SystemTime {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Repository {
    /// A repository at `root`, loaded once; `window` is the dynamic-batching window;
    /// `on_batch(model, version)` makes the callback each evaluation reports its rows to.
    pub fn open(
        root: impl Into<PathBuf>,
        window: Duration,
        on_batch: impl Fn(&str, &str) -> OnBatch + Send + Sync + 'static,
    ) -> Arc<Self> {
        let repo = Arc::new(Self {
            root: root.into(),
            window,
            on_batch: Box::new(on_batch),
            models: RwLock::new(BTreeMap::new()),
        });
        repo.scan();
        repo
    }

    /// Rescans the directory tree; returns how many versions were loaded, reloaded or
    /// unloaded.
    pub fn scan(&self) -> usize {
        let mut found: BTreeMap<String, BTreeMap<u64, PathBuf>> = BTreeMap::new();
        for model in std::fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let Some(name) = model.file_name().to_str().map(str::to_owned) else { continue };
            for version in std::fs::read_dir(model.path()).into_iter().flatten().flatten() {
                let dir = version.path();
                let number = version.file_name().to_str().and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
                if let Some(number) = number
                    && dir.join("config.toml").is_file()
                {
                    found.entry(name.clone()).or_default().insert(number, dir);
                }
            }
        }
        let current = self.models.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut next: BTreeMap<String, Versions> = BTreeMap::new();
        let mut changes = 0;
        for (name, versions) in &found {
            for (&number, dir) in versions {
                let existing = current.get(name).and_then(|v| v.get(&number));
                let now = stamp(dir);
                match existing {
                    Some(loaded) if loaded.stamp >= now => {
                        next.entry(name.clone()).or_default().insert(number, Arc::clone(loaded));
                    }
                    _ => match self.load(name, number, dir, now) {
                        Ok(loaded) => {
                            tracing::info!(model = %name, version = number, "model version loaded");
                            next.entry(name.clone()).or_default().insert(number, Arc::new(loaded));
                            changes += 1;
                        }
                        Err(e) => {
                            tracing::warn!(model = %name, version = number, error = %e, "model version not loaded");
                            if let Some(old) = existing {
                                // A broken rewrite keeps the version that worked.
                                next.entry(name.clone()).or_default().insert(number, Arc::clone(old));
                            }
                        }
                    },
                }
            }
        }
        for (name, versions) in &current {
            for number in versions.keys() {
                if !next.get(name).is_some_and(|v| v.contains_key(number)) {
                    tracing::info!(model = %name, version = number, "model version unloaded");
                    changes += 1;
                }
            }
        }
        *self.models.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        changes
    }

    fn load(&self, name: &str, number: u64, dir: &Path, stamp: SystemTime) -> Result<Loaded, String> {
        let config = VersionConfig::read(&dir.join("config.toml")).map_err(|e| e.to_string())?;
        match config.platform.as_str() {
            "onnx" => self.load_trees(name, number, dir, stamp, config),
            DEMAND_PLATFORM => load_demand(name, number, stamp, config),
            other => Err(format!("platform {other:?} is not served (onnx and {DEMAND_PLATFORM} are)")),
        }
    }

    fn load_trees(
        &self,
        name: &str,
        number: u64,
        dir: &Path,
        stamp: SystemTime,
        config: VersionConfig,
    ) -> Result<Loaded, String> {
        let file = dir.join(&config.file);
        let bytes = std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        let model = Model::from_onnx(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        let [input] = config.inputs.as_slice() else {
            return Err("the config must declare exactly one input".into());
        };
        if input.name != model.input().name {
            return Err(format!("the config's input {:?} is {:?} in the model", input.name, model.input().name));
        }
        let width = model.width().ok_or("the model's input has no fixed width")?;
        if input.shape.len() != 2 || input.shape[1] != width as i64 {
            return Err(format!("the config's input shape {:?} is not [-1, {width}]", input.shape));
        }
        for out in &config.outputs {
            if !model.outputs().iter().any(|o| o.name == out.name) {
                return Err(format!("the config's output {:?} is not one the model computes", out.name));
            }
        }
        let version = number.to_string();
        let model = Arc::new(model);
        let batcher =
            batching::start(Arc::clone(&model), config.max_batch_size, self.window, (self.on_batch)(name, &version));
        Ok(Loaded {
            name: name.to_owned(),
            version,
            config,
            evaluator: Evaluator::Trees { model, batcher, width },
            stamp,
        })
    }

    /// Rescans every `interval` until `cancel` fires.
    ///
    /// (The demand model's versions have no model file: their `config.toml` is the model.)
    pub async fn watch(self: Arc<Self>, interval: Duration, cancel: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let me = Arc::clone(&self);
            // Reading and parsing files is blocking work.
            if let Err(e) = tokio::task::spawn_blocking(move || me.scan()).await {
                tracing::warn!(error = %e, "the model repository scan failed");
            }
        }
    }

    /// A version of a model (`None` or empty: the highest).
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<Loaded>, NotFound> {
        let models = self.models.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let versions = models.get(name).ok_or_else(|| NotFound(format!("model {name:?} is not in the repository")))?;
        match version.filter(|v| !v.is_empty()) {
            None => versions.values().next_back().cloned(),
            Some(v) => v.parse::<u64>().ok().and_then(|n| versions.get(&n).cloned()),
        }
        .ok_or_else(|| NotFound(format!("model {name:?} has no version {:?} loaded", version.unwrap_or_default())))
    }

    /// Every model and its loaded versions.
    pub fn index(&self) -> Vec<(String, Vec<String>)> {
        let models = self.models.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        models.iter().map(|(name, v)| (name.clone(), v.keys().map(u64::to_string).collect())).collect()
    }

    /// The repository's root.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn load_demand(name: &str, number: u64, stamp: SystemTime, config: VersionConfig) -> Result<Loaded, String> {
    use tally_forecast::model as demand;
    let [input] = config.inputs.as_slice() else {
        return Err("the config must declare exactly one input".into());
    };
    if input.name != demand::INPUT || input.datatype != tally_model::DataType::Fp32 || input.shape.len() != 2 {
        return Err(format!("the demand model's input is {:?}, FP32 [-1, -1]", demand::INPUT));
    }
    let known = [demand::MEAN, demand::SIGMA, demand::QUANTILES, demand::METHOD];
    if let Some(out) = config.outputs.iter().find(|o| !known.contains(&o.name.as_str())) {
        return Err(format!("the demand model has no output {:?} (it has {known:?})", out.name));
    }
    let section: DemandSection = match &config.demand {
        Some(table) => table.clone().try_into().map_err(|e| format!("[demand]: {e}"))?,
        None => DemandSection::default(),
    };
    let settings = demand::settings_from(section.period, section.horizon, section.windows, section.quantiles)
        .map_err(|e| format!("[demand]: {e}"))?;
    Ok(Loaded {
        name: name.to_owned(),
        version: number.to_string(),
        config,
        evaluator: Evaluator::Demand(
            Arc::new(settings),
            tally_forecast::workers::Workers {
                threads: section.threads.unwrap_or(0),
                priority: section.priority.unwrap_or_default(),
            },
        ),
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_forecast::workers::{Priority, Workers};

    /// The checked-in demand model's configuration with `edit` applied to its text.
    fn demand_version(edit: impl Fn(String) -> String) -> Result<Loaded, String> {
        let text = edit(include_str!("../../../models/demand/1/config.toml").to_owned());
        let config: VersionConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        load_demand("demand", 1, SystemTime::UNIX_EPOCH, config)
    }

    fn workers(loaded: &Loaded) -> Workers {
        match &loaded.evaluator {
            Evaluator::Demand(_, workers) => *workers,
            Evaluator::Trees { .. } => panic!("the demand model loaded as trees"),
        }
    }

    #[test]
    fn demand_batches_run_under_sched_idle_unless_the_version_says_normal() {
        let shipped = demand_version(|t| t).expect("the shipped demand model loads");
        assert_eq!(workers(&shipped), Workers { threads: 0, priority: Priority::Idle });
        let unset = demand_version(|t| t.replace("priority = \"idle\"", "")).expect("loads");
        assert_eq!(workers(&unset).priority, Priority::Idle, "idle is the default");
        let normal = demand_version(|t| {
            t.replace("priority = \"idle\"", "priority = \"normal\"").replace("threads = 0", "threads = 3")
        })
        .expect("loads");
        assert_eq!(workers(&normal), Workers { threads: 3, priority: Priority::Normal });
        let bad = demand_version(|t| t.replace("priority = \"idle\"", "priority = \"realtime\"")).expect_err("refused");
        assert!(bad.starts_with("[demand]") && bad.contains("realtime"), "{bad}");
    }
}
