//! The reference model of exactly-once effects, for tests and checks: every distinct event
//! (by `source` + `id`) applied once, in log order, to a fresh state per SKU. Whatever the
//! engine went through (duplicates, redelivery, restarts, rebalances, crashes), its stored
//! state must equal this.

use std::collections::{HashMap, HashSet};

use tally_core::{Envelope, Sku};

use crate::aggregate::EventMeta;
use crate::{ChannelRules, InventoryEvent, SkuState};

/// The state of every SKU after applying each distinct valid event of `events` once, in order.
/// Invalid events are skipped (the engine dead-letters them).
pub fn apply_each_once(events: &[Envelope], rules: &ChannelRules) -> HashMap<Sku, SkuState> {
    let mut seen = HashSet::new();
    let mut states: HashMap<Sku, SkuState> = HashMap::new();
    for env in events {
        let Ok(ev) = InventoryEvent::from_envelope(env) else { continue };
        if seen.contains(&env.key()) {
            continue;
        }
        let state = states.entry(ev.sku().clone()).or_insert_with(|| SkuState::new(ev.sku().clone()));
        // An event that would take a level out of range is dead-lettered, not remembered: the
        // state is unchanged and a later copy is tried again.
        if state.apply(&ev, EventMeta { source: &env.source, id: &env.id, time_ms: env.time_ms() }, rules).is_ok() {
            seen.insert(env.key());
        }
    }
    states
}

/// The parts of a state that effects define, without bookkeeping: the offset watermark (which
/// depends on partitioning), wall-clock stamps, and the event time of the last event seen
/// (not re-flushed for events that change nothing).
pub fn effects(state: &SkuState) -> SkuState {
    let mut s = state.clone();
    s.applied_offset = 0;
    s.updated_at_ms = 0;
    s.last_event_ms = 0;
    s
}
