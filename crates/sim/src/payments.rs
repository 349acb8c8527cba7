//! Payments for the fraud service: customer profiles, then a stream of transactions in time
//! order in which a seeded share of accounts fall victim to labelled fraud patterns — account
//! takeover (a new device abroad for an unusual amount), card testing (bursts of small amounts
//! across merchants), velocity bursts and geo mismatch — and, days later, the labels:
//! chargebacks for fraud, confirmations for a sample of legitimate payments.
//!
//! Seeded and reproducible: the same configuration gives the same events, byte for byte (ids
//! and times included), so a model trained on one run is evaluated on another seed.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tally_core::Envelope;
use time::OffsetDateTime;

/// Event types of the payments topics.
pub mod types {
    /// `payments.transactions`.
    pub const TRANSACTION: &str = "payment.transaction";
    /// `customers.profiles`.
    pub const PROFILE: &str = "customer.profile";
    /// `fraud.labels`.
    pub const LABEL: &str = "fraud.label";
}

/// The fraud pattern behind a transaction, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// An ordinary payment.
    Legitimate,
    /// A new device, abroad, for an unusual amount.
    AccountTakeover,
    /// Small amounts across many merchants within minutes.
    CardTesting,
    /// Many payments within an hour.
    VelocityBurst,
    /// Payments from several countries within hours.
    GeoMismatch,
    /// An ordinary-looking payment charged back anyway (the customer disputes their own
    /// purchase): labelled fraud, invisible to any model — the noise floor of the labels.
    FriendlyFraud,
}

impl Pattern {
    /// Its code (the label's `pattern`).
    pub fn code(self) -> &'static str {
        match self {
            Self::Legitimate => "legitimate",
            Self::AccountTakeover => "account_takeover",
            Self::CardTesting => "card_testing",
            Self::VelocityBurst => "velocity_burst",
            Self::GeoMismatch => "geo_mismatch",
            Self::FriendlyFraud => "friendly_fraud",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// Seed.
    pub seed: u64,
    /// Customer accounts.
    pub accounts: usize,
    /// Share of legitimate transactions after which a fraud episode starts (per transaction).
    pub fraud_rate: f64,
    /// Share of legitimate transactions confirmed by a label.
    pub confirm_rate: f64,
    /// Days from a transaction to its label.
    pub label_delay_days: i64,
    /// Start of the simulated time (Unix ms).
    pub start_ms: i64,
    /// Mean seconds between two transactions of the whole population.
    pub mean_gap_seconds: f64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            accounts: 2_000,
            fraud_rate: 0.01,
            confirm_rate: 0.05,
            label_delay_days: 3,
            start_ms: 1_796_000_000_000,
            mean_gap_seconds: 0.5,
        }
    }
}

const COUNTRIES: [&str; 10] = ["DE", "FR", "NL", "ES", "IT", "PL", "GB", "US", "BR", "NG"];
const MCCS: [&str; 8] = ["5411", "5812", "5999", "5732", "4121", "5691", "7995", "5944"];

struct Account {
    id: String,
    home: &'static str,
    typical_minor: i64,
    devices: Vec<String>,
    card: String,
}

/// A generated event and, for transactions, the pattern behind it (the simulator's ground
/// truth: what training and evaluation read, never the service).
#[derive(Debug, Clone)]
pub struct Generated {
    /// The event.
    pub event: Envelope,
    /// The pattern, for transactions.
    pub pattern: Option<Pattern>,
}

/// The payments simulator.
pub struct Payments {
    cfg: PaymentsConfig,
    rng: SmallRng,
    accounts: Vec<Account>,
    now_ms: i64,
    next_tx: u64,
    /// Profiles not yet emitted (they come first).
    profiles: VecDeque<Envelope>,
    /// Transactions of a fraud episode still to come, in order.
    episode: VecDeque<(Envelope, Pattern)>,
    /// Labels waiting for their time: (due at, event).
    labels: VecDeque<(i64, Envelope)>,
}

impl Payments {
    /// A simulator for `cfg`.
    pub fn new(cfg: PaymentsConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let accounts: Vec<Account> = (0..cfg.accounts.max(1))
            .map(|i| {
                let home = COUNTRIES[rng.random_range(0..6)];
                Account {
                    id: format!("acct-{i:06}"),
                    home,
                    typical_minor: rng.random_range(800..15_000),
                    devices: (0..rng.random_range(1..3)).map(|d| format!("dev-{i:06}-{d}")).collect(),
                    card: format!("card-{i:06}"),
                }
            })
            .collect();
        let profiles = accounts
            .iter()
            .map(|a| {
                let opened = cfg.start_ms - rng.random_range(30..3_000) * 86_400_000;
                let data = json!({
                    "account_id": a.id, "opened_at": rfc3339(opened), "home_country": a.home,
                    "segment": if rng.random_bool(0.1) { "business" } else { "retail" },
                    "typical_amount": a.typical_minor as f64 / 100.0,
                });
                event(types::PROFILE, &format!("profile-{}", a.id), &a.id, data, cfg.start_ms)
            })
            .collect();
        let now_ms = cfg.start_ms;
        Self { cfg, rng, accounts, now_ms, next_tx: 0, profiles, episode: VecDeque::new(), labels: VecDeque::new() }
    }

    /// The next `n` events: profiles first, then transactions and labels in time order.
    pub fn next_batch(&mut self, n: usize) -> Vec<Generated> {
        (0..n).map(|_| self.next_event()).collect()
    }

    fn next_event(&mut self) -> Generated {
        if let Some(profile) = self.profiles.pop_front() {
            return Generated { event: profile, pattern: None };
        }
        if self.labels.front().is_some_and(|(due, _)| *due <= self.now_ms)
            && let Some((_, label)) = self.labels.pop_front()
        {
            return Generated { event: label, pattern: None };
        }
        if let Some((tx, pattern)) = self.episode.pop_front() {
            return Generated { event: tx, pattern: Some(pattern) };
        }
        let gap = -self.cfg.mean_gap_seconds * (1.0 - self.rng.random::<f64>()).ln();
        self.now_ms += (gap * 1000.0) as i64 + 1;
        let who = self.rng.random_range(0..self.accounts.len());
        if self.rng.random_bool(self.cfg.fraud_rate.clamp(0.0, 1.0)) {
            self.start_episode(who);
            if let Some((tx, pattern)) = self.episode.pop_front() {
                return Generated { event: tx, pattern: Some(pattern) };
            }
        }
        let (tx, pattern) = self.legitimate(who);
        Generated { event: tx, pattern: Some(pattern) }
    }

    /// An ordinary payment — with the noise real customers make: some travel, buy on a new
    /// phone, make a large purchase or a quick run of purchases; and a small share of ordinary
    /// looking payments are charged back anyway (friendly fraud), which no model can see.
    fn legitimate(&mut self, who: usize) -> (Envelope, Pattern) {
        let (home, typical) = (self.accounts[who].home, self.accounts[who].typical_minor);
        let device = if self.rng.random_bool(0.02) {
            let fresh = format!("dev-{who:06}-n{}", self.rng.random::<u32>());
            self.accounts[who].devices.push(fresh.clone());
            fresh
        } else {
            let devices = &self.accounts[who].devices;
            devices[self.rng.random_range(0..devices.len())].clone()
        };
        let country =
            if self.rng.random_bool(0.03) { COUNTRIES[self.rng.random_range(0..COUNTRIES.len())] } else { home };
        let scale =
            if self.rng.random_bool(0.02) { self.rng.random_range(4.0..15.0) } else { self.rng.random_range(0.3..2.0) };
        let amount = ((typical as f64) * scale) as i64;
        let merchant = format!("m-{country}-{:04}", self.rng.random_range(0..400));
        let channel = if self.rng.random_bool(0.6) { "ecom" } else { "pos" };
        let tx = self.transaction(who, amount.max(100), &merchant, country, channel, &device, self.now_ms);
        let friendly_fraud = self.rng.random_bool(0.002);
        if friendly_fraud {
            self.label(&tx, true, Pattern::FriendlyFraud);
            return (tx, Pattern::FriendlyFraud);
        }
        if self.rng.random_bool(self.cfg.confirm_rate.clamp(0.0, 1.0)) {
            self.label(&tx, false, Pattern::Legitimate);
        }
        // A shopping spree: a few more payments within the hour, same device and country.
        if self.rng.random_bool(0.01) {
            let mut at = self.now_ms;
            for _ in 0..self.rng.random_range(2..8) {
                at += self.rng.random_range(60..600) * 1000;
                let amount = ((typical as f64) * self.rng.random_range(0.2..1.5)) as i64;
                let merchant = format!("m-{country}-{:04}", self.rng.random_range(0..400));
                let next = self.transaction(who, amount.max(100), &merchant, country, channel, &device, at);
                self.episode.push_back((next, Pattern::Legitimate));
            }
        }
        (tx, Pattern::Legitimate)
    }

    fn start_episode(&mut self, who: usize) {
        let pattern = match self.rng.random_range(0..4) {
            0 => Pattern::AccountTakeover,
            1 => Pattern::CardTesting,
            2 => Pattern::VelocityBurst,
            _ => Pattern::GeoMismatch,
        };
        let (home, typical) = (self.accounts[who].home, self.accounts[who].typical_minor);
        let mut at = self.now_ms;
        let foreign = |rng: &mut SmallRng| loop {
            let c = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
            if c != home {
                break c;
            }
        };
        let stolen_device = format!("dev-x-{:08}", self.rng.random::<u32>());
        let known_device = self.accounts[who].devices[0].clone();
        let steps: Vec<(i64, String, &'static str, String, i64)> = match pattern {
            Pattern::AccountTakeover => {
                let country = foreign(&mut self.rng);
                // A hijacked session keeps the victim's own device a third of the time.
                let device = if self.rng.random_bool(0.33) { known_device.clone() } else { stolen_device.clone() };
                (0..self.rng.random_range(1..4))
                    .map(|_| {
                        let amount = typical * self.rng.random_range(2..25);
                        (
                            amount,
                            format!("m-{country}-{:04}", self.rng.random_range(0..400)),
                            country,
                            device.clone(),
                            60,
                        )
                    })
                    .collect()
            }
            Pattern::CardTesting => (0..self.rng.random_range(4..20))
                .map(|_| {
                    let country = if self.rng.random_bool(0.5) { home } else { foreign(&mut self.rng) };
                    (
                        self.rng.random_range(50..400),
                        format!("m-test-{:05}", self.rng.random_range(0..50_000)),
                        country,
                        stolen_device.clone(),
                        20,
                    )
                })
                .collect(),
            Pattern::VelocityBurst => (0..self.rng.random_range(5..25))
                .map(|_| {
                    (
                        (typical as f64 * self.rng.random_range(0.5..3.0)) as i64,
                        format!("m-{home}-{:04}", self.rng.random_range(0..400)),
                        home,
                        if self.rng.random_bool(0.5) { known_device.clone() } else { stolen_device.clone() },
                        90,
                    )
                })
                .collect(),
            Pattern::GeoMismatch => (0..self.rng.random_range(3..6))
                .map(|_| {
                    let country = foreign(&mut self.rng);
                    (
                        typical * self.rng.random_range(1..6),
                        format!("m-{country}-{:04}", self.rng.random_range(0..400)),
                        country,
                        if self.rng.random_bool(0.3) { known_device.clone() } else { stolen_device.clone() },
                        900,
                    )
                })
                .collect(),
            Pattern::Legitimate | Pattern::FriendlyFraud => Vec::new(),
        };
        for (amount, merchant, country, device, gap_s) in steps {
            at += self.rng.random_range(1..=gap_s) * 1000;
            let tx = self.transaction(who, amount, &merchant, country, "ecom", &device, at);
            self.label(&tx, true, pattern);
            self.episode.push_back((tx, pattern));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn transaction(
        &mut self,
        who: usize,
        amount_minor: i64,
        merchant: &str,
        country: &str,
        channel: &str,
        device: &str,
        at_ms: i64,
    ) -> Envelope {
        self.next_tx += 1;
        let a = &self.accounts[who];
        let id = format!("tx-{:010}", self.next_tx);
        let data = json!({
            "transaction_id": id, "account_id": a.id, "card_id": a.card,
            "amount": {"minor": amount_minor, "currency": "EUR"}, "merchant_id": merchant,
            "mcc": MCCS[self.rng.random_range(0..MCCS.len())], "country": country, "channel": channel,
            "device_id": device, "occurred_at": rfc3339(at_ms),
        });
        event(types::TRANSACTION, &id, &a.id, data, at_ms)
    }

    /// Queues the label of `tx`, due `label_delay_days` later (kept in due order).
    fn label(&mut self, tx: &Envelope, fraud: bool, pattern: Pattern) {
        let due = tx.time_ms() + self.cfg.label_delay_days * 86_400_000;
        let data = json!({
            "transaction_id": tx.id, "account_id": tx.subject, "fraud": fraud, "pattern": pattern.code(),
            "kind": if fraud { "chargeback" } else { "confirmed_legitimate" },
        });
        let account = tx.subject.clone().unwrap_or_default();
        let label = event(types::LABEL, &format!("label-{}", tx.id), &account, data, due);
        let at = self.labels.partition_point(|(d, _)| *d <= due);
        self.labels.insert(at, (due, label));
    }
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn event(ty: &str, id: &str, account: &str, data: serde_json::Value, at_ms: i64) -> Envelope {
    let mut env = Envelope::new("/sim/payments", ty, data);
    env.id = id.to_owned();
    env.subject = Some(account.to_owned());
    if let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000) {
        env.time = t;
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_others() {
        let run = |seed| {
            let mut sim = Payments::new(PaymentsConfig { seed, accounts: 50, ..PaymentsConfig::default() });
            sim.next_batch(2_000).into_iter().map(|g| (g.event.id, g.event.data.to_string())).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn every_pattern_appears_labelled_and_labels_come_days_later() {
        let cfg = PaymentsConfig {
            seed: 9,
            accounts: 200,
            fraud_rate: 0.05,
            mean_gap_seconds: 8.0,
            ..PaymentsConfig::default()
        };
        let delay = cfg.label_delay_days * 86_400_000;
        let mut sim = Payments::new(cfg);
        let events = sim.next_batch(60_000);
        let profiles = events.iter().filter(|g| g.event.ty == types::PROFILE).count();
        assert_eq!(profiles, 200, "one profile per account, first");
        let mut seen = std::collections::HashSet::new();
        let mut times = std::collections::HashMap::new();
        for g in &events {
            if let Some(p) = g.pattern {
                seen.insert(p);
                times.insert(g.event.id.clone(), g.event.time_ms());
                let payload = serde_json::to_vec(&g.event.data).expect("json");
                let tx = tally_fraud::Transaction::from_payload(&payload)
                    .unwrap_or_else(|e| panic!("the fraud service would refuse {}: {e}", g.event.data));
                assert_eq!(Some(tx.account_id.as_str()), g.event.subject.as_deref(), "keyed by its account");
                assert_eq!(tx.occurred_at_ms, g.event.time_ms(), "the event time is the payment's");
            }
        }
        for p in [
            Pattern::Legitimate,
            Pattern::AccountTakeover,
            Pattern::CardTesting,
            Pattern::VelocityBurst,
            Pattern::GeoMismatch,
        ] {
            assert!(seen.contains(&p), "{p:?} never generated");
        }
        let labels: Vec<&Generated> = events.iter().filter(|g| g.event.ty == types::LABEL).collect();
        assert!(!labels.is_empty(), "no label came due");
        for label in labels {
            let tx_id = label.event.data["transaction_id"].as_str().expect("id");
            let tx_time = times[tx_id];
            assert_eq!(label.event.time_ms() - tx_time, delay, "a label is due its delay after its transaction");
        }
    }
}
