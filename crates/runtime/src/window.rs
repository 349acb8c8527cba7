//! The idempotency window in the hot aggregate (Redis): the keys of the events each
//! partition applied, in segments of [`SEGMENT`] offsets, so that the partition's next owner
//! (after a rebalance, a crash or a restart) seeds its dedupe window from the cache instead of
//! reading up to `dedupe_window` audit rows from the store.
//!
//! The store stays the authority. A segment says "these are all the events applied at
//! offsets `[from, to)`" and is written only after those offsets are durable in the store, so
//! it never claims more than the store holds; whatever the cache does not cover (a flushed or
//! restarted Redis, an expired or half-written segment) is read from the store. Writes may
//! land out of order: an older write only shrinks what a segment claims, never grows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tally_cache::Cache;
use tally_core::EventKey;
use tally_store::{Ledger, ProcessedEvent, RawOutcome, StoreError};

/// Offsets per segment: small enough that rewriting the open segment after each flush is
/// cheap, large enough that a 200k-event window is a few hundred keys.
pub const SEGMENT: u64 = 1024;

/// One applied event in a segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen {
    offset: u64,
    source: String,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<RawOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<i64>,
}

impl From<&ProcessedEvent> for Seen {
    fn from(p: &ProcessedEvent) -> Self {
        Self {
            offset: p.offset,
            source: p.key.source.clone(),
            id: p.key.id.clone(),
            outcome: p.outcome.clone(),
            digest: p.digest,
        }
    }
}

impl Seen {
    fn into_processed(self, keys: &WindowKeys) -> ProcessedEvent {
        ProcessedEvent {
            key: EventKey { source: self.source, id: self.id },
            topic: keys.topic.clone(),
            partition: keys.partition,
            offset: self.offset,
            outcome: self.outcome,
            digest: self.digest,
        }
    }
}

/// Every event applied at offsets `[from, to)` of one segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Segment {
    from: u64,
    to: u64,
    events: Vec<Seen>,
}

/// Where one partition's segments live in the cache.
#[derive(Debug, Clone)]
pub struct WindowKeys {
    prefix: String,
    topic: String,
    partition: u32,
}

impl WindowKeys {
    /// The keys of `group`'s window of `topic`/`partition`, under the subsystem's cache key
    /// prefix (`inv` for inventory: `inv:window:<group>:<topic>:<partition>:<segment>`).
    pub fn new(prefix: &str, group: &str, topic: &str, partition: u32) -> Self {
        Self { prefix: format!("{prefix}:window:{group}:{topic}:{partition}:"), topic: topic.to_owned(), partition }
    }

    fn key(&self, segment: u64) -> String {
        format!("{}{segment}", self.prefix)
    }
}

/// Appends `[lo, hi)` to `gaps`, joining it to the last gap when they touch.
fn push_gap(gaps: &mut Vec<(u64, u64)>, lo: u64, hi: u64) {
    match gaps.last_mut() {
        Some(last) if last.1 == lo => last.1 = hi,
        _ => gaps.push((lo, hi)),
    }
}

/// The events applied at offsets `[from, to)`: from the cache where its segments cover them,
/// from the store for the rest. Also returns how many came from the store.
pub async fn load<C: Cache, S: Ledger>(
    cache: &C,
    store: &S,
    keys: &WindowKeys,
    from: u64,
    to: u64,
) -> Result<(Vec<ProcessedEvent>, usize), StoreError> {
    if from >= to {
        return Ok((Vec::new(), 0));
    }
    let (first, last) = (from / SEGMENT, (to - 1) / SEGMENT);
    let names: Vec<String> = (first..=last).map(|s| keys.key(s)).collect();
    let values = cache.get_many(&names).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the idempotency window from the cache; reading the store");
        vec![None; names.len()]
    });
    let mut seen = Vec::new();
    let mut gaps = Vec::new();
    for (segment, value) in (first..=last).zip(values) {
        let (lo, hi) = ((segment * SEGMENT).max(from), ((segment + 1) * SEGMENT).min(to));
        match value.and_then(|v| serde_json::from_slice::<Segment>(&v).ok()) {
            Some(s) if s.from <= lo && s.to > lo => {
                let covered = s.to.min(hi);
                seen.extend(
                    s.events
                        .into_iter()
                        .filter(|e| e.offset >= lo && e.offset < covered)
                        .map(|e| e.into_processed(keys)),
                );
                if covered < hi {
                    push_gap(&mut gaps, covered, hi);
                }
            }
            _ => push_gap(&mut gaps, lo, hi),
        }
    }
    let mut from_store = 0;
    for (lo, hi) in gaps {
        let rows = store.processed_between(&keys.topic, keys.partition, lo, hi).await?;
        from_store += rows.len();
        seen.extend(rows);
    }
    seen.sort_by_key(|p| p.offset);
    Ok((seen, from_store))
}

/// The writer of one partition's window, held by its worker (the partition's only writer).
pub struct WindowWriter {
    keys: WindowKeys,
    /// Segments not yet complete, by number.
    open: BTreeMap<u64, Segment>,
    /// Applied, not yet durable.
    pending: Vec<Seen>,
    /// Everything before this offset is durable (and written).
    durable: u64,
}

impl WindowWriter {
    /// A writer resuming at `start`, knowing (from [`load`]) the events applied in
    /// `[known_from, start)`.
    pub fn new(keys: WindowKeys, known_from: u64, start: u64, known: &[ProcessedEvent]) -> Self {
        let segment = start / SEGMENT;
        let from = (segment * SEGMENT).max(known_from);
        let events = known.iter().filter(|p| p.offset >= from && p.offset < start).map(Seen::from).collect();
        let open = BTreeMap::from([(segment, Segment { from, to: start, events })]);
        Self { keys, open, pending: Vec::new(), durable: start }
    }

    /// Events just applied (durable once their flush is acknowledged).
    pub fn applied<'a>(&mut self, events: impl IntoIterator<Item = &'a ProcessedEvent>) {
        self.pending.extend(events.into_iter().map(Seen::from));
    }

    /// Everything before `durable` is in the store: the segments completed by it, to write
    /// (and forget).
    pub fn durable(&mut self, durable: u64) -> Vec<(String, Vec<u8>)> {
        if durable <= self.durable {
            return Vec::new();
        }
        let (first, last) = (self.durable / SEGMENT, (durable - 1) / SEGMENT);
        self.durable = durable;
        for segment in first..=last {
            // Every offset below `durable` went through this worker (or its seed), so a
            // segment it never saw an event in is still complete: it had none.
            let s = self.open.entry(segment).or_insert_with(|| Segment {
                from: segment * SEGMENT,
                to: segment * SEGMENT,
                events: Vec::new(),
            });
            s.to = s.to.max(durable.min((segment + 1) * SEGMENT));
        }
        let (ready, later): (Vec<Seen>, Vec<Seen>) = self.pending.drain(..).partition(|e| e.offset < durable);
        self.pending = later;
        for e in ready {
            if let Some(s) = self.open.get_mut(&(e.offset / SEGMENT)) {
                s.events.push(e);
            }
        }
        // Only complete segments are written, each once: the open tail (under SEGMENT events)
        // is cheaper for the next owner to read from the store than to rewrite after every
        // flush (rewriting it cost ~10 % of the Kafka stack's throughput).
        let complete: Vec<u64> =
            self.open.iter().filter(|(segment, s)| s.to == (*segment + 1) * SEGMENT).map(|(k, _)| *k).collect();
        complete
            .into_iter()
            .filter_map(|segment| {
                let s = self.open.remove(&segment)?;
                Some((self.keys.key(segment), serde_json::to_vec(&s).ok()?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use tally_cache::MemoryCache;
    use tally_store::ledger::Documents;
    use tally_store::sqlite::SqliteDocuments;
    use tally_store::{Flush, Journal, SqliteStore, SqliteStoreOptions};

    use super::*;

    fn key(i: u64) -> EventKey {
        EventKey { source: "/wms".into(), id: format!("e{i}") }
    }

    fn processed(i: u64) -> ProcessedEvent {
        ProcessedEvent {
            key: key(i),
            topic: "events".into(),
            partition: 0,
            offset: i,
            outcome: None,
            digest: Some(i as i64),
        }
    }

    /// The ledger's own tables in a fresh SQLite file.
    async fn store() -> (tempfile::TempDir, SqliteDocuments) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(SqliteStoreOptions { path, durability: tally_sqlite::Durability::Normal })
            .expect("store")
            .documents("test");
        store.migrate().await.expect("migrate");
        (dir, store)
    }

    #[tokio::test]
    async fn a_written_window_reads_back_from_the_cache_alone() {
        let (_dir, store) = store().await;
        let cache = MemoryCache::new(1 << 24, std::time::Duration::from_secs(60));
        let keys = WindowKeys::new("inv", "g", "events", 0);
        let mut writer = WindowWriter::new(keys.clone(), 0, 0, &[]);
        // Every other offset applied (the rest duplicates or poison), over three segments.
        let applied: Vec<u64> = (0..3000).filter(|i| i % 2 == 0).collect();
        writer.applied(applied.iter().map(|&i| processed(i)).collect::<Vec<_>>().iter());
        cache.set_many(writer.durable(2500)).await.expect("write");
        let (seen, from_store) = load(&cache, &store, &keys, 100, 2048).await.expect("load");
        assert_eq!(from_store, 0, "the cache covers the complete segments");
        let offsets: Vec<u64> = seen.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, applied.iter().copied().filter(|&i| (100..2048).contains(&i)).collect::<Vec<_>>());
        assert_eq!(seen[0].key, key(100));
    }

    #[tokio::test]
    async fn what_the_cache_lost_or_never_got_is_read_from_the_store() {
        let (_dir, store) = store().await;
        let cache = MemoryCache::new(1 << 24, std::time::Duration::from_secs(60));
        let keys = WindowKeys::new("inv", "g", "events", 0);
        let mut writer = WindowWriter::new(keys.clone(), 0, 0, &[]);
        writer.applied((0..3000).map(processed).collect::<Vec<_>>().iter());
        cache.set_many(writer.durable(2048)).await.expect("write");
        // The store has the records of everything up to 2,500; the cache got the two
        // complete segments, then lost segment 0.
        let batch =
            Flush { effects: Documents::default(), processed: (0..2500).map(processed).collect(), offsets: Vec::new() };
        store.flush(&[batch]).await.expect("flush");
        cache.delete(&[keys.key(0)]).await.expect("delete");
        let (seen, from_store) = load(&cache, &store, &keys, 0, 2500).await.expect("load");
        assert_eq!(seen.iter().map(|p| p.offset).collect::<Vec<_>>(), (0..2500).collect::<Vec<_>>());
        assert_eq!(from_store, 1024 + 452, "segment 0 and the open tail come from the store");
    }

    #[test]
    fn a_resumed_writer_completes_the_segment_it_resumed_in() {
        let keys = WindowKeys::new("inv", "g", "events", 0);
        let known: Vec<ProcessedEvent> = (900..1500).map(processed).collect();
        let mut writer = WindowWriter::new(keys, 500, 1500, &known);
        writer.applied((1500..2048).map(processed).collect::<Vec<_>>().iter());
        let writes = writer.durable(2048);
        assert_eq!(writes.len(), 1);
        let segment: Segment = serde_json::from_slice(&writes[0].1).expect("json");
        assert_eq!((segment.from, segment.to), (1024, 2048));
        assert_eq!(segment.events.len(), 1024, "the known part and the new part");
        assert!(writer.open.is_empty(), "a complete segment is forgotten");
    }
}
