//! The Redis cache of the production mode: values under a key prefix (so several tally
//! deployments or tests can share one server), written with a TTL, every batch in one
//! pipelined round trip over a reconnecting connection.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{Cache, CacheError};

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisCacheOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS).
    pub url: String,
    /// Prepended to every key.
    pub key_prefix: String,
    /// How long an entry lives without being rewritten.
    pub ttl: Duration,
    /// Limit on connecting and on each command; a slow Redis counts as a miss, not a stall.
    pub timeout: Duration,
}

/// The Redis cache; cheap to clone (clones share one multiplexed connection).
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: Arc<str>,
    ttl_seconds: u64,
}

fn backend(e: impl std::fmt::Display) -> CacheError {
    CacheError::Backend(e.to_string())
}

impl RedisCache {
    /// Connects (failing if Redis does not answer within the timeout).
    pub async fn connect(opts: RedisCacheOptions) -> Result<Self, CacheError> {
        let client = redis::Client::open(opts.url.as_str()).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(backend)?;
        Ok(Self { conn, prefix: opts.key_prefix.into(), ttl_seconds: opts.ttl.as_secs().max(1) })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl Cache for RedisCache {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let mut conn = self.conn.clone();
        redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.map_err(backend)
    }

    async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value) in entries {
            pipe.cmd("SET").arg(self.key(&key)).arg(value).arg("EX").arg(self.ttl_seconds).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(backend)
    }

    async fn set_many_expiring(&self, entries: Vec<(String, Vec<u8>, Duration)>) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, value, ttl) in entries {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            pipe.cmd("SET").arg(self.key(&key)).arg(value).arg("PX").arg(ms).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(backend)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let mut conn = self.conn.clone();
        redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await.map_err(backend)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await.map_err(backend)
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    /// The server `scripts/test.sh` starts; these tests need it rather than skip without it.
    fn redis_url() -> String {
        std::env::var("TEST_TALLY_REDIS_URL")
            .expect("TEST_TALLY_REDIS_URL is not set: run the tests with scripts/test.sh, which starts Redis")
    }

    async fn cache(prefix: &str) -> RedisCache {
        RedisCache::connect(RedisCacheOptions {
            url: redis_url(),
            key_prefix: prefix.to_owned(),
            ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        })
        .await
        .expect("connect to the test Redis")
    }

    #[tokio::test]
    async fn redis_cache_passes_the_conformance_suite() {
        let prefix = format!("test:{}:", uuid_like());
        conformance::values_round_trip(cache(&prefix).await, "t:").await;
    }

    #[tokio::test]
    async fn redis_cache_entries_expire_after_their_own_ttl() {
        conformance::entries_expire_after_their_own_ttl(cache(&format!("t:{}:", uuid_like())).await, "").await;
    }

    #[tokio::test]
    async fn prefixes_keep_two_caches_on_one_server_apart() {
        let (a, b) = (cache(&format!("a:{}:", uuid_like())).await, cache(&format!("b:{}:", uuid_like())).await);
        a.set_many(vec![("k".into(), b"from a".to_vec())]).await.expect("set");
        assert_eq!(b.get_many(&["k".into()]).await.expect("get"), vec![None]);
        assert_eq!(a.get_many(&["k".into()]).await.expect("get"), vec![Some(b"from a".to_vec())]);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_not_a_hang() {
        let started = std::time::Instant::now();
        let result = RedisCache::connect(RedisCacheOptions {
            url: "redis://127.0.0.1:1".into(),
            key_prefix: String::new(),
            ttl: Duration::from_secs(60),
            timeout: Duration::from_millis(300),
        })
        .await;
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(10), "gave up within the retry budget");
    }

    /// A unique suffix without pulling a UUID crate into the cache's dependencies; the
    /// sequence number separates tests that read the same clock value.
    fn uuid_like() -> String {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        format!(
            "{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
            SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }
}
