//! One inference, whatever the wire: resolve the model version, check the input against its
//! config, apply the faults, evaluate through the version's batcher, shape the outputs.

use std::sync::Arc;
use std::time::Instant;

use tally_model::{Named, Values};

use crate::ModelServer;
use crate::faults::Injected;
use crate::metrics;
use crate::repository::{Evaluator, Loaded};

/// An inference request, decoded.
#[derive(Debug, Clone)]
pub struct Call {
    /// The model.
    pub model: String,
    /// The version (`None`: the default).
    pub version: Option<String>,
    /// Inputs.
    pub inputs: Vec<Named>,
    /// Outputs asked for (`None`: all).
    pub outputs: Option<Vec<String>>,
}

/// An inference answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// Outputs, in the order asked (or the config's).
    pub outputs: Vec<Named>,
}

/// Why an inference was not answered; each maps to the protocol's status (REST) and code
/// (gRPC).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// Bad input: 400 / INVALID_ARGUMENT.
    #[error("{0}")]
    Invalid(String),
    /// Unknown model or version: 404 / NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// Down: 503 / UNAVAILABLE.
    #[error("{0}")]
    Unavailable(String),
    /// The evaluation failed (or an injected error): 500 / INTERNAL.
    #[error("{0}")]
    Internal(String),
}

impl ServeError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "error",
        }
    }
}

impl ModelServer {
    /// Answers one inference; `protocol` labels the metrics.
    pub async fn infer(&self, call: Call, protocol: &'static str) -> Result<Answer, ServeError> {
        let started = Instant::now();
        let loaded = self.repository.get(&call.model, call.version.as_deref()).map_err(|e| ServeError::NotFound(e.0));
        let result = match &loaded {
            Ok(loaded) => self.infer_loaded(Arc::clone(loaded), call).await,
            Err(e) => Err(e.clone()),
        };
        let (model, version) = match &loaded {
            Ok(l) => (l.name.as_str(), l.version.as_str()),
            Err(_) => ("unknown", ""),
        };
        let outcome = result.as_ref().map_or_else(ServeError::outcome, |_| "ok");
        metrics::request(model, version, protocol, outcome, started.elapsed());
        result
    }

    async fn infer_loaded(&self, loaded: Arc<Loaded>, call: Call) -> Result<Answer, ServeError> {
        match &loaded.evaluator {
            Evaluator::Trees { model, batcher, width } => self.infer_trees(&loaded, model, batcher, *width, call).await,
            Evaluator::Demand(settings, workers) => {
                self.infer_demand(&loaded, Arc::clone(settings), *workers, call).await
            }
        }
    }

    /// Checks the one input against the config: its name, FP32, `[N, …]` within the batch
    /// limit; returns the data and N.
    fn one_input<'a>(loaded: &Loaded, call: &'a Call) -> Result<(&'a Named, &'a [f32]), ServeError> {
        let spec = &loaded.config.inputs[0];
        let [input] = call.inputs.as_slice() else {
            return Err(ServeError::Invalid(format!(
                "model {} takes exactly one input ({}), got {}",
                loaded.name,
                spec.name,
                call.inputs.len()
            )));
        };
        if input.name != spec.name {
            return Err(ServeError::Invalid(format!(
                "unexpected input {:?}: model {} takes {:?}",
                input.name, loaded.name, spec.name
            )));
        }
        let Values::F32(data) = &input.values else {
            return Err(ServeError::Invalid(format!(
                "input {} must be FP32, got {:?}",
                input.name,
                input.values.datatype()
            )));
        };
        Ok((input, data))
    }

    /// The outputs asked for, as indexes into the config's (all when none is named).
    fn wanted(loaded: &Loaded, call: &Call) -> Result<Vec<usize>, ServeError> {
        match &call.outputs {
            None => Ok((0..loaded.config.outputs.len()).collect()),
            Some(names) => names
                .iter()
                .map(|n| {
                    loaded
                        .config
                        .outputs
                        .iter()
                        .position(|o| &o.name == n)
                        .ok_or_else(|| ServeError::Invalid(format!("model {} has no output {n:?}", loaded.name)))
                })
                .collect::<Result<_, _>>(),
        }
    }

    fn rows(loaded: &Loaded, input: &Named, width: Option<usize>) -> Result<usize, ServeError> {
        let rows = match (input.shape.as_slice(), width) {
            ([n, w], Some(width)) if *w == width as i64 && *n >= 0 => *n as usize,
            ([n, w], None) if *n >= 0 && *w >= 0 => *n as usize,
            (other, _) => {
                let want = width.map_or_else(|| "L".to_owned(), |w| w.to_string());
                return Err(ServeError::Invalid(format!(
                    "input {} must have shape [N, {want}], got {other:?}",
                    input.name
                )));
            }
        };
        if rows > loaded.config.max_batch_size {
            return Err(ServeError::Invalid(format!(
                "{rows} rows exceed model {}'s max_batch_size {}",
                loaded.name, loaded.config.max_batch_size
            )));
        }
        Ok(rows)
    }

    async fn faults(&self) -> Result<(), ServeError> {
        match self.faults.apply().await {
            Injected::Pass => Ok(()),
            Injected::Error => Err(ServeError::Internal("injected error (fault injection)".into())),
            Injected::Down => Err(ServeError::Unavailable("the model server is down (fault injection)".into())),
        }
    }

    async fn infer_trees(
        &self,
        loaded: &Loaded,
        model: &tally_trees::Model,
        batcher: &tally_model::batch::Batcher<Vec<tally_trees::Tensor>>,
        width: usize,
        call: Call,
    ) -> Result<Answer, ServeError> {
        let (input, data) = Self::one_input(loaded, &call)?;
        let rows = Self::rows(loaded, input, Some(width))?;
        let wanted = Self::wanted(loaded, &call)?;
        self.faults().await?;
        let computed = batcher.call(rows, data.to_vec()).await.map_err(ServeError::Internal)?;
        let outputs = wanted
            .into_iter()
            .map(|i| {
                let spec = &loaded.config.outputs[i];
                let at = model.outputs().iter().position(|o| o.name == spec.name).unwrap_or(i);
                let values = match &computed[at] {
                    tally_trees::Tensor::F32(v) => Values::F32(v.clone()),
                    tally_trees::Tensor::I64(v) => Values::I64(v.clone()),
                };
                if values.datatype() != spec.datatype {
                    return Err(ServeError::Internal(format!(
                        "output {} is {:?}, its config says {:?}",
                        spec.name,
                        values.datatype(),
                        spec.datatype
                    )));
                }
                let cols = values.len() / rows.max(1);
                let shape = if spec.shape.len() == 1 { vec![rows as i64] } else { vec![rows as i64, cols as i64] };
                Ok(Named { name: spec.name.clone(), shape, values })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Answer { model: loaded.name.clone(), version: loaded.version.clone(), outputs })
    }

    /// The demand model: histories (NaN-padded rows) in; mean, sigma, quantiles and method out
    /// (`tally_forecast::model`), the series spread over `workers` off the async threads.
    async fn infer_demand(
        &self,
        loaded: &Loaded,
        settings: Arc<tally_forecast::model::Settings>,
        workers: tally_forecast::workers::Workers,
        call: Call,
    ) -> Result<Answer, ServeError> {
        use tally_forecast::model as demand;
        let (input, data) = Self::one_input(loaded, &call)?;
        let rows = Self::rows(loaded, input, None)?;
        let width = input.shape.get(1).map_or(0, |w| *w as usize);
        let wanted = Self::wanted(loaded, &call)?;
        let histories = demand::decode(data, rows, width).ok_or_else(|| {
            ServeError::Invalid(format!(
                "input {} must hold {rows} × {width} values, each row NaN before its first day and finite after",
                input.name
            ))
        })?;
        self.faults().await?;
        metrics::batch(&loaded.name, &loaded.version, rows);
        let forecasts = {
            let settings = Arc::clone(&settings);
            tokio::task::spawn_blocking(move || demand::forecast_many_on(&histories, &settings, workers))
                .await
                .map_err(|e| ServeError::Internal(e.to_string()))?
        };
        if forecasts.len() != rows {
            return Err(ServeError::Internal(format!("{} forecasts for {rows} series", forecasts.len())));
        }
        let (h, q) = (settings.horizon, settings.quantiles.len());
        let f32s = |f: &dyn Fn(&demand::SeriesForecast) -> Vec<f64>| {
            Values::F32(forecasts.iter().flat_map(|s| f(s).into_iter().map(|v| v as f32)).collect())
        };
        let outputs = wanted
            .into_iter()
            .map(|i| {
                let name = loaded.config.outputs[i].name.clone();
                let (shape, values) = match name.as_str() {
                    demand::MEAN => (vec![rows as i64, h as i64], f32s(&|s| s.mean.clone())),
                    demand::SIGMA => (vec![rows as i64, h as i64], f32s(&|s| s.sigma.clone())),
                    demand::QUANTILES => (
                        vec![rows as i64, h as i64, q as i64],
                        f32s(&|s| (0..h).flat_map(|d| s.quantiles.iter().map(move |level| level[d])).collect()),
                    ),
                    _ => (
                        vec![rows as i64],
                        Values::I64(forecasts.iter().map(|s| demand::method_code(s.method)).collect()),
                    ),
                };
                Named { name, shape, values }
            })
            .collect();
        Ok(Answer { model: loaded.name.clone(), version: loaded.version.clone(), outputs })
    }
}

/// A tensor as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Its name.
    pub name: String,
    /// Its datatype's wire name.
    pub datatype: String,
    /// Its shape (-1: variable).
    pub shape: Vec<i64>,
}

/// A model version's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The model.
    pub name: String,
    /// Its loaded versions.
    pub versions: Vec<String>,
    /// `onnx`.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMeta>,
    /// Outputs.
    pub outputs: Vec<TensorMeta>,
}

impl ModelServer {
    /// Metadata of a model version (`None`: the default).
    pub fn metadata(&self, model: &str, version: Option<&str>) -> Result<Metadata, ServeError> {
        let loaded = self.repository.get(model, version).map_err(|e| ServeError::NotFound(e.0))?;
        let versions =
            self.repository.index().into_iter().find(|(n, _)| n == model).map(|(_, v)| v).unwrap_or_default();
        let meta = |t: &[crate::config::TensorConfig]| {
            t.iter()
                .map(|t| TensorMeta {
                    name: t.name.clone(),
                    datatype: tally_model::grpc::datatype_name(t.datatype),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        Ok(Metadata {
            name: loaded.name.clone(),
            versions,
            platform: loaded.config.platform.clone(),
            inputs: meta(&loaded.config.inputs),
            outputs: meta(&loaded.config.outputs),
        })
    }

    /// Whether a model version is ready (loaded and the server not down); an error if unknown.
    pub fn model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, ServeError> {
        self.repository.get(model, version).map_err(|e| ServeError::NotFound(e.0))?;
        Ok(!self.faults.get().down)
    }
}

impl tally_model::client::Local for ModelServer {
    fn infer(
        &self,
        request: tally_model::client::Request,
    ) -> tally_model::client::BoxFuture<'_, Result<Vec<Named>, tally_model::client::CallError>> {
        Box::pin(async move {
            let call = Call {
                model: request.model,
                version: request.version,
                inputs: vec![request.input],
                outputs: Some(request.outputs),
            };
            match ModelServer::infer(self, call, "in_process").await {
                Ok(answer) => Ok(answer.outputs),
                Err(e @ (ServeError::Unavailable(_) | ServeError::Internal(_))) => {
                    Err(tally_model::client::CallError::Transient(e.to_string()))
                }
                Err(e) => Err(tally_model::client::CallError::Refused(e.to_string())),
            }
        })
    }
}
