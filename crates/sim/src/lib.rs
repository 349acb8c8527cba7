//! A seeded, reproducible simulator of inventory traffic: a warehouse (WMS) that receives,
//! ships and counts stock and publishes versioned snapshots; sales channels that reserve,
//! commit and release stock for orders; Zipf-distributed SKU popularity; bursts on hot SKUs;
//! duplicate deliveries; out-of-order delivery; and the odd malformed event.
//!
//! The same seed and settings always produce the same event sequence (ids included), so a
//! test can compute the expected state independently and a benchmark can be re-run exactly.

pub mod demand;
pub mod payments;

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::json;
use tally_core::Envelope;
use tally_inventory::types;
use time::OffsetDateTime;

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of SKUs.
    pub skus: usize,
    /// Zipf exponent of SKU popularity (1.0–1.3 is typical retail).
    pub zipf_exponent: f64,
    /// Stock locations.
    pub locations: Vec<String>,
    /// Channels that place reservations.
    pub channels: Vec<String>,
    /// Probability that an event is delivered twice.
    pub duplicate_rate: f64,
    /// Probability that an event is held back and delivered a few events later.
    pub reorder_rate: f64,
    /// Probability per event that a burst of updates on one hot SKU starts.
    pub burst_rate: f64,
    /// Events in a burst.
    pub burst_size: usize,
    /// Probability that an event is malformed (must end in the dead-letter topic).
    pub poison_rate: f64,
    /// Seconds until a reservation lapses, if reservations should expire.
    pub reservation_ttl_seconds: Option<u32>,
    /// Stamp events with a fixed clock (reproducible payloads) instead of the wall clock.
    pub fixed_clock: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            skus: 1000,
            zipf_exponent: 1.1,
            locations: vec!["wh-1".into(), "wh-2".into(), "store-1".into()],
            channels: vec!["storefront".into(), "partner:ozon".into()],
            duplicate_rate: 0.05,
            reorder_rate: 0.02,
            burst_rate: 0.0005,
            burst_size: 200,
            poison_rate: 0.001,
            reservation_ttl_seconds: Some(30),
            fixed_clock: false,
        }
    }
}

/// The SKU name of index `i`.
pub fn sku_name(i: usize) -> String {
    format!("SKU-{i:06}")
}

struct Wms {
    on_hand: Vec<i64>,
    seq: Vec<u64>,
}

struct OpenReservation {
    sku: usize,
    location: usize,
    /// The channel that holds it; it alone commits or releases it.
    channel: String,
    id: String,
    order: String,
    quantity: i64,
    committed: bool,
}

/// The simulator: an endless iterator of envelopes.
pub struct Simulator {
    cfg: SimConfig,
    rng: SmallRng,
    zipf: Zipf<f64>,
    wms: Wms,
    initial: VecDeque<(usize, usize)>,
    open: VecDeque<OpenReservation>,
    to_ship: VecDeque<OpenReservation>,
    held_back: VecDeque<(u32, Envelope)>,
    recent: VecDeque<Envelope>,
    burst: Option<(usize, usize)>,
    next_id: u64,
    clock_ms: i64,
}

impl Simulator {
    /// A simulator; it starts with one snapshot per (sku, location).
    pub fn new(cfg: SimConfig) -> Self {
        let n = cfg.skus.max(1) * cfg.locations.len().max(1);
        let zipf =
            Zipf::new(cfg.skus.max(1) as f64, cfg.zipf_exponent).unwrap_or_else(|_| unreachable!("n >= 1, s > 0"));
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        // Popular SKUs (low index) carry more stock.
        let on_hand = (0..n)
            .map(|i| 5 + rng.random_range(0..50) + 2000 / (1 + (i / cfg.locations.len().max(1)) as i64))
            .collect();
        let initial = (0..cfg.skus).flat_map(|s| (0..cfg.locations.len()).map(move |l| (s, l))).collect();
        Self {
            rng,
            zipf,
            wms: Wms { on_hand, seq: vec![0; n] },
            initial,
            open: VecDeque::new(),
            to_ship: VecDeque::new(),
            held_back: VecDeque::new(),
            recent: VecDeque::new(),
            burst: None,
            next_id: 0,
            clock_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            cfg,
        }
    }

    /// True while the simulator still emits the opening stock snapshot of every
    /// (sku, location), before the steady mix of reservations, adjustments and snapshots.
    pub fn seeding(&self) -> bool {
        !self.initial.is_empty()
    }

    fn slot(&self, sku: usize, loc: usize) -> usize {
        sku * self.cfg.locations.len() + loc
    }

    fn now(&mut self) -> OffsetDateTime {
        if self.cfg.fixed_clock {
            self.clock_ms += 1;
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.clock_ms) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        } else {
            OffsetDateTime::now_utc()
        }
    }

    fn envelope(&mut self, source: &str, ty: &str, data: serde_json::Value) -> Envelope {
        self.next_id += 1;
        let sku = data.get("sku").and_then(|s| s.as_str()).map(str::to_owned);
        Envelope {
            specversion: "1.0".into(),
            id: format!("sim-{}-{}", self.cfg.seed, self.next_id),
            source: source.to_owned(),
            ty: ty.to_owned(),
            time: self.now(),
            subject: sku,
            datacontenttype: None,
            traceparent: None,
            data,
        }
    }

    fn pick_sku(&mut self) -> usize {
        if let Some((sku, left)) = self.burst.as_mut() {
            let s = *sku;
            *left -= 1;
            if *left == 0 {
                self.burst = None;
            }
            return s;
        }
        if self.rng.random_bool(self.cfg.burst_rate.clamp(0.0, 1.0)) {
            let hot = (self.zipf.sample(&mut self.rng) as usize).saturating_sub(1).min(self.cfg.skus - 1);
            self.burst = Some((hot, self.cfg.burst_size.max(1)));
        }
        (self.zipf.sample(&mut self.rng) as usize).saturating_sub(1).min(self.cfg.skus.max(1) - 1)
    }

    fn snapshot(&mut self, sku: usize, loc: usize, shipped: Vec<String>) -> Envelope {
        let slot = self.slot(sku, loc);
        let data = json!({
            "sku": sku_name(sku),
            "location": self.cfg.locations[loc],
            "on_hand": self.wms.on_hand[slot].max(0),
            "source_version": self.wms.seq[slot].max(1),
            "safety_stock": if loc == 0 { 2 } else { 0 },
            "shipped_orders": shipped,
        });
        self.wms.seq[slot] = self.wms.seq[slot].max(1);
        self.envelope("/wms", types::SNAPSHOT, data)
    }

    fn adjustment(&mut self, sku: usize, loc: usize, delta: i64, reason: &str, reference: Option<String>) -> Envelope {
        let slot = self.slot(sku, loc);
        self.wms.seq[slot] += 1;
        self.wms.on_hand[slot] += delta;
        let mut data = json!({
            "sku": sku_name(sku), "location": self.cfg.locations[loc], "delta": delta,
            "reason": reason, "source_version": self.wms.seq[slot],
        });
        if let Some(r) = reference {
            data["reference"] = json!(r);
        }
        self.envelope("/wms", types::ADJUSTED, data)
    }

    fn fresh_event(&mut self) -> Envelope {
        if let Some((sku, loc)) = self.initial.pop_front() {
            let slot = self.slot(sku, loc);
            self.wms.seq[slot] = 1;
            return self.snapshot(sku, loc, Vec::new());
        }
        if self.rng.random_bool(self.cfg.poison_rate.clamp(0.0, 1.0)) {
            let sku = sku_name(self.pick_sku());
            return self.envelope("/storefront", types::RESERVATION_REQUESTED, json!({"sku": sku, "quantity": -1}));
        }
        // The warehouse ships what channels committed within a short lag, so shipped-but-
        // unconfirmed reservations stay bounded as they do in a real fulfilment flow.
        if self.to_ship.len() > 100
            && let Some(r) = self.to_ship.pop_front()
        {
            return self.adjustment(r.sku, r.location, -r.quantity, "shipment", Some(r.order));
        }
        let roll: f64 = self.rng.random();
        let sku = self.pick_sku();
        let loc = self.rng.random_range(0..self.cfg.locations.len());
        // Checkouts resolve their holds oldest first at the rate they are opened (about 80 %
        // ship, 20 % are cancelled), so the number of open reservations stays bounded.
        let resolve = !self.open.is_empty() && (self.open.len() > 4 * self.cfg.skus || roll >= 0.35);
        if roll < 0.35 && !resolve {
            let channel = self.cfg.channels[self.rng.random_range(0..self.cfg.channels.len())].clone();
            let quantity = self.rng.random_range(1..=3);
            let id = format!("r-{}-{}", self.cfg.seed, self.next_id + 1);
            let order = format!("o-{}-{}", self.cfg.seed, self.next_id + 1);
            let mut data = json!({
                "reservation_id": id, "sku": sku_name(sku), "channel": channel,
                "location": self.cfg.locations[loc], "quantity": quantity, "order_id": order,
            });
            if let Some(ttl) = self.cfg.reservation_ttl_seconds {
                let expires = self.now() + time::Duration::seconds(i64::from(ttl));
                data["expires_at"] = json!(tally_core::envelope::format_time(expires));
            }
            let source = format!("/{channel}");
            let env = self.envelope(&source, types::RESERVATION_REQUESTED, data);
            // Rejected reservations stay in the model too: their later commit or release is a
            // realistic no-op the engine must ignore.
            self.open.push_back(OpenReservation { sku, location: loc, channel, id, order, quantity, committed: false });
            return env;
        }
        if resolve
            && roll < 0.63
            && let Some(r) = self.open.pop_front()
        {
            let data = json!({"reservation_id": r.id, "sku": sku_name(r.sku), "order_id": r.order});
            let env = self.envelope(&format!("/{}", r.channel), types::RESERVATION_COMMITTED, data);
            self.to_ship.push_back(OpenReservation { committed: true, ..r });
            return env;
        }
        if resolve
            && roll < 0.70
            && let Some(r) = self.open.pop_front()
        {
            let data = json!({"reservation_id": r.id, "sku": sku_name(r.sku), "reason": "cancelled"});
            return self.envelope(&format!("/{}", r.channel), types::RESERVATION_RELEASED, data);
        }
        if roll < 0.78
            && let Some(r) = self.to_ship.pop_front()
        {
            debug_assert!(r.committed);
            return self.adjustment(r.sku, r.location, -r.quantity, "shipment", Some(r.order));
        }
        if roll < 0.88 {
            let (delta, reason) = match self.rng.random_range(0..10) {
                0..=5 => (self.rng.random_range(5..40), "receipt"),
                6..=7 => (self.rng.random_range(1..3), "return"),
                _ => (-self.rng.random_range(1..3), "damage"),
            };
            return self.adjustment(sku, loc, delta, reason, None);
        }
        if roll < 0.95 {
            return self.snapshot(sku, loc, Vec::new());
        }
        let channel = self.cfg.channels[self.rng.random_range(0..self.cfg.channels.len())].clone();
        let shown = self.rng.random_range(0..60);
        self.envelope(
            &format!("/{channel}"),
            types::CHANNEL_REPORTED,
            json!({"sku": sku_name(sku), "channel": channel, "shown": shown}),
        )
    }

    /// The next `n` deliveries (with duplicates and reordering applied).
    pub fn next_batch(&mut self, n: usize) -> Vec<Envelope> {
        (0..n).filter_map(|_| self.next()).collect()
    }
}

impl Iterator for Simulator {
    type Item = Envelope;

    fn next(&mut self) -> Option<Envelope> {
        // Held-back events come out once their delay has passed: out-of-order delivery.
        if let Some((delay, _)) = self.held_back.front_mut() {
            if *delay == 0 {
                return self.held_back.pop_front().map(|(_, e)| e);
            }
            *delay -= 1;
        }
        if !self.recent.is_empty() && self.rng.random_bool(self.cfg.duplicate_rate.clamp(0.0, 1.0)) {
            let i = self.rng.random_range(0..self.recent.len());
            return Some(self.recent[i].clone());
        }
        let ev = self.fresh_event();
        self.recent.push_back(ev.clone());
        if self.recent.len() > 1000 {
            self.recent.pop_front();
        }
        if self.held_back.is_empty() && self.rng.random_bool(self.cfg.reorder_rate.clamp(0.0, 1.0)) {
            let delay = self.rng.random_range(1..20);
            self.held_back.push_back((delay, ev));
            return self.next();
        }
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let cfg = SimConfig { fixed_clock: true, ..SimConfig::default() };
        let a: Vec<_> = Simulator::new(cfg.clone()).next_batch(5000);
        let b: Vec<_> = Simulator::new(cfg).next_batch(5000);
        assert_eq!(a, b);
    }

    #[test]
    fn a_reservation_is_committed_or_released_by_the_channel_that_holds_it() {
        let cfg = SimConfig { skus: 200, ..SimConfig::default() };
        // Collected first: delivery is deliberately out of order now and then.
        let events: Vec<Envelope> = Simulator::new(cfg).take(30_000).collect();
        let id = |e: &Envelope| e.data["reservation_id"].as_str().map(str::to_owned);
        let holder: std::collections::HashMap<String, String> = events
            .iter()
            .filter(|e| e.ty == types::RESERVATION_REQUESTED)
            .filter_map(|e| Some((id(e)?, e.source.clone())))
            .collect();
        let mut checked = 0;
        for e in events
            .iter()
            .filter(|e| [types::RESERVATION_COMMITTED, types::RESERVATION_RELEASED].contains(&e.ty.as_str()))
        {
            let id = id(e).expect("a reservation id");
            assert_eq!(holder.get(&id), Some(&e.source), "{} of {id}", e.ty);
            checked += 1;
        }
        assert!(checked > 1000, "only {checked} commits and releases");
        assert!(holder.values().any(|s| s.starts_with("/partner:")), "no partner reservations");
    }

    #[test]
    fn traffic_has_duplicates_every_event_kind_and_zipf_skew() {
        let cfg = SimConfig { skus: 200, ..SimConfig::default() };
        let events: Vec<_> = Simulator::new(cfg).skip(600).take(20_000).collect();
        let ids: std::collections::HashSet<_> = events.iter().map(|e| &e.id).collect();
        assert!(ids.len() < events.len(), "duplicates present");
        for ty in [
            types::SNAPSHOT,
            types::ADJUSTED,
            types::RESERVATION_REQUESTED,
            types::RESERVATION_COMMITTED,
            types::RESERVATION_RELEASED,
            types::CHANNEL_REPORTED,
        ] {
            assert!(events.iter().any(|e| e.ty == ty), "{ty} missing");
        }
        let hot = events.iter().filter(|e| e.subject.as_deref() == Some("SKU-000000")).count();
        let cold = events.iter().filter(|e| e.subject.as_deref() == Some("SKU-000150")).count();
        assert!(hot > 20 * cold.max(1), "hot {hot} vs cold {cold}");
    }

    #[test]
    fn every_generated_event_is_valid_except_the_deliberate_poison() {
        let cfg = SimConfig { poison_rate: 0.0, ..SimConfig::default() };
        for ev in Simulator::new(cfg).take(20_000) {
            tally_inventory::InventoryEvent::from_envelope(&ev).unwrap_or_else(|e| panic!("{e}: {ev:?}"));
        }
    }
}
