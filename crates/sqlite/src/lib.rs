//! One place that decides how tally opens its SQLite file, so the embedded log and the
//! embedded store (which share the file) agree on journal mode, durability and lock waits.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use rusqlite;

/// How hard SQLite syncs to disk at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: a committed transaction survives a process crash
    /// (kill -9); the last transactions may be lost on power failure.
    #[default]
    Normal,
    /// `synchronous=FULL`: also survives power failure, at the cost of an fsync per commit.
    Full,
}

/// Opens (creating if needed) the SQLite file with tally's settings.
pub fn open(path: &Path, durability: Durability) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Keep the WAL from growing without bound under a steady write load.
    conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Counts statements sent to the database, for the "statements per 1,000 events" figure.
#[derive(Debug, Clone, Default)]
pub struct StatementCounter(Arc<AtomicU64>);

impl StatementCounter {
    /// Adds `n` statements.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Statements counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A small pool of connections to one file; WAL lets readers run beside the writer.
#[derive(Debug)]
pub struct Pool {
    path: std::path::PathBuf,
    durability: Durability,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

impl Pool {
    /// A pool that opens connections to `path` on demand.
    pub fn new(path: &Path, durability: Durability) -> Self {
        Self { path: path.to_owned(), durability, idle: std::sync::Mutex::new(Vec::new()) }
    }

    /// Runs `f` on a pooled connection (blocking: call from a blocking thread).
    pub fn with<T>(&self, f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match conn {
            Some(c) => c,
            None => open(&self.path, self.durability)?,
        };
        let out = f(&mut conn);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        out
    }
}

/// Most rows in one multi-row statement.
const MAX_ROWS_PER_STATEMENT: usize = 1000;
/// SQLite's default limit of bound parameters per statement (32766), with headroom.
const MAX_PARAMS_PER_STATEMENT: usize = 32_000;

/// A set-based write into one table: `INSERT … VALUES (…),(…)… <conflict clause>` with the
/// values bound directly, chunked to stay within SQLite's parameter limit. One statement per
/// chunk, however many rows.
#[derive(Debug)]
pub struct Table {
    /// `INSERT INTO t (cols…) VALUES ` (with the trailing space).
    pub insert: &'static str,
    /// Number of columns per row.
    pub columns: usize,
    /// Appended after the tuples, e.g. ` ON CONFLICT (k) DO UPDATE … WHERE …` (may be empty).
    pub conflict: &'static str,
}

impl Table {
    fn sql(&self, rows: usize) -> String {
        let tuple = format!("({})", vec!["?"; self.columns].join(", "));
        let mut sql = String::with_capacity(self.insert.len() + rows * (tuple.len() + 2) + self.conflict.len());
        sql.push_str(self.insert);
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&tuple);
        }
        sql.push_str(self.conflict);
        sql
    }

    /// Writes `rows` (each `columns` values long); returns the number of statements executed.
    pub fn write(&self, conn: &rusqlite::Connection, rows: &[Vec<rusqlite::types::Value>]) -> rusqlite::Result<u64> {
        let per_statement = MAX_ROWS_PER_STATEMENT.min(MAX_PARAMS_PER_STATEMENT / self.columns);
        let mut statements = 0;
        for chunk in rows.chunks(per_statement) {
            // Cached by text, so every full chunk reuses one prepared statement.
            let mut stmt = conn.prepare_cached(&self.sql(chunk.len()))?;
            stmt.execute(rusqlite::params_from_iter(chunk.iter().flatten()))?;
            statements += 1;
        }
        Ok(statements)
    }
}
