//! The PostgreSQL store against a real server (started by `scripts/test.sh`), a fresh
//! database per test.

use super::*;
use crate::conformance;
use crate::{InventoryStore, Journal, Ledger};
use tally_core::{EventKey, Sku};

#[tokio::test]
async fn postgres_flush_writes_effects_and_offsets_together() {
    conformance::flush_writes_effects_and_offsets_together(testing::store().await).await;
}

#[tokio::test]
async fn postgres_versioned_upsert_keeps_the_newest_in_any_order() {
    for versions in [vec![1, 2, 3], vec![3, 2, 1], vec![5, 9, 2, 9, 7], vec![4, 4, 4]] {
        conformance::versioned_upsert_keeps_the_newest(testing::store().await, &versions).await;
    }
}

#[tokio::test]
async fn a_flush_is_one_statement_per_table_however_many_rows() {
    let store = testing::store().await;
    store.migrate().await.expect("migrate");
    for n in [10, 5000] {
        let before = store.statements();
        let states = (0..n).map(|i| conformance::state(&format!("S{n}-{i}"), i, 1)).collect();
        store.flush(&conformance::flush(states, Vec::new(), Vec::new())).await.expect("flush");
        // BEGIN, sku upsert, levels upsert, availability upsert, COMMIT — for 10 rows or 5,000.
        assert_eq!(store.statements() - before, 5, "{n} rows");
    }
    let loaded = store.load_states(vec![Sku::parse("S5000-4999").expect("valid")]).await.expect("load");
    assert_eq!(loaded[0].locations.values().next().map(|l| l.on_hand), Some(4999));
}

#[tokio::test]
async fn migrations_apply_once_even_when_two_processes_race() {
    let url = testing::fresh_database().await;
    let opts = PostgresStoreOptions {
        url,
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
    };
    let (a, b) = (PostgresStore::connect(&opts).expect("pool"), PostgresStore::connect(&opts).expect("pool"));
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let mut applied = ra.expect("migrate a");
    applied.extend(rb.expect("migrate b"));
    applied.sort();
    let all: Vec<String> = migrations::MIGRATIONS.iter().map(|m| format!("{}: {}", m.version, m.name)).collect();
    assert_eq!(applied, all, "each migration applied by exactly one of them");
    assert!(a.migrate().await.expect("again").is_empty());
}

/// The indexes of `inventory_audit` and whether each is valid.
async fn audit_indexes(store: &PostgresStore) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = 'inventory_audit'::regclass ORDER BY 1",
    )
    .fetch_all(&store.pool)
    .await
    .expect("list indexes")
}

#[tokio::test]
async fn the_resume_window_is_read_through_a_brin_index_not_an_offset_btree() {
    let store = testing::store().await;
    store.migrate().await.expect("migrate");
    let names: Vec<String> = audit_indexes(&store).await.into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"inventory_audit_by_offset_brin".to_owned()), "{names:?}");
    assert!(!names.contains(&"inventory_audit_by_offset".to_owned()), "{names:?}");

    // Two partitions far apart in offsets, interleaved as workers flush them: each range
    // read returns exactly its own rows, in offset order.
    let applied = |partition: u32, offsets: std::ops::Range<u64>| -> Vec<conformance::AppliedEvent> {
        let key = |o: u64| EventKey { source: "/t".into(), id: format!("p{partition}-{o}") };
        offsets.map(|o| conformance::applied_event(key(o), "t", partition, o)).collect()
    };
    for chunk in 0..4u64 {
        let mut rows = applied(0, chunk * 250..(chunk + 1) * 250);
        rows.extend(applied(1, 1_000_000 + chunk * 250..1_000_000 + (chunk + 1) * 250));
        store.flush(&conformance::flush(Vec::new(), rows, Vec::new())).await.expect("flush");
    }
    let mut conn = store.pool.acquire().await.expect("connection");
    sqlx::query("SELECT brin_summarize_new_values('inventory_audit_by_offset_brin')")
        .execute(&mut *conn)
        .await
        .expect("summarise");
    let got = store.processed_between("t", 1, 1_000_100, 1_000_700).await.expect("read");
    let offsets: Vec<u64> = got.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (1_000_100..1_000_700).collect::<Vec<_>>());
    assert!(got.iter().all(|p| p.partition == 1 && p.key.id == format!("p1-{}", p.offset)));
    assert_eq!(store.processed_between("t", 0, 990, 2_000).await.expect("read").len(), 10);
}

#[tokio::test]
async fn an_index_build_left_invalid_by_an_interruption_is_rebuilt_by_the_next_migrate() {
    let store = testing::store().await;
    store.migrate().await.expect("migrate");
    // What a concurrent build killed half-way leaves: the index exists but is not valid, and
    // the migration is not recorded.
    let mut conn = store.pool.acquire().await.expect("connection");
    for statement in [
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'inventory_audit_by_offset_brin'::regclass",
        "DELETE FROM schema_migrations WHERE version = 2",
    ] {
        sqlx::query(statement).execute(&mut *conn).await.expect(statement);
    }
    drop(conn);
    assert!(audit_indexes(&store).await.contains(&("inventory_audit_by_offset_brin".to_owned(), false)));

    let applied = store.migrate().await.expect("migrate again");
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert!(audit_indexes(&store).await.contains(&("inventory_audit_by_offset_brin".to_owned(), true)));
}

/// Each partition of `demand_events` and whether it has an index attached to the parent's
/// supplies index; and whether the parent's is valid.
async fn supplies_indexes(store: &PostgresStore) -> (Vec<(String, bool)>, Option<bool>) {
    let partitions = sqlx::query_as(
        "SELECT p.relname::text, EXISTS (SELECT 1 FROM pg_inherits a JOIN pg_index x ON x.indexrelid = a.inhrelid
                                       WHERE a.inhparent = to_regclass('demand_supplies_by_series')
                                         AND x.indrelid = p.oid AND x.indisvalid)
         FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
         WHERE i.inhparent = 'demand_events'::regclass ORDER BY 1",
    )
    .fetch_all(&store.pool)
    .await
    .expect("list partitions");
    let parent = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('demand_supplies_by_series')",
    )
    .fetch_optional(&store.pool)
    .await
    .expect("parent index");
    (partitions, parent)
}

#[tokio::test]
async fn the_supplies_index_covers_partitions_made_before_and_after_it() {
    use crate::demand::DemandStore;
    let store = testing::store().await;
    store.migrate().await.expect("migrate");
    store.documents("forecast").ensure_partitions(20_454, 20_454 + 70).await.expect("partitions"); // Jan … Mar 2026
    let (partitions, parent) = supplies_indexes(&store).await;
    assert_eq!(partitions.len(), 3, "{partitions:?}");
    assert!(partitions.iter().all(|(_, indexed)| *indexed), "made after: {partitions:?}");
    assert_eq!(parent, Some(true));

    // Partitions that exist when the migration runs (a database staged by the release
    // before): each gets its index built concurrently and attached, then the parent's is valid.
    let mut conn = store.pool.acquire().await.expect("connection");
    for statement in ["DROP INDEX demand_supplies_by_series", "DELETE FROM schema_migrations WHERE version = 7"] {
        sqlx::query(statement).execute(&mut *conn).await.expect(statement);
    }
    drop(conn);
    let (partitions, parent) = supplies_indexes(&store).await;
    assert!(partitions.iter().all(|(_, indexed)| !indexed) && parent.is_none(), "{partitions:?}");
    // Half-way: one partition already has its index, valid, under the name the migration uses.
    sqlx::query("CREATE INDEX demand_events_2026_02_supplies ON demand_events_2026_02 (sku, location, business_day) INCLUDE (lead_time_days) WHERE kind = 'supply' AND lead_time_days IS NOT NULL")
        .execute(&store.pool)
        .await
        .expect("one partition's index");
    let applied = store.migrate().await.expect("migrate again");
    assert_eq!(applied.len(), 1, "{applied:?}");
    let (partitions, parent) = supplies_indexes(&store).await;
    assert!(partitions.iter().all(|(_, indexed)| *indexed), "made before: {partitions:?}");
    assert_eq!(parent, Some(true));

    // The read uses it: supplies come from the index alone.
    let mut conn = store.pool.acquire().await.expect("connection");
    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await.expect("set");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT business_day, lead_time_days FROM demand_events
         WHERE sku = 'a' AND location = 'b' AND kind = 'supply' AND lead_time_days IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    assert!(plan.iter().any(|l| l.contains("Index Only Scan using demand_events_2026_01_supplies")), "{plan:#?}");
}

#[tokio::test]
async fn a_statement_past_the_timeout_fails_instead_of_hanging() {
    let store = PostgresStore::connect(&PostgresStoreOptions {
        url: testing::fresh_database().await,
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_millis(200),
    })
    .expect("pool");
    let err = sqlx::query("SELECT pg_sleep(2)").execute(&store.pool).await.expect_err("cancelled");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    store.ping().await.expect("the connection is usable afterwards");
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_on_use_not_at_startup() {
    let store = PostgresStore::connect(&PostgresStoreOptions {
        url: "postgres://tally@127.0.0.1:1/tally".into(),
        max_connections: 1,
        acquire_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(1),
    })
    .expect("a lazy pool is created while the database is down");
    assert!(store.ping().await.is_err());
    assert!(
        store.flush(&conformance::flush(vec![conformance::state("S", 1, 1)], Vec::new(), Vec::new())).await.is_err()
    );
}

#[tokio::test]
async fn a_flush_with_some_events_already_recorded_stores_the_rest_and_its_offset() {
    let store = testing::store().await;
    store.migrate().await.expect("migrate");
    let key = |i: u64| EventKey { source: "/t".into(), id: format!("e{i}") };
    let events = |range: std::ops::Range<u64>| range.map(|i| conformance::applied_event(key(i), "t", 0, i)).collect();
    let offset =
        |next_offset| vec![crate::ConsumerOffset { group: "g".into(), topic: "t".into(), partition: 0, next_offset }];
    store.flush(&conformance::flush(Vec::new(), events(0..10), offset(10))).await.expect("flush");
    // Events 5..10 again (applied again from beyond the window, say) with new ones 10..20.
    let before = store.statements();
    store
        .flush(&conformance::flush(Vec::new(), events(5..20), offset(20)))
        .await
        .expect("a duplicate audit row does not fail the flush");
    assert!(store.statements() - before > 4, "the flush was redone skipping the duplicates");
    let recorded = store.processed_between("t", 0, 0, 100).await.expect("read");
    assert_eq!(recorded.iter().map(|p| p.offset).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    assert_eq!(store.committed_offset("g", "t", 0).await.expect("offset"), Some(20));
}

#[tokio::test]
async fn postgres_ledger_documents_pass_the_ledger_conformance_suite() {
    let store = testing::store().await;
    conformance::ledger_documents_round_trip(store.documents("fraud"), store.documents("analytics")).await;
}

#[tokio::test]
async fn postgres_demand_staging_passes_the_demand_conformance_suite() {
    conformance::demand_staging_is_exactly_once(testing::store().await.documents("forecast")).await;
}

#[tokio::test]
async fn postgres_demand_event_partitions_are_made_ahead_and_on_demand() {
    conformance::event_partitions_are_made_ahead_and_on_demand(testing::store().await.documents("forecast")).await;
}

#[tokio::test]
async fn the_series_listing_names_each_series_once_in_order() {
    use crate::demand::DemandStore;
    let store = testing::store().await;
    store.migrate().await.expect("migrate");
    // Series sharing SKUs and locations, some with many days, some with one, and names
    // that order differently as a pair than one by one ("a" + "b-1" against "a-b" + "1").
    sqlx::query(
        "INSERT INTO demand_daily (sku, location, business_day, sold, returned, received, revenue, promo_sold,
                                   events, updated_at_ms)
         SELECT s, l, date '2026-01-01' + d, 1, 0, 0, 1.0, 0, 1, 0
         FROM unnest(ARRAY['a', 'a', 'a-b', 'milk', 'milk', 'z'], ARRAY['b-1', 'c', '1', 'berlin', 'paris', 'c'],
                     ARRAY[40, 1, 3, 730, 1, 2]) AS x(s, l, days),
              generate_series(0, days - 1) AS d",
    )
    .execute(&store.pool)
    .await
    .expect("days");
    let expected: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT sku, location FROM demand_daily ORDER BY sku, location")
            .fetch_all(&store.pool)
            .await
            .expect("distinct");
    assert_eq!(expected.len(), 6);
    assert_eq!(store.documents("forecast").series().await.expect("series"), expected);
}

#[tokio::test]
async fn large_ledger_bodies_are_compressed_with_lz4() {
    use crate::ledger::{AppendedRow, Document, DocumentStore, Documents, Flush};
    let store = testing::store().await;
    store.migrate().await.expect("migrate");
    // Past the 2 kB at which PostgreSQL compresses a value, and compressible, like a forecast.
    let body = serde_json::to_string(&vec![12.345_678_9_f64; 600]).expect("json");
    let mut effects = Documents::default();
    effects.put("forecast/a".to_owned(), Document { version: 1, body: body.clone() });
    effects.appended.push(AppendedRow { id: "run/a".into(), key: "run".into(), body: body.clone() });
    Journal::<Documents>::flush(
        &store.documents("forecast"),
        &[Flush { effects, processed: Vec::new(), offsets: Vec::new() }],
    )
    .await
    .expect("flush");
    for table in ["ledger_documents", "ledger_appended"] {
        let (method, stored): (Option<String>, i32) =
            sqlx::query_as(&format!("SELECT pg_column_compression(body), pg_column_size(body) FROM {table}"))
                .fetch_one(&store.pool)
                .await
                .expect(table);
        assert_eq!(method.as_deref(), Some("lz4"), "{table}");
        assert!(stored < body.len() as i32 / 4, "{table}: {stored} bytes stored for {}", body.len());
    }
    let read = store.documents("forecast").documents(vec!["forecast/a".into()]).await.expect("read");
    assert_eq!(serde_json::from_str::<Vec<f64>>(&read[0].2).expect("json"), vec![12.345_678_9; 600]);
}
