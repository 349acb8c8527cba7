//! Stock reads: one SKU, a batch, one channel, and the audit trail. Served from the hot
//! aggregate, falling back to the store.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use tally_bus::Bus;
use tally_cache::Cache;
use tally_config::Scope;
use tally_core::{ChannelId, Sku};
use tally_inventory::aggregate::LocationLevel;
use tally_inventory::{AuditEntry, ChannelAvailability, SkuState};
use tally_store::InventoryStore;

use super::problem::ApiJson;
use super::{ApiError, AppState, Principal};

/// Stock of one SKU at every location and on every channel.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockView {
    /// SKU.
    #[schema(value_type = String)]
    pub sku: Sku,
    /// Aggregate version.
    pub version: u64,
    /// Last change (Unix ms).
    pub updated_at_ms: i64,
    /// Per location.
    pub locations: Vec<LocationLevel>,
    /// Per channel.
    pub channels: Vec<ChannelAvailability>,
    /// Active reservations.
    pub active_reservations: usize,
}

impl StockView {
    /// The view of a state under the configured channel rules.
    pub fn of(state: &SkuState, rules: &tally_inventory::ChannelRules) -> Self {
        Self {
            sku: state.sku.clone(),
            version: state.version,
            updated_at_ms: state.updated_at_ms,
            locations: state.levels(),
            channels: state.availability(rules),
            active_reservations: state.reservations.len(),
        }
    }
}

/// Parses a path or body identifier, with the validation message as a 400.
pub fn parse_id<T: std::str::FromStr<Err = tally_core::IdError>>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|e: tally_core::IdError| ApiError::bad_request("invalid-identifier", e.to_string()))
}

fn not_found(sku: &Sku) -> ApiError {
    ApiError::NotFound { code: "sku-not-found", detail: format!("no stock is known for sku {sku}") }
}

/// Stock of one SKU.
#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "SKU")),
    responses(
        (status = 200, body = StockView),
        (status = 400, body = super::Problem, content_type = "application/problem+json"),
        (status = 404, body = super::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_stock<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    Path(sku): Path<String>,
) -> Result<Json<StockView>, ApiError> {
    principal.require(&Scope::StockRead)?;
    let sku: Sku = parse_id(&sku)?;
    let states = st.engine.read_states(std::slice::from_ref(&sku)).await?;
    let state = states.get(&sku).ok_or_else(|| not_found(&sku))?;
    Ok(Json(StockView::of(state, &st.engine.rules)))
}

/// Body of a batch read.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchReadRequest {
    /// Up to 500 SKUs.
    #[schema(value_type = Vec<String>)]
    pub skus: Vec<Sku>,
}

/// Result of a batch read.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchReadResponse {
    /// Found SKUs, in request order.
    pub items: Vec<StockView>,
    /// Requested SKUs with no known stock.
    #[schema(value_type = Vec<String>)]
    pub missing: Vec<Sku>,
}

/// Most SKUs one batch read may ask for.
pub const MAX_BATCH_READ: usize = 500;

/// Stock of many SKUs.
#[utoipa::path(post, path = "/v1/stock/batch-read", tag = "inventory", request_body = BatchReadRequest,
    responses((status = 200, body = BatchReadResponse), (status = 400, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn batch_read<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    ApiJson(req): ApiJson<BatchReadRequest>,
) -> Result<Json<BatchReadResponse>, ApiError> {
    principal.require(&Scope::StockRead)?;
    if req.skus.is_empty() || req.skus.len() > MAX_BATCH_READ {
        return Err(ApiError::bad_request(
            "invalid-batch-size",
            format!("skus must hold 1 to {MAX_BATCH_READ} entries, got {}", req.skus.len()),
        ));
    }
    let states = st.engine.read_states(&req.skus).await?;
    let mut resp = BatchReadResponse { items: Vec::new(), missing: Vec::new() };
    for sku in req.skus {
        match states.get(&sku) {
            Some(s) => resp.items.push(StockView::of(s, &st.engine.rules)),
            None => resp.missing.push(sku),
        }
    }
    Ok(Json(resp))
}

/// Availability of one SKU on one channel.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelStockView {
    /// SKU.
    #[schema(value_type = String)]
    pub sku: Sku,
    /// Channel.
    #[schema(value_type = String)]
    pub channel: ChannelId,
    /// Units the channel may sell.
    pub available_to_sell: i64,
    /// Aggregate version.
    pub version: u64,
}

/// Availability of one SKU on one channel.
#[utoipa::path(get, path = "/v1/channels/{channel}/stock/{sku}", tag = "inventory",
    params(("channel" = String, Path, description = "Channel id"), ("sku" = String, Path, description = "SKU")),
    responses((status = 200, body = ChannelStockView), (status = 404, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_channel_stock<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    Path((channel, sku)): Path<(String, String)>,
) -> Result<Json<ChannelStockView>, ApiError> {
    principal.require(&Scope::StockRead)?;
    let channel: ChannelId = parse_id(&channel)?;
    let sku: Sku = parse_id(&sku)?;
    if st.engine.rules.get(&channel).is_none() {
        return Err(ApiError::NotFound {
            code: "channel-not-found",
            detail: format!("channel {channel} is not configured"),
        });
    }
    let states = st.engine.read_states(std::slice::from_ref(&sku)).await?;
    let state = states.get(&sku).ok_or_else(|| not_found(&sku))?;
    let available_to_sell = state.available_to_sell(&st.engine.rules, &channel).unwrap_or(0);
    Ok(Json(ChannelStockView { sku, channel, available_to_sell, version: state.version }))
}

/// Query of the audit endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Rows to return, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only rows older than this `seq` (the previous page's `next_before`).
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// One audit row and its place in the trail.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditItem {
    /// Position in the trail (grows with every row stored); pages are cut by it.
    pub seq: i64,
    /// The row.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Audit trail page.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditResponse {
    /// Rows, newest first.
    pub items: Vec<AuditItem>,
    /// When more (older) rows may exist: pass as `before` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// Audit trail of one SKU: every applied event with its outcome and the resulting levels,
/// newest first, in pages.
#[utoipa::path(get, path = "/v1/stock/{sku}/audit", tag = "inventory",
    params(("sku" = String, Path, description = "SKU"), AuditQuery),
    responses((status = 200, body = AuditResponse)),
    security(("api_key" = [])))]
pub async fn get_audit<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    Path(sku): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditResponse>, ApiError> {
    principal.require(&Scope::StockRead)?;
    let sku: Sku = parse_id(&sku)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid-query", format!("limit must be within 1..=1000, got {limit}")));
    }
    if let Some(before) = q.before
        && before < 1
    {
        return Err(ApiError::bad_request("invalid-query", format!("before must be >= 1, got {before}")));
    }
    let rows = st.engine.store.audit(sku, limit, q.before).await?;
    let next_before = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.seq)).flatten();
    let items = rows.into_iter().map(|r| AuditItem { seq: r.seq, entry: r.entry }).collect();
    Ok(Json(AuditResponse { items, next_before }))
}
