//! The in-process cache of the embedded mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Cache, CacheError};

/// A value and how long it may live.
#[derive(Clone)]
struct Entry {
    value: Arc<Vec<u8>>,
    ttl: Duration,
}

/// Each entry expires after its own time to live.
struct PerEntry;

impl moka::Expiry<String, Entry> for PerEntry {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The in-process cache (embedded mode): a bounded, concurrent moka cache.
#[derive(Clone)]
pub struct MemoryCache {
    inner: moka::sync::Cache<String, Entry>,
    ttl: Duration,
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` of values, each kept `ttl` unless set with its own.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Entry| (k.len() + v.value.len()).try_into().unwrap_or(u32::MAX))
            .expire_after(PerEntry)
            .build();
        Self { inner, ttl }
    }
}

impl Cache for MemoryCache {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        Ok(keys.iter().map(|k| self.inner.get(k).map(|e| e.value.as_ref().clone())).collect())
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), CacheError> {
        for (k, v) in entries {
            self.inner.insert(k, Entry { value: Arc::new(v), ttl: self.ttl });
        }
        Ok(())
    }

    async fn set_many_expiring(&self, entries: Vec<(String, Vec<u8>, Duration)>) -> Result<(), CacheError> {
        for (k, v, ttl) in entries {
            self.inner.insert(k, Entry { value: Arc::new(v), ttl });
        }
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), CacheError> {
        for k in keys {
            self.inner.invalidate(k);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    fn shared(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn memory_cache_passes_the_conformance_suite() {
        conformance::values_round_trip(MemoryCache::new(1 << 20, Duration::from_secs(60)), "t:").await;
    }

    #[tokio::test]
    async fn memory_cache_entries_expire_after_their_own_ttl() {
        conformance::entries_expire_after_their_own_ttl(MemoryCache::new(1 << 20, Duration::from_secs(60)), "t:").await;
    }
}
