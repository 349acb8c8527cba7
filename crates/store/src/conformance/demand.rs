//! Demand staging's conformance: what both backends must do with staged, parked and
//! reference rows.

use crate::demand::{
    DailyRow, DemandEffects, DemandStore, LocationRow, ParkedRow, SalesDay, SkuRow, StagedRow, Unparked,
};
use crate::ledger::Flush;
use crate::{ConsumerOffset, ProcessedEvent};

/// A staged sale of `units` on `day` (days since 1970-01-01) with offset `offset`.
pub fn staged(id: &str, kind: &str, sku: &str, day: i32, units: i64, offset: u64) -> StagedRow {
    StagedRow {
        source: "/pos".into(),
        id: id.into(),
        kind: kind.into(),
        sku: sku.into(),
        location: "berlin-1".into(),
        day,
        units,
        revenue: if kind == "sale" { units as f64 * 2.0 } else { 0.0 },
        promo: offset.is_multiple_of(2),
        lead_time_days: (kind == "supply").then_some(5),
        event_time_ms: 1_700_000_000_000,
        topic: "demand.sales".into(),
        partition: 0,
        offset,
    }
}

/// A parked event missing its SKU.
pub fn parked(id: &str, sku: &str, offset: u64) -> ParkedRow {
    ParkedRow {
        source: "/pos".into(),
        id: id.into(),
        ty: "demand.sale".into(),
        sku: sku.into(),
        location: "berlin-1".into(),
        missing: "sku".into(),
        headers: r#"[["ce_id","x"]]"#.into(),
        payload: r#"{"sku":"x"}"#.into(),
        event_time_ms: 1_700_000_000_000,
        topic: "demand.sales".into(),
        partition: 0,
        offset,
    }
}

fn flush_of(staged: Vec<StagedRow>, parked: Vec<ParkedRow>, next_offset: u64) -> Vec<Flush<DemandEffects>> {
    let processed = staged
        .iter()
        .map(|r| (&r.source, &r.id, r.offset))
        .chain(parked.iter().map(|p| (&p.source, &p.id, p.offset)))
        .map(|(source, id, offset)| ProcessedEvent {
            key: tally_core::EventKey { source: source.clone(), id: id.clone() },
            topic: "demand.sales".into(),
            partition: 0,
            offset,
            outcome: None,
            digest: Some(1),
        })
        .collect();
    let offset = ConsumerOffset { group: "forecast".into(), topic: "demand.sales".into(), partition: 0, next_offset };
    vec![Flush { effects: DemandEffects { staged, parked }, processed, offsets: vec![offset] }]
}

/// Staged events land once and roll up per (sku, location, day) — a flush retried whole, or
/// an event flushed again in a later flush, changes neither table; events of a month without
/// a partition yet get one; parked events wait for their references and are staged once by
/// `unpark`, however often it is called.
pub async fn demand_staging_is_exactly_once<S: DemandStore>(store: S) {
    store.migrate().await.expect("migrate");
    assert_eq!(store.last_day().await.expect("last day"), None, "nothing staged yet");
    let jan = 20_454; // 2026-01-01
    let first = flush_of(
        vec![
            staged("s1", "sale", "milk", jan, 3, 0),
            staged("s2", "sale", "milk", jan, 4, 1),
            staged("r1", "return", "milk", jan, 1, 2),
            staged("u1", "supply", "milk", jan + 40, 50, 3),
        ],
        vec![parked("p1", "bread", 4), parked("p2", "bread", 5)],
        6,
    );
    store.flush(&first).await.expect("flush");
    store.flush(&first).await.expect("the same flush retried");
    // A redelivered event in a later flush, beside a new one a year later.
    store
        .flush(&flush_of(
            vec![staged("s2", "sale", "milk", jan, 4, 1), staged("s3", "sale", "milk", jan + 365, 7, 6)],
            vec![],
            7,
        ))
        .await
        .expect("flush");
    // The same event again with another business day (its location's time zone corrected in
    // between): still staged once.
    store.flush(&flush_of(vec![staged("s1", "sale", "milk", jan + 1, 3, 0)], vec![], 7)).await.expect("flush");
    assert_eq!(store.committed_offset("forecast", "demand.sales", 0).await.expect("offset"), Some(7));
    let daily = store.daily("milk".into(), "berlin-1".into()).await.expect("daily");
    let expected = vec![
        DailyRow { day: jan, sold: 7, returned: 1, received: 0, revenue: 14.0, promo_sold: 3, events: 3 },
        DailyRow { day: jan + 40, sold: 0, returned: 0, received: 50, revenue: 0.0, promo_sold: 0, events: 1 },
        DailyRow { day: jan + 365, sold: 7, returned: 0, received: 0, revenue: 14.0, promo_sold: 7, events: 1 },
    ];
    assert_eq!(daily, expected, "each event counted once");
    assert_eq!(store.series().await.expect("series"), vec![("milk".to_owned(), "berlin-1".to_owned())]);
    assert_eq!(store.supplies("milk".into(), "berlin-1".into()).await.expect("supplies"), vec![(jan + 40, 5)]);
    assert_eq!(store.last_day().await.expect("last day"), Some(jan + 365));

    // Parked until both references exist.
    assert_eq!(store.parked_count().await.expect("count"), 2);
    assert!(store.parked_ready(10).await.expect("ready").is_empty(), "no reference yet");
    store
        .put_locations(vec![LocationRow {
            location: "berlin-1".into(),
            region: "DE".into(),
            time_zone: "Europe/Berlin".into(),
        }])
        .await
        .expect("locations");
    assert!(store.parked_ready(10).await.expect("ready").is_empty(), "the SKU is still unknown");
    let bread =
        SkuRow { sku: "bread".into(), category: "bakery".into(), brand: "b".into(), price: 2.5, pack_size: 1, moq: 10 };
    store.put_skus(vec![bread.clone()]).await.expect("skus");
    assert_eq!(store.skus(vec!["bread".into(), "cake".into()]).await.expect("skus"), vec![bread]);
    let ready = store.parked_ready(10).await.expect("ready");
    assert_eq!(ready, vec![parked("p1", "bread", 4), parked("p2", "bread", 5)], "a parked row round-trips whole");
    let release = vec![
        Unparked { source: "/pos".into(), id: "p1".into(), staged: Some(staged("p1", "sale", "bread", jan, 2, 4)) },
        // Invalid with its references: dead-lettered by the caller, removed here.
        Unparked { source: "/pos".into(), id: "p2".into(), staged: None },
    ];
    let landed = store.unpark(release.clone()).await.expect("unpark");
    assert_eq!(landed, vec![staged("p1", "sale", "bread", jan, 2, 4)]);
    assert!(store.unpark(release).await.expect("a second sweeper").is_empty(), "staged once");
    assert_eq!(store.parked_count().await.expect("count"), 0);
    let bread_daily = store.daily("bread".into(), "berlin-1".into()).await.expect("daily");
    assert_eq!(bread_daily.iter().map(|d| (d.day, d.sold)).collect::<Vec<_>>(), vec![(jan, 2)]);
    // Many series at once: each as read alone, in the order asked, an unknown one empty.
    let asked = vec![
        ("bread".to_owned(), "berlin-1".to_owned()),
        ("nothing".to_owned(), "here".to_owned()),
        ("milk".to_owned(), "berlin-1".to_owned()),
    ];
    let many = store.histories(asked.clone()).await.expect("histories");
    assert_eq!(many.len(), 3);
    for ((sku, location), history) in asked.into_iter().zip(many) {
        let daily = store.daily(sku.clone(), location.clone()).await.expect("daily");
        assert_eq!(history.daily, daily.iter().map(SalesDay::from).collect::<Vec<_>>(), "{sku}");
        assert_eq!(history.supplies, store.supplies(sku, location).await.expect("supplies"));
    }
}

/// PostgreSQL's monthly partitions: made ahead on request, once, and on demand for a month a
/// flush needs.
pub async fn event_partitions_are_made_ahead_and_on_demand<S: DemandStore>(store: S) {
    store.migrate().await.expect("migrate");
    let created = store.ensure_partitions(20_454, 20_454 + 70).await.expect("ensure"); // Jan … Mar 2026
    assert_eq!(created, vec!["demand_events_2026_01", "demand_events_2026_02", "demand_events_2026_03"]);
    assert!(store.ensure_partitions(20_454, 20_454 + 70).await.expect("again").is_empty(), "made once");
    // 2019-06-15: no partition yet; the flush makes it.
    store.flush(&flush_of(vec![staged("old", "sale", "milk", 18_062, 1, 0)], vec![], 1)).await.expect("flush");
    let partitions = store.event_partitions().await.expect("partitions");
    assert_eq!(
        partitions,
        vec!["demand_events_2019_06", "demand_events_2026_01", "demand_events_2026_02", "demand_events_2026_03"]
    );
}
