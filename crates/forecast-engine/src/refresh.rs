//! Forecast refresh: a run takes a set of series, and in bounded batches reads each one's daily
//! history and supplies, computes its features, asks the `demand` model for the batch, turns
//! the forecast into a replenishment suggestion with the stock on hand, and stores it all in
//! one write per batch — the latest forecast and features per series (newest run wins), and
//! the forecast appended under the run (first one wins: a series is forecast once per run,
//! however many instances try). When the model does not answer, each series gets its last
//! forecast again, marked stale with its age. A run ends with its summary stored and a
//! `forecast.ready` event.
//!
//! Full runs come from the schedule: one run id per interval (`full-<start ms>`) that every
//! instance shares, each forecasting the series of the partitions it owns — so a partition
//! that moves to another instance mid-run is finished there (its series already done are
//! skipped). Incremental runs take the series touched by fresh data once they are quiet.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use tally_bus::{Bus, OutRecord};
use tally_cache::Cache;
use tally_core::Envelope;
use tally_forecast::day;
use tally_forecast::features::{Features, History};
use tally_forecast::replenish::{self, Policy, Position};
use tally_runtime::EngineError;
use tally_store::demand::DemandStore;
use tally_store::ledger::{AppendedRow, Document, DocumentStore, Documents, Flush, Journal};

use crate::ForecastEngine;
use crate::metrics::Stage;
use crate::ownership::partition_of;
use crate::records::{self, FeaturesRecord, ForecastDay, ForecastRecord, RunKind, RunSummary};
use crate::stock::SeriesId;

/// CloudEvents type of `forecast.ready`.
pub const READY_TYPE: &str = "forecast.ready";
/// CloudEvents source of what forecasting publishes.
pub const SOURCE: &str = "/tally/forecast";

/// A run in progress.
#[derive(Debug, Clone)]
pub struct Run {
    /// Run id.
    pub id: String,
    /// What triggered it.
    pub kind: RunKind,
    /// Version of the documents it writes (its start, Unix ms): a later run's win.
    pub version: i64,
    /// Last business day of the data.
    pub as_of: i32,
    /// Event time of the newest event staged when it started (freshness).
    pub data_ms: i64,
}

fn kind_name(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Full => "full",
        RunKind::Incremental => "incremental",
        RunKind::Manual => "manual",
    }
}

/// Quantile key: `p10`, `p50`, `p97_5` … (percent to a tenth; `_` for the decimal point, so
/// 0.025 and 0.25 stay apart).
pub(crate) fn quantile_name(q: f64) -> String {
    let pct = format!("{}", (q * 1000.0).round() / 10.0);
    format!("p{}", pct.replace('.', "_"))
}

impl<B: Bus, S: DemandStore + DocumentStore + Journal<Documents>, C: Cache> ForecastEngine<B, S, C> {
    /// A run starting now.
    pub async fn start_run(&self, id: String, kind: RunKind) -> Result<Option<Run>, EngineError> {
        let Some(as_of) = self.source(kind).last_day().await? else {
            return Ok(None);
        };
        let data_ms = self.stats.ingest_data_ms.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Some(Run { id, kind, version: tally_core::now_ms(), as_of, data_ms }))
    }

    /// The series of the partitions this instance owns (all, when `owned` is `None`).
    pub async fn owned_series(
        &self,
        owned: Option<&std::collections::BTreeSet<u32>>,
    ) -> Result<Vec<SeriesId>, EngineError> {
        let all = self.reads.series().await?;
        let Some(owned) = owned else {
            return Ok(all);
        };
        let partitions = self.bus.end_offsets(&self.cfg.topics.sales).await?.len() as u32;
        Ok(all.into_iter().filter(|(s, l)| owned.contains(&partition_of(s, l, partitions.max(1)))).collect())
    }

    /// Forecasts `series` in `run` (skipping those the run already has), stores the share's
    /// summary under `share` and publishes `forecast.ready`.
    pub async fn run_share(&self, run: &Run, series: Vec<SeriesId>, share: &str) -> Result<RunSummary, EngineError> {
        let started = Instant::now();
        let started_at_ms = tally_core::now_ms();
        let done: HashSet<String> = match run.kind {
            RunKind::Incremental => HashSet::new(),
            RunKind::Full | RunKind::Manual => {
                self.store.appended(records::run_rows(&run.id)).await?.into_iter().map(|(id, _)| id).collect()
            }
        };
        let todo: Vec<SeriesId> =
            series.into_iter().filter(|(s, l)| !done.contains(&records::run_row(&run.id, s, l))).collect();
        let skipped = done.len();
        let (mut forecast, mut stale) = (0, 0);
        // Up to `batches_in_flight` batches at once: one's reads and writes overlap another's
        // model call.
        let mut batches = todo.chunks(self.cfg.batch_size.max(1));
        let mut in_flight = FuturesUnordered::new();
        let mut failed = None;
        loop {
            while failed.is_none() && in_flight.len() < self.cfg.batches_in_flight.max(1) {
                let Some(batch) = batches.next() else { break };
                // Paced: full and manual runs, and not after the last batch.
                let pause = run.kind != RunKind::Incremental && batches.len() > 0;
                in_flight.push(async move {
                    let started = Instant::now();
                    let done = self.forecast_batch(run, batch).await;
                    if pause {
                        // Holding the batch's slot while it waits: the run's work is spread out.
                        tokio::time::sleep(pause_after(started.elapsed(), self.cfg.duty_cycle)).await;
                    }
                    done
                });
            }
            let Some(done) = in_flight.next().await else { break };
            match done {
                Ok((n, s)) => {
                    forecast += n;
                    stale += s;
                }
                // No new batch after a failure, but the ones in flight finish: dropped between
                // their store flush and their cache write, they would leave the cache with the
                // previous forecast of series the run counts as done.
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let summary = RunSummary {
            run_id: run.id.clone(),
            kind: run.kind,
            share: share.to_owned(),
            model_version: self.model_version(),
            as_of: day::iso(run.as_of),
            series: forecast,
            stale,
            skipped,
            started_at_ms,
            finished_at_ms: tally_core::now_ms(),
        };
        let body = serde_json::to_string(&summary).unwrap_or_default();
        let mut effects = Documents::default();
        effects.appended.push(AppendedRow {
            id: records::run_summary_row(&run.id, share),
            key: records::RUNS.to_owned(),
            body,
        });
        Journal::<Documents>::flush(&self.store, &[Flush { effects, processed: Vec::new(), offsets: Vec::new() }])
            .await?;
        let mut ready = Envelope::new(SOURCE, READY_TYPE, serde_json::to_value(&summary).unwrap_or_default());
        ready.id = format!("{}/{share}", run.id);
        ready.subject = Some(run.id.clone());
        let (headers, payload) = ready.to_binary();
        self.bus.publish(&self.cfg.topics.ready, vec![OutRecord::keyed(run.id.clone(), headers, payload)]).await?;
        self.metrics.run(kind_name(run.kind), forecast, stale, started.elapsed());
        self.metrics.reached(Stage::Forecast, run.data_ms);
        Ok(summary)
    }

    /// The model version in force (the flags').
    pub fn model_version(&self) -> String {
        self.flags.get().active.clone()
    }

    /// Where a run of `kind` reads series from: the replica for full and manual runs; the
    /// primary for incremental ones, which exist to show a sale just staged there (a lagging
    /// standby would hand back the history without it, and the series would wait for the next
    /// full run).
    fn source(&self, kind: RunKind) -> &S {
        match kind {
            RunKind::Incremental => &self.store,
            RunKind::Full | RunKind::Manual => &self.reads,
        }
    }

    /// The batch's histories up to `as_of`, read with one query per table.
    async fn histories(&self, run: &Run, batch: &[SeriesId]) -> Result<Vec<History>, EngineError> {
        let as_of = run.as_of;
        let stored = self.source(run.kind).histories(batch.to_vec()).await?;
        Ok(stored.into_iter().map(|h| history_until(h, as_of)).collect())
    }

    /// Forecasts one batch; returns (series forecast, of them stale).
    async fn forecast_batch(&self, run: &Run, batch: &[SeriesId]) -> Result<(usize, usize), EngineError> {
        let histories = self.histories(run, batch).await?;
        let features: Vec<Features> = histories.iter().map(Features::of).collect();
        let mut effects = Documents::default();
        let mut cached = Vec::with_capacity(batch.len() * 2);
        for ((sku, location), f) in batch.iter().zip(&features) {
            let record = FeaturesRecord { sku: sku.clone(), location: location.clone(), features: f.clone() };
            let body = serde_json::to_string(&record).unwrap_or_default();
            cached.push((records::features_cache_key(sku, location), body.clone().into_bytes()));
            effects.put(records::features_doc(sku, location), Document { version: run.version, body });
        }
        self.metrics.reached(Stage::Features, run.data_ms);
        let answer =
            self.model.forecast(histories.iter().map(|h| h.sold.clone()).collect(), &self.model_version()).await;
        let forecasts = match answer {
            Ok(f) if f.len() == batch.len() => Some(f),
            Ok(_) | Err(_) => {
                self.metrics.model_unavailable();
                None
            }
        };
        let mut made = Vec::with_capacity(batch.len());
        let mut stale = 0;
        match forecasts {
            Some(forecasts) => {
                let stock = self.stock.on_hand(batch.to_vec()).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "reading stock on hand failed; suggesting as if none were on hand");
                    HashMap::new()
                });
                for (((series, f), features), info) in
                    batch.iter().zip(forecasts).zip(&features).zip(self.pack_info(batch).await?)
                {
                    made.push(self.record(run, series, &f, features, stock.get(series).copied().unwrap_or(0), info));
                }
            }
            None => {
                for (series, previous) in batch.iter().zip(self.last_forecasts(batch).await?) {
                    if let Some(mut previous) = previous {
                        stale += 1;
                        previous.stale_age_seconds =
                            Some((tally_core::now_ms() - previous.made_at_ms).max(0) as f64 / 1e3);
                        previous.stale = true;
                        previous.run_id = run.id.clone();
                        previous.run_version = run.version;
                        made.push(previous);
                    } else {
                        tracing::warn!(sku = %series.0, location = %series.1, "the demand model is unavailable and the series has no forecast yet");
                    }
                }
            }
        }
        for r in &made {
            let body = serde_json::to_string(r).unwrap_or_default();
            cached.push((records::forecast_cache_key(&r.sku, &r.location), body.clone().into_bytes()));
            effects.appended.push(AppendedRow {
                id: records::run_row(&run.id, &r.sku, &r.location),
                key: records::run_rows(&run.id),
                body: body.clone(),
            });
            // A stale answer is the last forecast again, marked stale with its age: readers
            // see that it is stale and how old it is.
            effects.put(records::forecast_doc(&r.sku, &r.location), Document { version: run.version, body });
        }
        Journal::<Documents>::flush(&self.store, &[Flush { effects, processed: Vec::new(), offsets: Vec::new() }])
            .await?;
        if let Err(e) = self.cache.set_many(cached).await {
            tracing::warn!(error = %e, "caching forecasts failed; readers fall back to the store");
        }
        Ok((made.len(), stale))
    }

    /// Pack size and minimum order of each series' SKU (1 and 0 when unknown).
    async fn pack_info(&self, batch: &[SeriesId]) -> Result<Vec<(u32, u32)>, EngineError> {
        let skus: Vec<String> =
            batch.iter().map(|(s, _)| s.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let locations: Vec<String> =
            batch.iter().map(|(_, l)| l.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        self.references.load(&self.store, skus, locations).await?;
        Ok(batch.iter().map(|(s, _)| self.references.sku(s).map_or((1, 0), |i| (i.pack_size, i.moq))).collect())
    }

    fn record(
        &self,
        run: &Run,
        (sku, location): &SeriesId,
        f: &tally_forecast::model::SeriesForecast,
        features: &Features,
        on_hand: i64,
        (pack_size, moq): (u32, u32),
    ) -> ForecastRecord {
        let policy = Policy {
            service_level: self.cfg.service_level,
            review_days: self.cfg.review_days,
            default_lead_time_days: self.cfg.default_lead_time_days,
        };
        let sigma_daily = f.sigma.first().copied().unwrap_or(0.0);
        let suggestion = replenish::suggest(
            &Position {
                mean: &f.mean,
                sigma_daily,
                lead_time_mean: features.lead_time_mean,
                lead_time_std: features.lead_time_std,
                on_hand,
                pack_size,
                moq,
            },
            &policy,
        );
        let service = f.quantile(self.cfg.service_level);
        let levels = &self.model.settings().quantiles;
        let days = (0..f.mean.len())
            .map(|d| {
                let mut quantiles: BTreeMap<String, f64> =
                    levels.iter().zip(&f.quantiles).map(|(q, values)| (quantile_name(*q), values[d])).collect();
                quantiles.insert("service".into(), service[d]);
                ForecastDay { day: day::iso(run.as_of + 1 + d as i32), mean: f.mean[d], quantiles }
            })
            .collect();
        ForecastRecord {
            sku: sku.clone(),
            location: location.clone(),
            run_id: run.id.clone(),
            run_version: run.version,
            as_of: day::iso(run.as_of),
            model_version: self.model_version(),
            method: f.method.to_owned(),
            sigma_daily,
            service_level: self.cfg.service_level,
            days,
            suggestion,
            made_at_ms: tally_core::now_ms(),
            stale: false,
            stale_age_seconds: None,
        }
    }

    /// The latest forecast of each series: the cache, then the store.
    pub async fn last_forecasts(&self, series: &[SeriesId]) -> Result<Vec<Option<ForecastRecord>>, EngineError> {
        let keys: Vec<String> = series.iter().map(|(s, l)| records::forecast_cache_key(s, l)).collect();
        let mut found: Vec<Option<ForecastRecord>> = match self.cache.get_many(&keys).await {
            Ok(values) => values.into_iter().map(|v| v.and_then(|b| serde_json::from_slice(&b).ok())).collect(),
            Err(_) => vec![None; series.len()],
        };
        let missing: Vec<String> = series
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|((s, l), _)| records::forecast_doc(s, l))
            .collect();
        if !missing.is_empty() {
            let stored: HashMap<String, ForecastRecord> = self
                .store
                .documents(missing)
                .await?
                .into_iter()
                .filter_map(|(k, _, body)| serde_json::from_str(&body).ok().map(|r| (k, r)))
                .collect();
            for ((s, l), slot) in series.iter().zip(found.iter_mut()) {
                if slot.is_none() {
                    *slot = stored.get(&records::forecast_doc(s, l)).cloned();
                }
            }
        }
        Ok(found)
    }

    /// Every series' forecast now, by an administrator: a manual run over the series this
    /// instance owns.
    pub async fn refresh_now(&self) -> Result<Option<RunSummary>, EngineError> {
        let id = format!("manual-{}", tally_core::now_ms());
        let Some(run) = self.start_run(id, RunKind::Manual).await? else {
            return Ok(None);
        };
        let owned = self.ownership.owned();
        let series = self.owned_series(Some(&owned)).await?;
        Ok(Some(self.run_share(&run, series, &share_name(&owned)).await?))
    }

    /// Requests a manual run of every series: stored as a command every forecast instance
    /// runs its share of (within a second, on its schedule), so it works from an API-only
    /// instance too. `None` when nothing is staged yet.
    pub async fn request_manual_run(&self) -> Result<Option<String>, EngineError> {
        if self.reads.last_day().await?.is_none() {
            return Ok(None);
        }
        let requested_ms = tally_core::now_ms();
        let request = records::ManualRequest { run_id: format!("manual-{requested_ms}") };
        let mut effects = Documents::default();
        let body = serde_json::to_string(&request).unwrap_or_default();
        effects.put(records::MANUAL_REQUEST_DOC.to_owned(), Document { version: requested_ms, body });
        Journal::<Documents>::flush(&self.store, &[Flush { effects, processed: Vec::new(), offsets: Vec::new() }])
            .await?;
        Ok(Some(request.run_id))
    }

    /// The latest manual run requested, if any.
    async fn manual_request(&self) -> Result<Option<String>, EngineError> {
        let stored = self.store.documents(vec![records::MANUAL_REQUEST_DOC.to_owned()]).await?;
        Ok(stored
            .into_iter()
            .next()
            .and_then(|(_, _, body)| serde_json::from_str::<records::ManualRequest>(&body).ok())
            .map(|r| r.run_id))
    }

    /// This instance's share of manual run `id`.
    async fn manual_share(&self, id: String) -> Result<(), EngineError> {
        if let Some(run) = self.start_run(id, RunKind::Manual).await? {
            let owned = self.ownership.owned();
            let series = self.owned_series(Some(&owned)).await?;
            let summary = self.run_share(&run, series, &share_name(&owned)).await?;
            tracing::info!(run = %summary.run_id, series = summary.series, "manual forecast run share finished");
        }
        Ok(())
    }

    /// Runs the schedule until `shutdown`: the full run of each interval (and its share of
    /// partitions gained mid-interval), manual runs requested, incremental runs for touched
    /// series once quiet.
    pub(crate) async fn schedule(self, shutdown: tokio_util::sync::CancellationToken) {
        let interval_ms =
            i64::try_from(self.cfg.refresh_interval_seconds.saturating_mul(1000)).unwrap_or(i64::MAX).max(1);
        let debounce = Duration::from_millis(self.cfg.debounce_ms);
        let max_wait = Duration::from_millis(self.cfg.debounce_max_wait_ms);
        let mut done: Option<(i64, std::collections::BTreeSet<u32>)> = None;
        // A request older than one refresh interval when this instance starts is not resumed
        // (the next full run covers it); a recent one is — this instance may have been
        // restarted mid-share, and the run skips the series it already has.
        let mut manual_seen = self.manual_request().await.ok().flatten().filter(|id| {
            let requested = id.strip_prefix("manual-").and_then(|ms| ms.parse::<i64>().ok()).unwrap_or(0);
            tally_core::now_ms() - requested > interval_ms
        });
        loop {
            match self.manual_request().await {
                Ok(Some(id)) if manual_seen.as_ref() != Some(&id) => match self.manual_share(id.clone()).await {
                    Ok(()) => manual_seen = Some(id),
                    Err(e) => tracing::warn!(error = %e, run = %id, "a manual forecast run failed; retrying"),
                },
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading manual run requests failed"),
            }
            let now = tally_core::now_ms();
            let bucket = now - now.rem_euclid(interval_ms);
            let owned = self.ownership.owned();
            let new: std::collections::BTreeSet<u32> = match &done {
                Some((b, covered)) if *b == bucket => owned.difference(covered).copied().collect(),
                _ => owned.clone(),
            };
            if !new.is_empty() {
                match self.full_share(bucket, &new).await {
                    Ok(()) => {
                        let mut covered = match done.take() {
                            Some((b, c)) if b == bucket => c,
                            _ => Default::default(),
                        };
                        covered.extend(new);
                        done = Some((bucket, covered));
                    }
                    Err(e) => tracing::warn!(error = %e, "the scheduled forecast run failed; retrying"),
                }
            }
            let due = self.touched.take_due(debounce, max_wait);
            if !due.is_empty()
                && let Err(e) = self.incremental(due.clone()).await
            {
                tracing::warn!(error = %e, "an incremental forecast run failed; retrying its series");
                self.touched.mark(due);
            }
            self.metrics.export_freshness(tally_core::now_ms());
            let until_next =
                Duration::from_millis(u64::try_from(bucket + interval_ms - tally_core::now_ms()).unwrap_or(0));
            let tick = if self.touched.is_empty() {
                until_next.min(Duration::from_secs(1))
            } else {
                debounce.min(max_wait) / 2
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.touched.marked() => {}
                () = tokio::time::sleep(tick.max(Duration::from_millis(20))) => {}
            }
        }
    }

    async fn full_share(&self, bucket: i64, partitions: &std::collections::BTreeSet<u32>) -> Result<(), EngineError> {
        let Some(run) = self.start_run(format!("full-{bucket}"), RunKind::Full).await? else {
            return Ok(());
        };
        let series = self.owned_series(Some(partitions)).await?;
        let summary = self.run_share(&run, series, &share_name(partitions)).await?;
        tracing::info!(run = %summary.run_id, series = summary.series, stale = summary.stale, skipped = summary.skipped, "forecast run finished");
        Ok(())
    }

    async fn incremental(&self, series: Vec<SeriesId>) -> Result<(), EngineError> {
        let id = format!("incremental-{}-{}", tally_core::now_ms(), self.instance);
        if let Some(run) = self.start_run(id, RunKind::Incremental).await? {
            self.run_share(&run, series, &self.instance).await?;
        }
        Ok(())
    }
}

/// How long a run paced to `duty_cycle` waits after a batch that took `worked`.
fn pause_after(worked: Duration, duty_cycle: f64) -> Duration {
    if duty_cycle >= 1.0 || duty_cycle <= 0.0 {
        return Duration::ZERO;
    }
    worked.mul_f64((1.0 - duty_cycle) / duty_cycle)
}

/// A stored history as the model reads it: every day from the first to `as_of` (days without
/// a row are zeros), receipts up to `as_of`.
fn history_until(stored: tally_store::demand::History, as_of: i32) -> History {
    let rows = stored.daily;
    let first_day = rows.first().map_or(as_of, |r| r.day.min(as_of));
    let len = usize::try_from(as_of - first_day + 1).unwrap_or(0);
    let (mut sold, mut promo_sold) = (vec![0.0; len], vec![0.0; len]);
    for r in rows.iter().filter(|r| r.day <= as_of) {
        let i = (r.day - first_day) as usize;
        sold[i] = r.sold as f64;
        promo_sold[i] = r.promo_sold as f64;
    }
    History {
        first_day,
        sold,
        promo_sold,
        supplies: stored.supplies.into_iter().filter(|(d, _)| *d <= as_of).collect(),
    }
}

/// A share's name: its partitions.
fn share_name(partitions: &std::collections::BTreeSet<u32>) -> String {
    let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
    format!("p{}", list.join("-p"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_run_works_its_duty_cycle_and_waits_the_rest() {
        let worked = Duration::from_millis(300);
        assert_eq!(pause_after(worked, 1.0), Duration::ZERO, "unpaced");
        assert_eq!(pause_after(worked, 0.5), worked, "half the time working");
        assert_eq!(pause_after(worked, 0.25), Duration::from_millis(900));
    }

    #[test]
    fn quantile_names_read_as_percentiles() {
        assert_eq!(quantile_name(0.1), "p10");
        assert_eq!(quantile_name(0.5), "p50");
        assert_eq!(quantile_name(0.975), "p97_5");
        assert_ne!(quantile_name(0.025), quantile_name(0.25));
        let share: std::collections::BTreeSet<u32> = [0, 2, 3].into_iter().collect();
        assert_eq!(share_name(&share), "p0-p2-p3");
    }
}
