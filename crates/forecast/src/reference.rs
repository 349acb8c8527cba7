//! Reference data demand events are enriched from: the SKU catalogue (category, brand,
//! price, pack size, minimum order) and the locations (region, time zone). Parsed at the
//! boundary: past [`SkuInfo::parse`] and [`LocationInfo::parse`] a pack size of zero or an
//! unknown time zone cannot exist.

use serde::{Deserialize, Serialize};
use tally_core::{LocationId, Sku};

use crate::demand::DemandError;

/// Longest category, brand or region name.
pub const MAX_NAME_LEN: usize = 128;

/// A catalogue entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuInfo {
    /// The SKU.
    pub sku: Sku,
    /// Product category.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub category: String,
    /// Brand.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub brand: String,
    /// List price per unit (the catalogue's currency), used when a sale carries none.
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1e12)]
    pub price: f64,
    /// Units per pack: an event counted in packs is multiplied by it, and orders are rounded
    /// up to whole packs.
    #[serde(default = "one", deserialize_with = "tally_core::whole::u32")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub pack_size: u32,
    /// Minimum order quantity in units (0: none).
    #[serde(default, deserialize_with = "tally_core::whole::u32")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub moq: u32,
}

fn one() -> u32 {
    1
}

/// A location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationInfo {
    /// The location.
    pub location: LocationId,
    /// Region.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub region: String,
    /// IANA time zone (`Europe/Berlin`): its local date is the business day of an event. A
    /// name the time zone database does not know is refused with 422.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")]
    pub time_zone: String,
}

fn name(field: &str, value: &str) -> Result<(), DemandError> {
    if value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(DemandError::field(format!(
            "{field} must be at most {MAX_NAME_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

impl SkuInfo {
    /// A catalogue entry from JSON, checked.
    pub fn parse(json: &[u8]) -> Result<Self, DemandError> {
        let info: Self = serde_json::from_slice(json).map_err(DemandError::payload)?;
        info.checked()
    }

    /// The entry if its values are in range.
    pub fn checked(self) -> Result<Self, DemandError> {
        if self.sku.as_str().contains('@') {
            return Err(DemandError::field("sku must not contain '@' (it separates SKU and location in a series key)"));
        }
        name("category", &self.category)?;
        name("brand", &self.brand)?;
        if !(self.price.is_finite() && (0.0..=1e12).contains(&self.price)) {
            return Err(DemandError::field(format!("price must be 0 to 10^12, got {}", self.price)));
        }
        if self.pack_size == 0 || self.pack_size > 1_000_000 {
            return Err(DemandError::field(format!("pack_size must be 1 to 1000000, got {}", self.pack_size)));
        }
        if self.moq > 1_000_000_000 {
            return Err(DemandError::field(format!("moq must be at most 1000000000, got {}", self.moq)));
        }
        Ok(self)
    }
}

impl LocationInfo {
    /// A location from JSON, checked.
    pub fn parse(json: &[u8]) -> Result<Self, DemandError> {
        let info: Self = serde_json::from_slice(json).map_err(DemandError::payload)?;
        info.checked()
    }

    /// The location if its region is a name and its time zone exists.
    pub fn checked(self) -> Result<Self, DemandError> {
        name("region", &self.region)?;
        self.zone()?;
        Ok(self)
    }

    /// Its time zone.
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, DemandError> {
        jiff::tz::TimeZone::get(&self.time_zone)
            .map_err(|_| DemandError::field(format!("time_zone {:?} is not an IANA time zone", self.time_zone)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked_when_parsed() {
        let sku = SkuInfo::parse(br#"{"sku":"A-1","category":"dairy","price":1.5,"pack_size":6}"#).expect("valid");
        assert_eq!((sku.pack_size, sku.moq, sku.brand.as_str()), (6, 0, ""));
        assert!(SkuInfo::parse(br#"{"sku":"A-1","pack_size":0}"#).expect_err("refused").detail.contains("pack_size"));
        assert!(SkuInfo::parse(br#"{"sku":"A-1","price":-1}"#).expect_err("refused").detail.contains("price"));
        assert_eq!(SkuInfo::parse(br#"{"sku":"A-1","colour":"red"}"#).expect_err("refused").code, "invalid_payload");
        let loc = LocationInfo::parse(br#"{"location":"berlin-1","region":"DE","time_zone":"Europe/Berlin"}"#);
        assert!(loc.is_ok());
        let bad = LocationInfo::parse(br#"{"location":"x","time_zone":"Mars/Olympus"}"#).expect_err("refused");
        assert!(bad.detail.contains("IANA"), "{bad}");
    }
}
