//! Writes: CloudEvents ingest (single or batch) for channels without Kafka, and synchronous
//! reservation and compare-and-set endpoints that wait for the engine's outcome. Every write
//! goes through the bus, so HTTP and Kafka producers get the same validation, ordering and
//! idempotency.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tally_bus::{Bus, OutRecord};
use tally_cache::Cache;
use tally_config::Scope;
use tally_core::{Envelope, EventKey, Sku, headers};
use tally_inventory::event::{
    AdjustReason, ReservationCommitted, ReservationReleased, ReservationRequested, StockAdjusted,
};
use tally_inventory::{InventoryEvent, Outcome};
use tally_store::InventoryStore;

use super::problem::{ApiJson, ItemError};
use super::stock::{StockView, parse_id};
use super::{ApiError, AppState, Principal, wait};

/// Most events one ingest request may carry.
pub const MAX_INGEST_BATCH: usize = 1000;

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| ApiError::bad_request("invalid-idempotency-key", "Idempotency-Key must be ASCII"))?;
            if key.is_empty() || key.len() > 200 {
                return Err(ApiError::bad_request(
                    "invalid-idempotency-key",
                    "Idempotency-Key must be 1 to 200 characters",
                ));
            }
            Ok(Some(key.to_owned()))
        }
    }
}

pub(crate) fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers.get(headers::TRACEPARENT).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn record_of(env: &Envelope, sku: &Sku) -> OutRecord {
    let (headers, payload) = env.to_binary();
    OutRecord::keyed(sku.to_string(), headers, payload)
}

async fn publish<B: Bus, S: InventoryStore, C: Cache>(
    st: &AppState<B, S, C>,
    records: Vec<OutRecord>,
) -> Result<(), ApiError> {
    st.engine.bus.publish(&st.engine.cfg.topics.events, records).await.map_err(|e| ApiError::Unavailable(e.into()))
}

/// Accepted events.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IngestResponse {
    /// Idempotency keys of the accepted events, in request order.
    pub accepted: Vec<EventKey>,
}

/// The events of an ingest body — one CloudEvent object or an array of 1 to
/// [`MAX_INGEST_BATCH`] — and whether it was a single object.
pub fn event_items(body: serde_json::Value) -> Result<(Vec<serde_json::Value>, bool), ApiError> {
    let (items, single) = match body {
        serde_json::Value::Array(items) => (items, false),
        obj @ serde_json::Value::Object(_) => (vec![obj], true),
        _ => {
            return Err(ApiError::bad_request(
                "invalid-json",
                "the body must be a CloudEvent object or an array of them",
            ));
        }
    };
    if items.is_empty() || items.len() > MAX_INGEST_BATCH {
        return Err(ApiError::bad_request(
            "invalid-batch-size",
            format!("send 1 to {MAX_INGEST_BATCH} events, got {}", items.len()),
        ));
    }
    Ok((items, single))
}

/// Ingests one CloudEvent (structured JSON) or an array of them.
///
/// Validation is all-or-nothing: if any event is invalid, none is accepted and the problem
/// lists every invalid item. Accepted events are durable on the bus when this returns; a
/// re-sent event (same `source` + `id`) is accepted again and applied once.
#[utoipa::path(post, path = "/v1/events", tag = "inventory",
    request_body(content = Object, description = "A CloudEvent or an array of CloudEvents (structured JSON mode)"),
    params(("Idempotency-Key" = Option<String>, Header, description = "For a single event: used as its id")),
    responses(
        (status = 202, body = IngestResponse),
        (status = 400, body = super::Problem, content_type = "application/problem+json"),
        (status = 403, body = super::Problem, content_type = "application/problem+json"),
        (status = 422, body = super::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn ingest_events<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let key_header = idempotency_key(&headers)?;
    let (items, single) = event_items(body)?;
    if !single && key_header.is_some() {
        // Well-formed but meaningless: a 422 (the request cannot be processed as sent).
        return Err(ApiError::InvalidEvents {
            detail: "Idempotency-Key applies to a single event; in a batch each event's id is its key".into(),
            errors: vec![ItemError {
                index: 0,
                code: "invalid_envelope".into(),
                detail: "send the batch without an Idempotency-Key header".into(),
            }],
        });
    }
    let trace = traceparent(&headers);
    let mut errors = Vec::new();
    let mut valid = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let mut env: Envelope = match serde_json::from_value(item) {
            Ok(env) => env,
            Err(e) => {
                errors.push(ItemError { index, code: "invalid_envelope".into(), detail: e.to_string() });
                continue;
            }
        };
        if let Some(key) = &key_header {
            env.id.clone_from(key);
        }
        // The request's trace context goes with events that carry none, and is checked with them.
        if env.traceparent.is_none() {
            env.traceparent.clone_from(&trace);
        }
        if let Err(e) = env.validate() {
            errors.push(ItemError { index, code: "invalid_envelope".into(), detail: e.to_string() });
            continue;
        }
        match InventoryEvent::from_envelope(&env) {
            Ok(ev) => {
                env.subject = Some(ev.sku().to_string());
                valid.push((env, ev));
            }
            Err(e) => errors.push(ItemError { index, code: e.code.into(), detail: e.detail }),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            crate::metrics::event_rejected(&e.code);
        }
        let detail =
            format!("{} of {} events are invalid; none was accepted", errors.len(), errors.len() + valid.len());
        return Err(ApiError::InvalidEvents { detail, errors });
    }
    for (env, ev) in &valid {
        principal.require_source(&env.source)?;
        principal.require_channel(ev.acting_channel(&st.warehouse))?;
    }
    refuse_reused_keys(&st, &valid).await?;
    let records = valid.iter().map(|(env, ev)| record_of(env, ev.sku())).collect();
    publish(&st, records).await?;
    let accepted = valid.into_iter().map(|(env, _)| env.key()).collect();
    Ok((StatusCode::ACCEPTED, Json(IngestResponse { accepted })))
}

/// Refuses (422) events whose `source` + `id` was already used — earlier, or earlier in the
/// same batch — for a different request. A key reused while its first use is still in flight
/// is caught by the worker instead, which dead-letters the second (`idempotency_key_reused`).
async fn refuse_reused_keys<B: Bus, S: InventoryStore, C: Cache>(
    st: &AppState<B, S, C>,
    valid: &[(Envelope, InventoryEvent)],
) -> Result<(), ApiError> {
    let mut digests: HashMap<EventKey, i64> = HashMap::with_capacity(valid.len());
    let mut errors = Vec::new();
    let reused = |index: usize, key: &EventKey| ItemError {
        index,
        code: "idempotency_key_reused".into(),
        detail: format!("source {:?} + id {:?} was already used for a different request", key.source, key.id),
    };
    for (index, (env, ev)) in valid.iter().enumerate() {
        let (key, digest) = (env.key(), ev.digest());
        if digests.get(&key).is_some_and(|&d| d != digest) {
            errors.push(reused(index, &key));
        }
        digests.entry(key).or_insert(digest);
    }
    let stored = st.engine.store.processed_many(digests.keys().cloned().collect()).await?;
    for p in stored {
        if p.digest.is_some_and(|d| digests.get(&p.key).is_some_and(|&ours| ours != d)) {
            let index = valid.iter().position(|(env, _)| env.key() == p.key).unwrap_or_default();
            errors.push(reused(index, &p.key));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort_by_key(|e| e.index);
    let detail = format!(
        "{} of {} events reuse an idempotency key for a different request; none was accepted",
        errors.len(),
        valid.len()
    );
    Err(ApiError::IdempotencyKeyReused { detail, errors })
}

/// The stored outcome of the event `env` names, if it was applied — refused if that key was
/// applied for a different request.
/// Publishes a command event and waits for its outcome ([`super::wait`]).
async fn publish_and_wait<B: Bus, S: InventoryStore, C: Cache>(
    st: &AppState<B, S, C>,
    env: Envelope,
    ev: &InventoryEvent,
) -> Result<Outcome, ApiError> {
    let (key, digest) = (env.key(), ev.digest());
    let record = record_of(&env, ev.sku());
    wait::publish_and_wait(
        &st.engine.waiters,
        &st.engine.store,
        key,
        digest,
        st.wait_timeout,
        publish(st, vec![record]),
    )
    .await
}

fn require_key(headers: &HeaderMap) -> Result<String, ApiError> {
    idempotency_key(headers)?
        .ok_or_else(|| ApiError::bad_request("missing-idempotency-key", "this write needs an Idempotency-Key header"))
}

/// Body of a compare-and-set adjustment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// Signed change of on_hand.
    #[serde(deserialize_with = "tally_core::whole::i64")]
    pub delta: i64,
    /// Why.
    pub reason: AdjustReason,
    /// Apply only if on_hand currently equals this (Shopify `changeFromQuantity`).
    #[serde(default, deserialize_with = "tally_core::whole::opt_i64")]
    pub change_from_quantity: Option<i64>,
    /// Reference document (order id for shipments).
    pub reference: Option<String>,
    /// Source version the adjustment belongs to.
    #[serde(default, deserialize_with = "tally_core::whole::opt_u64")]
    pub source_version: Option<u64>,
}

/// Result of a synchronous write.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WriteResponse {
    /// What the engine did.
    pub outcome: Outcome,
    /// Stock after the write.
    pub stock: Option<StockView>,
}

async fn respond<B: Bus, S: InventoryStore, C: Cache>(
    st: &AppState<B, S, C>,
    sku: &Sku,
    outcome: Outcome,
    ok: StatusCode,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    let as_json = || serde_json::to_value(&outcome).ok();
    match &outcome {
        Outcome::CasMismatch { expected, actual } => {
            return Err(ApiError::Conflict {
                code: "quantity-mismatch",
                detail: format!("change_from_quantity is {expected} but on_hand is {actual}; nothing changed"),
                outcome: as_json(),
            });
        }
        Outcome::Ignored { reason } if reason == "not_reservation_holder" => {
            return Err(ApiError::Forbidden("the reservation is held by another channel; nothing changed".into()));
        }
        Outcome::ReservationRejected { reason, detail } => {
            return Err(ApiError::Conflict {
                code: "reservation-rejected",
                detail: format!("{reason}: {detail}"),
                outcome: as_json(),
            });
        }
        _ => {}
    }
    let states = st.engine.read_states(std::slice::from_ref(sku)).await?;
    let stock = states.get(sku).map(|s| StockView::of(s, &st.engine.rules));
    Ok((ok, Json(WriteResponse { outcome, stock })))
}

/// Adjusts on_hand at a location, optionally compare-and-set, and returns the outcome.
#[utoipa::path(post, path = "/v1/stock/{sku}/locations/{location}/adjustments", tag = "inventory",
    params(("sku" = String, Path), ("location" = String, Path), ("Idempotency-Key" = String, Header, description = "Required; the retry key")),
    request_body = AdjustRequest,
    responses(
        (status = 200, body = WriteResponse),
        (status = 409, body = super::Problem, description = "change_from_quantity did not match", content_type = "application/problem+json"),
        (status = 422, body = super::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn adjust_stock<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    headers: HeaderMap,
    Path((sku, location)): Path<(String, String)>,
    ApiJson(req): ApiJson<AdjustRequest>,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    principal.require_channel(&st.warehouse)?;
    let key = require_key(&headers)?;
    let sku: Sku = parse_id(&sku)?;
    let ev = InventoryEvent::Adjusted(StockAdjusted {
        sku: sku.clone(),
        location: parse_id(&location)?,
        delta: req.delta,
        reason: req.reason,
        source_version: req.source_version,
        reference: req.reference,
        change_from_quantity: req.change_from_quantity,
    });
    let env = command_envelope(&principal, &ev, key, &headers)?;
    let outcome = publish_and_wait(&st, env, &ev).await?;
    respond(&st, &sku, outcome, StatusCode::OK).await
}

fn command_envelope(
    principal: &Principal,
    ev: &InventoryEvent,
    id: String,
    headers: &HeaderMap,
) -> Result<Envelope, ApiError> {
    let mut env = ev.into_envelope(&principal.api_source());
    env.id = id;
    env.traceparent = traceparent(headers);
    // The same validation as the bus consumer, so a bad request fails here with a 422: the
    // payload first (its complaint names the field the caller sent), then the attributes.
    InventoryEvent::from_envelope(&env).map_err(|e| ApiError::InvalidEvents {
        detail: "the request does not form a valid event".into(),
        errors: vec![ItemError { index: 0, code: e.code.into(), detail: e.detail }],
    })?;
    env.validate().map_err(|e| ApiError::InvalidEvents {
        detail: "the request does not form a valid event".into(),
        errors: vec![ItemError { index: 0, code: "invalid_envelope".into(), detail: e.to_string() }],
    })?;
    Ok(env)
}

/// Body of a reservation request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Unique, single-use reservation id.
    pub reservation_id: String,
    /// SKU.
    #[schema(value_type = String)]
    pub sku: Sku,
    /// Channel holding the stock.
    #[schema(value_type = String)]
    pub channel: tally_core::ChannelId,
    /// Location; default: the channel's location with most available.
    #[schema(value_type = Option<String>)]
    pub location: Option<tally_core::LocationId>,
    /// Units.
    #[serde(deserialize_with = "tally_core::whole::i64")]
    pub quantity: i64,
    /// Order reference.
    pub order_id: Option<String>,
    /// Seconds until an uncommitted hold lapses.
    #[serde(default, deserialize_with = "tally_core::whole::opt_u32")]
    pub ttl_seconds: Option<u32>,
}

/// Holds stock for an order; never oversells.
#[utoipa::path(post, path = "/v1/reservations", tag = "inventory", request_body = ReserveRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry key; default derived from reservation_id")),
    responses(
        (status = 201, body = WriteResponse),
        (status = 409, body = super::Problem, description = "Rejected (e.g. insufficient stock); nothing is held", content_type = "application/problem+json"),
        (status = 403, body = super::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn reserve<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    principal.require_channel(&req.channel)?;
    let id = idempotency_key(&headers)?.unwrap_or_else(|| format!("reserve:{}", req.reservation_id));
    let sku = req.sku.clone();
    let ev = InventoryEvent::ReservationRequested(ReservationRequested {
        reservation_id: req.reservation_id,
        sku: req.sku,
        channel: req.channel,
        location: req.location,
        quantity: req.quantity,
        order_id: req.order_id,
        // Relative to the event's time, so a retried request carries the same terms (and the
        // same digest) as the first.
        expires_at: None,
        ttl_seconds: req.ttl_seconds,
    });
    let env = command_envelope(&principal, &ev, id, &headers)?;
    let outcome = publish_and_wait(&st, env, &ev).await?;
    respond(&st, &sku, outcome, StatusCode::CREATED).await
}

/// Body of a release.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// SKU of the reservation (its partition key).
    #[schema(value_type = String)]
    pub sku: Sku,
    /// Why, e.g. `cancelled` (default `released`).
    pub reason: Option<String>,
}

/// Body of a commit.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// SKU of the reservation (its partition key).
    #[schema(value_type = String)]
    pub sku: Sku,
    /// The order; the warehouse's shipment that references it confirms the commit.
    pub order_id: Option<String>,
}

/// What a release or commit asks for.
enum ReservationAction {
    Release { reason: Option<String> },
    Commit { order_id: Option<String> },
}

/// Gives held stock back.
#[utoipa::path(post, path = "/v1/reservations/{reservation_id}/release", tag = "inventory", request_body = ReleaseRequest,
    params(("reservation_id" = String, Path)),
    responses((status = 200, body = WriteResponse)),
    security(("api_key" = [])))]
pub async fn release_reservation<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    headers: HeaderMap,
    Path(reservation_id): Path<String>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    let action = ReservationAction::Release { reason: req.reason };
    reservation_action(st, principal, headers, reservation_id, req.sku, action).await
}

/// Marks held stock shipped (provisional until the warehouse confirms).
#[utoipa::path(post, path = "/v1/reservations/{reservation_id}/commit", tag = "inventory", request_body = CommitRequest,
    params(("reservation_id" = String, Path)),
    responses((status = 200, body = WriteResponse)),
    security(("api_key" = [])))]
pub async fn commit_reservation<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    headers: HeaderMap,
    Path(reservation_id): Path<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    let action = ReservationAction::Commit { order_id: req.order_id };
    reservation_action(st, principal, headers, reservation_id, req.sku, action).await
}

async fn reservation_action<B: Bus, S: InventoryStore, C: Cache>(
    st: AppState<B, S, C>,
    principal: Principal,
    headers: HeaderMap,
    reservation_id: String,
    sku: Sku,
    action: ReservationAction,
) -> Result<(StatusCode, Json<WriteResponse>), ApiError> {
    let verb = match action {
        ReservationAction::Release { .. } => "release",
        ReservationAction::Commit { .. } => "commit",
    };
    let id = idempotency_key(&headers)?.unwrap_or_else(|| format!("{verb}:{reservation_id}"));
    // Only the channel holding a reservation may release or commit it; the warehouse may act
    // on any. The event names the acting channel, and the worker checks it against the holder
    // when it applies the event, so a reservation changing hands meanwhile cannot be touched.
    let states = st.engine.read_states(std::slice::from_ref(&sku)).await?;
    let holder = states.get(&sku).and_then(|s| s.reservations.get(&reservation_id)).map(|r| r.channel.clone());
    let channel = match holder {
        Some(holder) if principal.allows(&Scope::StockWrite(st.warehouse.clone())) && holder != st.warehouse => None,
        Some(holder) => Some(holder),
        // Closed or unknown: a caller writing for one channel acts as that channel (the
        // worker then answers unknown_reservation or reservation_closed, or, for a retry,
        // the stored outcome is found below).
        None => match principal.write_channels().collect::<Vec<_>>().as_slice() {
            [only] if *only != &st.warehouse => Some((*only).clone()),
            _ => None,
        },
    };
    if let Some(channel) = &channel {
        principal.require_channel(channel)?;
    } else {
        principal.require_channel(&st.warehouse)?;
    }
    let ev = match action {
        ReservationAction::Commit { order_id } => InventoryEvent::ReservationCommitted(ReservationCommitted {
            reservation_id,
            sku: sku.clone(),
            order_id,
            channel,
        }),
        ReservationAction::Release { reason } => InventoryEvent::ReservationReleased(ReservationReleased {
            reservation_id,
            sku: sku.clone(),
            reason: Some(reason.unwrap_or_else(|| "released".into())),
            channel,
        }),
    };
    let env = command_envelope(&principal, &ev, id, &headers)?;
    let outcome = publish_and_wait(&st, env, &ev).await?;
    respond(&st, &sku, outcome, StatusCode::OK).await
}
