//! Customer profiles (`customers.profiles` or `PUT /v1/fraud/profiles/{account}`), parsed at the
//! boundary.

use serde::{Deserialize, Serialize};
use tally_core::AccountId;

use crate::transaction::{Country, TransactionError};

/// What tally knows of a customer (from `customers.profiles` or the HTTP API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// When the account was opened (Unix ms).
    pub opened_at_ms: i64,
    /// The customer's home country.
    pub home_country: Country,
    /// Customer segment (`retail`, `business` …), for rules and reports.
    pub segment: String,
    /// The customer's typical amount, in major units, if known.
    pub typical_amount: Option<f64>,
}

/// The wire form of a profile (`data` of `customer.profile`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    account_id: String,
    opened_at: String,
    home_country: String,
    #[serde(default = "retail")]
    segment: String,
    #[serde(default)]
    typical_amount: Option<f64>,
}

fn retail() -> String {
    "retail".to_owned()
}

impl Profile {
    /// Parses and validates the JSON `data` of a `customer.profile` event: the account it
    /// belongs to and the profile.
    pub fn from_payload(payload: &[u8]) -> Result<(AccountId, Self), TransactionError> {
        let w: Wire = serde_json::from_slice(payload)
            .map_err(|e| TransactionError { code: "invalid_payload", detail: e.to_string() })?;
        let opened = time::OffsetDateTime::parse(&w.opened_at, &time::format_description::well_known::Rfc3339)
            .map_err(|e| TransactionError::field(format!("opened_at is not an RFC 3339 time: {e}")))?;
        if w.segment.is_empty() || w.segment.len() > 32 || !w.segment.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TransactionError::field("segment must be 1 to 32 printable ASCII characters"));
        }
        if let Some(t) = w.typical_amount
            && !(t.is_finite() && t > 0.0 && t < 1e12)
        {
            return Err(TransactionError::field(format!("typical_amount must be positive and finite, got {t}")));
        }
        Ok((
            AccountId::parse(w.account_id)?,
            Self {
                opened_at_ms: (opened.unix_timestamp_nanos() / 1_000_000) as i64,
                home_country: Country::parse(&w.home_country)?,
                segment: w.segment,
                typical_amount: w.typical_amount,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_parses_and_bad_values_are_refused() {
        let ok =
            br#"{"account_id":"acct-1","opened_at":"2025-01-02T00:00:00Z","home_country":"de","typical_amount":42.5}"#;
        let (account, p) = Profile::from_payload(ok).expect("valid");
        assert_eq!(account.as_str(), "acct-1");
        assert_eq!(p.home_country.as_str(), "DE");
        assert_eq!(p.segment, "retail");
        assert_eq!(p.typical_amount, Some(42.5));
        let bad =
            br#"{"account_id":"acct-1","opened_at":"2025-01-02T00:00:00Z","home_country":"DE","typical_amount":-1}"#;
        assert_eq!(Profile::from_payload(bad).map(|_| ()).map_err(|e| e.code), Err("invalid_field"));
        let unknown = br#"{"account_id":"a","opened_at":"2025-01-02T00:00:00Z","home_country":"DE","x":1}"#;
        assert_eq!(Profile::from_payload(unknown).map(|_| ()).map_err(|e| e.code), Err("invalid_payload"));
    }
}
