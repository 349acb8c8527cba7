//! Every API error becomes RFC 9457 problem+json here, in one place. Internals (SQL, backend
//! messages) go to the log, never to the client.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One invalid item of a batch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemError {
    /// Index in the submitted array (0 for a single event).
    pub index: usize,
    /// Machine-readable reason.
    pub code: String,
    /// What to fix.
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI identifying the problem type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Short summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// This occurrence, specifically.
    pub detail: String,
    /// Per-item errors of a batch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ItemError>,
    /// Extra machine-readable facts (e.g. the outcome of a refused reservation).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<serde_json::Value>,
}

/// Errors of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (body, header, path or query).
    #[error("{detail}")]
    BadRequest {
        /// Problem code.
        code: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Events that are well-formed JSON but not valid events.
    #[error("{detail}")]
    InvalidEvents {
        /// Summary.
        detail: String,
        /// Per-item reasons.
        errors: Vec<ItemError>,
    },
    /// No or unknown credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials lack the scope.
    #[error("{0}")]
    Forbidden(String),
    /// The event's `source` belongs to another caller.
    #[error("{0}")]
    SourceNotAllowed(String),
    /// The idempotency key (`Idempotency-Key`, or `source` + `id`) was already used for a
    /// different request.
    #[error("{detail}")]
    IdempotencyKeyReused {
        /// Summary.
        detail: String,
        /// The events of a batch that reuse a key.
        errors: Vec<ItemError>,
    },
    /// The body is larger than the server accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body is not sent as JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The resource does not exist.
    #[error("{detail}")]
    NotFound {
        /// Problem code.
        code: &'static str,
        /// What was not found.
        detail: String,
    },
    /// The request conflicts with the current state.
    #[error("{detail}")]
    Conflict {
        /// Problem code.
        code: &'static str,
        /// Why.
        detail: String,
        /// The outcome the engine recorded.
        outcome: Option<serde_json::Value>,
    },
    /// The outcome is not known yet; retry with the same Idempotency-Key.
    #[error("{0}")]
    Pending(String),
    /// A backend is unavailable.
    #[error("a backend is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or an unexpected backend failure.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 400 with a code and detail.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest { code, detail: detail.into() }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code, "Bad request"),
            Self::InvalidEvents { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-event", "Invalid event"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::SourceNotAllowed(_) => (StatusCode::FORBIDDEN, "source-not-allowed", "Forbidden"),
            Self::IdempotencyKeyReused { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency key reused")
            }
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code, "Not found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code, "Conflict"),
            Self::Pending(_) => (StatusCode::GATEWAY_TIMEOUT, "outcome-pending", "Outcome pending"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "backend-unavailable", "Service unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let detail = match &self {
            Self::Unavailable(e) => {
                tracing::warn!(error = format!("{e:#}"), "request failed: backend unavailable");
                "a backend is unavailable; retry later".to_owned()
            }
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed with an internal error");
                "internal error; the cause is logged".to_owned()
            }
            other => other.to_string(),
        };
        let (errors, outcome) = match self {
            Self::InvalidEvents { errors, .. } | Self::IdempotencyKeyReused { errors, .. } => (errors, None),
            Self::Conflict { outcome, .. } => (Vec::new(), outcome),
            _ => (Vec::new(), None),
        };
        let body = Problem {
            ty: format!("https://tally.dev/problems/{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
            outcome,
        };
        let mut resp = (status, Json(body)).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        resp
    }
}

impl From<tally_inventory_engine::EngineError> for ApiError {
    fn from(e: tally_inventory_engine::EngineError) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<tally_store::StoreError> for ApiError {
    fn from(e: tally_store::StoreError) -> Self {
        match e {
            tally_store::StoreError::Corrupt { .. } => Self::Internal(e.into()),
            tally_store::StoreError::Backend { .. } => Self::Unavailable(e.into()),
        }
    }
}

/// `Json<T>` whose rejections are problem+json with the parser's exact complaint.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::UnsupportedMediaType("send the body as Content-Type: application/json".into()))
            }
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge(format!(
                "the body is larger than {MAX_BODY_BYTES} bytes; send fewer events per request"
            ))),
            Err(e) => Err(ApiError::bad_request("invalid-json", e.body_text())),
        }
    }
}

/// Largest request body accepted, in bytes: room for the largest batch of valid events.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Turns every error response that is not problem+json yet — the router's 405 (keeping its
/// `Allow` header), a path that does not percent-decode, any framework rejection — into one,
/// with the same status and headers. Handlers' own errors already are.
pub async fn problems_only(req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text =
        axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let (code, detail) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method-not-allowed", format!("{method} is not allowed on this path; the Allow header lists what is"))
        }
        StatusCode::BAD_REQUEST => ("invalid-request", text),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("payload-too-large", format!("the body is larger than {MAX_BODY_BYTES} bytes"))
        }
        _ => ("error", if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text }),
    };
    let body = Problem {
        ty: format!("https://tally.dev/problems/{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        errors: Vec::new(),
        outcome: None,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
