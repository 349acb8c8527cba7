use proptest::prelude::*;

use super::*;
use crate::channel::ChannelRule;
use crate::event::{ChannelReported, MAX_QUANTITY, ReservationCommitted, ReservationReleased};

fn sku() -> Sku {
    Sku::parse("SKU-1").expect("valid")
}
fn loc(s: &str) -> LocationId {
    LocationId::parse(s).expect("valid")
}
fn ch(s: &str) -> ChannelId {
    ChannelId::parse(s).expect("valid")
}
fn rules() -> ChannelRules {
    ChannelRules::new([
        ChannelRule::everything(ch("storefront")),
        ChannelRule { id: ch("partner:ozon"), locations: vec![loc("wh-1")], share_percent: 50, cap: None, buffer: 1 },
    ])
}
/// `apply` for events whose levels stay in range (every test here but the bounds tests).
trait ApplyOk {
    fn apply_ok(&mut self, event: &InventoryEvent, meta: EventMeta<'_>, rules: &ChannelRules) -> Applied;
}

impl ApplyOk for SkuState {
    fn apply_ok(&mut self, event: &InventoryEvent, meta: EventMeta<'_>, rules: &ChannelRules) -> Applied {
        self.apply(event, meta, rules).expect("levels stay in range")
    }
}

fn meta(id: &str) -> EventMeta<'_> {
    EventMeta { source: "/test", id, time_ms: 1 }
}
fn snapshot(location: &str, on_hand: i64, v: u64) -> InventoryEvent {
    InventoryEvent::Snapshot(StockSnapshot {
        sku: sku(),
        location: loc(location),
        on_hand,
        source_version: v,
        safety_stock: None,
        shipped_orders: vec![],
    })
}
fn adjust(location: &str, delta: i64, v: Option<u64>) -> InventoryEvent {
    InventoryEvent::Adjusted(StockAdjusted {
        sku: sku(),
        location: loc(location),
        delta,
        reason: if delta > 0 { AdjustReason::Receipt } else { AdjustReason::Damage },
        source_version: v,
        reference: None,
        change_from_quantity: None,
    })
}
fn reserve(id: &str, channel: &str, location: Option<&str>, qty: i64, order: Option<&str>) -> InventoryEvent {
    InventoryEvent::ReservationRequested(ReservationRequested {
        reservation_id: id.into(),
        sku: sku(),
        channel: ch(channel),
        location: location.map(loc),
        quantity: qty,
        order_id: order.map(Into::into),
        expires_at: None,
        ttl_seconds: None,
    })
}
fn ship(location: &str, qty: i64, order: &str, v: Option<u64>) -> InventoryEvent {
    InventoryEvent::Adjusted(StockAdjusted {
        sku: sku(),
        location: loc(location),
        delta: -qty,
        reason: AdjustReason::Shipment,
        source_version: v,
        reference: Some(order.into()),
        change_from_quantity: None,
    })
}
fn commit(id: &str) -> InventoryEvent {
    InventoryEvent::ReservationCommitted(ReservationCommitted {
        reservation_id: id.into(),
        sku: sku(),
        order_id: None,
        channel: None,
    })
}

#[test]
fn reservation_that_would_make_available_negative_is_rejected() {
    let mut s = SkuState::new(sku());
    let r = rules();
    s.apply_ok(&snapshot("wh-1", 5, 1), meta("1"), &r);
    let ok = s.apply_ok(&reserve("r1", "storefront", Some("wh-1"), 4, None), meta("2"), &r);
    assert_eq!(ok.outcome, Outcome::ReservationAccepted { location: loc("wh-1") });
    let no = s.apply_ok(&reserve("r2", "storefront", Some("wh-1"), 2, None), meta("3"), &r);
    assert!(matches!(&no.outcome, Outcome::ReservationRejected { reason: RejectionReason::InsufficientStock, .. }));
    assert_eq!(s.available_at(&loc("wh-1")), 1);
}

#[test]
fn partner_cannot_reserve_beyond_its_share() {
    let mut s = SkuState::new(sku());
    let r = rules();
    s.apply_ok(&snapshot("wh-1", 10, 1), meta("1"), &r);
    // 50 % of 10 minus a buffer of 1 = 4.
    assert_eq!(s.available_to_sell(&r, &ch("partner:ozon")), Some(4));
    let no = s.apply_ok(&reserve("r1", "partner:ozon", None, 5, None), meta("2"), &r);
    assert!(matches!(no.outcome, Outcome::ReservationRejected { .. }));
    let ok = s.apply_ok(&reserve("r2", "partner:ozon", None, 4, None), meta("3"), &r);
    assert!(matches!(ok.outcome, Outcome::ReservationAccepted { .. }));
}

#[test]
fn committed_reservation_is_deducted_once_when_the_warehouse_confirms_by_shipment() {
    let mut s = SkuState::new(sku());
    let r = rules();
    s.apply_ok(&snapshot("wh-1", 10, 1), meta("1"), &r);
    s.apply_ok(&reserve("r1", "storefront", Some("wh-1"), 3, Some("o-1")), meta("2"), &r);
    s.apply_ok(&commit("r1"), meta("3"), &r);
    assert_eq!(s.available_at(&loc("wh-1")), 7, "shipped but unconfirmed still deducted");
    s.apply_ok(&ship("wh-1", 3, "o-1", Some(2)), meta("4"), &r);
    assert_eq!(s.locations[&loc("wh-1")].on_hand, 7);
    assert_eq!(s.available_at(&loc("wh-1")), 7, "confirmation does not deduct again");
    assert!(s.reservations.is_empty());
}

#[test]
fn snapshot_listing_the_order_confirms_the_committed_reservation() {
    let mut s = SkuState::new(sku());
    let r = rules();
    s.apply_ok(&snapshot("wh-1", 10, 1), meta("1"), &r);
    s.apply_ok(&reserve("r1", "storefront", Some("wh-1"), 3, Some("o-1")), meta("2"), &r);
    s.apply_ok(&commit("r1"), meta("3"), &r);
    let mut snap = snapshot("wh-1", 7, 2);
    if let InventoryEvent::Snapshot(ref mut inner) = snap {
        inner.shipped_orders = vec!["o-1".into()];
    }
    s.apply_ok(&snap, meta("4"), &r);
    assert_eq!(s.available_at(&loc("wh-1")), 7);
    assert!(s.reservations.is_empty());
    // A late commit or duplicate request for the closed reservation does nothing.
    assert!(matches!(s.apply_ok(&commit("r1"), meta("5"), &r).outcome, Outcome::Ignored { .. }));
    let again = s.apply_ok(&reserve("r1", "storefront", Some("wh-1"), 3, Some("o-1")), meta("6"), &r);
    assert!(matches!(again.outcome, Outcome::ReservationRejected { reason: RejectionReason::ReservationClosed, .. }));
}

#[test]
fn shipment_before_commit_still_counts_once() {
    let mut s = SkuState::new(sku());
    let r = rules();
    s.apply_ok(&snapshot("wh-1", 10, 1), meta("1"), &r);
    s.apply_ok(&reserve("r1", "storefront", Some("wh-1"), 3, Some("o-1")), meta("2"), &r);
    s.apply_ok(&ship("wh-1", 3, "o-1", Some(2)), meta("3"), &r);
    s.apply_ok(&commit("r1"), meta("4"), &r);
    assert_eq!(s.available_at(&loc("wh-1")), 7);
}

#[test]
fn compare_and_set_adjustment_rejects_a_stale_expectation() {
    let mut s = SkuState::new(sku());
    let r = rules();
    s.apply_ok(&snapshot("wh-1", 10, 1), meta("1"), &r);
    let mut cas = adjust("wh-1", 5, None);
    if let InventoryEvent::Adjusted(ref mut a) = cas {
        a.change_from_quantity = Some(9);
    }
    let res = s.apply_ok(&cas, meta("2"), &r);
    assert_eq!(res.outcome, Outcome::CasMismatch { expected: 9, actual: 10 });
    assert_eq!(s.locations[&loc("wh-1")].on_hand, 10);
}

#[test]
fn channel_report_measures_the_delta_against_the_truth() {
    let mut s = SkuState::new(sku());
    let r = rules();
    s.apply_ok(&snapshot("wh-1", 10, 1), meta("1"), &r);
    let report = InventoryEvent::ChannelReported(crate::event::ChannelReported {
        sku: sku(),
        channel: ch("storefront"),
        shown: 12,
    });
    assert_eq!(s.apply_ok(&report, meta("2"), &r).outcome, Outcome::Reconciled { delta: 2 });
}

#[test]
fn releasing_returns_the_stock_and_expiry_is_detected() {
    let mut s = SkuState::new(sku());
    let r = rules();
    s.apply_ok(&snapshot("wh-1", 10, 1), meta("1"), &r);
    let mut ev = reserve("r1", "storefront", None, 4, None);
    if let InventoryEvent::ReservationRequested(ref mut rr) = ev {
        rr.expires_at = Some(time::OffsetDateTime::from_unix_timestamp(100).expect("valid"));
    }
    s.apply_ok(&ev, meta("2"), &r);
    assert_eq!(s.expired_reservations(99_999).count(), 0);
    assert_eq!(s.expired_reservations(100_000).count(), 1);
    let rel = InventoryEvent::ReservationReleased(ReservationReleased {
        reservation_id: "r1".into(),
        sku: sku(),
        reason: Some("expired".into()),
        channel: None,
    });
    s.apply_ok(&rel, meta("3"), &r);
    assert_eq!(s.available_at(&loc("wh-1")), 10);
    // Released again: closed, as a commit would say.
    assert_eq!(s.apply_ok(&rel, meta("4"), &r).outcome, Outcome::Ignored { reason: "reservation_closed".into() });
}

// ---- properties -----------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum StockOp {
    Snapshot { location: usize, on_hand: i64, version: u64 },
    Adjust { location: usize, delta: i64, version: Option<u64> },
}

fn stock_op() -> impl Strategy<Value = StockOp> {
    prop_oneof![
        (0..2usize, 0..100i64, 1..20u64).prop_map(|(location, on_hand, version)| StockOp::Snapshot {
            location,
            on_hand,
            version
        }),
        (0..2usize, prop_oneof![-10..0i64, 1..10i64], proptest::option::of(1..20u64))
            .prop_map(|(location, delta, version)| StockOp::Adjust { location, delta, version }),
    ]
}

const LOCS: [&str; 2] = ["wh-1", "wh-2"];

fn to_event(op: &StockOp) -> InventoryEvent {
    match op {
        StockOp::Snapshot { location, on_hand, version } => snapshot(LOCS[*location], *on_hand, *version),
        StockOp::Adjust { location, delta, version } => adjust(LOCS[*location], *delta, *version),
    }
}

proptest! {
    /// Snapshots and versioned adjustments compose to the same on_hand in any arrival order:
    /// N of the newest snapshot plus every adjustment newer than it.
    #[test]
    fn any_arrival_order_of_versioned_stock_events_gives_the_oracle(
        ops in proptest::collection::vec(stock_op(), 1..40),
        seed in any::<u64>(),
    ) {
        // Distinct snapshot versions per location: the WMS never reuses a sequence number.
        let mut seen = std::collections::HashSet::new();
        let ops: Vec<StockOp> = ops.into_iter().filter(|op| match op {
            StockOp::Snapshot { location, version, .. } => seen.insert((*location, *version)),
            // Unversioned adjustments are order-dependent by definition (the next snapshot
            // covers them), so this property uses versioned ones only.
            StockOp::Adjust { version, .. } => version.is_some(),
        }).collect();
        let mut shuffled = ops.clone();
        let mut rng = seed;
        for i in (1..shuffled.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let r = rules();
        let mut state = SkuState::new(sku());
        for (i, op) in shuffled.iter().enumerate() {
            state.apply_ok(&to_event(op), meta(&i.to_string()), &r);
        }
        for (li, name) in LOCS.iter().enumerate() {
            let newest = ops.iter().filter_map(|op| match op {
                StockOp::Snapshot { location, on_hand, version } if *location == li => Some((*version, *on_hand)),
                _ => None,
            }).max();
            let (vmax, base) = newest.unwrap_or((0, 0));
            let adjustments: i64 = ops.iter().filter_map(|op| match op {
                StockOp::Adjust { location, delta, version: Some(v) } if *location == li && *v > vmax => Some(*delta),
                _ => None,
            }).sum();
            let got = state.locations.get(&loc(name)).map_or(0, |s| s.on_hand);
            prop_assert_eq!(got, base + adjustments, "location {}", name);
        }
    }

    /// No sequence of stock changes, reservations, releases and commits lets an accepted
    /// reservation drive available below zero, and the version never goes backwards.
    #[test]
    fn reservations_never_oversell_and_versions_are_monotonic(
        steps in proptest::collection::vec((0..6u8, 0..2usize, 1..8i64, 0..12usize), 1..80),
    ) {
        let r = rules();
        let mut s = SkuState::new(sku());
        s.apply_ok(&snapshot("wh-1", 10, 1), meta("s1"), &r);
        s.apply_ok(&snapshot("wh-2", 5, 1), meta("s2"), &r);
        let mut version = s.version;
        let mut snapshot_version = 1;
        for (i, (kind, li, qty, rid)) in steps.into_iter().enumerate() {
            let id = format!("e{i}");
            let rid = format!("r{rid}");
            let channel = if li == 0 { "storefront" } else { "partner:ozon" };
            let ev = match kind {
                0 | 1 => reserve(&rid, channel, None, qty, Some(&format!("o-{rid}"))),
                2 => InventoryEvent::ReservationReleased(ReservationReleased { reservation_id: rid, sku: sku(), reason: None, channel: None }),
                3 => commit(&rid),
                4 => { snapshot_version += 1; snapshot(LOCS[li], qty * 2, snapshot_version) }
                _ => ship(LOCS[li], qty, &format!("o-{rid}"), None),
            };
            let res = s.apply_ok(&ev, meta(&id), &r);
            // A new hold (not a retry of an existing one, and not a warehouse correction, which
            // may legitimately lower stock below what is reserved) never overdraws.
            if let (Outcome::ReservationAccepted { location }, true) = (&res.outcome, res.changed) {
                prop_assert!(s.available_at(location) >= 0, "oversold at {} after {:?}", location, ev);
                for c in r.iter() {
                    prop_assert!(s.available_to_sell(&r, &c.id).unwrap_or(0) >= 0);
                }
            }
            prop_assert!(s.version >= version, "version went backwards");
            prop_assert_eq!(s.version > version, res.changed);
            version = s.version;
        }
    }
}

proptest! {
    /// The incrementally kept `reserved` always equals the sum of active reservations.
    #[test]
    fn reserved_totals_match_the_active_reservations(
        steps in proptest::collection::vec((0..5u8, 0..2usize, 1..8i64, 0..10usize), 1..120),
    ) {
        let r = rules();
        let mut s = SkuState::new(sku());
        s.apply_ok(&snapshot("wh-1", 20, 1), meta("s1"), &r);
        s.apply_ok(&snapshot("wh-2", 20, 1), meta("s2"), &r);
        for (i, (kind, li, qty, rid)) in steps.into_iter().enumerate() {
            let rid = format!("r{rid}");
            let ev = match kind {
                0 | 1 => reserve(&rid, "storefront", Some(LOCS[li]), qty, Some(&format!("o-{rid}"))),
                2 => InventoryEvent::ReservationReleased(ReservationReleased { reservation_id: rid, sku: sku(), reason: None, channel: None }),
                3 => commit(&rid),
                _ => ship(LOCS[li], qty, &format!("o-{rid}"), None),
            };
            s.apply_ok(&ev, meta(&i.to_string()), &r);
            for l in LOCS {
                let sum: i64 = s.reservations.values().filter(|x| x.location == loc(l)).map(|x| x.quantity).sum();
                prop_assert_eq!(s.reserved_at(&loc(l)), sum);
            }
        }
    }
}

// ---- bounds: no arithmetic can overflow into a wrong answer ---------------------------------

/// The event as a producer would send it, through the same validation as the consumer.
fn validated(ev: &InventoryEvent) -> Result<InventoryEvent, crate::EventError> {
    InventoryEvent::from_envelope(&ev.into_envelope("/test"))
}

fn adjustment(location: &str, delta: i64, reason: AdjustReason) -> InventoryEvent {
    InventoryEvent::Adjusted(StockAdjusted {
        sku: sku(),
        location: loc(location),
        delta,
        reason,
        source_version: None,
        reference: None,
        change_from_quantity: None,
    })
}

#[test]
fn quantities_past_the_documented_maximum_are_refused_at_the_boundary() {
    let with_safety = InventoryEvent::Snapshot(StockSnapshot {
        sku: sku(),
        location: loc("wh-1"),
        on_hand: 0,
        source_version: 1,
        safety_stock: Some(3),
        shipped_orders: vec![],
    });
    assert!(validated(&with_safety).is_ok());
    for bad in [
        adjustment("wh-1", i64::MIN, AdjustReason::Correction),
        adjustment("wh-1", MAX_QUANTITY + 1, AdjustReason::Receipt),
        snapshot("wh-1", i64::MAX, 1),
        snapshot("wh-1", 4_000_000_000_000_000_000, 1),
        snapshot("wh-1", 1, u64::MAX),
        reserve("r1", "storefront", None, 1_000_000_000_000_000, None),
    ] {
        let err = validated(&bad).expect_err("out of range");
        assert_eq!(err.code, "invalid_field");
        assert!(err.detail.contains("must be"), "{}", err.detail);
    }
}

#[test]
fn a_level_pushed_past_the_maximum_is_refused_and_nothing_changes() {
    let r = rules();
    let mut s = SkuState::new(sku());
    s.apply_ok(&snapshot("wh-1", MAX_QUANTITY, 1), meta("1"), &r);
    let before = s.clone();
    let err = s.apply(&adjustment("wh-1", 1, AdjustReason::Receipt), meta("2"), &r).expect_err("past the maximum");
    assert_eq!(err.field, "on_hand");
    assert_eq!(s, before);
}

#[test]
fn sums_over_locations_and_shares_of_large_stock_are_exact() {
    let r = rules();
    let mut s = SkuState::new(sku());
    for (i, l) in ["wh-1", "wh-2", "wh-3"].into_iter().enumerate() {
        s.apply_ok(&snapshot(l, MAX_QUANTITY, 1), meta(&i.to_string()), &r);
    }
    assert_eq!(s.available_to_sell(&r, &ch("storefront")), Some(3 * MAX_QUANTITY));
    // partner:ozon: 50 % of wh-1, minus a buffer of 1, rounded down.
    assert_eq!(s.available_to_sell(&r, &ch("partner:ozon")), Some(MAX_QUANTITY / 2 - 1));
}

fn extreme() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(-MAX_QUANTITY - 1),
        Just(-MAX_QUANTITY),
        Just(-1i64),
        Just(0i64),
        Just(1i64),
        Just(MAX_QUANTITY - 1),
        Just(MAX_QUANTITY),
        Just(MAX_QUANTITY + 1),
        Just(4_000_000_000_000_000_000i64),
        Just(i64::MAX),
        any::<i64>(),
        -20..20i64,
    ]
}

proptest! {
    /// Whatever quantities producers send — extremes included — an event is either refused at
    /// the boundary, refused whole by the aggregate (state unchanged), or applied leaving every
    /// level within bounds, every channel's available-to-sell between 0 and its pool, and no
    /// accepted reservation overdrawing.
    #[test]
    fn extreme_quantities_never_wrap_into_a_wrong_answer(
        steps in proptest::collection::vec((0..6u8, 0..3usize, extreme(), 0..6usize), 1..60),
    ) {
        const LOCATIONS: [&str; 3] = ["wh-1", "wh-2", "wh-3"];
        let r = rules();
        let mut s = SkuState::new(sku());
        for (i, (kind, li, value, rid)) in steps.into_iter().enumerate() {
            let rid = format!("r{rid}");
            let location = LOCATIONS[li];
            let ev = match kind {
                0 => snapshot(location, value, i as u64 + 1),
                1 => adjustment(location, value, AdjustReason::Correction),
                2 => reserve(&rid, if li == 0 { "partner:ozon" } else { "storefront" }, None, value, None),
                3 => InventoryEvent::ChannelReported(ChannelReported { sku: sku(), channel: ch("storefront"), shown: value }),
                4 => InventoryEvent::Snapshot(StockSnapshot {
                    sku: sku(), location: loc(location), on_hand: 5, source_version: i as u64 + 1,
                    safety_stock: Some(value), shipped_orders: vec![],
                }),
                _ => InventoryEvent::ReservationReleased(ReservationReleased { reservation_id: rid, sku: sku(), reason: None, channel: None }),
            };
            let Ok(ev) = validated(&ev) else { continue };
            let before = s.clone();
            match s.apply(&ev, meta(&i.to_string()), &r) {
                Err(_) => prop_assert_eq!(&s, &before, "a refused event changed the state"),
                Ok(applied) => {
                    for (l, stock) in &s.locations {
                        prop_assert!(stock.on_hand.abs() <= MAX_QUANTITY, "on_hand {} at {}", stock.on_hand, l);
                        prop_assert!((0..=MAX_QUANTITY).contains(&stock.reserved), "reserved {} at {}", stock.reserved, l);
                    }
                    for rule in r.iter() {
                        let pool: i64 = s.locations.keys().filter(|l| rule.sells_from(l)).map(|l| s.available_at(l).max(0)).sum();
                        let ats = s.available_to_sell(&r, &rule.id).unwrap_or(0);
                        prop_assert!((0..=pool).contains(&ats), "{} sells {} of a pool of {}", rule.id, ats, pool);
                    }
                    if let (Outcome::ReservationAccepted { location }, true) = (&applied.outcome, applied.changed) {
                        prop_assert!(s.available_at(location) >= 0, "oversold at {}", location);
                    }
                }
            }
        }
    }
}

/// `Outcome::CODES` (a metric's label values, created at 0 up front) lists exactly the codes
/// `Outcome::code` gives, in variant order.
#[test]
fn the_listed_outcome_codes_are_exactly_the_codes_of_the_outcomes() {
    let all = [
        Outcome::Applied,
        Outcome::StaleSnapshot { stored_version: 1 },
        Outcome::CoveredBySnapshot { stored_version: 1 },
        Outcome::CasMismatch { expected: 1, actual: 2 },
        Outcome::ReservationAccepted { location: loc("wh-1") },
        Outcome::ReservationRejected { reason: RejectionReason::InsufficientStock, detail: String::new() },
        Outcome::Ignored { reason: "unknown_reservation".into() },
        Outcome::Reconciled { delta: 0 },
    ];
    assert_eq!(all.map(|o| o.code()), Outcome::CODES);
    assert_eq!(RejectionReason::ALL.map(|r| r.to_string()), RejectionReason::ALL.map(|r| r.code().to_owned()));
}
