//! The feature schema: which numbers, in which order, a model version scores. It travels with
//! the model (its config names the schema version), so a new model with other features is a new
//! schema version, never a silent reinterpretation of a tensor column.

use serde::{Deserialize, Serialize};

use crate::history::Observed;
use crate::profile::Profile;
use crate::transaction::{Channel, Transaction};

/// A versioned, ordered list of feature names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSchema {
    /// Its version (a model's config names it).
    pub version: u32,
    /// The features, in tensor order.
    pub names: Vec<String>,
}

/// Version 1 of the features, in tensor order.
pub const V1_NAMES: [&str; 17] = [
    "amount",
    "tx_count_1h",
    "tx_count_24h",
    "tx_count_7d",
    "amount_sum_1h",
    "amount_sum_24h",
    "amount_sum_7d",
    "distinct_merchants_24h",
    "distinct_countries_24h",
    "distinct_devices_24h",
    "seconds_since_last",
    "amount_to_typical",
    "new_device",
    "country_mismatch",
    "is_ecom",
    "account_age_days",
    "hour_of_day",
];

/// Seconds since the previous transaction when there is none in the last week.
const NO_PREVIOUS_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

impl FeatureSchema {
    /// Version 1.
    pub fn v1() -> Self {
        Self { version: 1, names: V1_NAMES.iter().map(|n| (*n).to_owned()).collect() }
    }

    /// The features of `tx`, given what the history observed before it and the profile, in
    /// this schema's order. `None` if the schema names a feature this build does not compute.
    pub fn vector(&self, tx: &Transaction, observed: &Observed, profile: Option<&Profile>) -> Option<Vec<f32>> {
        let amount = tx.amount();
        let typical = profile.and_then(|p| p.typical_amount).or(observed.mean_amount).filter(|t| *t > 0.0);
        let w = &observed.windows;
        self.names
            .iter()
            .map(|name| {
                let v = match name.as_str() {
                    "amount" => amount,
                    "tx_count_1h" => f64::from(w.count[0]),
                    "tx_count_24h" => f64::from(w.count[1]),
                    "tx_count_7d" => f64::from(w.count[2]),
                    "amount_sum_1h" => w.amount[0],
                    "amount_sum_24h" => w.amount[1],
                    "amount_sum_7d" => w.amount[2],
                    "distinct_merchants_24h" => f64::from(observed.distinct_24h[0]),
                    "distinct_countries_24h" => f64::from(observed.distinct_24h[1]),
                    "distinct_devices_24h" => f64::from(observed.distinct_24h[2]),
                    "seconds_since_last" => observed.seconds_since_last.unwrap_or(NO_PREVIOUS_SECONDS),
                    "amount_to_typical" => typical.map_or(1.0, |t| amount / t),
                    "new_device" => f64::from(u8::from(observed.new_device)),
                    "country_mismatch" => f64::from(u8::from(profile.is_some_and(|p| p.home_country != tx.country))),
                    "is_ecom" => f64::from(u8::from(tx.channel == Channel::Ecom)),
                    "account_age_days" => {
                        profile.map_or(0.0, |p| ((tx.occurred_at_ms - p.opened_at_ms).max(0)) as f64 / 86_400_000.0)
                    }
                    "hour_of_day" => (tx.occurred_at_ms.rem_euclid(86_400_000) / 3_600_000) as f64,
                    _ => return None,
                };
                Some(v as f32)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use crate::transaction::Country;

    fn tx(payload: serde_json::Value) -> Transaction {
        Transaction::from_payload(payload.to_string().as_bytes()).expect("valid")
    }

    fn payment(minute: u32, minor: i64, country: &str, device: &str) -> Transaction {
        tx(serde_json::json!({
            "transaction_id": format!("t{minute}"), "account_id": "a", "card_id": "c",
            "amount": {"minor": minor, "currency": "EUR"}, "merchant_id": format!("m{minute}"), "mcc": "5999",
            "country": country, "channel": "ecom", "device_id": device,
            "occurred_at": format!("2026-11-30T14:{minute:02}:00Z"),
        }))
    }

    #[test]
    fn version_1_maps_a_transaction_to_its_vector_in_schema_order() {
        let schema = FeatureSchema::v1();
        let profile = Profile {
            opened_at_ms: 1_796_000_000_000,
            home_country: Country::parse("DE").expect("country"),
            segment: "retail".into(),
            typical_amount: Some(20.0),
        };
        let mut history = History::default();
        let first = payment(0, 2000, "DE", "d1");
        let o = history.observe(&first);
        schema.vector(&first, &o, Some(&profile)).expect("v1 is computed");
        let second = payment(5, 10_000, "BR", "d2");
        let o = history.observe(&second);
        let v = schema.vector(&second, &o, Some(&profile)).expect("v1 is computed");
        assert_eq!(v.len(), V1_NAMES.len());
        let at = |name: &str| v[V1_NAMES.iter().position(|n| *n == name).expect("named")];
        assert_eq!(at("amount"), 100.0);
        assert_eq!(at("tx_count_1h"), 1.0);
        assert_eq!(at("amount_sum_1h"), 20.0);
        assert_eq!(at("seconds_since_last"), 300.0);
        assert_eq!(at("amount_to_typical"), 5.0);
        assert_eq!(at("new_device"), 1.0);
        assert_eq!(at("country_mismatch"), 1.0);
        assert_eq!(at("distinct_countries_24h"), 2.0);
        assert_eq!(at("is_ecom"), 1.0);
        assert_eq!(at("hour_of_day"), 14.0);
    }

    #[test]
    fn a_schema_naming_an_unknown_feature_is_not_computed() {
        let schema = FeatureSchema { version: 9, names: vec!["amount".into(), "moon_phase".into()] };
        let t = payment(0, 100, "DE", "d");
        let o = History::default().observe(&t);
        assert_eq!(schema.vector(&t, &o, None), None);
    }
}
