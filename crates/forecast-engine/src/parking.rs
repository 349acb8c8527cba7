//! Parked events released once their reference data is known: read from the parking table,
//! normalised with the references now there, and staged — or dead-lettered with the reason if
//! the references make them invalid. The store stages each parked event once however many
//! sweepers run (`DemandStore::unpark` deletes the parked row in the same transaction), so
//! every instance may sweep.

use std::collections::BTreeSet;

use tally_bus::{Bus, Record};
use tally_runtime::EngineError;
use tally_runtime::records::{dead_letter, dead_letter_topic};
use tally_store::demand::{DemandStore, ParkedRow, Unparked};

use crate::handler::{Origin, parse_payload, staged_row};
use crate::references::References;

/// Parked events looked at per round.
const ROUND: usize = 500;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Parked events staged.
    pub staged: usize,
    /// Parked events dead-lettered (invalid with their references).
    pub dead_lettered: usize,
}

fn record_of(p: &ParkedRow) -> Record {
    Record {
        topic: p.topic.clone(),
        partition: p.partition,
        offset: p.offset,
        key: Some(tally_forecast::demand::series_key(&p.sku, &p.location)),
        headers: serde_json::from_str(&p.headers).unwrap_or_default(),
        payload: p.payload.clone().into_bytes(),
        timestamp_ms: p.event_time_ms,
        undecodable: None,
    }
}

/// Releases every parked event whose references are known; returns what it did and the
/// series whose rollup changed.
pub async fn sweep<B: Bus, S: DemandStore>(
    bus: &B,
    store: &S,
    references: &References,
) -> Result<(Swept, Vec<(String, String)>), EngineError> {
    let mut swept = Swept::default();
    let mut touched = Vec::new();
    loop {
        let ready = store.parked_ready(ROUND).await?;
        if ready.is_empty() {
            return Ok((swept, touched));
        }
        let skus: BTreeSet<String> = ready.iter().map(|p| p.sku.clone()).collect();
        let locations: BTreeSet<String> = ready.iter().map(|p| p.location.clone()).collect();
        references.load(store, skus.into_iter().collect(), locations.into_iter().collect()).await?;
        let mut release = Vec::with_capacity(ready.len());
        let mut dead = Vec::new();
        for p in &ready {
            let refusal = match parse_payload(&p.ty, p.payload.as_bytes()) {
                Ok((event, _)) => match (references.sku(&p.sku), references.location(&p.location)) {
                    (Some(sku), Some(location)) => match event.stage(&sku, &location) {
                        Ok(staged) => {
                            let origin = Origin {
                                source: &p.source,
                                id: &p.id,
                                topic: &p.topic,
                                partition: p.partition,
                                offset: p.offset,
                            };
                            let row = staged_row(&event, &staged, &origin);
                            release.push(Unparked { source: p.source.clone(), id: p.id.clone(), staged: Some(row) });
                            continue;
                        }
                        Err(e) => Some((e.code, e.detail)),
                    },
                    // The reference went away between the read and now: leave it parked.
                    _ => continue,
                },
                Err(r) => Some((r.reason, r.detail)),
            };
            if let Some((reason, detail)) = refusal {
                dead.push((dead_letter_topic(&p.topic), dead_letter(&record_of(p), reason, &detail)));
                release.push(Unparked { source: p.source.clone(), id: p.id.clone(), staged: None });
            }
        }
        // Dead letters first: if the unpark below fails, the next sweep sends them again
        // (a duplicate in the DLQ) rather than losing them.
        for (topic, record) in dead {
            bus.publish(&topic, vec![record]).await?;
            swept.dead_lettered += 1;
        }
        if release.is_empty() {
            // Everything read was left parked (references vanished): try again later.
            return Ok((swept, touched));
        }
        let landed = store.unpark(release).await?;
        swept.staged += landed.len();
        touched.extend(tally_store::demand::touched_series(&landed));
    }
}
