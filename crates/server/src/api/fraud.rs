//! `/v1/fraud/...`: synchronous scoring for checkout (the same pipeline as the bus: the
//! transaction is published and its decision awaited, so the same transaction id twice gives
//! the same decision and one model call), decision lookup, profile upserts, version flags and
//! the model quality report.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use tally_bus::{Bus, OutRecord};
use tally_cache::Cache;
use tally_config::Scope;
use tally_core::{AccountId, Envelope};
use tally_fraud::{Profile, Transaction};
use tally_fraud_engine::handler::{digest, types};
use tally_fraud_engine::{DecisionRecord, Flags, FlagsError, FraudOutcome, VersionQuality};
use tally_store::InventoryStore;

use super::ingest::{idempotency_key, traceparent};
use super::problem::{ApiJson, ItemError};
use super::{ApiError, AppState, Principal, wait};

/// A payment to score: the `data` of a `payment.transaction` event.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// Unique per transaction: the idempotency key of the scoring.
    #[schema(value_type = tally_core::TransactionId)]
    pub transaction_id: String,
    /// The paying account.
    #[schema(value_type = tally_core::AccountId)]
    pub account_id: String,
    /// The card.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub card_id: String,
    /// Amount in minor units with its ISO 4217 currency.
    pub amount: Amount,
    /// The merchant.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub merchant_id: String,
    /// Merchant category code, four digits.
    #[schema(pattern = "^[0-9]{4}$")]
    pub mcc: String,
    /// The merchant's country (ISO 3166-1 alpha-2, either case).
    #[schema(pattern = "^[A-Za-z]{2}$")]
    pub country: String,
    /// Online or at a point of sale.
    pub channel: PaymentChannel,
    /// The device fingerprint, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub device_id: Option<String>,
    /// The client's IPv4 address, when known (IPv6 is accepted too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
    )]
    pub ip: Option<String>,
    /// When the payment was made (RFC 3339).
    #[schema(format = DateTime)]
    pub occurred_at: String,
}

/// Where a payment was made.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentChannel {
    /// Online.
    Ecom,
    /// At a point of sale (card present).
    Pos,
}

/// An amount.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    /// Minor units (cents), 1 to 10^15.
    #[serde(deserialize_with = "tally_core::whole::i64")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub minor: i64,
    /// ISO 4217 code (either case).
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: String,
}

/// A customer profile.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// When the account was opened (RFC 3339).
    #[schema(format = DateTime)]
    pub opened_at: String,
    /// Home country (ISO 3166-1 alpha-2, either case).
    #[schema(pattern = "^[A-Za-z]{2}$")]
    pub home_country: String,
    /// Segment (`retail`, `business` …); default `retail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 32, pattern = "^[!-~]+$")]
    pub segment: Option<String>,
    /// Typical amount in major units (above 0, below 10^12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1e12)]
    pub typical_amount: Option<f64>,
}

/// Model version flags.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagsRequest {
    /// The version that decides (a version with a model card; others are refused with 422).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub active: String,
    /// A version scored and stored beside it, never acted on.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub shadow: Option<String>,
    /// A version deciding for a sticky share of accounts.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub canary: Option<String>,
    /// That share, 0 to 100 (above 0 only with a canary).
    #[serde(default, deserialize_with = "whole_percent")]
    #[schema(minimum = 0, maximum = 100)]
    pub canary_percent: u8,
}

fn whole_percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = tally_core::whole::i64(d)?;
    u8::try_from(v).ok().filter(|p| *p <= 100).ok_or_else(|| serde::de::Error::custom(format!("{v} is not 0 to 100")))
}

/// The quality report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QualityResponse {
    /// Per model version: labels joined, precision, recall, ROC-AUC, score histogram, drift.
    #[schema(value_type = Vec<Object>)]
    pub versions: Vec<VersionQuality>,
}

fn invalid(code: &'static str, detail: String) -> ApiError {
    ApiError::InvalidEvents {
        detail: "the request does not form a valid event".into(),
        errors: vec![ItemError { index: 0, code: code.into(), detail }],
    }
}

fn record(env: &Envelope, account: &str) -> OutRecord {
    let (headers, payload) = env.to_binary();
    OutRecord::keyed(account, headers, payload)
}

async fn decided<B: Bus, S: InventoryStore, C: Cache>(
    st: &AppState<B, S, C>,
    env: Envelope,
    account: &str,
    topic: &str,
) -> Result<FraudOutcome, ApiError> {
    let payload = serde_json::to_vec(&env.data).map_err(|e| ApiError::Internal(e.into()))?;
    let key = env.key();
    let bus = st.fraud.bus.clone();
    let topic = topic.to_owned();
    let rec = record(&env, account);
    let publish = async move { bus.publish(&topic, vec![rec]).await.map_err(|e| ApiError::Unavailable(e.into())) };
    wait::publish_and_wait(&st.fraud.waiters, &st.fraud.store, key, digest(&payload), st.wait_timeout, publish).await
}

/// Scores a payment synchronously (checkout): the decision, with its reasons.
#[utoipa::path(post, path = "/v1/fraud/score", tag = "fraud", request_body = ScoreRequest,
    responses(
        (status = 200, description = "The decision (verdict, score, who decided, model and schema versions, reasons)", body = Object),
        (status = 422, body = super::Problem, description = "Not a valid transaction, or the transaction id reused for another payment", content_type = "application/problem+json"),
        (status = 403, body = super::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn score<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ScoreRequest>,
) -> Result<Json<DecisionRecord>, ApiError> {
    principal.require(&Scope::FraudScore)?;
    let data = serde_json::to_value(&req).map_err(|e| ApiError::Internal(e.into()))?;
    let payload = serde_json::to_vec(&data).map_err(|e| ApiError::Internal(e.into()))?;
    let tx = Transaction::from_payload(&payload).map_err(|e| invalid(e.code, e.detail))?;
    if let Some(key) = idempotency_key(&headers)?
        && key != req.transaction_id
    {
        return Err(ApiError::bad_request(
            "idempotency-key-mismatch",
            "a scoring's idempotency key is its transaction_id; omit Idempotency-Key or send the same value",
        ));
    }
    let mut env = Envelope::new(principal.api_source(), types::TRANSACTION, data);
    env.id = tx.transaction_id.as_str().to_owned();
    env.subject = Some(tx.account_id.as_str().to_owned());
    env.time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(tx.occurred_at_ms) * 1_000_000).unwrap_or(env.time);
    env.traceparent = traceparent(&headers);
    let topic = st.fraud.cfg.topics.transactions.clone();
    match decided(&st, env, tx.account_id.as_str(), &topic).await? {
        FraudOutcome::Decided(record) => Ok(Json(*record)),
        other => Err(ApiError::Internal(anyhow::anyhow!("a transaction was answered with {other:?}"))),
    }
}

/// A transaction's decision.
#[utoipa::path(get, path = "/v1/fraud/decisions/{transaction_id}", tag = "fraud",
    params(("transaction_id" = tally_core::TransactionId, Path)),
    responses((status = 200, body = Object), (status = 404, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn get_decision<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    Path(transaction_id): Path<String>,
) -> Result<Json<DecisionRecord>, ApiError> {
    principal.require(&Scope::FraudRead)?;
    st.fraud.decision(&transaction_id).await.map_err(|e| ApiError::Unavailable(e.into()))?.map(Json).ok_or_else(|| {
        ApiError::NotFound {
            code: "decision-not-found",
            detail: format!("no decision for transaction {transaction_id:?}"),
        }
    })
}

/// Stores a customer profile (what scoring enriches transactions with).
#[utoipa::path(put, path = "/v1/fraud/profiles/{account_id}", tag = "fraud", request_body = ProfileRequest,
    params(("account_id" = tally_core::AccountId, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retry key; default derived from the body")),
    responses((status = 200, body = Object), (status = 422, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_profile<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    headers: HeaderMap,
    Path(account_id): Path<String>,
    ApiJson(req): ApiJson<ProfileRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(&Scope::FraudScore)?;
    let account = AccountId::parse(account_id).map_err(|e| invalid("invalid_field", e.to_string()))?;
    let mut data = serde_json::to_value(&req).map_err(|e| ApiError::Internal(e.into()))?;
    data["account_id"] = serde_json::Value::String(account.as_str().to_owned());
    let payload = serde_json::to_vec(&data).map_err(|e| ApiError::Internal(e.into()))?;
    let (_, profile) = Profile::from_payload(&payload).map_err(|e| invalid(e.code, e.detail))?;
    let id = match idempotency_key(&headers)? {
        Some(key) => key,
        None => format!("profile-{}-{:016x}", account.as_str(), digest(&payload) as u64),
    };
    let mut env = Envelope::new(principal.api_source(), types::PROFILE, data);
    env.id = id;
    env.subject = Some(account.as_str().to_owned());
    env.traceparent = traceparent(&headers);
    let topic = st.fraud.cfg.topics.profiles.clone();
    decided(&st, env, account.as_str(), &topic).await?;
    Ok(Json(serde_json::json!({ "account_id": account.as_str(), "profile": profile })))
}

/// The model version flags in force.
#[utoipa::path(get, path = "/v1/fraud/flags", tag = "fraud",
    responses((status = 200, body = Object)), security(("api_key" = [])))]
pub async fn get_flags<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
) -> Result<Json<Flags>, ApiError> {
    principal.require(&Scope::FraudRead)?;
    st.fraud.refresh_flags().await.map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok(Json((*st.fraud.flags.get()).clone()))
}

/// Sets the model version flags: every instance applies them within a second.
#[utoipa::path(put, path = "/v1/fraud/flags", tag = "fraud", request_body = FlagsRequest,
    responses((status = 200, body = Object), (status = 409, body = super::Problem, content_type = "application/problem+json"),
        (status = 422, body = super::Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub async fn put_flags<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
    ApiJson(req): ApiJson<FlagsRequest>,
) -> Result<Json<Flags>, ApiError> {
    principal.require(&Scope::Admin)?;
    let flags = Flags {
        revision: 0,
        active: req.active,
        shadow: req.shadow,
        canary: req.canary,
        canary_percent: req.canary_percent,
    };
    match st.fraud.set_flags(flags).await {
        Ok(flags) => Ok(Json(flags)),
        Err(FlagsError::Invalid(detail)) => Err(ApiError::InvalidEvents {
            detail: "the flags are not valid".into(),
            errors: vec![ItemError { index: 0, code: "invalid_flags".into(), detail }],
        }),
        Err(e @ FlagsError::Conflict { .. }) => {
            Err(ApiError::Conflict { code: "flags_changed_concurrently", detail: e.to_string(), outcome: None })
        }
        Err(FlagsError::Engine(e)) => Err(ApiError::Unavailable(e.into())),
    }
}

/// The model quality report: per version, labels joined to decisions and drift.
#[utoipa::path(get, path = "/v1/fraud/quality", tag = "fraud",
    responses((status = 200, body = QualityResponse)), security(("api_key" = [])))]
pub async fn get_quality<B: Bus, S: InventoryStore, C: Cache>(
    State(st): State<AppState<B, S, C>>,
    principal: Principal,
) -> Result<Json<QualityResponse>, ApiError> {
    principal.require(&Scope::FraudRead)?;
    Ok(Json(QualityResponse { versions: st.fraud.quality.report() }))
}
