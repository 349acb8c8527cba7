//! The consumer ledger every subsystem shares: where each consumer group stands in each
//! partition, and which events (by `source` + `id`) were applied, with their outcome and the
//! digest of what they asked for. The consumer runtime reads it to resume and to seed its
//! idempotency window; it knows no domain type — outcomes are opaque JSON to it.
//!
//! A subsystem's store writes its effects, the idempotency records and the positions of one
//! flush in one transaction ([`Journal::flush`]). Where the records live is the subsystem's
//! choice: in the ledger's own table (`ledger_processed`), or inside its own rows where that
//! saves a write (inventory's audit row is its idempotency record).

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tally_core::EventKey;

use crate::StoreError;

/// An outcome as stored: JSON the ledger keeps but does not read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawOutcome(Box<RawValue>);

impl RawOutcome {
    /// `value` as JSON.
    pub fn of<T: Serialize>(value: &T) -> Self {
        // Outcomes are plain data (strings, numbers, maps); serialising one cannot fail.
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| Self::null()))
    }

    /// Stored JSON text, checked.
    pub fn from_json(text: String) -> Result<Self, StoreError> {
        RawValue::from_string(text)
            .map(Self)
            .map_err(|e| StoreError::Corrupt { what: "event outcome", detail: e.to_string() })
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Decodes it as the subsystem's outcome type.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_str(self.0.get())
            .map_err(|e| StoreError::Corrupt { what: "event outcome", detail: e.to_string() })
    }

    fn null() -> Box<RawValue> {
        RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
    }
}

/// Equal as JSON values: a database may store JSON reformatted (PostgreSQL's `jsonb` orders
/// keys and drops spaces).
impl PartialEq for RawOutcome {
    fn eq(&self, other: &Self) -> bool {
        let value = |raw: &RawValue| serde_json::from_str::<serde_json::Value>(raw.get()).ok();
        self.0.get() == other.0.get() || value(&self.0).is_some_and(|a| Some(a) == value(&other.0))
    }
}
impl Eq for RawOutcome {}

/// An idempotency record: this event was applied (once) with this outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessedEvent {
    /// Idempotency key.
    pub key: EventKey,
    /// Topic it was consumed from.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset of its first delivery.
    pub offset: u64,
    /// Outcome, kept for events a caller may wait on.
    pub outcome: Option<RawOutcome>,
    /// Digest of what the event asked for: a later event with the same key but another digest
    /// is a different request reusing the key, and is refused. `None` for records stored
    /// before digests were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<i64>,
}

/// A consumer group's position in one partition: everything before `next_offset` is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerOffset {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Next offset to apply.
    pub next_offset: u64,
}

/// What a subsystem's handler hands the store for one or more polls: its rows, coalesced.
pub trait Effects: Default + Send + Sync + 'static {
    /// Adds the effects of a later poll of the same partition. Latest-per-key rows keep the
    /// later row; appended rows concatenate.
    fn merge(&mut self, later: Self);
    /// Rows it writes besides the idempotency records (with them, what `flush_max_rows`
    /// counts).
    fn rows(&self) -> usize;
}

/// What one partition (or, in tests, several) flushes: its effects, the idempotency records
/// of its events and the position they bring it to. A store writes a slice of them — one per
/// partition, disjoint in keys — in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flush<E> {
    /// The subsystem's rows.
    pub effects: E,
    /// The idempotency records of the events applied, in apply order.
    pub processed: Vec<ProcessedEvent>,
    /// Consumer positions reached.
    pub offsets: Vec<ConsumerOffset>,
}

impl<E: Effects> Flush<E> {
    /// Whether the flush writes nothing.
    pub fn is_empty(&self) -> bool {
        self.effects.rows() == 0 && self.processed.is_empty() && self.offsets.is_empty()
    }
}

/// The ledger's reads, and the schema of the store it lives in.
pub trait Ledger: Clone + Send + Sync + 'static {
    /// Applies pending schema migrations; returns their names.
    fn migrate(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// The schema migrations not applied yet, without changing anything (needs no DDL rights).
    fn pending_migrations(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The position a consumer group reached in a partition.
    fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Idempotency records of a partition with offsets in `from_offset..to_offset`, oldest
    /// first, to seed an idempotency window on resume. `to_offset` is the committed position:
    /// records at or past it may belong to a flush that did not complete, and those events are
    /// applied again.
    fn processed_between(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        to_offset: u64,
    ) -> impl Future<Output = Result<Vec<ProcessedEvent>, StoreError>> + Send;

    /// The idempotency records of those of `keys` that were applied (in no particular order).
    fn processed_many(
        &self,
        keys: Vec<EventKey>,
    ) -> impl Future<Output = Result<Vec<ProcessedEvent>, StoreError>> + Send;

    /// The idempotency record of an event, if it was applied.
    fn processed(&self, key: EventKey) -> impl Future<Output = Result<Option<ProcessedEvent>, StoreError>> + Send {
        let found = self.processed_many(vec![key]);
        async move { Ok(found.await?.into_iter().next()) }
    }

    /// Checks the database answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Statements executed so far (for "statements per 1,000 events").
    fn statements(&self) -> u64;
}

/// A subsystem's store as the consumer runtime writes it.
pub trait Journal<E: Effects>: Ledger {
    /// Writes the flushes of some partitions durably. The effects and the offsets commit
    /// atomically; the idempotency records may commit before them (they are idempotent, and
    /// [`Ledger::processed_between`] is only read below the committed offset), so after a
    /// crash the events of an incomplete flush are applied again, exactly once. Rows not
    /// newer than the stored ones are left alone. Takes the flushes by reference so that a
    /// failed one is retried (or split by partition) without copying it.
    fn flush(&self, batch: &[Flush<E>]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Where a store keeps idempotency records: the ledger's own table (one subsystem's share of
/// it) or a subsystem's rows that double as them. Each names the same columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordTable {
    /// Table name.
    pub(crate) name: &'static str,
    /// The subsystem whose records these are, in the ledger's shared table.
    pub(crate) subsystem: Option<&'static str>,
}

/// Implements [`Ledger`] for a store handle whose database (`$db`, an expression of `$this`)
/// has the backends' shared inherent methods (`apply_migrations`, `migrations_pending`,
/// `offset_of`, `records_between`, `records_of`, `answer_ping`, `statement_count`), reading
/// idempotency records from `$records`. Every backend and subsystem share reads the same way.
macro_rules! impl_ledger {
    ($ty:ty, |$this:ident| $db:expr, $records:expr) => {
        impl $crate::ledger::Ledger for $ty {
            async fn migrate(&self) -> Result<Vec<String>, $crate::StoreError> {
                let $this = self;
                $db.apply_migrations().await
            }

            async fn pending_migrations(&self) -> Result<Vec<String>, $crate::StoreError> {
                let $this = self;
                $db.migrations_pending().await
            }

            async fn committed_offset(
                &self,
                group: &str,
                topic: &str,
                partition: u32,
            ) -> Result<Option<u64>, $crate::StoreError> {
                let $this = self;
                $db.offset_of(group, topic, partition).await
            }

            async fn processed_between(
                &self,
                topic: &str,
                partition: u32,
                from: u64,
                to: u64,
            ) -> Result<Vec<$crate::ProcessedEvent>, $crate::StoreError> {
                let $this = self;
                $db.records_between($records, topic, partition, from, to).await
            }

            async fn processed_many(
                &self,
                keys: Vec<tally_core::EventKey>,
            ) -> Result<Vec<$crate::ProcessedEvent>, $crate::StoreError> {
                let $this = self;
                $db.records_of($records, keys).await
            }

            async fn ping(&self) -> Result<(), $crate::StoreError> {
                let $this = self;
                $db.answer_ping().await
            }

            fn statements(&self) -> u64 {
                let $this = self;
                $db.statement_count()
            }
        }
    };
}
pub(crate) use impl_ledger;

impl RecordTable {
    /// The condition that keeps a query to this table's subsystem (empty for a table of one
    /// subsystem's own). Subsystem names are identifiers fixed in code (`[a-z_]+`), never input.
    pub(crate) fn scope(&self) -> String {
        match self.subsystem {
            Some(name) if name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                format!(" AND subsystem = '{name}'")
            }
            Some(_) => " AND false".to_owned(),
            None => String::new(),
        }
    }
}

/// The effects of a subsystem that keeps its state as JSON documents by key — the latest
/// version wins — and appends rows keyed by what made them (so a replayed event appends
/// nothing twice). The ledger stores them beside its idempotency records, in the same
/// transaction as the offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Documents {
    /// Latest document per key.
    pub latest: std::collections::HashMap<String, Document>,
    /// Rows appended, in order.
    pub appended: Vec<AppendedRow>,
}

/// A versioned JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Lands only if newer than the stored one.
    pub version: i64,
    /// JSON text.
    pub body: String,
}

/// An appended row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedRow {
    /// Unique per row and deterministic per event (`<source>/<id>/<n>`): a replayed event's
    /// row is not appended again.
    pub id: String,
    /// The key it belongs to.
    pub key: String,
    /// JSON text.
    pub body: String,
}

impl Documents {
    /// Sets the latest document of `key` (kept only if newer than what is pending).
    pub fn put(&mut self, key: String, document: Document) {
        match self.latest.get(&key) {
            Some(pending) if pending.version >= document.version => {}
            _ => {
                self.latest.insert(key, document);
            }
        }
    }
}

impl Effects for Documents {
    fn merge(&mut self, later: Self) {
        for (key, document) in later.latest {
            self.put(key, document);
        }
        self.appended.extend(later.appended);
    }

    fn rows(&self) -> usize {
        self.latest.len() + self.appended.len()
    }
}

/// Reads of a [`Documents`] journal.
pub trait DocumentStore: Journal<Documents> {
    /// The stored documents of `keys` (absent keys omitted): `(key, version, body)`.
    fn documents(
        &self,
        keys: Vec<String>,
    ) -> impl Future<Output = Result<Vec<(String, i64, String)>, StoreError>> + Send;
    /// The rows appended for `key`, oldest first: `(row id, body)`.
    fn appended(&self, key: String) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
}

/// Writes document `key` at `version` together with a first-wins row claiming that version, in
/// one transaction, and tells whether this writer's claim stands. Of writers that read the same
/// version and race to write the next one, exactly one wins (its row stands, so its document
/// landed); the others changed nothing. `mine` recognises this writer's body as stored — compare
/// parsed values, not text: PostgreSQL may give JSON back re-serialised.
pub async fn claim_version<S: DocumentStore>(
    store: &S,
    key: &str,
    version: i64,
    body: String,
    mine: impl Fn(&str) -> bool,
) -> Result<bool, StoreError> {
    let claim = format!("{key}/{version}");
    let mut effects = Documents::default();
    effects.put(key.to_owned(), Document { version, body: body.clone() });
    effects.appended.push(AppendedRow { id: claim.clone(), key: claim.clone(), body });
    store.flush(&[Flush { effects, processed: Vec::new(), offsets: Vec::new() }]).await?;
    let rows = store.appended(claim.clone()).await?;
    Ok(rows.iter().any(|(id, stored)| *id == claim && mine(stored)))
}
