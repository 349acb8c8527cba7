//! Demand ingest end to end on the embedded stack (embedded log, SQLite, memory cache): every
//! sale, supply and return staged once and rolled up per (sku, location, business day) however
//! often it is delivered and across a restart; events with unknown references parked and
//! staged when the reference arrives; bad input dead-lettered with its reason.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::json;
use tally_forecast::day;
use tally_forecast::demand::types;
use tally_forecast::reference::SkuInfo;
use tally_forecast_engine::records;
use tally_store::demand::DemandStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_staged_once_however_often_it_is_delivered_and_across_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = stack(dir.path()).await;
    let skus: Vec<SkuInfo> = (0..6).map(|i| sku(&format!("sku-{i}"), 6)).collect();
    let locations = vec![location("berlin", "Europe/Berlin"), location("tokyo", "Asia/Tokyo")];
    s.engine.put_references(skus, locations).await.expect("references");

    let mut rng = Lcg(7);
    let mut expected: BTreeMap<(String, String, i32), (i64, i64, i64)> = BTreeMap::new();
    let mut records = Vec::new();
    for i in 0..3000 {
        let sku = format!("sku-{}", rng.next(6));
        let (loc, offset_h) = if rng.next(2) == 0 { ("berlin", 1) } else { ("tokyo", 9) };
        // Winter instants: Berlin is UTC+1, Tokyo UTC+9.
        let at_s = 1_767_225_600 + rng.next(20 * 86_400) as i64; // 2026-01-01 …
        let local_day = (at_s + offset_h * 3600).div_euclid(86_400) as i32;
        let at = jiff::Timestamp::from_second(at_s).expect("instant").to_string();
        let qty = 1 + rng.next(5) as i64;
        let (ty, data, delta) = match rng.next(10) {
            0 => (types::RETURN, json!({"sku": sku, "location": loc, "quantity": qty, "occurred_at": at}), (0, qty, 0)),
            1 => {
                let ordered = jiff::Timestamp::from_second(at_s - 5 * 86_400).expect("instant").to_string();
                let data = json!({"sku": sku, "location": loc, "quantity": qty, "unit": "pack", "ordered_at": ordered, "received_at": at});
                (types::SUPPLY, data, (0, 0, qty * 6))
            }
            // A negative sale is a refund: a return.
            2 => (types::SALE, json!({"sku": sku, "location": loc, "quantity": -qty, "occurred_at": at}), (0, qty, 0)),
            _ => (
                types::SALE,
                json!({"sku": sku, "location": loc, "quantity": qty, "promo": i % 3 == 0, "occurred_at": at}),
                (qty, 0, 0),
            ),
        };
        let e = expected.entry((sku, loc.to_owned(), local_day)).or_default();
        *e = (e.0 + delta.0, e.1 + delta.1, e.2 + delta.2);
        records.push(record(&format!("ev-{i}"), ty, data));
    }
    // Every fifth event delivered twice in the first run (a producer retry).
    let first: Vec<_> = records
        .iter()
        .take(2000)
        .flat_map(|r| {
            let again = r.1.payload.len() % 5 == 0;
            std::iter::once(r.clone()).chain(again.then(|| r.clone()))
        })
        .collect();
    publish(&s.bus, first).await;
    let store = s.engine.store.clone();
    eventually("the first 2,000 events", Duration::from_secs(60), || async {
        tally_runtime::ConsumerStats::get(&s.engine.consumer_stats.applied) >= 2000
    })
    .await;
    s.stop().await;

    // Restarted: the rest, and a third of everything again (redelivered by a producer that
    // lost its acknowledgements).
    let s = stack(dir.path()).await;
    let again: Vec<_> = records.iter().filter(|r| r.1.payload.len() % 3 == 0).cloned().collect();
    publish(&s.bus, records[2000..].to_vec()).await;
    publish(&s.bus, again).await;
    let total = |m: &BTreeMap<(String, String, i32), (i64, i64, i64)>| m.values().map(|v| v.0 + v.1 + v.2).sum::<i64>();
    let want = total(&expected);
    eventually("every event staged", Duration::from_secs(60), || async { total(&rollup(&store).await) >= want }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rollup(&store).await, expected, "each event counted once, on its local business day");
    assert_eq!(store.parked_count().await.expect("parked"), 0);
    // Every staged series is refreshed on its own (incremental runs).
    let keys: Vec<String> =
        store.series().await.expect("series").iter().map(|(s, l)| records::forecast_doc(s, l)).collect();
    assert_eq!(keys.len(), 12);
    eventually("a forecast for every series", Duration::from_secs(60), || async {
        tally_store::ledger::DocumentStore::documents(&store, keys.clone()).await.expect("documents").len() == 12
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_unknown_references_are_parked_and_staged_when_the_references_arrive() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = stack(dir.path()).await;
    s.engine
        .put_references(vec![sku("known", 1)], vec![location("berlin", "Europe/Berlin")])
        .await
        .expect("references");
    let at = "2026-03-10T12:00:00Z";
    publish(
        &s.bus,
        vec![
            record("p1", types::SALE, json!({"sku": "new", "location": "berlin", "quantity": 2, "occurred_at": at})),
            record("p2", types::SALE, json!({"sku": "known", "location": "lisbon", "quantity": 3, "occurred_at": at})),
            record("p3", types::SALE, json!({"sku": "new", "location": "lisbon", "quantity": 4, "occurred_at": at})),
            // Valid alone, invalid with its catalogue entry: 10^12 packs of 10^6 units.
            record("p4", types::SALE, json!({"sku": "huge", "location": "berlin", "quantity": 1_000_000_000_000i64, "unit": "pack", "occurred_at": at})),
            record("s1", types::SALE, json!({"sku": "known", "location": "berlin", "quantity": 1, "occurred_at": at})),
        ],
    )
    .await;
    let store = s.engine.store.clone();
    eventually("four events parked", Duration::from_secs(30), || async {
        store.parked_count().await.expect("count") == 4
    })
    .await;
    let march_10 = day::parse_iso("2026-03-10").expect("day");
    assert_eq!(
        rollup(&store).await.keys().cloned().collect::<Vec<_>>(),
        vec![("known".into(), "berlin".into(), march_10)]
    );

    s.engine.put_references(vec![sku("new", 1), sku("huge", 1_000_000)], vec![]).await.expect("references");
    eventually("p1 and p4 released", Duration::from_secs(30), || async {
        store.parked_count().await.expect("count") == 2
    })
    .await;
    let dead = dead_letters(&s.bus, "demand.sales", 1).await;
    assert_eq!(
        dead,
        vec![("p4".to_owned(), "invalid_field".to_owned())],
        "invalid with its references: dead-lettered whole"
    );

    s.engine.put_references(vec![], vec![location("lisbon", "Europe/Lisbon")]).await.expect("references");
    eventually("all released", Duration::from_secs(30), || async { store.parked_count().await.expect("count") == 0 })
        .await;
    let staged = rollup(&store).await;
    let sold = |sku: &str, loc: &str| staged.get(&(sku.to_owned(), loc.to_owned(), march_10)).map(|v| v.0);
    assert_eq!(
        (sold("new", "berlin"), sold("known", "lisbon"), sold("new", "lisbon"), sold("known", "berlin")),
        (Some(2), Some(3), Some(4), Some(1))
    );
    assert_eq!(sold("huge", "berlin"), None);
    // A second sweep (another instance's, or a replay) stages nothing twice.
    let swept = s.engine.unpark().await.expect("sweep");
    assert_eq!((swept.staged, swept.dead_lettered), (0, 0));
    assert_eq!(rollup(&store).await, staged);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_demand_events_are_dead_lettered_with_a_reason_and_nothing_is_staged() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = stack(dir.path()).await;
    s.engine.put_references(vec![sku("a", 1)], vec![location("b", "UTC")]).await.expect("references");
    let at = "2026-03-10T12:00:00Z";
    let (_, mut not_json) =
        record("bad-json", types::SALE, json!({"sku": "a", "location": "b", "quantity": 1, "occurred_at": at}));
    not_json.payload = b"{not json".to_vec();
    let (_, mut wrong_type) =
        record("bad-type", types::SALE, json!({"sku": "a", "location": "b", "quantity": 1, "occurred_at": at}));
    for (name, value) in wrong_type.headers.iter_mut() {
        if name == "ce_type" {
            *value = "demand.forecast".into();
        }
    }
    publish(
        &s.bus,
        vec![
            ("demand.sales", not_json),
            ("demand.sales", wrong_type),
            record("bad-zero", types::SALE, json!({"sku": "a", "location": "b", "quantity": 0, "occurred_at": at})),
            record(
                "bad-time",
                types::SALE,
                json!({"sku": "a", "location": "b", "quantity": 1, "occurred_at": "yesterday"}),
            ),
            record(
                "bad-old",
                types::SALE,
                json!({"sku": "a", "location": "b", "quantity": 1, "occurred_at": "1990-01-01T00:00:00Z"}),
            ),
        ],
    )
    .await;
    let dead = dead_letters(&s.bus, "demand.sales", 5).await;
    let reasons: HashSet<(String, String)> = dead.into_iter().collect();
    let want: HashSet<(String, String)> = [
        ("bad-json", "invalid_payload"),
        ("bad-type", "unknown_type"),
        ("bad-zero", "invalid_field"),
        ("bad-time", "invalid_field"),
        ("bad-old", "invalid_field"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(reasons, want);
    assert!(rollup(&s.engine.store).await.is_empty());
    assert_eq!(s.engine.store.parked_count().await.expect("parked"), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_import_stages_each_row_once_parks_unknown_references_and_reports_bad_rows() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = stack(dir.path()).await;
    s.engine.put_references(vec![sku("milk", 6)], vec![location("berlin", "Europe/Berlin")]).await.expect("references");
    let csv = "type,sku,location,quantity,unit,occurred_at,ordered_at,received_at,promo\n\
               sale,milk,berlin,3,,2026-03-10T10:00:00Z,,,true\n\
               sale,milk,berlin,2,pack,2026-03-10T22:30:00Z,,,\n\
               return,milk,berlin,1,,2026-03-11T09:00:00Z,,,\n\
               supply,milk,berlin,60,,,2026-03-01T08:00:00Z,2026-03-05T08:00:00Z,\n\
               sale,bread,berlin,4,,2026-03-10T10:00:00Z,,,\n\
               sale,milk,berlin,0,,2026-03-10T10:00:00Z,,,\n\
               refund,milk,berlin,1,,2026-03-10T10:00:00Z,,,\n";
    let refs = &s.engine.references;
    let first = tally_forecast_engine::import::import_csv(&s.engine.store, refs, "/import/march", csv.as_bytes())
        .await
        .expect("import");
    assert_eq!((first.rows, first.staged, first.parked, first.refused_count), (7, 4, 1, 2));
    assert_eq!(first.refused.iter().map(|(line, _)| *line).collect::<Vec<_>>(), vec![7, 8]);
    assert!(first.refused[0].1.contains("quantity") && first.refused[1].1.contains("type"), "{:?}", first.refused);
    let again = tally_forecast_engine::import::import_csv(&s.engine.store, refs, "/import/march", csv.as_bytes())
        .await
        .expect("again");
    assert_eq!(again.staged, 4, "staging is idempotent: the rows are there already");
    let day = |d: &str| day::parse_iso(d).expect("day");
    let staged = rollup(&s.engine.store).await;
    // 3 + 2 packs of 6 on the 10th (22:30 UTC is still the 10th in Berlin in March: UTC+1 … 23:30).
    assert_eq!(staged.get(&("milk".into(), "berlin".into(), day("2026-03-10"))), Some(&(15, 0, 0)));
    assert_eq!(staged.get(&("milk".into(), "berlin".into(), day("2026-03-11"))), Some(&(0, 1, 0)));
    assert_eq!(staged.get(&("milk".into(), "berlin".into(), day("2026-03-05"))), Some(&(0, 0, 60)));
    assert_eq!(s.engine.store.parked_count().await.expect("parked"), 1);
    s.engine.put_references(vec![sku("bread", 1)], vec![]).await.expect("references");
    eventually("bread released", Duration::from_secs(20), || async {
        s.engine.store.parked_count().await.expect("n") == 0
    })
    .await;
    assert_eq!(
        rollup(&s.engine.store).await.get(&("bread".into(), "berlin".into(), day("2026-03-10"))),
        Some(&(4, 0, 0))
    );
    s.stop().await;
}
