//! The cache chosen by configuration: one closed set of backends, selected at startup.

use crate::{Cache, CacheError, MemoryCache, RedisCache};

/// Either cache backend.
#[derive(Clone)]
pub enum AnyCache {
    /// Process memory.
    Memory(MemoryCache),
    /// Redis.
    Redis(RedisCache),
}

/// Calls the same method on whichever backend this is.
macro_rules! delegate {
    ($self:ident, $cache:ident => $call:expr) => {
        match $self {
            AnyCache::Memory($cache) => $call,
            AnyCache::Redis($cache) => $call,
        }
    };
}

impl Cache for AnyCache {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        delegate!(self, c => c.get_many(keys).await)
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), CacheError> {
        delegate!(self, c => c.set_many(entries).await)
    }

    async fn set_many_expiring(&self, entries: Vec<(String, Vec<u8>, std::time::Duration)>) -> Result<(), CacheError> {
        delegate!(self, c => c.set_many_expiring(entries).await)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), CacheError> {
        delegate!(self, c => c.delete(keys).await)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        delegate!(self, c => c.ping().await)
    }

    fn shared(&self) -> bool {
        delegate!(self, c => c.shared())
    }
}
