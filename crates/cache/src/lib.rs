//! The hot-aggregate cache: raw byte values by key, so Redis and process memory fit the same
//! small trait (as svix's cache backends do). The inventory worker writes each changed SKU's
//! state here as soon as it is applied, which is what makes a change visible to readers
//! before the batched store flush.

use std::future::Future;
use std::time::Duration;

mod any;
mod memory;
mod redis;

pub use any::AnyCache;
pub use memory::MemoryCache;
pub use redis::{RedisCache, RedisCacheOptions};

/// Errors of the cache. Callers treat a failed cache as a miss and fall back to the store.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backend failed.
    #[error("cache backend failed: {0}")]
    Backend(String),
}

/// A cache backend.
pub trait Cache: Clone + Send + Sync + 'static {
    /// Values of `keys`, `None` where absent, in the same order.
    fn get_many(&self, keys: &[String]) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, CacheError>> + Send;
    /// Stores every entry for the cache's configured time to live (one round trip where the
    /// backend allows it).
    fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Stores every entry for its own time to live (a score cache keeps entries for minutes,
    /// a profile cache for hours).
    fn set_many_expiring(
        &self,
        entries: Vec<(String, Vec<u8>, Duration)>,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Removes keys.
    fn delete(&self, keys: &[String]) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Checks the backend answers.
    fn ping(&self) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Whether entries outlive this process and are seen by every instance (Redis), rather
    /// than dying with it (process memory): only then is it worth handing state to the next
    /// owner of a partition through the cache.
    fn shared(&self) -> bool;
}

/// The conformance suite every [`Cache`] implementation must pass.
#[cfg(test)]
mod conformance {
    use super::Cache;

    /// Values round-trip, absent keys read as `None`, deletes take effect; `prefix` keeps
    /// concurrent runs on a shared server apart.
    pub async fn values_round_trip<C: Cache>(cache: C, prefix: &str) {
        let k = |s: &str| format!("{prefix}{s}");
        cache.set_many(vec![(k("a"), b"1".to_vec()), (k("b"), b"22".to_vec())]).await.expect("set");
        let got = cache.get_many(&[k("a"), k("missing"), k("b")]).await.expect("get");
        assert_eq!(got, vec![Some(b"1".to_vec()), None, Some(b"22".to_vec())]);
        cache.set_many(vec![(k("a"), b"3".to_vec())]).await.expect("overwrite");
        cache.delete(&[k("b")]).await.expect("delete");
        let got = cache.get_many(&[k("a"), k("b")]).await.expect("get");
        assert_eq!(got, vec![Some(b"3".to_vec()), None]);
        cache.ping().await.expect("ping");
    }

    /// Each entry lives for its own time to live, whatever the others' and the default.
    pub async fn entries_expire_after_their_own_ttl<C: Cache>(cache: C, prefix: &str) {
        use std::time::Duration;
        let k = |s: &str| format!("{prefix}{s}");
        cache
            .set_many_expiring(vec![
                (k("short"), b"s".to_vec(), Duration::from_millis(150)),
                (k("long"), b"l".to_vec(), Duration::from_secs(60)),
            ])
            .await
            .expect("set");
        cache.set_many(vec![(k("default"), b"d".to_vec())]).await.expect("set");
        let got = cache.get_many(&[k("short"), k("long"), k("default")]).await.expect("get");
        assert_eq!(got, vec![Some(b"s".to_vec()), Some(b"l".to_vec()), Some(b"d".to_vec())]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let got = cache.get_many(&[k("short"), k("long"), k("default")]).await.expect("get");
        assert_eq!(got, vec![None, Some(b"l".to_vec()), Some(b"d".to_vec())], "only the short-lived entry expired");
    }
}
