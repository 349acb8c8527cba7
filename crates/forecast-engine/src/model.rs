//! How the refresh reaches the `demand` model: over the Open Inference Protocol v2 — to
//! `tally model-server` (or any OIP v2 server serving the same contract), or to the model
//! server in this process in embedded mode — or evaluated directly (`[forecast] model =
//! "direct"`, no model repository needed). Either way a batch of histories in, one forecast
//! per series out, or an error the refresh answers with the last forecasts (marked stale).
//!
//! Over OIP the client asks for `mean`, `sigma` and `method` and derives the quantiles at its
//! configured levels from mean and sigma exactly as the model does, so the levels a consumer
//! reads never depend on the server's configuration.

use std::sync::Arc;
use std::time::Duration;

use tally_forecast::model::{self, SeriesForecast, Settings};
use tally_forecast::workers::Workers;
use tally_model::client::{CallError, Request, Transport};
use tally_model::{Named, Values};

/// Why the model did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the demand model is unavailable: {0}")]
pub struct ModelUnavailable(pub String);

/// Test and game-day switch: a model that fails every call.
#[derive(Debug, Default)]
pub struct Outage(std::sync::atomic::AtomicBool);

impl Outage {
    /// Makes every call fail (`true`) or succeed again.
    pub fn set(&self, down: bool) {
        self.0.store(down, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_down(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A model server and the model's name on it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// How to reach it.
    pub transport: Transport,
    /// The model's name (`demand`).
    pub model: String,
    /// The longest a batch may take.
    pub deadline: Duration,
}

/// The demand model as the refresh calls it.
#[derive(Debug, Clone)]
pub struct DemandModel {
    settings: Arc<Settings>,
    /// The one version direct evaluation answers to (the configuration's default).
    version: String,
    remote: Option<Arc<Remote>>,
    /// The threads of direct evaluation.
    workers: Workers,
    /// One direct evaluation at a time, so `workers` bound the model's threads however many
    /// batches a run has in flight (the others do their reads and writes meanwhile).
    evaluating: Arc<tokio::sync::Semaphore>,
    /// Fault injection.
    pub outage: Arc<Outage>,
}

fn f32s(named: &[Named], name: &str, len: usize) -> Result<Vec<f32>, ModelUnavailable> {
    let t = named.iter().find(|n| n.name == name).ok_or_else(|| ModelUnavailable(format!("no output {name:?}")))?;
    match &t.values {
        Values::F32(v) if v.len() == len => Ok(v.clone()),
        other => Err(ModelUnavailable(format!("output {name:?} is not FP32 × {len}: {:?}", other.datatype()))),
    }
}

impl DemandModel {
    /// Evaluated directly in this process with `settings`, as model version `version` (the
    /// only one it has).
    pub fn direct(settings: Settings, version: impl Into<String>) -> Self {
        Self {
            settings: Arc::new(settings),
            version: version.into(),
            remote: None,
            workers: Workers::default(),
            evaluating: Arc::new(tokio::sync::Semaphore::new(1)),
            outage: Arc::default(),
        }
    }

    /// The same evaluated on `workers` (by default one per core, under `SCHED_IDLE`).
    pub fn on(mut self, workers: Workers) -> Self {
        self.workers = workers;
        self
    }

    /// Over OIP v2; `settings` name the quantile levels (the server's own settings decide the
    /// method and the horizon).
    pub fn remote(settings: Settings, remote: Remote) -> Self {
        Self {
            settings: Arc::new(settings),
            version: String::new(),
            remote: Some(Arc::new(remote)),
            workers: Workers::default(),
            evaluating: Arc::new(tokio::sync::Semaphore::new(1)),
            outage: Arc::default(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Forecasts a batch of histories with model version `version`.
    pub async fn forecast(
        &self,
        histories: Vec<Vec<f64>>,
        version: &str,
    ) -> Result<Vec<SeriesForecast>, ModelUnavailable> {
        if self.outage.is_down() {
            return Err(ModelUnavailable("injected outage".into()));
        }
        match &self.remote {
            None if version != self.version => {
                Err(ModelUnavailable(format!("direct evaluation has one version, {:?}, not {version:?}", self.version)))
            }
            None => {
                let settings = self.settings.clone();
                let workers = self.workers;
                let _turn = self.evaluating.acquire().await.map_err(|e| ModelUnavailable(e.to_string()))?;
                tokio::task::spawn_blocking(move || model::forecast_many_on(&histories, &settings, workers))
                    .await
                    .map_err(|e| ModelUnavailable(e.to_string()))
            }
            Some(remote) => self.call(remote, histories, version).await,
        }
    }

    async fn call(
        &self,
        remote: &Remote,
        histories: Vec<Vec<f64>>,
        version: &str,
    ) -> Result<Vec<SeriesForecast>, ModelUnavailable> {
        let rows = histories.len();
        let (data, shape) = model::encode(&histories);
        let request = Request {
            model: remote.model.clone(),
            version: Some(version.to_owned()).filter(|v| !v.is_empty()),
            input: Named { name: model::INPUT.into(), shape: shape.to_vec(), values: Values::F32(data) },
            outputs: vec![model::MEAN.into(), model::SIGMA.into(), model::METHOD.into()],
        };
        // One retry for a transient failure, both within the deadline.
        let attempt = async {
            match remote.transport.call(request.clone()).await {
                Err(CallError::Transient(_)) => remote.transport.call(request).await,
                other => other,
            }
        };
        let named = tokio::time::timeout(remote.deadline, attempt)
            .await
            .map_err(|_| ModelUnavailable(format!("no answer within {:?}", remote.deadline)))?
            .map_err(|e| ModelUnavailable(e.to_string()))?;
        let horizon = named
            .iter()
            .find(|n| n.name == model::MEAN)
            .and_then(|n| n.shape.get(1).copied())
            .and_then(|h| usize::try_from(h).ok())
            .ok_or_else(|| ModelUnavailable("output mean has no [N, H] shape".into()))?;
        let mean = f32s(&named, model::MEAN, rows * horizon)?;
        let sigma = f32s(&named, model::SIGMA, rows * horizon)?;
        let methods = match named.iter().find(|n| n.name == model::METHOD).map(|n| &n.values) {
            Some(Values::I64(v)) if v.len() == rows => v.clone(),
            _ => return Err(ModelUnavailable("output method is not INT64 × N".into())),
        };
        Ok((0..rows)
            .map(|i| {
                let span = i * horizon..(i + 1) * horizon;
                let mut f = SeriesForecast {
                    method: usize::try_from(methods[i])
                        .ok()
                        .and_then(|m| model::METHODS.get(m))
                        .copied()
                        .unwrap_or("unknown"),
                    mean: mean[span.clone()].iter().map(|&v| f64::from(v)).collect(),
                    sigma: sigma[span].iter().map(|&v| f64::from(v)).collect(),
                    quantiles: Vec::new(),
                };
                f.quantiles = self.settings.quantiles.iter().map(|&q| f.quantile(q)).collect();
                f
            })
            .collect())
    }
}
