//! The HTTP API (`/v1/...`): event ingest for channels without Kafka, synchronous
//! reservations and compare-and-set adjustments, stock reads, audit, and the operational
//! endpoints. Every handler goes through the same engine the bus consumers use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tally_bus::Bus;
use tally_cache::Cache;
use tally_core::ChannelId;
use tally_store::InventoryStore;

use tally_forecast_engine::ForecastEngine;
use tally_fraud_engine::FraudEngine;
use tally_inventory_engine::InventoryEngine;
use tally_store::AnyDocuments;

pub mod auth;
pub mod forecast;
pub mod fraud;
pub mod ingest;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod stock;
pub mod wait;

pub use auth::{Authenticator, Principal};
pub use problem::{ApiError, Problem};

/// State shared by the handlers.
pub struct AppState<B, S, C> {
    /// The inventory engine (reads, publishing, waiting for outcomes).
    pub engine: InventoryEngine<B, S, C>,
    /// The fraud engine (scoring, decisions, profiles, flags, quality).
    pub fraud: FraudEngine<B, AnyDocuments, C>,
    /// The forecasting engine (forecasts, suggestions, runs, reference data).
    pub forecast: ForecastEngine<B, AnyDocuments, C>,
    /// Credentials → principals.
    pub auth: Arc<Authenticator>,
    /// The channel stock facts belong to.
    pub warehouse: ChannelId,
    /// How long a synchronous write waits for its outcome.
    pub wait_timeout: Duration,
}

impl<B: Clone, S: Clone, C: Clone> Clone for AppState<B, S, C> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            fraud: self.fraud.clone(),
            forecast: self.forecast.clone(),
            auth: self.auth.clone(),
            warehouse: self.warehouse.clone(),
            wait_timeout: self.wait_timeout,
        }
    }
}

impl<B, S, C> FromRef<AppState<B, S, C>> for Arc<Authenticator> {
    fn from_ref(state: &AppState<B, S, C>) -> Self {
        state.auth.clone()
    }
}

/// The OpenAPI document of the API (checked in as `docs/openapi.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "tally", description = "Event-driven commerce backends: inventory sync engine, fraud scoring and demand forecasting API.", version = "1"),
    paths(
        ingest::ingest_events,
        ingest::adjust_stock,
        ingest::reserve,
        ingest::release_reservation,
        ingest::commit_reservation,
        stock::get_stock,
        stock::batch_read,
        stock::get_channel_stock,
        stock::get_audit,
        fraud::score,
        fraud::get_decision,
        fraud::put_profile,
        fraud::get_flags,
        fraud::put_flags,
        fraud::get_quality,
        forecast::get_series,
        forecast::get_location,
        forecast::get_suggestions,
        forecast::get_runs,
        forecast::refresh,
        forecast::put_references,
        forecast::ingest_demand,
        forecast::get_flags,
        forecast::put_flags,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(Problem, problem::ItemError, tally_inventory::Outcome, fraud::ScoreRequest, fraud::Amount, fraud::PaymentChannel,
        fraud::ProfileRequest, fraud::FlagsRequest, fraud::QualityResponse,
        tally_forecast_engine::ForecastRecord, tally_forecast_engine::records::ForecastDay, tally_forecast::replenish::Suggestion,
        tally_forecast_engine::RunSummary, tally_forecast_engine::RunKind, forecast::LocationForecasts, forecast::Suggestions,
        forecast::Runs, forecast::RefreshStarted, forecast::ReferenceRequest, tally_forecast::reference::SkuInfo,
        tally_forecast::reference::LocationInfo, tally_forecast_engine::ForecastFlags, forecast::ForecastFlagsRequest)),
    modifiers(&BearerAuth),
    tags((name = "inventory", description = "Stock, reservations and availability"),
        (name = "fraud", description = "Scoring, decisions, profiles, model version flags and quality"),
        (name = "forecast", description = "Demand forecasts, replenishment suggestions, runs and reference data"),
        (name = "ops", description = "Health and metrics"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI document as pretty JSON (see [`openapi::document`]), built once per process.
pub fn openapi_json() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::to_string_pretty(&openapi::document()).unwrap_or_default())
}

/// The operational endpoints alone (`/healthz`, `/readyz`, `/metrics`): what a consumer-only
/// role (`--role inventory`) serves, so it can be probed and scraped.
pub fn ops_router<B: Bus, S: InventoryStore, C: Cache>(state: AppState<B, S, C>) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz::<B, S, C>))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn(problem::problems_only))
        .layer(axum::middleware::from_fn(track_requests))
        .with_state(state)
}

/// Builds the router.
pub fn router<B: Bus, S: InventoryStore, C: Cache>(state: AppState<B, S, C>) -> Router {
    Router::new()
        .route("/v1/events", post(ingest::ingest_events::<B, S, C>))
        .route("/v1/stock/{sku}/locations/{location}/adjustments", post(ingest::adjust_stock::<B, S, C>))
        .route("/v1/reservations", post(ingest::reserve::<B, S, C>))
        .route("/v1/reservations/{reservation_id}/release", post(ingest::release_reservation::<B, S, C>))
        .route("/v1/reservations/{reservation_id}/commit", post(ingest::commit_reservation::<B, S, C>))
        .route("/v1/stock/{sku}", get(stock::get_stock::<B, S, C>))
        .route("/v1/stock/batch-read", post(stock::batch_read::<B, S, C>))
        .route("/v1/channels/{channel}/stock/{sku}", get(stock::get_channel_stock::<B, S, C>))
        .route("/v1/stock/{sku}/audit", get(stock::get_audit::<B, S, C>))
        .route("/v1/fraud/score", post(fraud::score::<B, S, C>))
        .route("/v1/fraud/decisions/{transaction_id}", get(fraud::get_decision::<B, S, C>))
        .route("/v1/fraud/profiles/{account_id}", axum::routing::put(fraud::put_profile::<B, S, C>))
        .route("/v1/fraud/flags", get(fraud::get_flags::<B, S, C>).put(fraud::put_flags::<B, S, C>))
        .route("/v1/fraud/quality", get(fraud::get_quality::<B, S, C>))
        .route("/v1/forecast/series/{sku}/{location}", get(forecast::get_series::<B, S, C>))
        .route("/v1/forecast/locations/{location}", get(forecast::get_location::<B, S, C>))
        .route("/v1/forecast/suggestions", get(forecast::get_suggestions::<B, S, C>))
        .route("/v1/forecast/runs", get(forecast::get_runs::<B, S, C>))
        .route("/v1/forecast/refresh", post(forecast::refresh::<B, S, C>))
        .route("/v1/forecast/references", axum::routing::put(forecast::put_references::<B, S, C>))
        .route("/v1/forecast/events", post(forecast::ingest_demand::<B, S, C>))
        .route("/v1/forecast/flags", get(forecast::get_flags::<B, S, C>).put(forecast::put_flags::<B, S, C>))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz::<B, S, C>))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn(problem::problems_only))
        .layer(axum::extract::DefaultBodyLimit::max(problem::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(track_requests))
        .with_state(state)
}

async fn track_requests(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    crate::metrics::request_served(route, method, resp.status(), started.elapsed());
    resp
}
