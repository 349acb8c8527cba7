use proptest::prelude::*;

use super::*;
use crate::conformance;
use crate::{InventoryStore, Journal, Ledger};
use tally_core::Sku;

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(SqliteStoreOptions { path: dir.path().join("tally.db"), durability: Durability::Normal })
        .expect("open store")
}

#[tokio::test]
async fn sqlite_flush_writes_effects_and_offsets_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::flush_writes_effects_and_offsets_together(open(&dir)).await;
}

#[tokio::test]
async fn a_flush_costs_one_statement_per_table_per_thousand_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    store.migrate().await.expect("migrate");
    let before = store.statements();
    let states = (0..500).map(|i| conformance::state(&format!("S{i}"), i, 1)).collect();
    store.flush(&conformance::flush(states, Vec::new(), Vec::new())).await.expect("flush");
    // BEGIN, sku upsert, levels upsert, availability upsert, COMMIT.
    assert_eq!(store.statements() - before, 5);
    let before = store.statements();
    let states = (0..2500).map(|i| conformance::state(&format!("T{i}"), i, 1)).collect();
    store.flush(&conformance::flush(states, Vec::new(), Vec::new())).await.expect("flush");
    // BEGIN, 3 chunks for each of the three tables, COMMIT.
    assert_eq!(store.statements() - before, 11);
    let loaded = store.load_states(vec![Sku::parse("T2499").expect("valid")]).await.expect("load");
    assert_eq!(loaded[0].locations.values().next().map(|l| l.on_hand), Some(2499));
}

#[tokio::test]
async fn migrations_apply_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    assert_eq!(store.migrate().await.expect("migrate").len(), 6);
    assert!(store.migrate().await.expect("migrate again").is_empty());
}

#[tokio::test]
async fn a_series_supplies_are_read_from_their_index_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    store.migrate().await.expect("migrate");
    let conn = tally_sqlite::open(&dir.path().join("tally.db"), Durability::Normal).expect("connection");
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT business_day, lead_time_days FROM demand_events
             WHERE sku = 'a' AND location = 'b' AND kind = 'supply' AND lead_time_days IS NOT NULL
             ORDER BY business_day",
        )
        .expect("explain")
        .query_map([], |r| r.get(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan rows");
    assert_eq!(
        plan,
        vec!["SEARCH demand_events USING COVERING INDEX demand_supplies_by_series (sku=? AND location=?)"]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn stale_flush_never_overwrites_a_newer_row(versions in proptest::collection::vec(1..50u64, 1..12)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        rt.block_on(conformance::versioned_upsert_keeps_the_newest(open(&dir), &versions));
    }
}

#[tokio::test]
async fn sqlite_ledger_documents_pass_the_ledger_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    conformance::ledger_documents_round_trip(store.documents("fraud"), store.documents("analytics")).await;
}

#[tokio::test]
async fn sqlite_demand_staging_passes_the_demand_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::demand_staging_is_exactly_once(open(&dir).documents("forecast")).await;
}
