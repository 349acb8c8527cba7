//! Demand forecasting's staging tables (SPEC §5.2), as the store sees them: plain rows, no
//! domain type.
//!
//! - `demand_events`: one row per staged event (sale, supply, return), unique by its
//!   idempotency key. PostgreSQL partitions it by month of the business day and keeps
//!   partitions ahead ([`DemandStore::ensure_partitions`]; a flush creates a missing month's
//!   partition before it writes). SQLite keeps the same table unpartitioned.
//! - `demand_daily`: the rollup per (sku, location, business day), incremented by the same
//!   statement that inserts the event rows, and **only for rows that were inserted** — a
//!   replayed event changes neither table, whatever the consumer in front of it does.
//! - `demand_watermark`: one row, the latest business day staged, raised (never lowered) in
//!   the same transaction as the rollup — what [`DemandStore::last_day`] reads instead of a
//!   scan of the rollup.
//! - `demand_parked`: events whose SKU or location is not in the reference tables yet, kept
//!   whole until [`DemandStore::unpark`] stages them (once: the parked row is deleted in the
//!   same transaction, and only events whose row this call deleted are staged).
//! - `demand_skus`, `demand_locations`: the reference tables.
//!
//! Business days are whole days since 1970-01-01 here; PostgreSQL stores them as `date`,
//! SQLite as that integer.

use std::future::Future;

use crate::StoreError;
use crate::ledger::{Effects, Journal};

/// A staged event.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRow {
    /// CloudEvents source (with `id`, the idempotency key).
    pub source: String,
    /// CloudEvents id.
    pub id: String,
    /// `sale`, `supply` or `return`.
    pub kind: String,
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Business day (days since 1970-01-01).
    pub day: i32,
    /// Units (> 0).
    pub units: i64,
    /// Revenue of a sale.
    pub revenue: f64,
    /// Sold on promotion.
    pub promo: bool,
    /// Order-to-receipt days of a supply.
    pub lead_time_days: Option<i32>,
    /// Event time (ms since the epoch).
    pub event_time_ms: i64,
    /// Where it was consumed: topic,
    pub topic: String,
    /// partition,
    pub partition: u32,
    /// and offset.
    pub offset: u64,
}

/// An event waiting for its reference data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRow {
    /// CloudEvents source.
    pub source: String,
    /// CloudEvents id.
    pub id: String,
    /// CloudEvents type.
    pub ty: String,
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// What is missing: `sku`, `location` or `sku,location`.
    pub missing: String,
    /// The record's headers as a JSON array of `[name, value]` (to dead-letter it whole).
    pub headers: String,
    /// The event's payload (JSON text).
    pub payload: String,
    /// Event time (ms since the epoch).
    pub event_time_ms: i64,
    /// Topic it was consumed from.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
}

/// A catalogue row.
#[derive(Debug, Clone, PartialEq)]
pub struct SkuRow {
    /// SKU.
    pub sku: String,
    /// Category.
    pub category: String,
    /// Brand.
    pub brand: String,
    /// List price per unit.
    pub price: f64,
    /// Units per pack.
    pub pack_size: i64,
    /// Minimum order quantity (units).
    pub moq: i64,
}

/// A location row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationRow {
    /// Location.
    pub location: String,
    /// Region.
    pub region: String,
    /// IANA time zone.
    pub time_zone: String,
}

/// One day of a series' rollup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DailyRow {
    /// Business day.
    pub day: i32,
    /// Units sold.
    pub sold: i64,
    /// Units returned.
    pub returned: i64,
    /// Units received.
    pub received: i64,
    /// Revenue of the sales.
    pub revenue: f64,
    /// Units sold on promotion.
    pub promo_sold: i64,
    /// Events staged that day.
    pub events: i64,
}

/// A parked event's fate when its references are known: staged, or dead-lettered by the
/// caller (`staged: None`) — either way its parked row goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Unparked {
    /// CloudEvents source.
    pub source: String,
    /// CloudEvents id.
    pub id: String,
    /// The staged event, if it is valid with its references.
    pub staged: Option<StagedRow>,
}

/// What the demand consumer hands the store for a poll.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DemandEffects {
    /// Events staged (rollup increments follow from them).
    pub staged: Vec<StagedRow>,
    /// Events parked.
    pub parked: Vec<ParkedRow>,
}

impl Effects for DemandEffects {
    fn merge(&mut self, later: Self) {
        self.staged.extend(later.staged);
        self.parked.extend(later.parked);
    }

    fn rows(&self) -> usize {
        self.staged.len() + self.parked.len()
    }
}

/// The series whose rollup a set of staged rows changes, distinct.
pub fn touched_series<'a>(rows: impl IntoIterator<Item = &'a StagedRow>) -> Vec<(String, String)> {
    let mut series: Vec<(String, String)> = rows.into_iter().map(|r| (r.sku.clone(), r.location.clone())).collect();
    series.sort_unstable();
    series.dedup();
    series
}

/// What a forecast reads of one day of a series' rollup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SalesDay {
    /// Business day.
    pub day: i32,
    /// Units sold.
    pub sold: i64,
    /// Units sold on promotion.
    pub promo_sold: i64,
}

impl From<&DailyRow> for SalesDay {
    fn from(row: &DailyRow) -> Self {
        Self { day: row.day, sold: row.sold, promo_sold: row.promo_sold }
    }
}

/// A series' sales and receipts as [`DemandStore::histories`] reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The days of the rollup, oldest first: only what a forecast reads of them (two years
    /// of days per series per refresh; the other columns and the sort were ~40 % of its
    /// server time).
    pub daily: Vec<SalesDay>,
    /// Receipts: `(business day, lead time in days)`, oldest first.
    pub supplies: Vec<(i32, i32)>,
}

/// Demand forecasting's tables.
pub trait DemandStore: Journal<DemandEffects> {
    /// Upserts catalogue rows.
    fn put_skus(&self, rows: Vec<SkuRow>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Upserts location rows.
    fn put_locations(&self, rows: Vec<LocationRow>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The catalogue rows of `skus` (absent ones omitted).
    fn skus(&self, skus: Vec<String>) -> impl Future<Output = Result<Vec<SkuRow>, StoreError>> + Send;
    /// The location rows of `locations` (absent ones omitted).
    fn locations(&self, locations: Vec<String>) -> impl Future<Output = Result<Vec<LocationRow>, StoreError>> + Send;
    /// Up to `limit` parked events whose SKU and location are both known now, oldest first.
    fn parked_ready(&self, limit: usize) -> impl Future<Output = Result<Vec<ParkedRow>, StoreError>> + Send;
    /// How many events are parked.
    fn parked_count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Removes parked events and stages those given a row, in one transaction: only events
    /// whose parked row this call removed are staged, so two sweepers never stage one twice.
    /// Returns the staged rows that landed.
    fn unpark(&self, events: Vec<Unparked>) -> impl Future<Output = Result<Vec<StagedRow>, StoreError>> + Send;
    /// A series' rollup, oldest day first.
    fn daily(&self, sku: String, location: String) -> impl Future<Output = Result<Vec<DailyRow>, StoreError>> + Send;
    /// A series' receipts: `(business day, lead time in days)`, oldest first.
    fn supplies(
        &self,
        sku: String,
        location: String,
    ) -> impl Future<Output = Result<Vec<(i32, i32)>, StoreError>> + Send;
    /// Many series' rollups and receipts at once, in the order asked (what a refresh batch
    /// reads: one round trip per batch, not two per series, on a server).
    fn histories(&self, series: Vec<(String, String)>)
    -> impl Future<Output = Result<Vec<History>, StoreError>> + Send;
    /// The latest business day with any staged event.
    fn last_day(&self) -> impl Future<Output = Result<Option<i32>, StoreError>> + Send;
    /// Every series with a rollup row: `(sku, location)`.
    fn series(&self) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
    /// Makes sure the event table can hold business days `from_day..=to_day` (PostgreSQL:
    /// creates the missing monthly partitions; SQLite: nothing to do). Returns the partitions
    /// created.
    fn ensure_partitions(
        &self,
        from_day: i32,
        to_day: i32,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// The event table's partitions, by name (empty where it is not partitioned).
    fn event_partitions(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}
