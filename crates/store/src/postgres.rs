//! The PostgreSQL store of the production mode. Every write of a flush is one set-based
//! statement per table — `INSERT … SELECT … FROM unnest($1::text[], $2::bigint[], …) ON CONFLICT
//! … DO UPDATE … WHERE stored.version < excluded.version` — so a flush costs the same handful of
//! statements whether it carries ten rows or ten thousand, and all of them commit in one
//! transaction with the consumer offsets. This module holds the pool, error classification and
//! the offsets every table shares; [`ledger`] the ledger's reads and its own tables,
//! [`inventory`] inventory's tables (`PostgresStore` is inventory's store; other subsystems take
//! their share of the ledger with `PostgresStore::documents`).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::ledger::Flush;
use crate::{RetryHint, StoreError};

mod demand;
#[cfg(feature = "inventory")]
mod inventory;
mod ledger;
mod migrations;

pub use ledger::PostgresDocuments;

/// How to reach PostgreSQL and how hard to lean on it.
#[derive(Debug, Clone)]
pub struct PostgresStoreOptions {
    /// `postgres://user:password@host:port/database?sslmode=…`.
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a free connection before failing.
    pub acquire_timeout: Duration,
    /// Server-side limit on any one statement (`statement_timeout`), so a stuck query fails
    /// and is retried instead of holding a connection forever.
    pub statement_timeout: Duration,
}

/// The PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    statements: Arc<AtomicU64>,
    /// Business days known to have a partition of `demand_events` (so a flush asks the
    /// database to make one only for a day it has not seen).
    demand_days: Arc<std::sync::Mutex<std::collections::HashSet<i32>>>,
}

/// Whether a retry can help with `e`: a lost or refused connection, a timeout (the pool's, or
/// the server's `statement_timeout`), a serialization failure or deadlock, or a server short of
/// resources or shutting down may clear; a constraint, a missing table or privilege, bad data
/// or a row that does not decode repeats.
pub(crate) fn retry_hint(e: &sqlx::Error) -> RetryHint {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            RetryHint::Transient
        }
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => RetryHint::Transient,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // 08: connection exception; 40001 serialization failure; 40P01 deadlock; 53:
            // insufficient resources; 57014 query canceled (statement timeout); 57P0x: the
            // server is shutting down or restarting; 55P03 lock not available.
            Some(code)
                if code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || matches!(code, "40001" | "40P01" | "57014" | "55P03") =>
            {
                RetryHint::Transient
            }
            _ => RetryHint::Permanent,
        },
        _ => RetryHint::Permanent,
    }
}

fn backend(during: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Backend { during, hint: retry_hint(&e), source: Box::new(e) }
}

impl PostgresStore {
    /// Creates the pool; connections open lazily, so this succeeds while the database is down
    /// (readiness and the first flush report it).
    pub fn connect(opts: &PostgresStoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&opts.url)
            .map_err(backend("reading the database URL"))?
            .application_name("tally")
            .options([("statement_timeout", format!("{}ms", opts.statement_timeout.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect_lazy_with(connect);
        let statements = Arc::new(AtomicU64::new(0));
        #[cfg(feature = "inventory")]
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(inventory::summarise_audit_offsets(pool.clone(), Arc::downgrade(&statements)));
        }
        Ok(Self { pool, statements, demand_days: Arc::default() })
    }

    fn count(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn store_offsets<E>(tx: &mut Transaction<'_, Postgres>, batch: &[Flush<E>]) -> Result<u64, sqlx::Error> {
    let offsets: Vec<&crate::ConsumerOffset> = batch.iter().flat_map(|f| &f.offsets).collect();
    if offsets.is_empty() {
        return Ok(0);
    }
    let group: Vec<&str> = offsets.iter().map(|o| o.group.as_str()).collect();
    let topic: Vec<&str> = offsets.iter().map(|o| o.topic.as_str()).collect();
    let partition: Vec<i32> = offsets.iter().map(|o| i32::try_from(o.partition).unwrap_or(i32::MAX)).collect();
    let next: Vec<i64> = offsets.iter().map(|o| i64_of(o.next_offset)).collect();
    sqlx::query(
        "INSERT INTO consumer_offsets (grp, topic, partition, next_offset)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[])
         ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset
         WHERE consumer_offsets.next_offset < excluded.next_offset",
    )
    .bind(&group)
    .bind(&topic)
    .bind(&partition)
    .bind(&next)
    .execute(&mut **tx)
    .await?;
    Ok(1)
}

/// Creates an empty database named `<prefix>_<unique suffix>` on the server of `admin_url`
/// (a URL naming any database the user may connect to) and returns the new database's URL.
pub async fn create_database(admin_url: &str, prefix: &str) -> Result<String, StoreError> {
    use sqlx::Connection;
    // The clock alone is not unique: tests in one process create databases concurrently, and
    // two once got the same timestamp. A process-wide sequence number separates them.
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let during = "creating a database";
    let mut conn = sqlx::PgConnection::connect(admin_url).await.map_err(backend(during))?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.map_err(backend(during))?;
    let (base, _) = admin_url
        .rsplit_once('/')
        .ok_or_else(|| StoreError::Corrupt { what: "PostgreSQL URL", detail: "it names no database".into() })?;
    Ok(format!("{base}/{name}"))
}

/// What the server itself counted for one database, from `pg_stat_statements` (which must be
/// in `shared_preload_libraries`): for benchmarks, independent of tally's own counter.
pub mod server_stats {
    use sqlx::Connection;

    use super::{StoreError, backend};

    /// Creates the extension in the database of `url` and zeroes its counters.
    pub async fn reset(url: &str) -> Result<(), StoreError> {
        let during = "resetting pg_stat_statements";
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(backend(during))?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut conn)
            .await
            .map_err(backend(during))?;
        sqlx::query("SELECT pg_stat_statements_reset()").execute(&mut conn).await.map_err(backend(during))?;
        Ok(())
    }

    /// Statements executed and rows they returned or wrote in the database of `url` since the
    /// last reset (this query and the reset excluded).
    pub async fn statements_and_rows(url: &str) -> Result<(u64, u64), StoreError> {
        let during = "reading pg_stat_statements";
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(backend(during))?;
        let (calls, rows): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT sum(calls)::bigint, sum(rows)::bigint FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT ILIKE '%pg_stat_statements%'",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(backend(during))?;
        let n = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
        Ok((n(calls), n(rows)))
    }
}

/// Throwaway databases for tests: one per test, on the server `scripts/test.sh` starts.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    /// The admin URL of the test server (`TEST_TALLY_POSTGRES_URL`); tests that need it fail
    /// rather than skip without it.
    pub fn server_url() -> String {
        std::env::var("TEST_TALLY_POSTGRES_URL")
            .expect("TEST_TALLY_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    }

    /// Creates an empty database with a unique name and returns its URL.
    pub async fn fresh_database() -> String {
        create_database(&server_url(), "tally_test").await.expect("create a test database")
    }

    /// A store on a fresh database.
    pub async fn store() -> PostgresStore {
        PostgresStore::connect(&PostgresStoreOptions {
            url: fresh_database().await,
            max_connections: 4,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        })
        .expect("pool")
    }
}

#[cfg(all(test, feature = "inventory"))]
mod tests;
