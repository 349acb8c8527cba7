//! Demand events — sales, supplies (receipts of orders) and returns — parsed at the boundary
//! ([`DemandEvent::from_payload`]) and normalised against the reference data
//! ([`DemandEvent::stage`]): packs become units, a sale of a negative quantity is a return,
//! the location's time zone turns the event's instant into its business day, a supply's two
//! dates become a lead time. Past them a zero quantity, a receipt before its order or an
//! instant without a business day cannot exist.

use serde::{Deserialize, Serialize};
use tally_core::{IdError, LocationId, MAX_QUANTITY, Sku};

use crate::day;
use crate::reference::{LocationInfo, SkuInfo};

/// CloudEvents `type` of each demand event.
pub mod types {
    /// A sale (`demand.sales`).
    pub const SALE: &str = "demand.sale";
    /// A receipt of ordered stock (`demand.supplies`).
    pub const SUPPLY: &str = "demand.supply";
    /// A customer return (`demand.returns`).
    pub const RETURN: &str = "demand.return";
}

/// Earliest business day accepted (2000-01-01): older is a unit or clock error, not history.
pub const FIRST_DAY: i32 = 10_957;
/// Day after the last business day accepted (2100-01-01).
pub const END_DAY: i32 = 47_482;

/// Why a payload is not a valid demand event (the dead-letter reason and detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct DemandError {
    /// `invalid_payload` (not the expected JSON) or `invalid_field` (a value out of its rules).
    pub code: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl DemandError {
    pub(crate) fn field(detail: impl Into<String>) -> Self {
        Self { code: "invalid_field", detail: detail.into() }
    }

    pub(crate) fn payload(e: serde_json::Error) -> Self {
        Self { code: "invalid_payload", detail: e.to_string() }
    }
}

impl From<IdError> for DemandError {
    fn from(e: IdError) -> Self {
        Self::field(e.to_string())
    }
}

/// What kind of movement an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemandKind {
    /// Units sold.
    Sale,
    /// Units received against an order.
    Supply,
    /// Units returned by customers.
    Return,
}

impl DemandKind {
    /// The kind of a CloudEvents type, if it is a demand event.
    pub fn of_type(ty: &str) -> Option<Self> {
        match ty {
            types::SALE => Some(Self::Sale),
            types::SUPPLY => Some(Self::Supply),
            types::RETURN => Some(Self::Return),
            _ => None,
        }
    }

    /// `sale`, `supply` or `return`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sale => "sale",
            Self::Supply => "supply",
            Self::Return => "return",
        }
    }

    /// The kind named by [`DemandKind::as_str`].
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "sale" => Some(Self::Sale),
            "supply" => Some(Self::Supply),
            "return" => Some(Self::Return),
            _ => None,
        }
    }
}

/// What a quantity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Single units.
    #[default]
    Each,
    /// Packs of the catalogue's `pack_size`.
    Pack,
}

/// A demand event as received (before the reference data is known).
#[derive(Debug, Clone, PartialEq)]
pub struct DemandEvent {
    /// Sale, supply or return (a sale of a negative quantity is already a return here).
    pub kind: DemandKind,
    /// The SKU.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
    /// How many (> 0), in `unit`s.
    pub quantity: i64,
    /// What `quantity` counts.
    pub unit: Unit,
    /// Price per unit of a sale, if the event carries one (else the catalogue's).
    pub unit_price: Option<f64>,
    /// Whether the sale was on promotion.
    pub promo: bool,
    /// When it happened: the sale or return, or the receipt of a supply.
    pub occurred_at: jiff::Timestamp,
    /// When a supply was ordered.
    pub ordered_at: Option<jiff::Timestamp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    sku: String,
    location: String,
    #[serde(deserialize_with = "tally_core::whole::i64")]
    quantity: i64,
    #[serde(default)]
    unit: Unit,
    #[serde(default)]
    unit_price: Option<f64>,
    #[serde(default)]
    promo: bool,
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(default)]
    ordered_at: Option<String>,
    #[serde(default)]
    received_at: Option<String>,
}

fn instant(field: &str, raw: Option<String>) -> Result<jiff::Timestamp, DemandError> {
    let raw = raw.ok_or_else(|| DemandError::field(format!("{field} is required")))?;
    raw.parse().map_err(|e| DemandError::field(format!("{field} is not an RFC 3339 time: {e}")))
}

fn absent(field: &str, value: &Option<String>, kind: DemandKind) -> Result<(), DemandError> {
    match value {
        Some(_) => Err(DemandError::field(format!("{field} does not belong to a {} event", kind.as_str()))),
        None => Ok(()),
    }
}

impl DemandEvent {
    /// Parses the `data` of a demand event of `kind`.
    pub fn from_payload(kind: DemandKind, payload: &[u8]) -> Result<Self, DemandError> {
        let w: Wire = serde_json::from_slice(payload).map_err(DemandError::payload)?;
        if w.quantity == 0 || w.quantity.unsigned_abs() > MAX_QUANTITY as u64 {
            return Err(DemandError::field(format!(
                "quantity must be non-zero and at most {MAX_QUANTITY} in size, got {}",
                w.quantity
            )));
        }
        if let Some(price) = w.unit_price
            && !(price.is_finite() && price >= 0.0)
        {
            return Err(DemandError::field(format!("unit_price must be a finite number ≥ 0, got {price}")));
        }
        let (kind, quantity) = match kind {
            // A negative sale is how many point-of-sale systems record a refund.
            DemandKind::Sale if w.quantity < 0 => (DemandKind::Return, -w.quantity),
            DemandKind::Return => (DemandKind::Return, w.quantity.abs()),
            DemandKind::Supply if w.quantity < 0 => {
                return Err(DemandError::field(format!(
                    "quantity of a supply must be positive, got {} (a correction is an inventory adjustment)",
                    w.quantity
                )));
            }
            other => (other, w.quantity),
        };
        let (occurred_at, ordered_at) = match kind {
            DemandKind::Supply => {
                absent("occurred_at", &w.occurred_at, kind)?;
                let ordered = instant("ordered_at", w.ordered_at)?;
                let received = instant("received_at", w.received_at)?;
                if received < ordered {
                    return Err(DemandError::field("received_at is before ordered_at"));
                }
                (received, Some(ordered))
            }
            DemandKind::Sale | DemandKind::Return => {
                absent("ordered_at", &w.ordered_at, kind)?;
                absent("received_at", &w.received_at, kind)?;
                (instant("occurred_at", w.occurred_at)?, None)
            }
        };
        if w.sku.contains('@') {
            return Err(DemandError::field("sku must not contain '@' (it separates SKU and location in a series key)"));
        }
        Ok(Self {
            kind,
            sku: Sku::parse(w.sku)?,
            location: LocationId::parse(w.location)?,
            quantity,
            unit: w.unit,
            unit_price: w.unit_price,
            promo: w.promo,
            occurred_at,
            ordered_at,
        })
    }

    /// The series it belongs to, and its partition key: `sku@location`.
    pub fn series_key(&self) -> String {
        series_key(self.sku.as_str(), self.location.as_str())
    }

    /// The event in units and business days of its references.
    pub fn stage(&self, sku: &SkuInfo, location: &LocationInfo) -> Result<Staged, DemandError> {
        let zone = location.zone()?;
        let units = match self.unit {
            Unit::Each => self.quantity,
            Unit::Pack => self.quantity.saturating_mul(i64::from(sku.pack_size)),
        };
        if units > MAX_QUANTITY {
            return Err(DemandError::field(format!("{units} units is more than {MAX_QUANTITY}")));
        }
        let day = business_day(self.occurred_at, &zone)?;
        let today = business_day(jiff::Timestamp::now(), &zone)?;
        if day > today + 1 {
            return Err(DemandError::field(format!(
                "business day {} is in the future (today is {} at the location)",
                day::iso(day),
                day::iso(today)
            )));
        }
        let lead_time_days =
            self.ordered_at.map(|ordered| business_day(ordered, &zone).map(|o| day - o)).transpose()?;
        let revenue = match self.kind {
            DemandKind::Sale => units as f64 * self.unit_price.unwrap_or(sku.price),
            DemandKind::Supply | DemandKind::Return => 0.0,
        };
        Ok(Staged { kind: self.kind, day, units, revenue, promo: self.promo, lead_time_days })
    }
}

/// `sku@location`.
pub fn series_key(sku: &str, location: &str) -> String {
    format!("{sku}@{location}")
}

/// The local date of `at` in `zone`, as a day number, if within the accepted years.
pub fn business_day(at: jiff::Timestamp, zone: &jiff::tz::TimeZone) -> Result<i32, DemandError> {
    let date = zone.to_datetime(at).date();
    let d = day::from_civil(i32::from(date.year()), date.month() as u32, date.day() as u32);
    if !(FIRST_DAY..END_DAY).contains(&d) {
        return Err(DemandError::field(format!("business day {} is outside 2000-01-01 … 2099-12-31", day::iso(d))));
    }
    Ok(d)
}

/// An event normalised: what the staging tables and the daily rollup hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    /// Sale, supply or return.
    pub kind: DemandKind,
    /// Business day (days since 1970-01-01) in the location's time zone.
    pub day: i32,
    /// Units (> 0).
    pub units: i64,
    /// Revenue of a sale (units × price), 0 otherwise.
    pub revenue: f64,
    /// Sold on promotion.
    pub promo: bool,
    /// Days from order to receipt of a supply.
    pub lead_time_days: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> LocationInfo {
        LocationInfo {
            location: LocationId::parse("berlin-1").expect("valid"),
            region: "DE".into(),
            time_zone: "Europe/Berlin".into(),
        }
    }

    fn milk() -> SkuInfo {
        SkuInfo {
            sku: Sku::parse("milk").expect("valid"),
            category: "dairy".into(),
            brand: "b".into(),
            price: 1.25,
            pack_size: 6,
            moq: 0,
        }
    }

    #[test]
    fn a_sale_late_in_the_evening_utc_belongs_to_the_next_local_day() {
        let e = DemandEvent::from_payload(
            DemandKind::Sale,
            br#"{"sku":"milk","location":"berlin-1","quantity":2,"unit":"pack","occurred_at":"2026-07-01T22:30:00Z"}"#,
        )
        .expect("valid");
        let s = e.stage(&milk(), &berlin()).expect("valid");
        assert_eq!(day::iso(s.day), "2026-07-02", "00:30 in Berlin (UTC+2 in summer)");
        assert_eq!((s.units, s.revenue), (12, 15.0));
        let winter = DemandEvent { occurred_at: "2026-01-01T22:30:00Z".parse().expect("valid"), ..e };
        assert_eq!(day::iso(winter.stage(&milk(), &berlin()).expect("valid").day), "2026-01-01", "23:30 at UTC+1");
    }

    #[test]
    fn a_negative_sale_is_a_return_and_a_supply_gets_its_lead_time() {
        let e = DemandEvent::from_payload(
            DemandKind::Sale,
            br#"{"sku":"milk","location":"berlin-1","quantity":-3,"unit_price":2,"occurred_at":"2026-07-01T10:00:00+02:00"}"#,
        )
        .expect("valid");
        assert_eq!((e.kind, e.quantity), (DemandKind::Return, 3));
        assert_eq!(e.stage(&milk(), &berlin()).expect("valid").revenue, 0.0);
        let s = DemandEvent::from_payload(
            DemandKind::Supply,
            br#"{"sku":"milk","location":"berlin-1","quantity":60,"ordered_at":"2026-06-24T09:00:00Z","received_at":"2026-07-01T07:00:00Z"}"#,
        )
        .expect("valid")
        .stage(&milk(), &berlin())
        .expect("valid");
        assert_eq!((s.kind, s.lead_time_days, s.units), (DemandKind::Supply, Some(7), 60));
    }

    #[test]
    fn bad_events_are_refused_with_the_field_that_is_wrong() {
        let refuse = |kind, json: &str| DemandEvent::from_payload(kind, json.as_bytes()).expect_err("refused").detail;
        assert!(
            refuse(DemandKind::Sale, r#"{"sku":"a","location":"b","quantity":0,"occurred_at":"2026-01-01T00:00:00Z"}"#)
                .contains("quantity")
        );
        assert!(
            refuse(DemandKind::Sale, r#"{"sku":"a","location":"b","quantity":1}"#).contains("occurred_at is required")
        );
        assert!(
            refuse(DemandKind::Sale, r#"{"sku":"a","location":"b","quantity":1,"occurred_at":"yesterday"}"#)
                .contains("RFC 3339")
        );
        assert!(refuse(DemandKind::Supply, r#"{"sku":"a","location":"b","quantity":-1,"ordered_at":"2026-01-02T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#).contains("positive"));
        assert!(refuse(DemandKind::Supply, r#"{"sku":"a","location":"b","quantity":1,"ordered_at":"2026-01-02T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#).contains("before"));
        assert!(refuse(DemandKind::Return, r#"{"sku":"a","location":"b","quantity":1,"occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#).contains("does not belong"));
        assert!(
            refuse(
                DemandKind::Sale,
                r#"{"sku":"a b","location":"b","quantity":1,"occurred_at":"2026-01-01T00:00:00Z"}"#
            )
            .contains("sku")
        );
        assert!(
            refuse(
                DemandKind::Sale,
                r#"{"sku":"a@b","location":"c","quantity":1,"occurred_at":"2026-01-01T00:00:00Z"}"#
            )
            .contains("'@'")
        );
        let future = DemandEvent::from_payload(
            DemandKind::Sale,
            br#"{"sku":"milk","location":"b","quantity":1,"occurred_at":"2098-01-01T12:00:00Z"}"#,
        )
        .expect("valid");
        assert!(future.stage(&milk(), &berlin()).expect_err("refused").detail.contains("future"));
        let old = DemandEvent::from_payload(
            DemandKind::Sale,
            br#"{"sku":"milk","location":"b","quantity":1,"occurred_at":"1999-01-01T12:00:00Z"}"#,
        )
        .expect("valid");
        assert!(old.stage(&milk(), &berlin()).expect_err("refused").detail.contains("outside"));
    }
}
