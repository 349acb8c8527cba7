//! The REST form (KServe's `required_api.md`), with Triton's binary tensor extension: bodies
//! are split by `Inference-Header-Content-Length` alone (tritonclient sends no Content-Type),
//! binary outputs are sent when asked (`binary_data`, else `binary_data_output`); every error
//! is `{"error": "…"}` with `Content-Type: application/json` (the KServe SDK checks it exactly).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tally_model::rest::HEADER_LENGTH;
use tally_model::{InferRequest, InferResponse, Named, Tensor, Values};

use crate::ModelServer;
use crate::faults::FaultSettings;
use crate::infer::{Call, ServeError};

type Shared = Arc<ModelServer>;

/// The REST routes.
pub fn router(server: Shared) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_version))
        .route("/v2/faults", get(faults).put(set_faults))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(server)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string()).into_response()
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self)
    }
}

async fn live() -> Response {
    json_response(StatusCode::OK, &json!({ "live": true }))
}

async fn ready(State(s): State<Shared>) -> Response {
    if s.faults.get().down {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the model server is down (fault injection)");
    }
    json_response(StatusCode::OK, &json!({ "ready": true }))
}

async fn server_metadata() -> Response {
    json_response(StatusCode::OK, &crate::server_metadata())
}

async fn model_metadata(State(s): State<Shared>, Path(model): Path<String>) -> Response {
    metadata(&s, &model, None)
}

async fn model_metadata_version(State(s): State<Shared>, Path((model, version)): Path<(String, String)>) -> Response {
    metadata(&s, &model, Some(&version))
}

fn metadata(s: &ModelServer, model: &str, version: Option<&str>) -> Response {
    match s.metadata(model, version) {
        Ok(m) => {
            let tensors = |t: &[crate::infer::TensorMeta]| {
                t.iter().map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})).collect::<Vec<_>>()
            };
            json_response(
                StatusCode::OK,
                &json!({"name": m.name, "versions": m.versions, "platform": m.platform,
                        "inputs": tensors(&m.inputs), "outputs": tensors(&m.outputs)}),
            )
        }
        Err(e) => e.into_response(),
    }
}

async fn model_ready(State(s): State<Shared>, Path(model): Path<String>) -> Response {
    readiness(&s, &model, None)
}

async fn model_ready_version(State(s): State<Shared>, Path((model, version)): Path<(String, String)>) -> Response {
    readiness(&s, &model, Some(&version))
}

fn readiness(s: &ModelServer, model: &str, version: Option<&str>) -> Response {
    match s.model_ready(model, version) {
        Ok(true) => json_response(StatusCode::OK, &json!({ "name": model, "ready": true })),
        Ok(false) => error(StatusCode::SERVICE_UNAVAILABLE, format!("model {model} is not ready")),
        Err(e) => e.into_response(),
    }
}

async fn infer(State(s): State<Shared>, Path(model): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    run(&s, model, None, &headers, &body).await
}

async fn infer_version(
    State(s): State<Shared>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&s, model, Some(version), &headers, &body).await
}

fn decode(t: &Tensor) -> Result<Named, ServeError> {
    let values = match (&t.raw, &t.data) {
        (Some(raw), _) => Values::from_raw(t.datatype, raw, &t.shape),
        (None, Some(data)) => Values::from_json(t.datatype, data, &t.shape),
        (None, None) => {
            return Err(ServeError::Invalid(format!("input {} has neither data nor binary_data_size", t.name)));
        }
    }
    .map_err(|e| ServeError::Invalid(format!("input {}: {e}", t.name)))?;
    Ok(Named { name: t.name.clone(), shape: t.shape.clone(), values })
}

async fn run(s: &ModelServer, model: String, version: Option<String>, headers: &HeaderMap, body: &[u8]) -> Response {
    let header_length = headers.get(HEADER_LENGTH).and_then(|v| v.to_str().ok());
    let request = match InferRequest::from_body(body, header_length) {
        Ok(r) => r,
        Err(e) => return ServeError::Invalid(e.0).into_response(),
    };
    let inputs = match request.inputs.iter().map(decode).collect::<Result<Vec<_>, _>>() {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let binary_default = request.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let asked = request.outputs.clone();
    let call =
        Call { model, version, inputs, outputs: asked.as_ref().map(|o| o.iter().map(|o| o.name.clone()).collect()) };
    let answer = match s.infer(call, "rest").await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let outputs = answer
        .outputs
        .into_iter()
        .enumerate()
        .map(|(i, named)| {
            let binary = asked.as_ref().and_then(|a| a.get(i)).map_or(binary_default, |o| o.binary(binary_default));
            let mut parameters = Map::new();
            let (data, raw) = if binary {
                let raw = named.values.to_raw();
                parameters.insert("binary_data_size".into(), raw.len().into());
                (None, Some(raw))
            } else {
                (Some(named.values.to_json()), None)
            };
            Tensor { name: named.name, shape: named.shape, datatype: named.values.datatype(), parameters, data, raw }
        })
        .collect();
    let response = InferResponse {
        model_name: answer.model,
        model_version: Some(answer.version),
        id: request.id,
        parameters: Map::new(),
        outputs,
    };
    match response.to_body() {
        Ok((body, None)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
                .into_response()
        }
        Ok((body, Some(json_len))) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                (header::HeaderName::from_static(HEADER_LENGTH), HeaderValue::from(json_len)),
            ],
            body,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn faults(State(s): State<Shared>) -> Response {
    json_response(StatusCode::OK, &json!(s.faults.get()))
}

async fn set_faults(State(s): State<Shared>, body: Bytes) -> Response {
    let settings: FaultSettings = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not fault settings: {e}")),
    };
    if let Err(e) = settings.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    tracing::warn!(?settings, "fault injection changed");
    s.faults.set(settings);
    json_response(StatusCode::OK, &json!(settings))
}

async fn metrics(State(s): State<Shared>) -> Response {
    match &s.prometheus {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))],
            handle.render(),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "this process exports its metrics elsewhere"),
    }
}
