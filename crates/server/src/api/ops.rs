//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_bus::Bus;
use tally_cache::Cache;
use tally_store::InventoryStore;

use super::{ApiError, AppState};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: every backend answers, every consumer engine this process runs is consuming,
/// and no partition is stopped by a permanent error.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Every backend answers and every consumer runs"),
    (status = 503, description = "A backend does not answer, a consumer engine is restarting, or a partition is stopped: a problem document whose `detail` says which and why, with the same `checks` and `consumers` members", content_type = "application/problem+json"),
))]
pub async fn readyz<B: Bus, S: InventoryStore, C: Cache>(State(st): State<AppState<B, S, C>>) -> Response {
    let e = &st.engine;
    let (bus, store, cache) = tokio::join!(e.bus.ping(), e.store.ping(), e.cache.ping());
    let status = |ok: bool| if ok { "ok" } else { "unavailable" };
    let consumers = e.health.report();
    let all = bus.is_ok() && store.is_ok() && cache.is_ok() && consumers.ready;
    for (name, err) in [
        ("bus", bus.as_ref().err().map(ToString::to_string)),
        ("store", store.as_ref().err().map(ToString::to_string)),
        ("cache", cache.as_ref().err().map(ToString::to_string)),
    ] {
        if let Some(err) = err {
            tracing::warn!(backend = name, error = %err, "readiness check failed");
        }
    }
    let mut body = json!({
        "status": status(all),
        "checks": {"bus": status(bus.is_ok()), "store": status(store.is_ok()), "cache": status(cache.is_ok())},
        "consumers": {
            "status": status(consumers.ready),
            "engines": consumers.engines,
            "stopped_partitions": consumers.stopped_partitions,
        },
    });
    if all {
        return (StatusCode::OK, Json(body)).into_response();
    }
    // Not ready is an error like any other: a problem document (RFC 9457), its `detail` naming
    // each reason, the readiness members beside it.
    let mut reasons: Vec<String> = [("bus", bus.is_ok()), ("store", store.is_ok()), ("cache", cache.is_ok())]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| format!("the {name} does not answer"))
        .collect();
    for (subsystem, state) in &consumers.engines {
        if let tally_runtime::EngineState::Restarting { reason } = state {
            reasons.push(format!("the {subsystem} engine is restarting after: {reason}"));
        }
    }
    for p in &consumers.stopped_partitions {
        reasons.push(format!("{} partition {}/{} is stopped: {}", p.subsystem, p.topic, p.partition, p.reason));
    }
    if let Some(members) = body.as_object_mut() {
        members.insert("type".into(), json!("https://tally.dev/problems/not-ready"));
        members.insert("title".into(), json!("Service Unavailable"));
        members.insert("detail".into(), json!(format!("not ready: {}", reasons.join("; "))));
        members.insert("status".into(), json!(StatusCode::SERVICE_UNAVAILABLE.as_u16()));
    }
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
    resp
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::prometheus().render())
}

/// The OpenAPI document.
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi_json())
}

/// Unknown paths get a problem document too.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound { code: "no-such-route", detail: format!("no route for {}", uri.path()) }
}
