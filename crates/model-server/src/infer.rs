//! One inference, whatever the wire: resolve the model version, check the input against its
//! config, apply the faults, evaluate through the version's batcher, shape the outputs.

use std::sync::Arc;
use std::time::Instant;

use tally_model::{Named, Values};

use crate::ModelServer;
use crate::faults::Injected;
use crate::metrics;
use crate::repository::Loaded;

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
        let rows = match input.shape.as_slice() {
            [n, w] if *w == loaded.width as i64 && *n >= 0 => *n as usize,
            other => {
                return Err(ServeError::Invalid(format!(
                    "input {} must have shape [N, {}], got {other:?}",
                    input.name, loaded.width
                )));
            }
        };
        if rows > loaded.config.max_batch_size {
            return Err(ServeError::Invalid(format!(
                "{rows} rows exceed model {}'s max_batch_size {}",
                loaded.name, loaded.config.max_batch_size
            )));
        }
        let wanted: Vec<usize> = match &call.outputs {
            None => (0..loaded.config.outputs.len()).collect(),
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
                .collect::<Result<_, _>>()?,
        };
        match self.faults.apply().await {
            Injected::Pass => {}
            Injected::Error => return Err(ServeError::Internal("injected error (fault injection)".into())),
            Injected::Down => return Err(ServeError::Unavailable("the model server is down (fault injection)".into())),
        }
        let computed = loaded.batcher.call(rows, data.clone()).await.map_err(ServeError::Internal)?;
        let outputs = wanted
            .into_iter()
            .map(|i| {
                let spec = &loaded.config.outputs[i];
                let at = loaded.model.outputs().iter().position(|o| o.name == spec.name).unwrap_or(i);
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
