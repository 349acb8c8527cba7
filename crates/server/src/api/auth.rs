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
    /// Extra event sources the key may use (`[[api.keys]] sources`).
    sources: Vec<String>,
}

impl Principal {
    /// The CloudEvents `source` of the events this caller's synchronous requests produce.
    pub fn api_source(&self) -> String {
        format!("/api/{}", self.id)
    }

    /// Fails with 403 unless the caller may send events as `source`: its own `/api/<id>` (or
    /// under it), a source configured for its key, or any source for an admin key. So no
    /// caller can take another's idempotency keys (`source` + `id`).
    pub fn require_source(&self, source: &str) -> Result<(), ApiError> {
        let own = self.api_source();
        let owned = source == own
            || source.strip_prefix(own.as_str()).is_some_and(|rest| rest.starts_with('/'))
            || self.sources.iter().any(|s| if s.ends_with('/') { source.starts_with(s.as_str()) } else { source == s })
            || self.scopes.contains(&Scope::Admin);
        if owned {
            return Ok(());
        }
        Err(ApiError::SourceNotAllowed(format!(
            "API key {:?} may send events as source {own:?} (or under {own}/){}; not as {source:?}",
            self.id,
            if self.sources.is_empty() { String::new() } else { format!(" or {:?}", self.sources) }
        )))
    }

    /// The channels this caller may write for (none for an admin: it may write all).
    pub fn write_channels(&self) -> impl Iterator<Item = &ChannelId> {
        self.scopes.iter().filter_map(|s| match s {
            Scope::StockWrite(ch) => Some(ch),
            _ => None,
        })
    }

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
            Scope::FraudRead => "fraud:read".to_owned(),
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
            .map(|k| {
                let principal = Principal { id: k.id.clone(), scopes: k.parsed_scopes(), sources: k.sources.clone() };
                (k.hash.to_ascii_lowercase(), principal)
            })
            .collect();
        if cfg.auth == AuthMode::Open {
            tracing::warn!("API authentication is OPEN: every caller may read and write everything (local demo mode)");
        }
        Self { mode: cfg.auth, by_hash }
    }

    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        if self.mode == AuthMode::Open {
            return Ok(Principal { id: "open".into(), scopes: vec![Scope::Admin], sources: Vec::new() });
        }
        let raw = authorization
            .ok_or_else(|| ApiError::Unauthorized("send an API key as Authorization: Bearer <key>".into()))?;
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let key =
            raw.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, key)| key)
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
