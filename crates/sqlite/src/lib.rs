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

/// The one thread that writes to a SQLite file. SQLite allows a single writer per file; when
/// the embedded log and the store each had their own writing connection, the loser of every
/// race slept in SQLite's busy handler. Sharing one writer queues their transactions instead.
pub struct Writer {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// WAL size (in 4 KiB frames) at which the log is restarted from its beginning.
const RESTART_WAL_FRAMES: i64 = 4096;

/// Keeps the WAL short without stalling the writer. Left to SQLite, the connection whose
/// commit crosses the autocheckpoint threshold checkpoints — the writer — and every append
/// and flush queued behind it waits for the copy. Here a thread of its own runs PASSIVE
/// checkpoints, which never block the writer or readers. Under a steady write load a passive
/// checkpoint never catches up completely, so the WAL would never restart and would grow
/// without bound (observed: 500 MB in a 30 s benchmark); once it passes a threshold, a RESTART
/// checkpoint runs as a writer job — by then nearly every frame is already copied, so the
/// writer pauses only for the remainder — and the next write begins the WAL afresh.
fn run_checkpoints(path: std::path::PathBuf, durability: Durability, writer: std::sync::Weak<Writer>) {
    let Ok(conn) = open(&path, durability) else { return };
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        let Some(writer) = writer.upgrade() else { return };
        // Errors (e.g. the file went away during a test's cleanup) are retried next round;
        // the writer's own commits never depend on a checkpoint.
        let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)).unwrap_or(0);
        if frames >= RESTART_WAL_FRAMES {
            let _ = writer.submit(|conn| {
                let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
            });
        }
    }
}

type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// The writer thread has stopped (its connection failed to open or the process is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterClosed;

impl std::fmt::Display for WriterClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the SQLite writer thread has stopped")
    }
}

impl std::error::Error for WriterClosed {}

fn writers() -> &'static std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, std::sync::Weak<Writer>>> {
    static WRITERS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, std::sync::Weak<Writer>>>,
    > = std::sync::OnceLock::new();
    WRITERS.get_or_init(Default::default)
}

impl Writer {
    /// The writer of `path`, started on first use and shared by every user in the process.
    pub fn shared(path: &Path, durability: Durability) -> rusqlite::Result<Arc<Self>> {
        let conn = open(path, durability)?;
        // The file exists now, so the canonical path identifies it however it was spelled.
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut registry = writers().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = registry.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok(existing);
        }
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tally-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let writer = Arc::new(Self { jobs: std::sync::Mutex::new(tx) });
        let (checkpoint_path, weak) = (path.to_owned(), Arc::downgrade(&writer));
        std::thread::Builder::new()
            .name("tally-sqlite-checkpoint".into())
            .spawn(move || run_checkpoints(checkpoint_path, durability, weak))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        registry.insert(key, Arc::downgrade(&writer));
        Ok(writer)
    }

    /// Queues a job; jobs run one at a time, in submission order.
    pub fn submit(&self, job: impl FnOnce(&mut rusqlite::Connection) + Send + 'static) -> Result<(), WriterClosed> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(Box::new(job)).map_err(|_| WriterClosed)
    }

    /// Runs `f` on the writer connection and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> T + Send + 'static,
    ) -> Result<T, WriterClosed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(move |conn| {
            let _ = tx.send(f(conn));
        })?;
        rx.await.map_err(|_| WriterClosed)
    }
}
