//! API-key authentication: `Authorization: Bearer <key>`, looked up by its SHA-256 hash, with
//! scopes checked per operation.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use tally_config::{ApiConfig, AuthMode, Scope, hash_api_key};
use tally_core::ChannelId;

use super::problem::ApiError;

/// Who is calling and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Key id from configuration (`open` in open mode).
    pub id: String,
    scopes: Vec<Scope>,
}

impl Principal {
    /// Whether the caller holds `scope` (admin holds every scope).
    pub fn allows(&self, scope: &Scope) -> bool {
        self.scopes.iter().any(|s| s == scope || *s == Scope::Admin)
    }

    /// Fails with 403 unless the caller holds `scope`.
    pub fn require(&self, scope: &Scope) -> Result<(), ApiError> {
        if self.allows(scope) {
            return Ok(());
        }
        let what = match scope {
            Scope::StockRead => "stock:read".to_owned(),
            Scope::StockWrite(ch) => format!("stock:write:{ch}"),
            Scope::FraudScore => "fraud:score".to_owned(),
            Scope::ForecastRead => "forecast:read".to_owned(),
            Scope::Admin => "admin".to_owned(),
        };
        Err(ApiError::Forbidden(format!("API key {:?} lacks scope {what}", self.id)))
    }

    /// Fails with 403 unless the caller may write for `channel`.
    pub fn require_channel(&self, channel: &ChannelId) -> Result<(), ApiError> {
        self.require(&Scope::StockWrite(channel.clone()))
    }
}

/// Resolves credentials to principals.
#[derive(Debug)]
pub struct Authenticator {
    mode: AuthMode,
    by_hash: HashMap<String, Principal>,
}

impl Authenticator {
    /// From the `[api]` configuration.
    pub fn new(cfg: &ApiConfig) -> Self {
        let by_hash = cfg
            .keys
            .iter()
            .map(|k| (k.hash.to_ascii_lowercase(), Principal { id: k.id.clone(), scopes: k.parsed_scopes() }))
            .collect();
        if cfg.auth == AuthMode::Open {
            tracing::warn!("API authentication is OPEN: every caller may read and write everything (local demo mode)");
        }
        Self { mode: cfg.auth, by_hash }
    }

    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        if self.mode == AuthMode::Open {
            return Ok(Principal { id: "open".into(), scopes: vec![Scope::Admin] });
        }
        let raw = authorization
            .ok_or_else(|| ApiError::Unauthorized("send an API key as Authorization: Bearer <key>".into()))?;
        let key = raw
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must use the Bearer scheme".into()))?;
        self.by_hash
            .get(&hash_api_key(key.trim()))
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("unknown API key".into()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal
where
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        auth.authenticate(header)
    }
}
