//! Stock at one location and the rule that lets snapshots and adjustments compose.
//!
//! A snapshot at source version V states on_hand including every adjustment of that source up
//! to V. So the location remembers the adjustments applied since its last snapshot; a newer
//! snapshot replaces on_hand and re-adds only the remembered adjustments *newer* than itself.
//! The result is order-independent: after any arrival order of distinct snapshots and
//! adjustments, on_hand = N(Vmax) + Σ delta of adjustments with version > Vmax (unversioned
//! adjustments count until the next snapshot, which is taken to include them).

use serde::{Deserialize, Serialize};

use crate::event::MAX_QUANTITY;

/// An adjustment applied after the last snapshot, remembered until a snapshot covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelta {
    /// Source version it belongs to; `None` means covered by the next snapshot.
    pub source_version: Option<u64>,
    /// Signed change.
    pub delta: i64,
}

/// On-hand stock of one SKU at one location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationStock {
    /// Units physically on hand.
    pub on_hand: i64,
    /// Units never offered to any channel.
    pub safety_stock: i64,
    /// Units held by active reservations here (held and shipped-unconfirmed), kept in step
    /// with the reservations so that `available` costs O(1) however many holds there are.
    #[serde(default)]
    pub reserved: i64,
    /// Source version of the last applied snapshot (0: none yet).
    pub snapshot_version: u64,
    /// Adjustments applied since that snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub since_snapshot: Vec<PendingDelta>,
}

/// What a snapshot or adjustment did to a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    /// on_hand changed by this much (possibly 0).
    Applied(i64),
    /// A snapshot not newer than the stored one; ignored.
    StaleSnapshot {
        /// Stored snapshot version.
        stored: u64,
    },
    /// An adjustment already included in a newer snapshot; ignored.
    Covered {
        /// Stored snapshot version.
        stored: u64,
    },
}

impl LocationStock {
    /// Applies a snapshot if newer than the last one.
    pub fn apply_snapshot(&mut self, on_hand: i64, source_version: u64) -> Result<StockChange, OutOfRange> {
        if source_version <= self.snapshot_version && self.snapshot_version != 0 {
            return Ok(StockChange::StaleSnapshot { stored: self.snapshot_version });
        }
        let newer = |d: &PendingDelta| d.source_version.is_some_and(|v| v > source_version);
        // At most 256 pending deltas of at most MAX_QUANTITY each: the i128 sum cannot overflow.
        let after = i128::from(on_hand)
            + self.since_snapshot.iter().filter(|d| newer(d)).map(|d| i128::from(d.delta)).sum::<i128>();
        let after = within_bounds("on_hand", after)?;
        self.since_snapshot.retain(newer);
        let change = after - self.on_hand;
        self.on_hand = after;
        self.snapshot_version = source_version;
        Ok(StockChange::Applied(change))
    }

    /// Applies an adjustment unless a newer snapshot already includes it.
    pub fn apply_delta(&mut self, delta: i64, source_version: Option<u64>) -> Result<StockChange, OutOfRange> {
        if let Some(v) = source_version
            && v <= self.snapshot_version
        {
            return Ok(StockChange::Covered { stored: self.snapshot_version });
        }
        self.on_hand = within_bounds("on_hand", i128::from(self.on_hand) + i128::from(delta))?;
        self.since_snapshot.push(PendingDelta { source_version, delta });
        // Bound memory for sources that never snapshot: keep the newest entries only. Entries
        // dropped here would only matter if a snapshot *older* than them arrived later.
        const MAX_PENDING: usize = 256;
        if self.since_snapshot.len() > MAX_PENDING {
            let excess = self.since_snapshot.len() - MAX_PENDING;
            self.since_snapshot.drain(..excess);
        }
        Ok(StockChange::Applied(delta))
    }
}

/// A stored level that an event would take past ±[`MAX_QUANTITY`]: the event is refused whole
/// (dead-lettered) and the state is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} would become {value}, outside ±{MAX_QUANTITY}")]
pub struct OutOfRange {
    /// The level.
    pub field: &'static str,
    /// The value it would have taken.
    pub value: i128,
}

/// `value` as an i64 if it lies within ±[`MAX_QUANTITY`].
pub fn within_bounds(field: &'static str, value: i128) -> Result<i64, OutOfRange> {
    if (-i128::from(MAX_QUANTITY)..=i128::from(MAX_QUANTITY)).contains(&value) {
        // In range, so it fits an i64.
        Ok(value as i64)
    } else {
        Err(OutOfRange { field, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_snapshot_never_overwrites_newer_stock() {
        let mut s = LocationStock::default();
        assert_eq!(s.apply_snapshot(10, 5), Ok(StockChange::Applied(10)));
        assert_eq!(s.apply_snapshot(99, 4), Ok(StockChange::StaleSnapshot { stored: 5 }));
        assert_eq!(s.apply_snapshot(99, 5), Ok(StockChange::StaleSnapshot { stored: 5 }));
        assert_eq!(s.on_hand, 10);
    }

    #[test]
    fn adjustment_covered_by_a_newer_snapshot_is_not_counted_twice() {
        let mut s = LocationStock::default();
        s.apply_snapshot(10, 5).expect("in range");
        assert_eq!(s.apply_delta(-3, Some(4)), Ok(StockChange::Covered { stored: 5 }));
        assert_eq!(s.on_hand, 10);
    }

    #[test]
    fn adjustment_newer_than_the_snapshot_survives_a_late_older_snapshot() {
        let mut s = LocationStock::default();
        s.apply_snapshot(10, 5).expect("in range");
        s.apply_delta(-3, Some(7)).expect("in range"); // 7
        s.apply_snapshot(20, 6).expect("in range"); // 20 at v6 does not include v7's -3
        assert_eq!(s.on_hand, 17);
        s.apply_snapshot(30, 8).expect("in range"); // v8 includes v7
        assert_eq!(s.on_hand, 30);
        assert!(s.since_snapshot.is_empty());
    }

    #[test]
    fn a_level_never_leaves_its_bounds_and_a_refused_change_leaves_the_stock_as_it_was() {
        let mut s = LocationStock::default();
        s.apply_snapshot(MAX_QUANTITY, 1).expect("the maximum itself is fine");
        let before = s.clone();
        assert_eq!(s.apply_delta(1, None), Err(OutOfRange { field: "on_hand", value: i128::from(MAX_QUANTITY) + 1 }));
        assert_eq!(s, before);
        s.apply_delta(-MAX_QUANTITY, Some(3)).expect("back to 0");
        s.apply_delta(-MAX_QUANTITY, Some(4)).expect("down to -MAX");
        assert!(s.apply_delta(-1, None).is_err());
        // A snapshot older than the pending deltas re-adds them: 1e12 + 2 × (-1e12) is in range.
        assert_eq!(s.apply_snapshot(MAX_QUANTITY, 2), Ok(StockChange::Applied(0)));
        assert_eq!(s.on_hand, -MAX_QUANTITY);
    }
}
