//! The exporter's [`Handler`] on the shared runtime: one per partition of `forecast.ready`
//! (keyed by run id, so every share of a run reaches the same partition, in order). Before a
//! poll's events are recorded as handled, each run they name is exported as stored then; a
//! destination that fails transiently fails the poll, which the runtime reads again with
//! backoff — nothing is recorded as exported that is not. An event that is not a run summary,
//! or names a run id unfit for a file name, is dead-lettered with the reason.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tally_bus::Record;
use tally_core::Attributes;
use tally_runtime::{Fresh, Handler, HandlerError, Output, Parsed, Refusal};
use tally_store::ledger::{DocumentStore, Documents};

use super::{ExportError, Exporter, Written, valid_run_id};
use crate::records::{self, ForecastRecord, RunKind, RunSummary};
use crate::refresh::READY_TYPE;

/// Dead-letter reasons of the exporter (the runtime adds its own).
pub const REFUSALS: [&str; 3] = ["invalid_payload", "invalid_field", "unknown_type"];

/// What exporting a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportOutcome {
    /// The run.
    pub run_id: String,
    /// Forecast rows written (series × days).
    pub forecast_rows: usize,
    /// Suggestion rows written (series).
    pub suggestion_rows: usize,
}

/// A `forecast.ready` event: the run and share it announces.
#[derive(Debug)]
pub struct Ready {
    run_id: String,
    kind: RunKind,
    finished_at_ms: i64,
}

/// The exporter of one partition.
pub struct ExportHandler<S> {
    store: S,
    exporter: Arc<Exporter>,
    /// What each run of the poll being handled wrote (filled by `prepare`).
    written: HashMap<String, Written>,
}

impl<S> ExportHandler<S> {
    /// A partition's exporter over `store` to `exporter`'s destinations.
    pub fn new(store: S, exporter: Arc<Exporter>) -> Self {
        Self { store, exporter, written: HashMap::new() }
    }
}

fn handler_error(during: &'static str, e: ExportError) -> HandlerError {
    HandlerError { during, hint: e.hint(), source: Box::new(e) }
}

impl<S: DocumentStore> ExportHandler<S> {
    /// A run's forecasts as stored now.
    async fn run_records(&self, run_id: &str) -> Result<Vec<ForecastRecord>, HandlerError> {
        let rows = self.store.appended(records::run_rows(run_id)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, body) in rows {
            match serde_json::from_str::<ForecastRecord>(&body) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(row = %id, error = %e, "a stored forecast does not parse; not exported"),
            }
        }
        Ok(out)
    }
}

impl<S: DocumentStore> Handler for ExportHandler<S> {
    type Event = Ready;
    type Outcome = ExportOutcome;
    type Effects = Documents;

    fn parse(&self, attributes: &Attributes, record: &Record) -> Result<Parsed<Ready>, Refusal> {
        if attributes.ty != READY_TYPE {
            return Err(Refusal {
                reason: "unknown_type",
                detail: format!("the exporter consumes {READY_TYPE}, not {:?}", attributes.ty),
            });
        }
        let summary: RunSummary = serde_json::from_slice(&record.payload)
            .map_err(|e| Refusal { reason: "invalid_payload", detail: format!("not a run summary: {e}") })?;
        if !valid_run_id(&summary.run_id) {
            return Err(Refusal {
                reason: "invalid_field",
                detail: format!("run_id {:?} must be 1 to 128 of A-Z a-z 0-9 - _ . (not first)", summary.run_id),
            });
        }
        Ok(Parsed {
            partition_key: summary.run_id.clone(),
            digest: tally_core::fnv1a(record.payload.iter().copied()) as i64,
            event: Ready { run_id: summary.run_id, kind: summary.kind, finished_at_ms: summary.finished_at_ms },
        })
    }

    async fn prepare(&mut self, events: &[&Ready]) -> Result<(), HandlerError> {
        self.written.clear();
        for ready in events {
            if self.written.contains_key(&ready.run_id) {
                continue;
            }
            let rows = Arc::new(self.run_records(&ready.run_id).await?);
            let written = self
                .exporter
                .export(&ready.run_id, ready.kind == RunKind::Incremental, rows)
                .await
                .map_err(|e| handler_error("exporting a forecast run", e))?;
            crate::metrics::exported(
                written.forecast_rows,
                written.suggestion_rows,
                (tally_core::now_ms() - ready.finished_at_ms).max(0) as f64 / 1e3,
            );
            self.written.insert(ready.run_id.clone(), written);
        }
        Ok(())
    }

    fn already_applied(&self, _event: &Ready, _offset: u64) -> bool {
        false
    }

    async fn apply(
        &mut self,
        events: Vec<Fresh<Ready>>,
        _out: &mut Output<Documents>,
    ) -> Vec<Result<ExportOutcome, Refusal>> {
        events
            .into_iter()
            .map(|fresh| {
                let w = self.written.get(&fresh.event.run_id).copied().unwrap_or_default();
                Ok(ExportOutcome {
                    run_id: fresh.event.run_id,
                    forecast_rows: w.forecast_rows,
                    suggestion_rows: w.suggestion_rows,
                })
            })
            .collect()
    }

    fn key_name(&self) -> &'static str {
        "run"
    }

    fn outcome_code(&self, _outcome: &ExportOutcome) -> &'static str {
        "exported"
    }
}
