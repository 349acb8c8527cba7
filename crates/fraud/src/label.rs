//! Labels (`fraud.labels`): what became of a transaction days later — a chargeback (fraud) or a
//! confirmation that it was legitimate. They are joined to stored decisions to watch the
//! model's quality; they never change a decision.

use serde::{Deserialize, Serialize};
use tally_core::{AccountId, TransactionId};

use crate::transaction::TransactionError;

/// A label of one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The transaction it concerns.
    pub transaction_id: TransactionId,
    /// Its account (the partition key).
    pub account_id: AccountId,
    /// Whether it was fraud.
    pub fraud: bool,
}

#[derive(Deserialize)]
struct Wire {
    transaction_id: String,
    account_id: String,
    fraud: bool,
    /// `chargeback` or `confirmed_legitimate`; must agree with `fraud` when present.
    #[serde(default)]
    kind: Option<String>,
}

impl Label {
    /// Parses and validates the JSON `data` of a `fraud.label` event (fields other than these,
    /// such as the simulator's `pattern`, are ignored: labelling systems add their own).
    pub fn from_payload(payload: &[u8]) -> Result<Self, TransactionError> {
        let w: Wire = serde_json::from_slice(payload)
            .map_err(|e| TransactionError { code: "invalid_payload", detail: e.to_string() })?;
        let consistent = match w.kind.as_deref() {
            None => true,
            Some("chargeback") => w.fraud,
            Some("confirmed_legitimate") => !w.fraud,
            Some(_) => false,
        };
        if !consistent {
            return Err(TransactionError::field(format!(
                "kind {:?} contradicts fraud = {} (chargeback means fraud, confirmed_legitimate not)",
                w.kind.unwrap_or_default(),
                w.fraud
            )));
        }
        Ok(Self {
            transaction_id: TransactionId::parse(w.transaction_id)?,
            account_id: AccountId::parse(w.account_id)?,
            fraud: w.fraud,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_a_contradiction_is_refused() {
        let l = Label::from_payload(
            br#"{"transaction_id":"t1","account_id":"a1","fraud":true,"kind":"chargeback","pattern":"x"}"#,
        )
        .expect("valid");
        assert!(l.fraud);
        let bad = br#"{"transaction_id":"t1","account_id":"a1","fraud":false,"kind":"chargeback"}"#;
        assert_eq!(Label::from_payload(bad).map_err(|e| e.code), Err("invalid_field"));
    }
}
