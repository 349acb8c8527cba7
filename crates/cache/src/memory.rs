//! The in-process cache of the embedded mode.

use std::time::Duration;

use crate::{Cache, CacheError};

/// The in-process cache (embedded mode): a bounded, concurrent moka cache.
#[derive(Clone)]
pub struct MemoryCache {
    inner: moka::sync::Cache<String, std::sync::Arc<Vec<u8>>>,
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` of values, each kept at most `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &std::sync::Arc<Vec<u8>>| (k.len() + v.len()).try_into().unwrap_or(u32::MAX))
            .time_to_live(ttl)
            .build();
        Self { inner }
    }
}

impl Cache for MemoryCache {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        Ok(keys.iter().map(|k| self.inner.get(k).map(|v| v.as_ref().clone())).collect())
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), CacheError> {
        for (k, v) in entries {
            self.inner.insert(k, std::sync::Arc::new(v));
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
}
