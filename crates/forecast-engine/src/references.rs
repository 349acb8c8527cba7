//! The reference data every partition's handler enriches from: catalogue entries and
//! locations, shared by the partitions of one process, read from the store on a miss and
//! again once an entry is older than its time to live (another instance's API may have
//! changed it). A miss is never cached: an event whose reference is unknown is parked, and the
//! next event for that SKU asks the store again.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tally_forecast::reference::{LocationInfo, SkuInfo};
use tally_store::StoreError;
use tally_store::demand::{DemandStore, LocationRow, SkuRow};

/// Shared reference data.
pub struct References {
    ttl: Duration,
    skus: RwLock<HashMap<String, (SkuInfo, Instant)>>,
    locations: RwLock<HashMap<String, (LocationInfo, Instant)>>,
}

/// A catalogue row as the domain's entry (rows that no longer pass the checks are skipped:
/// they were checked when stored, so one failing now is a foreign write).
pub fn sku_of(row: SkuRow) -> Option<SkuInfo> {
    let info = SkuInfo {
        sku: tally_core::Sku::parse(row.sku).ok()?,
        category: row.category,
        brand: row.brand,
        price: row.price,
        pack_size: u32::try_from(row.pack_size).ok()?,
        moq: u32::try_from(row.moq).ok()?,
    };
    info.checked().ok()
}

/// A location row as the domain's entry.
pub fn location_of(row: LocationRow) -> Option<LocationInfo> {
    let info = LocationInfo {
        location: tally_core::LocationId::parse(row.location).ok()?,
        region: row.region,
        time_zone: row.time_zone,
    };
    info.checked().ok()
}

/// The row of a catalogue entry.
pub fn sku_row(info: &SkuInfo) -> SkuRow {
    SkuRow {
        sku: info.sku.as_str().to_owned(),
        category: info.category.clone(),
        brand: info.brand.clone(),
        price: info.price,
        pack_size: i64::from(info.pack_size),
        moq: i64::from(info.moq),
    }
}

/// The row of a location.
pub fn location_row(info: &LocationInfo) -> LocationRow {
    LocationRow {
        location: info.location.as_str().to_owned(),
        region: info.region.clone(),
        time_zone: info.time_zone.clone(),
    }
}

fn read<K, V>(lock: &RwLock<HashMap<K, V>>) -> std::sync::RwLockReadGuard<'_, HashMap<K, V>> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<K, V>(lock: &RwLock<HashMap<K, V>>) -> std::sync::RwLockWriteGuard<'_, HashMap<K, V>> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl References {
    /// Empty, with entries kept for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, skus: RwLock::default(), locations: RwLock::default() }
    }

    /// Makes sure the entries of `skus` and `locations` that exist are loaded and fresh.
    pub async fn load<S: DemandStore>(
        &self,
        store: &S,
        skus: Vec<String>,
        locations: Vec<String>,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let stale = |at: &Instant| now.duration_since(*at) > self.ttl;
        let skus: Vec<String> = {
            let known = read(&self.skus);
            skus.into_iter().filter(|s| known.get(s).is_none_or(|(_, at)| stale(at))).collect()
        };
        let locations: Vec<String> = {
            let known = read(&self.locations);
            locations.into_iter().filter(|l| known.get(l).is_none_or(|(_, at)| stale(at))).collect()
        };
        if !skus.is_empty() {
            let rows = store.skus(skus).await?;
            let mut known = write(&self.skus);
            for info in rows.into_iter().filter_map(sku_of) {
                known.insert(info.sku.as_str().to_owned(), (info, now));
            }
        }
        if !locations.is_empty() {
            let rows = store.locations(locations).await?;
            let mut known = write(&self.locations);
            for info in rows.into_iter().filter_map(location_of) {
                known.insert(info.location.as_str().to_owned(), (info, now));
            }
        }
        Ok(())
    }

    /// A loaded catalogue entry.
    pub fn sku(&self, sku: &str) -> Option<SkuInfo> {
        read(&self.skus).get(sku).map(|(info, _)| info.clone())
    }

    /// A loaded location.
    pub fn location(&self, location: &str) -> Option<LocationInfo> {
        read(&self.locations).get(location).map(|(info, _)| info.clone())
    }

    /// Entries this process just stored.
    pub fn offer(&self, skus: &[SkuInfo], locations: &[LocationInfo]) {
        let now = Instant::now();
        let mut known = write(&self.skus);
        for info in skus {
            known.insert(info.sku.as_str().to_owned(), (info.clone(), now));
        }
        drop(known);
        let mut known = write(&self.locations);
        for info in locations {
            known.insert(info.location.as_str().to_owned(), (info.clone(), now));
        }
    }
}
