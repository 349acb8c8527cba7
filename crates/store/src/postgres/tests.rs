//! The PostgreSQL store against a real server (started by `scripts/test.sh`), a fresh
//! database per test.

use super::*;
use crate::conformance;

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
        store.flush(&FlushBatch { states, ..Default::default() }).await.expect("flush");
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
    let applied = ra.expect("migrate a").len() + rb.expect("migrate b").len();
    assert_eq!(applied, 1, "exactly one of them applied the migration");
    assert!(a.migrate().await.expect("again").is_empty());
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
        store.flush(&FlushBatch { states: vec![conformance::state("S", 1, 1)], ..Default::default() }).await.is_err()
    );
}
