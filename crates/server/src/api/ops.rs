//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
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
    (status = 503, description = "A backend does not answer, a consumer engine is restarting, or a partition is stopped; the body says which and why"),
))]
pub async fn readyz<B: Bus, S: InventoryStore, C: Cache>(State(st): State<AppState<B, S, C>>) -> impl IntoResponse {
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
    let body = json!({
        "status": status(all),
        "checks": {"bus": status(bus.is_ok()), "store": status(store.is_ok()), "cache": status(cache.is_ok())},
        "consumers": {
            "status": status(consumers.ready),
            "engines": consumers.engines,
            "stopped_partitions": consumers.stopped_partitions,
        },
    });
    (if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
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
