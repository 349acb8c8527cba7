//! A payment transaction as the fraud service sees it, parsed at the boundary: past
//! [`Transaction::from_payload`], an empty id, a negative amount or a malformed country cannot
//! exist.

use serde::{Deserialize, Serialize};
use tally_core::{AccountId, IdError, TransactionId};

/// Largest amount accepted, in minor units (10^15: far above any card payment, far below
/// `i64::MAX`, so sums over any window cannot overflow).
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// Why a payload is not a valid transaction (the dead-letter reason and detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct TransactionError {
    /// `invalid_payload` (not the expected JSON) or `invalid_field` (a value out of its rules).
    pub code: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl TransactionError {
    pub(crate) fn field(detail: impl Into<String>) -> Self {
        Self { code: "invalid_field", detail: detail.into() }
    }
}

impl From<IdError> for TransactionError {
    fn from(e: IdError) -> Self {
        Self::field(e.to_string())
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country([u8; 2]);

impl Country {
    /// `raw` if it is two ASCII letters (case-insensitive).
    pub fn parse(raw: &str) -> Result<Self, TransactionError> {
        match raw.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(TransactionError::field(format!("country {raw:?} is not an ISO 3166-1 alpha-2 code"))),
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        // Two ASCII letters: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl TryFrom<String> for Country {
    type Error = TransactionError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Country> for String {
    fn from(c: Country) -> Self {
        c.as_str().to_owned()
    }
}

/// An ISO 4217 currency code, upper case, with its minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// `raw` if it is three ASCII letters (case-insensitive).
    pub fn parse(raw: &str) -> Result<Self, TransactionError> {
        match raw.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_alphabetic()) => {
                Ok(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase(), c.to_ascii_uppercase()]))
            }
            _ => Err(TransactionError::field(format!("currency {raw:?} is not an ISO 4217 code"))),
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Digits after the decimal point: 0 for JPY or KRW, 3 for BHD, KWD …, 2 otherwise.
    pub fn exponent(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "VND" | "VUV"
            | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = TransactionError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.as_str().to_owned()
    }
}

/// Where the card was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Online (card not present).
    Ecom,
    /// At a point of sale (card present).
    Pos,
}

/// A validated payment transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Unique per transaction (and the event's idempotency key).
    pub transaction_id: TransactionId,
    /// The account paying: the partition key.
    pub account_id: AccountId,
    /// The card used.
    pub card_id: String,
    /// Amount in minor units (cents), 1 to [`MAX_AMOUNT_MINOR`].
    pub amount_minor: i64,
    /// Its currency.
    pub currency: Currency,
    /// The merchant.
    pub merchant_id: String,
    /// Merchant category code (ISO 18245), four digits.
    pub mcc: u16,
    /// The merchant's country.
    pub country: Country,
    /// Online or at a point of sale.
    pub channel: Channel,
    /// The device (fingerprint) used, when known.
    pub device_id: Option<String>,
    /// The client's IP address, when known.
    pub ip: Option<std::net::IpAddr>,
    /// When the payment was made (Unix ms).
    pub occurred_at_ms: i64,
}

/// The wire form of a transaction (`data` of `payment.transaction`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    transaction_id: String,
    account_id: String,
    card_id: String,
    amount: WireAmount,
    merchant_id: String,
    mcc: String,
    country: String,
    channel: Channel,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    occurred_at: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAmount {
    minor: i64,
    currency: String,
}

/// A short free-form id (card, merchant, device): 1 to 128 printable ASCII characters.
fn short_id(field: &str, raw: String) -> Result<String, TransactionError> {
    if raw.is_empty() || raw.len() > 128 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TransactionError::field(format!("{field} must be 1 to 128 printable ASCII characters")));
    }
    Ok(raw)
}

impl Transaction {
    /// Parses and validates the JSON `data` of a `payment.transaction` event.
    pub fn from_payload(payload: &[u8]) -> Result<Self, TransactionError> {
        let w: Wire = serde_json::from_slice(payload)
            .map_err(|e| TransactionError { code: "invalid_payload", detail: e.to_string() })?;
        if !(1..=MAX_AMOUNT_MINOR).contains(&w.amount.minor) {
            return Err(TransactionError::field(format!(
                "amount.minor must be 1 to {MAX_AMOUNT_MINOR}, got {}",
                w.amount.minor
            )));
        }
        let mcc = match w.mcc.as_bytes() {
            [_, _, _, _] if w.mcc.bytes().all(|b| b.is_ascii_digit()) => w.mcc.parse::<u16>().unwrap_or_default(),
            _ => return Err(TransactionError::field(format!("mcc {:?} is not four digits", w.mcc))),
        };
        let occurred = time::OffsetDateTime::parse(&w.occurred_at, &time::format_description::well_known::Rfc3339)
            .map_err(|e| TransactionError::field(format!("occurred_at is not an RFC 3339 time: {e}")))?;
        let ip = w
            .ip
            .map(|raw| raw.parse().map_err(|_| TransactionError::field(format!("ip {raw:?} is not an IP address"))))
            .transpose()?;
        Ok(Self {
            transaction_id: TransactionId::parse(w.transaction_id)?,
            account_id: AccountId::parse(w.account_id)?,
            card_id: short_id("card_id", w.card_id)?,
            amount_minor: w.amount.minor,
            currency: Currency::parse(&w.amount.currency)?,
            merchant_id: short_id("merchant_id", w.merchant_id)?,
            mcc,
            country: Country::parse(&w.country)?,
            channel: w.channel,
            device_id: w.device_id.map(|d| short_id("device_id", d)).transpose()?,
            ip,
            occurred_at_ms: (occurred.unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }

    /// The amount in major units (a float: features only, never money arithmetic).
    pub fn amount(&self) -> f64 {
        self.amount_milli() as f64 / 1000.0
    }

    /// The amount in thousandths of a major unit: every currency's minor unit is a whole number
    /// of them (exponents are at most 3), so sums over currencies stay exact integers.
    pub fn amount_milli(&self) -> i128 {
        i128::from(self.amount_minor) * 10i128.pow(3 - self.currency.exponent().min(3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(amount: i64, country: &str, occurred_at: &str) -> Vec<u8> {
        serde_json::json!({
            "transaction_id": "tx-1", "account_id": "acct-1", "card_id": "card-1",
            "amount": {"minor": amount, "currency": "eur"}, "merchant_id": "m-1", "mcc": "5411",
            "country": country, "channel": "ecom", "device_id": "dev-1", "ip": "203.0.113.7",
            "occurred_at": occurred_at,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_valid_transaction_parses_into_domain_types() {
        let tx = Transaction::from_payload(&payload(1999, "de", "2026-11-30T10:00:00Z")).expect("valid");
        assert_eq!(tx.currency.as_str(), "EUR");
        assert_eq!(tx.country.as_str(), "DE");
        assert_eq!(tx.mcc, 5411);
        assert_eq!(tx.occurred_at_ms, 1_796_032_800_000);
        assert!((tx.amount() - 19.99).abs() < 1e-9);
        assert_eq!(tx.ip, Some("203.0.113.7".parse().expect("ip")));
    }

    #[test]
    fn bad_values_are_refused_with_a_specific_reason() {
        for (bad, code, needle) in [
            (payload(0, "DE", "2026-11-30T10:00:00Z"), "invalid_field", "amount.minor"),
            (payload(MAX_AMOUNT_MINOR + 1, "DE", "2026-11-30T10:00:00Z"), "invalid_field", "amount.minor"),
            (payload(100, "DEU", "2026-11-30T10:00:00Z"), "invalid_field", "country"),
            (payload(100, "DE", "yesterday"), "invalid_field", "occurred_at"),
            (b"{\"transaction_id\": 1}".to_vec(), "invalid_payload", ""),
        ] {
            let e = Transaction::from_payload(&bad).expect_err("refused");
            assert_eq!(e.code, code, "{e}");
            assert!(e.detail.contains(needle), "{e}");
        }
    }

    #[test]
    fn currencies_know_their_minor_units() {
        let jpy = Currency::parse("JPY").expect("valid");
        let kwd = Currency::parse("kwd").expect("valid");
        assert_eq!((jpy.exponent(), kwd.exponent(), Currency::parse("USD").expect("valid").exponent()), (0, 3, 2));
    }
}
