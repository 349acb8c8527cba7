//! Rules: hard rules that decide before any model (allow and deny lists, limits), and the
//! rule-based scorer that decides when the model cannot (down, slow without a cached score, or
//! its circuit open). The scorer looks for the patterns the simulator labels — account takeover,
//! card testing, velocity bursts, geo mismatch — in the same features the model scores.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::decision::{Reason, Verdict};
use crate::history::Observed;
use crate::profile::Profile;
use crate::transaction::Transaction;

/// Hard rules, configured per deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HardRules {
    /// Accounts always approved (the rules and model still run for the record, not to decide).
    pub allow_accounts: HashSet<String>,
    /// Accounts always declined.
    pub deny_accounts: HashSet<String>,
    /// Devices always declined.
    pub deny_devices: HashSet<String>,
    /// Cards always declined.
    pub deny_cards: HashSet<String>,
    /// Largest amount (major units) approved without review; larger ones are reviewed.
    pub review_above_amount: Option<f64>,
    /// Largest amount (major units) accepted at all; larger ones are declined.
    pub decline_above_amount: Option<f64>,
    /// Most transactions of an account in an hour; past it, declined.
    pub max_per_hour: Option<u32>,
}

impl HardRules {
    /// The verdict of the first rule that decides, with its reason; `None` if none decides.
    /// Deny lists come before the allow list: a denied device on an allowed account is declined.
    pub fn decide(&self, tx: &Transaction, observed: &Observed) -> Option<(Verdict, Reason)> {
        let denied = self.deny_accounts.contains(tx.account_id.as_str())
            || self.deny_cards.contains(&tx.card_id)
            || tx.device_id.as_ref().is_some_and(|d| self.deny_devices.contains(d));
        if denied {
            return Some((Verdict::Decline, Reason::rule("deny_list")));
        }
        if self.allow_accounts.contains(tx.account_id.as_str()) {
            return Some((Verdict::Approve, Reason::rule("allow_list")));
        }
        let amount = tx.amount();
        if self.decline_above_amount.is_some_and(|max| amount > max) {
            return Some((Verdict::Decline, Reason::rule("amount_limit")));
        }
        if self.max_per_hour.is_some_and(|max| observed.windows.count[0] >= max) {
            return Some((Verdict::Decline, Reason::rule("velocity_limit")));
        }
        if self.review_above_amount.is_some_and(|max| amount > max) {
            return Some((Verdict::Review, Reason::rule("amount_review")));
        }
        None
    }
}

/// The rule-based score (0 to 1) of a transaction and the rules that raised it: each pattern
/// adds its weight, the sum is capped at 1. Crude next to a model, but it sees the same
/// features and never needs the network.
pub fn rule_score(tx: &Transaction, observed: &Observed, profile: Option<&Profile>) -> (f32, Vec<Reason>) {
    let amount = tx.amount();
    let typical = profile.and_then(|p| p.typical_amount).or(observed.mean_amount).filter(|t| *t > 0.0);
    let unusual_amount = typical.is_some_and(|t| amount > 5.0 * t);
    let foreign = profile.is_some_and(|p| p.home_country != tx.country);
    let mut score = 0.0f32;
    let mut reasons = Vec::new();
    let mut fire = |hit: bool, weight: f32, code: &str| {
        if hit {
            score += weight;
            reasons.push(Reason::rule(code));
        }
    };
    // Account takeover: a device never seen, abroad, for an unusual amount.
    fire(observed.new_device && foreign && unusual_amount, 0.9, "new_device_foreign_unusual_amount");
    // Card testing: a burst of small amounts across many merchants.
    fire(observed.windows.count[0] >= 5 && amount < 5.0 && observed.distinct_24h[0] >= 5, 0.8, "card_testing_burst");
    // Velocity: many payments in an hour.
    fire(observed.windows.count[0] >= 10, 0.5, "velocity_burst");
    // Geo mismatch: several countries within a day.
    fire(observed.distinct_24h[1] >= 3, 0.4, "many_countries_24h");
    fire(foreign && observed.seconds_since_last.is_some_and(|s| s < 3600.0), 0.2, "foreign_soon_after_last");
    fire(unusual_amount, 0.3, "unusual_amount");
    fire(observed.new_device, 0.1, "new_device");
    (score.min(1.0), reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use crate::transaction::Country;

    fn payment(minute: u32, minor: i64, merchant: &str, country: &str, device: &str) -> Transaction {
        let payload = serde_json::json!({
            "transaction_id": format!("t{minute}-{merchant}"), "account_id": "acct-7", "card_id": "card-7",
            "amount": {"minor": minor, "currency": "EUR"}, "merchant_id": merchant, "mcc": "5999",
            "country": country, "channel": "ecom", "device_id": device,
            "occurred_at": format!("2026-11-30T10:{minute:02}:00Z"),
        });
        Transaction::from_payload(payload.to_string().as_bytes()).expect("valid")
    }

    fn profile() -> Profile {
        Profile {
            opened_at_ms: 0,
            home_country: Country::parse("DE").expect("country"),
            segment: "retail".into(),
            typical_amount: Some(30.0),
        }
    }

    #[test]
    fn deny_lists_come_first_then_allow_then_limits() {
        let t = payment(0, 500_000, "m", "DE", "dev-bad");
        let o = History::default().observe(&t);
        let mut rules = HardRules { decline_above_amount: Some(1000.0), ..HardRules::default() };
        assert_eq!(rules.decide(&t, &o).map(|(v, r)| (v, r.code)), Some((Verdict::Decline, "amount_limit".into())));
        rules.allow_accounts.insert("acct-7".into());
        assert_eq!(rules.decide(&t, &o).map(|(v, _)| v), Some(Verdict::Approve), "allowed before limits");
        rules.deny_devices.insert("dev-bad".into());
        assert_eq!(rules.decide(&t, &o).map(|(v, r)| (v, r.code)), Some((Verdict::Decline, "deny_list".into())));
        assert_eq!(HardRules::default().decide(&t, &o), None);
    }

    #[test]
    fn the_rule_scorer_sees_account_takeover_and_card_testing() {
        let p = profile();
        let mut h = History::default();
        h.observe(&payment(0, 2500, "grocer", "DE", "phone"));
        // A new device abroad for 20× the typical amount.
        let takeover = payment(5, 60_000, "electronics", "BR", "laptop-x");
        let (score, reasons) = rule_score(&takeover, &h.observe(&takeover), Some(&p));
        assert!(score >= 0.9, "{score}");
        assert_eq!(reasons[0].code, "new_device_foreign_unusual_amount");

        // Small amounts across many merchants within minutes.
        let mut h = History::default();
        let mut last = None;
        for i in 0..8 {
            let t = payment(10 + i, 100, &format!("shop-{i}"), "DE", "phone");
            last = Some(rule_score(&t, &h.observe(&t), Some(&p)));
        }
        let (score, reasons) = last.expect("scored");
        assert!(score >= 0.8, "{score}");
        assert!(reasons.iter().any(|r| r.code == "card_testing_burst"), "{reasons:?}");

        // An ordinary payment scores low.
        let mut h = History::default();
        h.observe(&payment(0, 2500, "grocer", "DE", "phone"));
        let usual = payment(40, 3100, "bakery", "DE", "phone");
        let (score, _) = rule_score(&usual, &h.observe(&usual), Some(&p));
        assert!(score < 0.2, "{score}");
    }
}
