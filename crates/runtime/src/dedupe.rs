//! The idempotency window of one partition: which events (by `source` + `id`) were applied
//! recently, the digest of what each asked for and, for events a caller may wait on, the
//! outcome.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use tally_core::EventKey;

/// 128 bits of the key: two SipHash runs with different prefixes. Collisions would drop a
/// distinct event as a duplicate, so 64 bits are not enough at millions of events.
fn fingerprint(key: &EventKey) -> u128 {
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// What the window remembers of an applied event.
struct Remembered<O> {
    outcome: Option<Box<O>>,
    digest: Option<i64>,
}

/// An applied event as the window remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a, O> {
    /// Its outcome, when kept.
    pub outcome: Option<&'a O>,
    /// The digest of what it asked for, when known (records written before digests were kept
    /// have none).
    pub digest: Option<i64>,
}

/// A bounded set of recently applied event keys, evicted oldest first.
pub struct DedupeWindow<O> {
    seen: HashMap<u128, Remembered<O>>,
    order: VecDeque<u128>,
    capacity: usize,
}

impl<O> DedupeWindow<O> {
    /// An empty window remembering at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self { seen: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// What is remembered of the event, if it was already applied.
    pub fn get(&self, key: &EventKey) -> Option<Seen<'_, O>> {
        self.seen.get(&fingerprint(key)).map(|r| Seen { outcome: r.outcome.as_deref(), digest: r.digest })
    }

    /// Records an applied event.
    pub fn insert(&mut self, key: &EventKey, outcome: Option<O>, digest: Option<i64>) {
        let fp = fingerprint(key);
        if self.seen.insert(fp, Remembered { outcome: outcome.map(Box::new), digest }).is_none() {
            self.order.push_back(fp);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// Events remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> EventKey {
        EventKey { source: "/s".into(), id: id.into() }
    }

    #[test]
    fn window_remembers_outcomes_and_evicts_the_oldest() {
        let mut w = DedupeWindow::new(2);
        w.insert(&key("a"), Some("applied"), Some(7));
        w.insert(&key("b"), None, None);
        assert_eq!(w.get(&key("a")), Some(Seen { outcome: Some(&"applied"), digest: Some(7) }));
        assert_eq!(w.get(&key("b")), Some(Seen { outcome: None, digest: None }));
        w.insert(&key("c"), None, None);
        assert_eq!(w.get(&key("a")), None, "oldest evicted");
        assert_eq!(w.len(), 2);
        assert_ne!(fingerprint(&key("a")), fingerprint(&EventKey { source: "/s2".into(), id: "a".into() }));
    }
}
