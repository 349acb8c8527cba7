//! Channel rules: which locations a channel sells from, its share or cap, and its buffer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tally_core::{ChannelId, LocationId};

/// How one channel derives its available-to-sell from location stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRule {
    /// Channel id, e.g. `storefront` or `partner:ozon`.
    pub id: ChannelId,
    /// Locations the channel sells from; empty means every location.
    #[serde(default)]
    pub locations: Vec<LocationId>,
    /// Percentage (0–100) of the pooled available stock offered on this channel.
    #[serde(default = "full_share")]
    pub share_percent: u8,
    /// Upper bound on what the channel may show.
    #[serde(default)]
    pub cap: Option<i64>,
    /// Units held back from this channel to absorb its sync delay.
    #[serde(default)]
    pub buffer: i64,
}

fn full_share() -> u8 {
    100
}

impl ChannelRule {
    /// A channel that sells everything from every location.
    pub fn everything(id: ChannelId) -> Self {
        Self { id, locations: Vec::new(), share_percent: 100, cap: None, buffer: 0 }
    }

    /// Whether the channel sells from `location`.
    pub fn sells_from(&self, location: &LocationId) -> bool {
        self.locations.is_empty() || self.locations.contains(location)
    }

    /// Available-to-sell from the per-location `available` quantities.
    ///
    /// A location whose available is negative (the warehouse reported less than is reserved)
    /// contributes zero rather than eating into other locations' stock.
    pub fn available_to_sell<'a>(&self, available: impl Iterator<Item = (&'a LocationId, i64)>) -> i64 {
        // In i128: no count of locations can overflow the pool, and the share is taken of the
        // whole pool (rounded down to a whole unit), never of a saturated sum.
        let pooled: i128 = available.filter(|(loc, _)| self.sells_from(loc)).map(|(_, a)| i128::from(a.max(0))).sum();
        let shared = pooled * i128::from(self.share_percent.min(100)) / 100;
        let capped = self.cap.map_or(shared, |cap| shared.min(i128::from(cap)));
        let sellable = (capped - i128::from(self.buffer)).max(0);
        i64::try_from(sellable).unwrap_or(i64::MAX)
    }
}

/// The configured channels, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRules {
    rules: BTreeMap<ChannelId, ChannelRule>,
}

impl ChannelRules {
    /// Rules from a list; a later duplicate id replaces an earlier one.
    pub fn new(rules: impl IntoIterator<Item = ChannelRule>) -> Self {
        Self { rules: rules.into_iter().map(|r| (r.id.clone(), r)).collect() }
    }

    /// The rule of one channel.
    pub fn get(&self, id: &ChannelId) -> Option<&ChannelRule> {
        self.rules.get(id)
    }

    /// Every rule, in channel-id order.
    pub fn iter(&self) -> impl Iterator<Item = &ChannelRule> {
        self.rules.values()
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no channel is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// One channel's available-to-sell of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChannelAvailability {
    /// Channel id.
    pub channel: ChannelId,
    /// Units the channel may sell now.
    pub available_to_sell: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> LocationId {
        LocationId::parse(s).expect("valid")
    }

    #[test]
    fn partner_share_cap_and_buffer_apply_in_that_order() {
        let rule = ChannelRule {
            id: ChannelId::parse("partner:ozon").expect("valid"),
            locations: vec![loc("wh-1")],
            share_percent: 50,
            cap: Some(30),
            buffer: 2,
        };
        let (w1, w2) = (loc("wh-1"), loc("wh-2"));
        // 50% of 100 = 50, capped to 30, minus buffer 2; wh-2 is not sold on this channel.
        assert_eq!(rule.available_to_sell([(&w1, 100), (&w2, 1000)].into_iter()), 28);
        assert_eq!(rule.available_to_sell([(&w1, 3)].into_iter()), 0, "never negative");
    }

    #[test]
    fn a_location_with_negative_available_does_not_reduce_others() {
        let rule = ChannelRule::everything(ChannelId::parse("storefront").expect("valid"));
        let (w1, w2) = (loc("wh-1"), loc("wh-2"));
        assert_eq!(rule.available_to_sell([(&w1, -5), (&w2, 7)].into_iter()), 7);
    }
}
