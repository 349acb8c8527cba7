//! The hot-aggregate cache: raw byte values by key, so Redis and process memory fit the same
//! small trait (as svix's cache backends do). The inventory worker writes each changed SKU's
//! state here as soon as it is applied, which is what makes a change visible to readers
//! before the batched store flush.

use std::future::Future;

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
    /// Stores every entry (one round trip where the backend allows it).
    fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> impl Future<Output = Result<(), CacheError>> + Send;
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
pub mod conformance {
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
}
