//! The conformance suite of the inventory store's tables.

use tally_core::{ChannelId, EventKey, LocationId, Sku};
use tally_inventory::aggregate::EventMeta;
use tally_inventory::event::StockSnapshot;
use tally_inventory::{ChannelRule, ChannelRules, InventoryEvent, Outcome, SkuState};

use crate::{ConsumerOffset, InventoryFlush, InventoryStore, ProcessedEvent, RawOutcome, StateRow};

/// An applied event: its idempotency record and its audit row.
pub type AppliedEvent = (ProcessedEvent, tally_inventory::AuditEntry);

/// An inventory flush of these rows (as the one-element slice a store writes).
pub fn flush(states: Vec<StateRow>, applied: Vec<AppliedEvent>, offsets: Vec<ConsumerOffset>) -> Vec<InventoryFlush> {
    let mut batch = InventoryFlush::default();
    for row in states {
        batch.effects.put(row);
    }
    for (processed, audit) in applied {
        batch.processed.push(processed);
        batch.effects.audit.push(audit);
    }
    batch.offsets = offsets;
    vec![batch]
}

/// A state of `sku` with `on_hand` at wh-1, at aggregate version `version`.
pub fn state(sku: &str, on_hand: i64, version: u64) -> StateRow {
    let rules = ChannelRules::new([ChannelRule::everything(ChannelId::parse("web").expect("valid"))]);
    let mut s = SkuState::new(Sku::parse(sku).expect("valid"));
    let ev = InventoryEvent::Snapshot(StockSnapshot {
        sku: s.sku.clone(),
        location: LocationId::parse("wh-1").expect("valid"),
        on_hand,
        source_version: version,
        safety_stock: None,
        shipped_orders: vec![],
    });
    s.apply(&ev, EventMeta { source: "/t", id: "1", time_ms: 0 }, &rules).expect("in range");
    s.version = version;
    s.applied_offset = version as i64;
    StateRow::new(&s, None, s.availability(&rules))
}

/// The event `key`, an applied stock snapshot of SKU-A, consumed at `topic`/`partition`/`offset`.
pub fn applied_event(key: EventKey, topic: &str, partition: u32, offset: u64) -> AppliedEvent {
    let (event_source, event_id) = (key.source.clone(), key.id.clone());
    (
        ProcessedEvent { key, topic: topic.into(), partition, offset, outcome: None, digest: Some(offset as i64) },
        tally_inventory::AuditEntry {
            sku: Sku::parse("SKU-A").expect("valid"),
            location: None,
            version: offset,
            event_type: "stock.snapshot".into(),
            event_source,
            event_id,
            outcome: "applied".into(),
            on_hand_delta: 0,
            on_hand: 0,
            reserved: 0,
            available: 0,
            event_time_ms: 0,
        },
    )
}

/// A newer row wins; an older or equal one never overwrites it, in any flush order.
pub async fn versioned_upsert_keeps_the_newest<S: InventoryStore>(store: S, versions: &[u64]) {
    store.migrate().await.expect("migrate");
    for &v in versions {
        let batch = flush(vec![state("SKU-V", v as i64 * 10, v)], Vec::new(), Vec::new());
        store.flush(&batch).await.expect("flush");
    }
    let newest = versions.iter().copied().max().expect("at least one version");
    let loaded = store.load_states(vec![Sku::parse("SKU-V").expect("valid")]).await.expect("load");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].version, newest);
    assert_eq!(loaded[0].locations.values().next().map(|l| l.on_hand), Some(newest as i64 * 10));
}

/// States, audit, idempotency records and offsets of one flush land together.
pub async fn flush_writes_effects_and_offsets_together<S: InventoryStore>(store: S) {
    store.migrate().await.expect("migrate");
    let row = state("SKU-A", 7, 1);
    let key = EventKey { source: "/t".into(), id: "e1".into() };
    let audit = tally_inventory::AuditEntry {
        sku: row.sku.clone(),
        location: None,
        version: 1,
        event_type: "stock.snapshot".into(),
        event_source: "/t".into(),
        event_id: "e1".into(),
        outcome: "applied".into(),
        on_hand_delta: 7,
        on_hand: 7,
        reserved: 0,
        available: 7,
        event_time_ms: 5,
    };
    let processed = ProcessedEvent {
        key: key.clone(),
        topic: "inv".into(),
        partition: 2,
        offset: 41,
        outcome: Some(RawOutcome::of(&Outcome::CasMismatch { expected: 1, actual: 2 })),
        digest: Some(-7_345_123_987_001),
    };
    let batch = flush(
        vec![row],
        vec![(processed, audit.clone())],
        vec![ConsumerOffset { group: "g".into(), topic: "inv".into(), partition: 2, next_offset: 42 }],
    );
    store.flush(&batch).await.expect("flush");
    // The same batch again (a retried flush) changes nothing and does not fail.
    store.flush(&batch).await.expect("replayed flush");
    assert_eq!(store.committed_offset("g", "inv", 2).await.expect("offset"), Some(42));
    assert_eq!(store.committed_offset("g", "inv", 3).await.expect("offset"), None);
    let p = store.processed(key.clone()).await.expect("processed").expect("recorded");
    let outcome: Option<Outcome> = p.outcome.as_ref().map(|o| o.decode().expect("an outcome"));
    assert_eq!(outcome, Some(Outcome::CasMismatch { expected: 1, actual: 2 }));
    assert_eq!(p.digest, Some(-7_345_123_987_001), "the request's digest is kept with its key");
    let many = store.processed_many(vec![key.clone(), EventKey { source: "/t".into(), id: "other".into() }]).await;
    assert_eq!(many.expect("processed_many"), vec![p.clone()]);
    assert_eq!(store.processed_between("inv", 2, 40, 42).await.expect("between").len(), 1);
    assert_eq!(store.processed_between("inv", 2, 42, 50).await.expect("between").len(), 0);
    assert_eq!(
        store.processed_between("inv", 2, 0, 41).await.expect("between").len(),
        0,
        "records at or past the upper bound (the committed offset) are left out"
    );
    let trail = store.audit(Sku::parse("SKU-A").expect("valid"), 10, None).await.expect("audit");
    assert_eq!(
        trail.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
        vec![audit],
        "a retried flush does not duplicate audit rows"
    );
    let older = store.audit(Sku::parse("SKU-A").expect("valid"), 10, Some(trail[0].seq)).await.expect("audit");
    assert!(older.is_empty(), "nothing is older than the first row");
    let other = EventKey { source: "/t".into(), id: "never-applied".into() };
    assert!(store.processed(other).await.expect("processed").is_none());
    assert!(store.load_states(vec![Sku::parse("nope").expect("valid")]).await.expect("load").is_empty());
}
