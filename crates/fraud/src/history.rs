//! Per-account history, maintained incrementally: each transaction is first measured against
//! the history so far (its features), then added to it. Windows are exact at minute
//! granularity, relative to the transaction's own time, so the features of a transaction depend
//! only on the transactions applied before it — a replay from the same state gives the same
//! features (what exactly-once needs). Amounts are summed as integers (thousandths of a major
//! unit): a float sum would not survive being stored and loaded bit for bit.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::transaction::Transaction;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest window: older activity is forgotten.
pub const KEPT_MS: i64 = 7 * DAY_MS;
/// Most distinct merchants, countries or devices remembered per account (a card-testing burst
/// across thousands of merchants must not grow the state without bound); the oldest go first.
pub const MAX_DISTINCT: usize = 512;

/// Transactions of one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Minute {
    count: u32,
    /// Sum of amounts, in thousandths of a major unit.
    amount_milli: i128,
}

/// Counts and sums over the standard windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Windows {
    /// Transactions in the last hour, day and week (before this one).
    pub count: [u32; 3],
    /// Their amounts (major units).
    pub amount: [f64; 3],
}

/// The history of one account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Activity per minute (minute index since the epoch), the last [`KEPT_MS`].
    minutes: BTreeMap<i64, Minute>,
    /// When each merchant, country and device was last seen (Unix ms).
    merchants: HashMap<String, i64>,
    countries: HashMap<String, i64>,
    devices: HashMap<String, i64>,
    /// The newest transaction time seen (Unix ms).
    last_ms: Option<i64>,
    /// Transactions ever seen, and the sum of their amounts (thousandths of a major unit): their
    /// mean is "typical" for an account without a profile.
    seen: u64,
    total_milli: i128,
}

/// What the history says about a transaction, before it is added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Counts and sums over 1 h / 24 h / 7 d.
    pub windows: Windows,
    /// Distinct merchants, countries and devices in the last 24 h (this transaction's included).
    pub distinct_24h: [u32; 3],
    /// Seconds since the previous transaction (`None`: the first one, or the previous is
    /// older than a week).
    pub seconds_since_last: Option<f64>,
    /// Whether the device was not seen in the last week (`false` when the transaction has none).
    pub new_device: bool,
    /// Mean amount of the account's earlier transactions, if any.
    pub mean_amount: Option<f64>,
}

impl History {
    /// Measures `tx` against the history so far, then adds it.
    pub fn observe(&mut self, tx: &Transaction) -> Observed {
        let now = tx.occurred_at_ms;
        let windows = self.windows(now);
        let seconds_since_last =
            self.last_ms.filter(|&last| now - last <= KEPT_MS).map(|last| ((now - last).max(0)) as f64 / 1000.0);
        let new_device = tx.device_id.as_ref().is_some_and(|d| self.devices.get(d).is_none_or(|&t| now - t > KEPT_MS));
        let mean_amount = (self.seen > 0).then(|| self.total_milli as f64 / 1000.0 / self.seen as f64);
        self.add(tx);
        let distinct =
            |seen: &HashMap<String, i64>| seen.values().filter(|&&t| t <= now && now - t <= DAY_MS).count() as u32;
        let distinct_24h = [distinct(&self.merchants), distinct(&self.countries), distinct(&self.devices)];
        Observed { windows, distinct_24h, seconds_since_last, new_device, mean_amount }
    }

    fn windows(&self, now: i64) -> Windows {
        let current = now.div_euclid(MINUTE_MS);
        let mut w = Windows::default();
        let mut milli = [0i128; 3];
        let spans = [HOUR_MS / MINUTE_MS, DAY_MS / MINUTE_MS, KEPT_MS / MINUTE_MS];
        // Minutes in (now − window, now], at minute granularity: the current minute counts.
        for (&minute, m) in self.minutes.range(current - spans[2] + 1..=current) {
            for (i, span) in spans.iter().enumerate() {
                if minute > current - span {
                    w.count[i] += m.count;
                    milli[i] += m.amount_milli;
                }
            }
        }
        w.amount = milli.map(|a| a as f64 / 1000.0);
        w
    }

    fn add(&mut self, tx: &Transaction) {
        let now = tx.occurred_at_ms;
        let amount = tx.amount_milli();
        let m = self.minutes.entry(now.div_euclid(MINUTE_MS)).or_default();
        m.count = m.count.saturating_add(1);
        m.amount_milli += amount;
        remember(&mut self.merchants, &tx.merchant_id, now);
        remember(&mut self.countries, tx.country.as_str(), now);
        if let Some(device) = &tx.device_id {
            remember(&mut self.devices, device, now);
        }
        self.seen += 1;
        self.total_milli += amount;
        let newest = self.last_ms.map_or(now, |last| last.max(now));
        self.last_ms = Some(newest);
        // Forget what no window reaches any more (relative to the newest time seen).
        let oldest = (newest - KEPT_MS).div_euclid(MINUTE_MS);
        self.minutes = self.minutes.split_off(&oldest);
        for seen in [&mut self.merchants, &mut self.countries, &mut self.devices] {
            seen.retain(|_, &mut t| newest - t <= KEPT_MS);
        }
    }
}

/// Records that `key` was seen at `at`, keeping at most [`MAX_DISTINCT`] keys (the oldest go).
fn remember(seen: &mut HashMap<String, i64>, key: &str, at: i64) {
    match seen.get_mut(key) {
        Some(t) => *t = (*t).max(at),
        None => {
            if seen.len() >= MAX_DISTINCT
                && let Some(oldest) = seen.iter().min_by_key(|(k, t)| (**t, (*k).clone())).map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
            seen.insert(key.to_owned(), at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::{Channel, Country, Currency};

    fn tx(minutes: i64, amount_minor: i64, merchant: &str, country: &str, device: Option<&str>) -> Transaction {
        Transaction {
            transaction_id: tally_core::TransactionId::parse(format!("t{minutes}-{merchant}")).expect("id"),
            account_id: tally_core::AccountId::parse("a").expect("id"),
            card_id: "c".into(),
            amount_minor,
            currency: Currency::parse("EUR").expect("currency"),
            merchant_id: merchant.into(),
            mcc: 5411,
            country: Country::parse(country).expect("country"),
            channel: Channel::Ecom,
            device_id: device.map(str::to_owned),
            ip: None,
            occurred_at_ms: 1_700_000_000_000 + minutes * MINUTE_MS,
        }
    }

    #[test]
    fn windows_count_what_came_before_within_each_span() {
        let mut h = History::default();
        let first = h.observe(&tx(0, 1000, "m1", "DE", Some("d1")));
        assert_eq!(first.windows, Windows::default());
        assert_eq!(first.seconds_since_last, None);
        assert!(first.new_device);
        h.observe(&tx(30, 2000, "m2", "DE", Some("d1")));
        h.observe(&tx(60 * 5, 3000, "m3", "FR", Some("d1")));
        let o = h.observe(&tx(60 * 5 + 10, 500, "m3", "FR", Some("d2")));
        // 1 h: the 5 h transaction; 24 h: all three; 7 d: all three.
        assert_eq!(o.windows.count, [1, 3, 3]);
        assert!((o.windows.amount[0] - 30.0).abs() < 1e-9);
        assert!((o.windows.amount[1] - 60.0).abs() < 1e-9);
        assert_eq!(o.seconds_since_last, Some(600.0));
        assert!(o.new_device, "d2 was never seen");
        assert_eq!(o.distinct_24h, [3, 2, 2], "merchants m1 m2 m3, countries DE FR, devices d1 d2");
        assert_eq!(o.mean_amount, Some(20.0));
        // A week and a day later, everything has left every window.
        let late = h.observe(&tx(60 * 24 * 8, 100, "m9", "DE", Some("d1")));
        assert_eq!(late.windows.count, [0, 0, 0]);
        assert_eq!(late.seconds_since_last, None, "the previous one is more than a week old");
        assert!(late.new_device, "d1 was last seen more than a week ago");
    }

    #[test]
    fn the_same_transactions_give_the_same_features_whatever_was_serialised_between() {
        let txs: Vec<Transaction> = (0..200).map(|i| tx(i * 7, 100 + i, &format!("m{}", i % 13), "DE", None)).collect();
        let mut straight = History::default();
        let mut resumed = History::default();
        for (i, t) in txs.iter().enumerate() {
            let a = straight.observe(t);
            if i % 17 == 0 {
                // Stored and loaded again, as a restarted worker does.
                let json = serde_json::to_string(&resumed).expect("json");
                resumed = serde_json::from_str(&json).expect("json");
            }
            let b = resumed.observe(t);
            assert_eq!(a, b, "transaction {i}");
        }
    }

    #[test]
    fn distinct_keys_are_bounded() {
        let mut h = History::default();
        for i in 0..(MAX_DISTINCT as i64 + 100) {
            h.observe(&tx(i / 100, 100, &format!("m{i}"), "DE", None));
        }
        assert_eq!(h.merchants.len(), MAX_DISTINCT);
    }
}
