//! API keys and scopes as configured.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_core::ChannelId;

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read stock, availability and audit.
    StockRead,
    /// Write events acting for one channel.
    StockWrite(ChannelId),
    /// Score transactions (and upsert the profiles scoring reads).
    FraudScore,
    /// Read decisions, flags and the model quality report.
    FraudRead,
    /// Read forecasts.
    ForecastRead,
    /// Everything.
    Admin,
}

impl Scope {
    /// Parses `stock:read`, `stock:write:<channel>`, `fraud:score`, `fraud:read`, `forecast:read`,
    /// `admin`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "stock:read" => Ok(Self::StockRead),
            "fraud:score" => Ok(Self::FraudScore),
            "fraud:read" => Ok(Self::FraudRead),
            "forecast:read" => Ok(Self::ForecastRead),
            "admin" => Ok(Self::Admin),
            other => match other.strip_prefix("stock:write:") {
                Some(ch) => ChannelId::parse(ch).map(Self::StockWrite).map_err(|e| format!("scope {raw:?}: {e}")),
                None => Err(format!(
                    "unknown scope {raw:?}; expected stock:read, stock:write:<channel>, fraud:score, fraud:read, forecast:read or admin"
                )),
            },
        }
    }
}

/// One API key: its id, the SHA-256 of the key, and its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who the key belongs to (appears in logs, never the key).
    pub id: String,
    /// `sha256:<64 hex digits>` of the key (see `tally api-key new`).
    pub hash: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// CloudEvents `source`s this key may send events as over HTTP, besides its own
    /// `/api/<id>` (and `/api/<id>/…`): a value ending in `/` is a prefix. For a system that
    /// also produces to Kafka under its own source (e.g. `/wms/eu-1`) and wants HTTP and Kafka
    /// copies of an event deduplicated together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl ApiKeyConfig {
    /// Checks the hash format and every scope.
    pub fn validate(&self) -> Result<(), String> {
        let hex = self.hash.strip_prefix("sha256:").ok_or("hash must start with sha256:")?;
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("hash must be sha256: followed by 64 hex digits".into());
        }
        for s in &self.scopes {
            Scope::parse(s)?;
        }
        // The id becomes the source /api/<id> of the key's events, so it is spelled like an id.
        ChannelId::parse(self.id.as_str()).map_err(|e| format!("id: {e}"))?;
        for source in &self.sources {
            if source.is_empty() || sources_overlap(source, "/api/") {
                return Err(format!(
                    "sources entry {source:?}: must not be empty nor cover /api/ (each key owns /api/<its id>)"
                ));
            }
        }
        Ok(())
    }

    /// Parsed scopes (valid after [`Self::validate`]).
    pub fn parsed_scopes(&self) -> Vec<Scope> {
        self.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect()
    }
}

/// Whether two `sources` entries (a value ending in `/` is a prefix) can match one source.
pub fn sources_overlap(a: &str, b: &str) -> bool {
    let covers = |prefix: &str, other: &str| prefix.ends_with('/') && other.starts_with(prefix);
    a == b || covers(a, b) || covers(b, a)
}

/// The `sha256:<hex>` form stored in configuration for a raw key.
pub fn hash_api_key(raw: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(raw.as_bytes())))
}
