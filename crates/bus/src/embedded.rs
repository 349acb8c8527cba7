//! The embedded durable log: an append-only table in tally's SQLite file.
//!
//! Appends and offset commits queue up and are group-committed in one transaction on the
//! file's single writer thread (shared with the embedded store, so the two never fight over
//! SQLite's write lock); offsets are assigned per partition there and, after the commit, the
//! partition readers are woken through a watch channel — they never poll while idle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tally_core::partition::partition_for_key;
use tally_sqlite::rusqlite::{self, OptionalExtension, params};
use tally_sqlite::{Durability, Pool, StatementCounter, Table, Writer};
use tokio::sync::{oneshot, watch};

use crate::{Assignment, Bus, BusError, Consumer, OutRecord, PartitionReader, Record};

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct EmbeddedLogOptions {
    /// The SQLite file (shared with the embedded store).
    pub path: PathBuf,
    /// Partitions of a topic created implicitly by publishing to it.
    pub default_partitions: u32,
    /// fsync policy.
    pub durability: Durability,
}

/// Handle to the embedded log; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Arc<Writer>,
    /// Commands waiting for the next group commit.
    queue: Mutex<Vec<WriteCmd>>,
    /// Whether a drain job is queued on the writer.
    scheduled: AtomicBool,
    topics: RwLock<HashMap<String, Arc<TopicState>>>,
    readers: Pool,
    default_partitions: u32,
    members: Mutex<HashMap<(String, String), ()>>,
    statements: StatementCounter,
}

struct TopicState {
    name: String,
    /// Per partition: the offset the next appended record gets.
    ends: Vec<watch::Sender<u64>>,
}

/// A record ready for the writer: everything that does not need the partition's next offset
/// is computed by the publisher, so the single writer thread only inserts.
struct PreparedRecord {
    partition: u32,
    key: String,
    headers_json: String,
    payload: Vec<u8>,
}

enum WriteCmd {
    Append { topic: Arc<TopicState>, records: Vec<PreparedRecord>, reply: oneshot::Sender<Result<(), BusError>> },
    Commit { group: String, topic: String, partition: u32, next: u64, reply: oneshot::Sender<Result<(), BusError>> },
}

/// The embedded log's failures are I/O on its file: worth a retry.
fn backend(e: impl std::fmt::Display) -> BusError {
    BusError::transient(e.to_string())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bus_topics (
    name        TEXT PRIMARY KEY,
    partitions  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_log (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    key         TEXT NOT NULL,
    headers     TEXT NOT NULL,
    payload     BLOB NOT NULL,
    ts_ms       INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bus_offsets (
    grp         TEXT NOT NULL,
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
";

impl EmbeddedLog {
    /// Opens the log in the SQLite file, creating its tables, and starts the writer thread.
    pub fn open(opts: EmbeddedLogOptions) -> Result<Self, BusError> {
        let conn = tally_sqlite::open(&opts.path, opts.durability).map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let mut topics = HashMap::new();
        {
            let mut ends: HashMap<(String, u32), u64> = HashMap::new();
            let mut stmt = conn
                .prepare("SELECT topic, partition, MAX(offset) + 1 FROM bus_log GROUP BY topic, partition")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok(((r.get::<_, String>(0)?, r.get::<_, u32>(1)?), r.get::<_, u64>(2)?)))
                .map_err(backend)?;
            for row in rows {
                let (k, v) = row.map_err(backend)?;
                ends.insert(k, v);
            }
            let mut stmt = conn.prepare("SELECT name, partitions FROM bus_topics").map_err(backend)?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))).map_err(backend)?;
            for row in rows {
                let (name, partitions) = row.map_err(backend)?;
                let state = TopicState {
                    ends: (0..partitions)
                        .map(|p| watch::Sender::new(ends.get(&(name.clone(), p)).copied().unwrap_or(0)))
                        .collect(),
                    name: name.clone(),
                };
                topics.insert(name, Arc::new(state));
            }
        }
        drop(conn);
        let statements = StatementCounter::default();
        let writer = Writer::shared(&opts.path, opts.durability).map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                queue: Mutex::new(Vec::new()),
                scheduled: AtomicBool::new(false),
                topics: RwLock::new(topics),
                readers: Pool::new(&opts.path, opts.durability),
                default_partitions: opts.default_partitions.max(1),
                members: Mutex::new(HashMap::new()),
                statements,
            }),
        })
    }

    /// Statements the log has executed (appends and commits), for benchmark accounting.
    pub fn statements(&self) -> u64 {
        self.inner.statements.get()
    }

    /// Number of partitions of a topic, if it exists.
    pub fn partitions(&self, topic: &str) -> Option<u32> {
        self.topic(topic).map(|t| t.ends.len() as u32)
    }

    /// The offset the next record appended to a partition gets (its end), if it exists.
    pub fn end_offset(&self, topic: &str, partition: u32) -> Option<u64> {
        self.topic(topic)?.ends.get(partition as usize).map(|end| *end.borrow())
    }

    fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        self.inner.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    async fn ensure_topic(&self, name: &str, partitions: u32) -> Result<Arc<TopicState>, BusError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let (owned, pool) = (name.to_owned(), self.inner.clone());
        let actual = tokio::task::spawn_blocking(move || {
            pool.readers.with(|c| {
                c.execute(
                    "INSERT INTO bus_topics (name, partitions) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![owned, partitions],
                )?;
                c.query_row("SELECT partitions FROM bus_topics WHERE name = ?1", [&owned], |r| r.get::<_, u32>(0))
            })
        })
        .await
        .map_err(backend)?
        .map_err(backend)?;
        let mut topics = self.inner.topics.write().unwrap_or_else(|p| p.into_inner());
        let state = topics
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(TopicState {
                    name: name.to_owned(),
                    ends: (0..actual).map(|_| watch::Sender::new(0)).collect(),
                })
            })
            .clone();
        Ok(state)
    }

    /// Deletes records older than `max_age` that every consumer group of their topic has
    /// committed past, and returns how many went. The newest record of each partition is kept
    /// so that offsets continue from it after a restart. Deletes run in bounded chunks, each
    /// its own short transaction on the writer, so appends are never held up for long.
    pub async fn enforce_retention(&self, max_age: std::time::Duration) -> Result<u64, BusError> {
        const CHUNK: u64 = 20_000;
        let cutoff_ms = tally_core::now_ms() - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let topics: Vec<Arc<TopicState>> =
            self.inner.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut deleted = 0;
        for topic in topics {
            for (partition, end) in topic.ends.iter().enumerate() {
                let end = *end.borrow();
                let (inner, name, partition) = (self.inner.clone(), topic.name.clone(), partition as u32);
                // Below: older than the cutoff, consumed by every group, not the newest record.
                let limit = tokio::task::spawn_blocking(move || {
                    inner.readers.with(|c| {
                        let consumed: Option<u64> = c.query_row(
                            "SELECT MIN(next_offset) FROM bus_offsets WHERE topic = ?1 AND partition = ?2",
                            params![name, partition],
                            |r| r.get(0),
                        )?;
                        let aged: Option<u64> = c.query_row(
                            "SELECT MIN(offset) FROM bus_log WHERE topic = ?1 AND partition = ?2 AND ts_ms >= ?3",
                            params![name, partition, cutoff_ms],
                            |r| r.get(0),
                        )?;
                        let first: Option<u64> = c.query_row(
                            "SELECT MIN(offset) FROM bus_log WHERE topic = ?1 AND partition = ?2",
                            params![name, partition],
                            |r| r.get(0),
                        )?;
                        let below =
                            consumed.unwrap_or(u64::MAX).min(aged.unwrap_or(u64::MAX)).min(end.saturating_sub(1));
                        Ok((first, below))
                    })
                })
                .await
                .map_err(backend)?
                .map_err(backend)?;
                let (Some(mut from), below) = limit else { continue };
                while from < below {
                    let to = below.min(from + CHUNK);
                    let (name, statements) = (topic.name.clone(), self.inner.statements.clone());
                    let n = self
                        .inner
                        .writer
                        .run(move |conn| {
                            statements.add(1);
                            conn.execute(
                                "DELETE FROM bus_log WHERE topic = ?1 AND partition = ?2 AND offset >= ?3 AND offset < ?4",
                                params![name, partition, from, to],
                            )
                        })
                        .await
                        .map_err(|_| BusError::Closed)?
                        .map_err(backend)?;
                    deleted += n as u64;
                    from = to;
                }
            }
        }
        Ok(deleted)
    }

    /// Queues a command for the next group commit and makes sure one is scheduled: every
    /// command queued while a commit runs goes into the following one.
    async fn send(&self, make: impl FnOnce(oneshot::Sender<Result<(), BusError>>) -> WriteCmd) -> Result<(), BusError> {
        let (reply, rx) = oneshot::channel();
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner()).push(make(reply));
        if !self.inner.scheduled.swap(true, Ordering::AcqRel) {
            let inner = self.inner.clone();
            self.inner
                .writer
                .submit(move |conn| {
                    inner.scheduled.store(false, Ordering::Release);
                    let cmds = std::mem::take(&mut *inner.queue.lock().unwrap_or_else(|p| p.into_inner()));
                    if !cmds.is_empty() {
                        commit_group(conn, cmds, &inner.statements);
                    }
                })
                .map_err(|_| BusError::Closed)?;
        }
        rx.await.map_err(|_| BusError::Closed)?
    }
}

impl Bus for EmbeddedLog {
    type Consumer = EmbeddedConsumer;

    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let state = self.ensure_topic(topic, partitions.max(1)).await?;
        if state.ends.len() as u32 != partitions.max(1) {
            return Err(BusError::Topic {
                topic: topic.to_owned(),
                reason: format!("exists with {} partitions, {partitions} requested", state.ends.len()),
            });
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, records: Vec<OutRecord>) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        let state = self.ensure_topic(topic, self.inner.default_partitions).await?;
        let partitions = state.ends.len() as u32;
        let records = records
            .into_iter()
            .map(|rec| PreparedRecord {
                // A record without a key (only a dead-letter copy) goes to partition 0.
                partition: rec.key.as_deref().map_or(0, |k| partition_for_key(k.as_bytes(), partitions)),
                headers_json: serde_json::to_string(&rec.headers).unwrap_or_else(|_| "[]".into()),
                key: rec.key.unwrap_or_default(),
                payload: rec.payload,
            })
            .collect();
        self.send(|reply| WriteCmd::Append { topic: state, records, reply }).await
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<EmbeddedConsumer, BusError> {
        let mut states = Vec::with_capacity(topics.len());
        for topic in topics {
            states.push(self.ensure_topic(topic, self.inner.default_partitions).await?);
        }
        let keys: Vec<(String, String)> = topics.iter().map(|t| (group.to_owned(), t.clone())).collect();
        let mut members = self.inner.members.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, topic)) = keys.iter().find(|k| members.contains_key(*k)) {
            // One process owns an embedded log, so a group has one member; scale out with Kafka.
            return Err(BusError::Topic {
                topic: topic.clone(),
                reason: format!("group {group} already has a member in this process"),
            });
        }
        for key in &keys {
            members.insert(key.clone(), ());
        }
        Ok(EmbeddedConsumer { log: self.clone(), keys, topics: states, assigned: false })
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, BusError> {
        let state = self
            .topic(topic)
            .ok_or_else(|| BusError::Topic { topic: topic.to_owned(), reason: "no such topic".into() })?;
        Ok(state.ends.iter().map(|end| *end.borrow()).collect())
    }

    async fn ping(&self) -> Result<(), BusError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.readers.with(|c| c.query_row("SELECT 1", [], |_| Ok(()))))
            .await
            .map_err(backend)?
            .map_err(backend)
    }
}

/// The single member of a consumer group on the embedded log: it is assigned every partition
/// of every topic it subscribed to.
pub struct EmbeddedConsumer {
    log: EmbeddedLog,
    /// (group, topic) of each subscription.
    keys: Vec<(String, String)>,
    topics: Vec<Arc<TopicState>>,
    assigned: bool,
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        let mut members = self.log.inner.members.lock().unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            members.remove(key);
        }
    }
}

impl Consumer for EmbeddedConsumer {
    type Partition = EmbeddedPartition;

    async fn next_assignment(&mut self) -> Result<Assignment<EmbeddedPartition>, BusError> {
        if self.assigned {
            // No other member can join, so the assignment never changes.
            std::future::pending::<()>().await;
        }
        self.assigned = true;
        let group = self.keys.first().map(|k| k.0.clone()).unwrap_or_default();
        let mut partitions = Vec::new();
        for topic in &self.topics {
            for p in 0..topic.ends.len() as u32 {
                partitions.push(EmbeddedPartition {
                    log: self.log.clone(),
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: p,
                    end: topic.ends[p as usize].subscribe(),
                    position: 0,
                });
            }
        }
        Ok(Assignment::Assigned(partitions))
    }
}

/// Reader of one partition of the embedded log.
pub struct EmbeddedPartition {
    log: EmbeddedLog,
    group: String,
    topic: Arc<TopicState>,
    partition: u32,
    end: watch::Receiver<u64>,
    position: u64,
}

impl PartitionReader for EmbeddedPartition {
    fn topic(&self) -> &str {
        &self.topic.name
    }

    fn partition(&self) -> u32 {
        self.partition
    }

    fn partition_count(&self) -> u32 {
        self.topic.ends.len() as u32
    }

    async fn committed(&self) -> Result<Option<u64>, BusError> {
        let (inner, group, topic, partition) =
            (self.log.inner.clone(), self.group.clone(), self.topic.name.clone(), self.partition);
        tokio::task::spawn_blocking(move || {
            inner.readers.with(|c| {
                c.query_row(
                    "SELECT next_offset FROM bus_offsets WHERE grp = ?1 AND topic = ?2 AND partition = ?3",
                    params![group, topic, partition],
                    |r| r.get::<_, u64>(0),
                )
                .optional()
            })
        })
        .await
        .map_err(backend)?
        .map_err(backend)
    }

    fn seek(&mut self, next_offset: u64) {
        self.position = next_offset;
    }

    async fn poll(&mut self, max: usize) -> Result<Vec<Record>, BusError> {
        let from = self.position;
        self.end.wait_for(|&end| end > from).await.map_err(|_| BusError::Closed)?;
        let (inner, topic, partition) = (self.log.inner.clone(), self.topic.name.clone(), self.partition);
        let records = tokio::task::spawn_blocking(move || {
            inner.readers.with(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT offset, key, headers, payload, ts_ms FROM bus_log \
                     WHERE topic = ?1 AND partition = ?2 AND offset >= ?3 ORDER BY offset LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![topic, partition, from, max as i64], |r| {
                    let headers: String = r.get(2)?;
                    let key: String = r.get(1)?;
                    Ok(Record {
                        topic: topic.clone(),
                        partition,
                        offset: r.get(0)?,
                        // The column is NOT NULL; a keyless record is stored with ''.
                        key: Some(key).filter(|k| !k.is_empty()),
                        undecodable: None,
                        // Written by this module as a JSON array of pairs; never user-edited.
                        headers: serde_json::from_str(&headers).unwrap_or_default(),
                        payload: r.get(3)?,
                        timestamp_ms: r.get(4)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()
            })
        })
        .await
        .map_err(backend)?
        .map_err(backend)?;
        if let Some(last) = records.last() {
            self.position = last.offset + 1;
        }
        Ok(records)
    }

    async fn commit(&mut self, next_offset: u64) -> Result<(), BusError> {
        let (group, topic, partition) = (self.group.clone(), self.topic.name.clone(), self.partition);
        self.log.send(|reply| WriteCmd::Commit { group, topic, partition, next: next_offset, reply }).await
    }

    fn end_offset(&self) -> u64 {
        *self.end.borrow()
    }
}

fn commit_group(conn: &mut rusqlite::Connection, cmds: Vec<WriteCmd>, statements: &StatementCounter) {
    let mut ends: HashMap<(String, u32), u64> = HashMap::new();
    let mut cmds = cmds;
    let outcome = match write_batch(conn, &mut cmds, &mut ends, statements) {
        Ok(()) => {
            for cmd in &cmds {
                if let WriteCmd::Append { topic, .. } = cmd {
                    for (p, sender) in topic.ends.iter().enumerate() {
                        if let Some(&end) = ends.get(&(topic.name.clone(), p as u32)) {
                            sender.send_if_modified(|cur| {
                                let grew = end > *cur;
                                *cur = (*cur).max(end);
                                grew
                            });
                        }
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "embedded log write failed; publishers get an error and may retry");
            Err(e.to_string())
        }
    };
    for cmd in cmds {
        let reply = match cmd {
            WriteCmd::Append { reply, .. } | WriteCmd::Commit { reply, .. } => reply,
        };
        let _ = reply.send(outcome.clone().map_err(BusError::transient));
    }
}

const APPEND: Table = Table {
    insert: "INSERT INTO bus_log (topic, partition, offset, key, headers, payload, ts_ms) VALUES ",
    columns: 7,
    conflict: "",
};

const COMMIT: Table = Table {
    insert: "INSERT INTO bus_offsets (grp, topic, partition, next_offset) VALUES ",
    columns: 4,
    conflict: " ON CONFLICT (grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset \
               WHERE excluded.next_offset > bus_offsets.next_offset",
};

fn write_batch(
    conn: &mut rusqlite::Connection,
    cmds: &mut [WriteCmd],
    ends: &mut HashMap<(String, u32), u64>,
    statements: &StatementCounter,
) -> rusqlite::Result<()> {
    use rusqlite::types::Value;
    let now = tally_core::now_ms();
    let mut appends = Vec::new();
    let mut commits = Vec::new();
    for cmd in cmds {
        match cmd {
            WriteCmd::Append { topic, records, .. } => {
                // Taken, not copied: a failed batch is answered with an error and re-sent by
                // its publisher.
                for rec in std::mem::take(records) {
                    let p = rec.partition;
                    let end = ends.entry((topic.name.clone(), p)).or_insert_with(|| *topic.ends[p as usize].borrow());
                    appends.push(vec![
                        Value::Text(topic.name.clone()),
                        Value::Integer(i64::from(p)),
                        Value::Integer(*end as i64),
                        Value::Text(rec.key),
                        Value::Text(rec.headers_json),
                        Value::Blob(rec.payload),
                        Value::Integer(now),
                    ]);
                    *end += 1;
                }
            }
            WriteCmd::Commit { group, topic, partition, next, .. } => commits.push(vec![
                Value::Text(std::mem::take(group)),
                Value::Text(std::mem::take(topic)),
                Value::Integer(i64::from(*partition)),
                Value::Integer(*next as i64),
            ]),
        }
    }
    let tx = conn.transaction()?;
    let n = 2 + APPEND.write(&tx, &appends)? + COMMIT.write(&tx, &commits)?; // + BEGIN, COMMIT
    tx.commit()?;
    statements.add(n);
    Ok(())
}

#[cfg(test)]
mod tests;
