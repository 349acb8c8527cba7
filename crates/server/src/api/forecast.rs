//! `/v1/forecast/...`: demand forecasts and replenishment suggestions per series and per
//! location, the run history, a manual refresh, the reference data demand events are enriched
//! from, and demand events for sources without Kafka.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tally_bus::{Bus, OutRecord};
use tally_cache::Cache;
use tally_config::Scope;
use tally_core::{Envelope, EventKey};
use tally_forecast::demand::{DemandEvent, DemandKind};
use tally_forecast::reference::{LocationInfo, SkuInfo};
use tally_forecast_engine::records::{self, ForecastRecord, RunSummary};
use tally_forecast_engine::{FlagsError, ForecastFlags, ReferenceError};
use tally_store::InventoryStore;
use tally_store::demand::DemandStore;
use tally_store::ledger::DocumentStore;

use super::ingest::{IngestResponse, MAX_INGEST_BATCH, event_items};
use super::problem::{ApiJson, ItemError};
use super::stock::parse_id;
use super::{ApiError, AppState, Principal};

/// Most forecasts one location read returns.
const MAX_PAGE: usize = 1000;

/// Paging of list reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Most items (1 … 1000, default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl Page {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request("invalid-limit", format!("limit must be 1 to {MAX_PAGE}, got {n}"))),
        }
    }
}

/// Forecasts of a location.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationForecasts {
    /// The location.
    pub location: String,
    /// Its series' latest forecasts, by SKU.
    pub forecasts: Vec<ForecastRecord>,
}

/// Reorder suggestions, most urgent first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Suggestions {
    /// Series with a suggested order, by stock-out probability (highest first).
    pub suggestions: Vec<ForecastRecord>,
}

/// Forecast runs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Runs {
    /// Run shares.
    pub runs: Vec<RunSummary>,
}

/// A manual refresh started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefreshStarted {
    /// The run's id (its progress: `GET /v1/forecast/runs`).
    pub run_id: String,
}

/// Reference data to store.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferenceRequest {
    /// Catalogue entries.
    #[serde(default)]
    pub skus: Vec<SkuInfo>,
    /// Locations.
    #[serde(default)]
    pub locations: Vec<LocationInfo>,
}

fn unavailable(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Unavailable(e.into())
}

/// The series with staged demand, of one location or all.
async fn series_at<B: Bus, S: InventoryStore, C: Cache>(
    st: &AppState<B, S, C>,
    location: Option<&str>,
) -> Result<Vec<(String, String)>, ApiError> {
    let all = st.forecast.store.series().await.map_err(unavailable)?;
    Ok(all.into_iter().filter(|(_, l)| location.is_none_or(|want| want == l)).collect())
}

async fn forecasts_of<B: Bus, S: InventoryStore, C: Cache>(
    st: &AppState<B, S, C>,
    series: &[(String, String)],
) -> Result<Vec<ForecastRecord>, ApiError> {
    let keys: Vec<String> = series.iter().map(|(s, l)| records::forecast_doc(s, l)).collect();
    let mut found: Vec<ForecastRecord> = st
        .forecast
        .store
        .documents(keys)
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter_map(|(_, _, body)| serde_json::from_str(&body).ok())
        .collect();
    found.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
    Ok(found)
}

/// A series' latest forecast: point forecast and quantiles per day, the method and model
/// version that made it, and its replenishment suggestion.
#[utoipa::path(get, path = "/v1/forecast/series/{sku}/{location}", tag = "forecast",
    params(("sku" = tally_core::Sku, Path), ("location" = tally_core::LocationId, Path)),
    responses((status = 200, body = ForecastRecord), (status = 400, body = super::Problem, content_type = "application/problem+json"),
        (status = 404, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_series<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    Path((sku, location)): Path<(String, String)>,
) -> Result<Json<ForecastRecord>, ApiError> {
    principal.require(&Scope::ForecastRead)?;
    let _: tally_core::Sku = parse_id(&sku)?;
    let _: tally_core::LocationId = parse_id(&location)?;
    forecasts_of(&st, &[(sku.clone(), location.clone())]).await?.pop().map(Json).ok_or_else(|| ApiError::NotFound {
        code: "forecast-not-found",
        detail: format!("no forecast for {sku:?} at {location:?} yet"),
    })
}

/// The latest forecasts of a location's series.
#[utoipa::path(get, path = "/v1/forecast/locations/{location}", tag = "forecast",
    params(("location" = tally_core::LocationId, Path), Page),
    responses((status = 200, body = LocationForecasts), (status = 400, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_location<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    Path(location): Path<String>,
    page: QueryResult<Page>,
) -> Result<Json<LocationForecasts>, ApiError> {
    principal.require(&Scope::ForecastRead)?;
    let _: tally_core::LocationId = parse_id(&location)?;
    let limit = query(page)?.limit()?;
    let series: Vec<(String, String)> = series_at(&st, Some(&location)).await?.into_iter().take(limit).collect();
    Ok(Json(LocationForecasts { forecasts: forecasts_of(&st, &series).await?, location }))
}

/// Query of the suggestions.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SuggestionQuery {
    /// Only this location's series.
    #[serde(default)]
    #[param(value_type = Option<tally_core::LocationId>)]
    pub location: Option<String>,
    /// Most items (1 … 1000, default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))
}

/// Series with a suggested order, most likely to run out first.
#[utoipa::path(get, path = "/v1/forecast/suggestions", tag = "forecast",
    params(SuggestionQuery), responses((status = 200, body = Suggestions), (status = 400, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_suggestions<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    q: QueryResult<SuggestionQuery>,
) -> Result<Json<Suggestions>, ApiError> {
    principal.require(&Scope::ForecastRead)?;
    let q = query(q)?;
    if let Some(location) = &q.location {
        let _: tally_core::LocationId = parse_id(location)?;
    }
    let limit = Page { limit: q.limit }.limit()?;
    let series = series_at(&st, q.location.as_deref()).await?;
    let mut all: Vec<ForecastRecord> = Vec::new();
    for chunk in series.chunks(500) {
        all.extend(forecasts_of(&st, chunk).await?.into_iter().filter(|r| r.suggestion.order_quantity > 0));
    }
    all.sort_by(|a, b| b.suggestion.stockout_probability.total_cmp(&a.suggestion.stockout_probability));
    all.truncate(limit);
    Ok(Json(Suggestions { suggestions: all }))
}

/// The forecast runs (each instance's share of each), newest first.
#[utoipa::path(get, path = "/v1/forecast/runs", tag = "forecast",
    params(Page), responses((status = 200, body = Runs), (status = 400, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_runs<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    page: QueryResult<Page>,
) -> Result<Json<Runs>, ApiError> {
    principal.require(&Scope::ForecastRead)?;
    let limit = query(page)?.limit()?;
    let rows = st.forecast.store.appended(records::RUNS.to_owned()).await.map_err(unavailable)?;
    let runs: Vec<RunSummary> =
        rows.iter().rev().filter_map(|(_, body)| serde_json::from_str(body).ok()).take(limit).collect();
    Ok(Json(Runs { runs }))
}

/// Requests a manual run of every series: each forecast instance runs its share of it within
/// a second (so an API-only instance can ask); answers at once with the run's id.
#[utoipa::path(post, path = "/v1/forecast/refresh", tag = "forecast",
    responses((status = 202, body = RefreshStarted), (status = 409, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn refresh<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
) -> Result<(StatusCode, Json<RefreshStarted>), ApiError> {
    principal.require(&Scope::Admin)?;
    let run_id = st.forecast.request_manual_run().await.map_err(unavailable)?.ok_or_else(|| ApiError::Conflict {
        code: "no-demand-data",
        detail: "no demand has been staged yet: there is nothing to forecast".into(),
        outcome: None,
    })?;
    Ok((StatusCode::ACCEPTED, Json(RefreshStarted { run_id })))
}

/// Stores catalogue entries and locations (upserts); events parked for want of them are
/// staged at once.
#[utoipa::path(put, path = "/v1/forecast/references", tag = "forecast", request_body = ReferenceRequest,
    responses((status = 204), (status = 400, body = super::Problem, content_type = "application/problem+json"),
        (status = 422, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_references<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    ApiJson(req): ApiJson<ReferenceRequest>,
) -> Result<StatusCode, ApiError> {
    principal.require(&Scope::Admin)?;
    if req.skus.len() + req.locations.len() > MAX_INGEST_BATCH * 10 {
        return Err(ApiError::bad_request(
            "invalid-batch-size",
            format!("send at most {} entries", MAX_INGEST_BATCH * 10),
        ));
    }
    match st.forecast.put_references(req.skus, req.locations).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(ReferenceError::Invalid(detail)) => Err(ApiError::InvalidEvents {
            detail: "a reference entry is not valid; none was stored".into(),
            errors: vec![ItemError { index: 0, code: "invalid_field".into(), detail }],
        }),
        Err(ReferenceError::Engine(e)) => Err(unavailable(e)),
    }
}

/// Ingests demand events (CloudEvents, structured JSON: `demand.sale`, `demand.supply`,
/// `demand.return`) onto their topics. All or nothing, as `/v1/events`.
#[utoipa::path(post, path = "/v1/forecast/events", tag = "forecast",
    request_body(content = Object, description = "A CloudEvent or an array of them (structured JSON mode)"),
    responses((status = 202, body = IngestResponse), (status = 400, body = super::Problem, content_type = "application/problem+json"),
        (status = 422, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn ingest_demand<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    principal.require(&Scope::Admin)?;
    let (items, _) = event_items(body)?;
    let topics = &st.forecast.cfg.topics;
    let mut errors = Vec::new();
    let mut by_topic: std::collections::BTreeMap<String, Vec<OutRecord>> = Default::default();
    let mut accepted = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let mut env: Envelope = match serde_json::from_value(item) {
            Ok(env) => env,
            Err(e) => {
                errors.push(ItemError { index, code: "invalid_envelope".into(), detail: e.to_string() });
                continue;
            }
        };
        if let Err(e) = env.validate() {
            errors.push(ItemError { index, code: "invalid_envelope".into(), detail: e.to_string() });
            continue;
        }
        let Some(kind) = DemandKind::of_type(&env.ty) else {
            errors.push(ItemError {
                index,
                code: "unknown_type".into(),
                detail: format!("demand events are demand.sale, demand.supply or demand.return, not {:?}", env.ty),
            });
            continue;
        };
        let payload = serde_json::to_vec(&env.data).map_err(|e| ApiError::Internal(e.into()))?;
        match DemandEvent::from_payload(kind, &payload) {
            Ok(event) => {
                let key = event.series_key();
                env.subject = Some(key.clone());
                let topic = match kind {
                    DemandKind::Sale => &topics.sales,
                    DemandKind::Supply => &topics.supplies,
                    DemandKind::Return => &topics.returns,
                };
                accepted.push(EventKey { source: env.source.clone(), id: env.id.clone() });
                let (headers, payload) = env.to_binary();
                by_topic.entry(topic.clone()).or_default().push(OutRecord::keyed(key, headers, payload));
            }
            Err(e) => errors.push(ItemError { index, code: e.code.into(), detail: e.detail }),
        }
    }
    if !errors.is_empty() {
        let detail =
            format!("{} of {} events are invalid; none was accepted", errors.len(), errors.len() + accepted.len());
        return Err(ApiError::InvalidEvents { detail, errors });
    }
    for (topic, records) in by_topic {
        st.forecast.bus.publish(&topic, records).await.map_err(unavailable)?;
    }
    Ok((StatusCode::ACCEPTED, Json(IngestResponse { accepted })))
}

/// A model version switch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForecastFlagsRequest {
    /// The version every forecast is made with (one the model answers with; others are
    /// refused with 422).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub active: String,
}

/// The demand model version in force.
#[utoipa::path(get, path = "/v1/forecast/flags", tag = "forecast",
    responses((status = 200, body = ForecastFlags)), security(("api_key" = [])))]
pub async fn get_flags<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
) -> Result<Json<ForecastFlags>, ApiError> {
    principal.require(&Scope::ForecastRead)?;
    st.forecast.refresh_flags().await.map_err(unavailable)?;
    Ok(Json((*st.forecast.flags.get()).clone()))
}

/// Switches the demand model version: every instance forecasts with it within a second.
#[utoipa::path(put, path = "/v1/forecast/flags", tag = "forecast", request_body = ForecastFlagsRequest,
    responses((status = 200, body = ForecastFlags), (status = 400, body = super::Problem, content_type = "application/problem+json"),
        (status = 409, body = super::Problem, content_type = "application/problem+json"),
        (status = 422, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_flags<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    ApiJson(req): ApiJson<ForecastFlagsRequest>,
) -> Result<Json<ForecastFlags>, ApiError> {
    principal.require(&Scope::Admin)?;
    match st.forecast.set_flags(req.active).await {
        Ok(flags) => Ok(Json(flags)),
        Err(FlagsError::Invalid(detail)) => Err(ApiError::InvalidEvents {
            detail: "the flags are not valid".into(),
            errors: vec![ItemError { index: 0, code: "invalid_flags".into(), detail }],
        }),
        Err(e @ FlagsError::Conflict { .. }) => {
            Err(ApiError::Conflict { code: "flags_changed_concurrently", detail: e.to_string(), outcome: None })
        }
        Err(FlagsError::Engine(e)) => Err(unavailable(e)),
    }
}
