//! The conformance suite every store implementation must pass (compiled for tests and with
//! the `testing` feature, never into a release build): the ledger's here, inventory's tables'
//! in [`inventory`] (re-exported).

use tally_core::EventKey;

use crate::{ConsumerOffset, ProcessedEvent, RawOutcome};

mod demand;
#[cfg(feature = "inventory")]
mod inventory;
pub use demand::*;
#[cfg(feature = "inventory")]
pub use inventory::*;

/// The ledger's own tables: idempotency records, offsets, latest documents and appended rows of
/// one flush land together; a retried flush changes nothing; an older document never
/// overwrites a newer one; records of another subsystem on the same topic are not this one's.
pub async fn ledger_documents_round_trip<S: crate::ledger::DocumentStore>(store: S, other: S) {
    use crate::ledger::{AppendedRow, Document, Documents, Flush};
    store.migrate().await.expect("migrate");
    let key = |i: u64| EventKey { source: "/pay".into(), id: format!("tx-{i}") };
    let processed = |i: u64| ProcessedEvent {
        key: key(i),
        topic: "payments".into(),
        partition: 3,
        offset: i,
        outcome: Some(RawOutcome::of(&serde_json::json!({"decision": "approve", "n": i}))),
        digest: Some(i as i64 * 7),
    };
    let flush_of = |events: std::ops::Range<u64>, version: i64| {
        let mut effects = Documents::default();
        effects.put("acct-1".into(), Document { version, body: format!("{{\"seen\":{version}}}") });
        for i in events.clone() {
            effects.appended.push(AppendedRow {
                id: format!("/pay/tx-{i}/0"),
                key: "acct-1".into(),
                body: format!("{{\"tx\":{i}}}"),
            });
        }
        let offset =
            ConsumerOffset { group: "fraud".into(), topic: "payments".into(), partition: 3, next_offset: events.end };
        vec![Flush { effects, processed: events.map(processed).collect(), offsets: vec![offset] }]
    };
    store.flush(&flush_of(0..5, 5)).await.expect("flush");
    store.flush(&flush_of(0..5, 5)).await.expect("a retried flush");
    store.flush(&flush_of(5..8, 8)).await.expect("flush");
    // A late flush of an older document (a replay) does not win.
    store.flush(&flush_of(5..6, 6)).await.expect("a stale flush");
    assert_eq!(store.committed_offset("fraud", "payments", 3).await.expect("offset"), Some(8));
    let docs = store.documents(vec!["acct-1".into(), "acct-2".into()]).await.expect("documents");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].1, 8, "the newest document is kept");
    let body: serde_json::Value = serde_json::from_str(&docs[0].2).expect("json");
    assert_eq!(body, serde_json::json!({"seen": 8}));
    let rows = store.appended("acct-1".into()).await.expect("appended");
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, (0..8).map(|i| format!("/pay/tx-{i}/0")).collect::<Vec<_>>(), "each row once, in order");
    let between = store.processed_between("payments", 3, 2, 6).await.expect("between");
    assert_eq!(between.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    assert_eq!(between[0], processed(2), "a record round-trips whole");
    let found = store.processed(key(7)).await.expect("processed").expect("recorded");
    let outcome: serde_json::Value = found.outcome.as_ref().expect("outcome").decode().expect("json");
    assert_eq!(outcome, serde_json::json!({"decision": "approve", "n": 7}));
    assert!(store.processed(key(99)).await.expect("processed").is_none());
    // Another subsystem reading the same topic keeps its own records.
    assert!(other.processed(key(7)).await.expect("processed").is_none());
    assert!(other.processed_between("payments", 3, 0, 8).await.expect("between").is_empty());
    assert!(other.documents(vec!["acct-1".into()]).await.expect("documents").is_empty());
}
