//! One subsystem's share of the ledger's tables (its documents, appended rows and idempotency
//! records) in whichever backend configuration chose — what fraud and forecast journal into.

use crate::StoreError;
use crate::demand::{
    DailyRow, DemandEffects, DemandStore, History, LocationRow, ParkedRow, SkuRow, StagedRow, Unparked,
};
use crate::ledger::{DocumentStore, Documents, Flush, Journal};
use crate::postgres::PostgresDocuments;
use crate::sqlite::SqliteDocuments;

/// Either backend's documents.
#[derive(Clone)]
pub enum AnyDocuments {
    /// The embedded SQLite file.
    Sqlite(SqliteDocuments),
    /// PostgreSQL.
    Postgres(PostgresDocuments),
}

/// The `Ledger` of an enum over the two backends (`Sqlite(_)`, `Postgres(_)`), each variant's
/// own `Ledger` doing the work: written once for `AnyStore` and `AnyDocuments`.
macro_rules! impl_any_ledger {
    ($any:ident) => {
        impl $crate::ledger::Ledger for $any {
            async fn migrate(&self) -> Result<Vec<String>, $crate::StoreError> {
                match self {
                    $any::Sqlite(s) => s.migrate().await,
                    $any::Postgres(s) => s.migrate().await,
                }
            }

            async fn pending_migrations(&self) -> Result<Vec<String>, $crate::StoreError> {
                match self {
                    $any::Sqlite(s) => s.pending_migrations().await,
                    $any::Postgres(s) => s.pending_migrations().await,
                }
            }

            async fn committed_offset(
                &self,
                group: &str,
                topic: &str,
                partition: u32,
            ) -> Result<Option<u64>, $crate::StoreError> {
                match self {
                    $any::Sqlite(s) => s.committed_offset(group, topic, partition).await,
                    $any::Postgres(s) => s.committed_offset(group, topic, partition).await,
                }
            }

            async fn processed_between(
                &self,
                topic: &str,
                partition: u32,
                from_offset: u64,
                to_offset: u64,
            ) -> Result<Vec<$crate::ProcessedEvent>, $crate::StoreError> {
                match self {
                    $any::Sqlite(s) => s.processed_between(topic, partition, from_offset, to_offset).await,
                    $any::Postgres(s) => s.processed_between(topic, partition, from_offset, to_offset).await,
                }
            }

            async fn processed_many(
                &self,
                keys: Vec<tally_core::EventKey>,
            ) -> Result<Vec<$crate::ProcessedEvent>, $crate::StoreError> {
                match self {
                    $any::Sqlite(s) => s.processed_many(keys).await,
                    $any::Postgres(s) => s.processed_many(keys).await,
                }
            }

            async fn ping(&self) -> Result<(), $crate::StoreError> {
                match self {
                    $any::Sqlite(s) => s.ping().await,
                    $any::Postgres(s) => s.ping().await,
                }
            }

            fn statements(&self) -> u64 {
                match self {
                    $any::Sqlite(s) => s.statements(),
                    $any::Postgres(s) => s.statements(),
                }
            }
        }
    };
}
#[cfg(feature = "inventory")]
pub(crate) use impl_any_ledger;

impl_any_ledger!(AnyDocuments);

macro_rules! delegate {
    ($self:ident, $d:ident => $call:expr) => {
        match $self {
            AnyDocuments::Sqlite($d) => $call,
            AnyDocuments::Postgres($d) => $call,
        }
    };
}

impl Journal<Documents> for AnyDocuments {
    async fn flush(&self, batch: &[Flush<Documents>]) -> Result<(), StoreError> {
        delegate!(self, d => d.flush(batch).await)
    }
}

impl DocumentStore for AnyDocuments {
    async fn documents(&self, keys: Vec<String>) -> Result<Vec<(String, i64, String)>, StoreError> {
        delegate!(self, d => d.documents(keys).await)
    }

    async fn appended(&self, key: String) -> Result<Vec<(String, String)>, StoreError> {
        delegate!(self, d => d.appended(key).await)
    }
}

impl Journal<DemandEffects> for AnyDocuments {
    async fn flush(&self, batch: &[Flush<DemandEffects>]) -> Result<(), StoreError> {
        delegate!(self, d => d.flush(batch).await)
    }
}

impl DemandStore for AnyDocuments {
    async fn put_skus(&self, rows: Vec<SkuRow>) -> Result<(), StoreError> {
        delegate!(self, d => d.put_skus(rows).await)
    }

    async fn put_locations(&self, rows: Vec<LocationRow>) -> Result<(), StoreError> {
        delegate!(self, d => d.put_locations(rows).await)
    }

    async fn skus(&self, skus: Vec<String>) -> Result<Vec<SkuRow>, StoreError> {
        delegate!(self, d => d.skus(skus).await)
    }

    async fn locations(&self, locations: Vec<String>) -> Result<Vec<LocationRow>, StoreError> {
        delegate!(self, d => d.locations(locations).await)
    }

    async fn parked_ready(&self, limit: usize) -> Result<Vec<ParkedRow>, StoreError> {
        delegate!(self, d => d.parked_ready(limit).await)
    }

    async fn parked_count(&self) -> Result<u64, StoreError> {
        delegate!(self, d => d.parked_count().await)
    }

    async fn unpark(&self, events: Vec<Unparked>) -> Result<Vec<StagedRow>, StoreError> {
        delegate!(self, d => d.unpark(events).await)
    }

    async fn daily(&self, sku: String, location: String) -> Result<Vec<DailyRow>, StoreError> {
        delegate!(self, d => d.daily(sku, location).await)
    }

    async fn supplies(&self, sku: String, location: String) -> Result<Vec<(i32, i32)>, StoreError> {
        delegate!(self, d => d.supplies(sku, location).await)
    }

    async fn histories(&self, series: Vec<(String, String)>) -> Result<Vec<History>, StoreError> {
        delegate!(self, d => d.histories(series).await)
    }

    async fn last_day(&self) -> Result<Option<i32>, StoreError> {
        delegate!(self, d => d.last_day().await)
    }

    async fn series(&self) -> Result<Vec<(String, String)>, StoreError> {
        delegate!(self, d => d.series().await)
    }

    async fn ensure_partitions(&self, from_day: i32, to_day: i32) -> Result<Vec<String>, StoreError> {
        delegate!(self, d => d.ensure_partitions(from_day, to_day).await)
    }

    async fn event_partitions(&self) -> Result<Vec<String>, StoreError> {
        delegate!(self, d => d.event_partitions().await)
    }
}
