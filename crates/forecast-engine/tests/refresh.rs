//! Forecast refresh end to end on the embedded stack: staged history → features → the demand
//! model → replenishment → the store (latest per series, every forecast under its run, once)
//! and `forecast.ready`; the last forecast served, marked stale with its age, while the model
//! is down; a fresh sale refreshing its series on its own.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tally_bus::Bus;
use tally_forecast::day;
use tally_forecast::demand::types;
use tally_forecast_engine::records::{self, ForecastRecord};
use tally_forecast_engine::{FixedStock, RunKind};

type Engine = common::Engine;
use tally_store::ledger::DocumentStore;

const DAYS: i64 = 140;
const START_S: i64 = 1_767_268_800; // 2026-01-01T12:00:00Z

/// 140 days of three series: weekly-seasonal `steady`, intermittent `rare`, growing `rising`;
/// a receipt every 14 days of `steady` with a 4 or 6 day lead time.
fn history() -> Vec<(&'static str, tally_bus::OutRecord)> {
    let mut out = Vec::new();
    let at = |d: i64| jiff::Timestamp::from_second(START_S + d * 86_400).expect("instant").to_string();
    for d in 0..DAYS {
        let weekly = [8, 9, 10, 11, 12, 20, 4][(d % 7) as usize];
        let sale = |sku: &str, qty: i64| {
            record(
                &format!("{sku}-{d}"),
                types::SALE,
                json!({"sku": sku, "location": "berlin", "quantity": qty, "occurred_at": at(d)}),
            )
        };
        out.push(sale("steady", weekly));
        if d % 9 == 0 {
            out.push(sale("rare", 3));
        }
        out.push(sale("rising", 5 + d / 10));
        if d % 14 == 13 {
            let ordered =
                jiff::Timestamp::from_second(START_S + (d - 4 - d % 4) * 86_400).expect("instant").to_string();
            out.push(record(
                &format!("supply-{d}"),
                types::SUPPLY,
                json!({"sku": "steady", "location": "berlin", "quantity": 150, "ordered_at": ordered, "received_at": at(d)}),
            ));
        }
    }
    out
}

async fn loaded(dir: &std::path::Path) -> Stack {
    loaded_with(dir, |e| e).await
}

async fn loaded_with(dir: &std::path::Path, adapt: impl FnOnce(Engine) -> Engine) -> Stack {
    let stock = FixedStock(HashMap::from([(("steady".to_owned(), "berlin".to_owned()), 25)]));
    let s = stack_adapted(dir, Arc::new(stock), |c| c, adapt).await;
    s.engine
        .put_references(
            vec![sku("steady", 10), sku("rare", 1), sku("rising", 1)],
            vec![location("berlin", "Europe/Berlin")],
        )
        .await
        .expect("references");
    let events = history();
    let n = events.len() as u64;
    publish(&s.bus, events).await;
    wait_staged(&s, n, 3).await;
    s
}

async fn latest(s: &Stack, sku: &str) -> ForecastRecord {
    let docs = s.engine.store.documents(vec![records::forecast_doc(sku, "berlin")]).await.expect("documents");
    serde_json::from_str(&docs.first().expect("a forecast").2).expect("record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_forecasts_every_series_once_per_run_with_quantiles_and_a_suggestion() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = loaded(dir.path()).await;
    let mut ready = s.bus.subscribe("ready-reader", &["forecast.ready".to_owned()]).await.expect("subscribe");
    let summary = s.engine.refresh_now().await.expect("refresh").expect("data to forecast");
    assert_eq!((summary.kind, summary.series, summary.stale, summary.skipped), (RunKind::Manual, 3, 0, 0));
    let last_day = day::iso(day::parse_iso("2026-01-01").expect("day") + DAYS as i32 - 1);
    assert_eq!(summary.as_of, last_day);

    let steady = latest(&s, "steady").await;
    assert_eq!(steady.days.len(), 28);
    assert_eq!(steady.days[0].day, day::iso(day::parse_iso(&last_day).expect("day") + 1));
    for d in &steady.days {
        let q = |k: &str| d.quantiles[k];
        assert!(q("p10") <= q("p50") && q("p50") <= q("p90") && q("p90") <= q("service") + 1e-9, "{d:?}");
    }
    // Its weekly shape survives: the busy day (20, the 6th of each week from 1 January)
    // forecast well above the quiet one (4, the 7th).
    let first = day::parse_iso("2026-01-01").expect("day");
    let by_weekday = |wd: usize| {
        steady
            .days
            .iter()
            .filter(|d| day::weekday(day::parse_iso(&d.day).expect("day")) == wd)
            .map(|d| d.mean)
            .sum::<f64>()
            / 4.0
    };
    let (busy, quiet) = (by_weekday(day::weekday(first + 5)), by_weekday(day::weekday(first + 6)));
    assert!(busy > 2.0 * quiet, "busy day {busy} vs quiet day {quiet}");
    // The suggestion uses the stock on hand (25) and the receipts' lead times (4 and 6 days).
    let sug = &steady.suggestion;
    assert_eq!(sug.on_hand, 25);
    assert!((sug.lead_time_days - 5.0).abs() < 1.01, "lead time {}", sug.lead_time_days);
    assert!(sug.order_quantity > 0 && sug.order_quantity % 10 == 0, "whole packs of 10: {}", sug.order_quantity);
    assert!(sug.stockout_probability > 0.5, "25 units against ~55 over the lead time");
    let rare = latest(&s, "rare").await;
    // Chosen among the intermittent-demand candidates (ETS, the default, is one of them).
    let intermittent = tally_forecast::select::candidates(tally_forecast::select::Pattern::Intermittent, 7);
    assert!(intermittent.iter().any(|m| m.name() == rare.method), "{}", rare.method);
    assert_ne!(rare.method, "seasonal_naive", "not a candidate for intermittent demand");
    assert_eq!(rare.suggestion.on_hand, 0, "no stock known");

    // Once per run: the same run again forecasts nothing.
    let run = tally_forecast_engine::refresh::Run {
        id: summary.run_id.clone(),
        kind: RunKind::Manual,
        version: tally_core::now_ms(),
        as_of: day::parse_iso(&last_day).expect("day"),
        data_ms: 0,
    };
    let all = s.engine.owned_series(None).await.expect("series");
    let again = s.engine.run_share(&run, all, "again").await.expect("run");
    assert_eq!((again.series, again.skipped), (0, 3));
    assert_eq!(s.engine.store.appended(records::run_rows(&summary.run_id)).await.expect("rows").len(), 3);

    // forecast.ready, one per share.
    let records = read_all(&mut ready, 2).await;
    let ids: Vec<String> = records.iter().map(|r| r.header("ce_id").unwrap_or_default().to_owned()).collect();
    assert!(ids.contains(&format!("{}/{}", summary.run_id, summary.share)), "{ids:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_model_is_down_the_last_forecast_is_served_marked_stale_with_its_age() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = loaded(dir.path()).await;
    let first = s.engine.refresh_now().await.expect("refresh").expect("data");
    let before = latest(&s, "steady").await;
    s.engine.model.outage.set(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let down = s.engine.refresh_now().await.expect("refresh while down").expect("data");
    assert_eq!((down.series, down.stale), (3, 3), "every series served from its last forecast");
    let rows = s.engine.store.appended(records::run_rows(&down.run_id)).await.expect("rows");
    for (_, body) in rows {
        let r: ForecastRecord = serde_json::from_str(&body).expect("record");
        // Its age: at least from its making to this run's start (a background incremental
        // run that asked the model just before the outage may have made it moments ago).
        let age_ms = r.stale_age_seconds.expect("age") * 1000.0;
        assert!(r.stale && age_ms + 1.0 >= (r.run_version - r.made_at_ms) as f64 && age_ms >= 0.0, "{r:?}");
        assert_eq!(r.run_id, down.run_id);
    }
    // Readers see the same forecast, marked stale with its age.
    let stale = latest(&s, "steady").await;
    assert!(stale.stale && stale.stale_age_seconds.is_some(), "{stale:?}");
    // The same forecast's content (an incremental run in the background may have re-made it
    // a moment later, so its making time is not compared).
    assert_eq!((&stale.days, &stale.method), (&before.days, &before.method));
    s.engine.model.outage.set(false);
    let up = s.engine.refresh_now().await.expect("refresh").expect("data");
    assert_eq!(up.stale, 0);
    assert_ne!(latest(&s, "steady").await.run_id, first.run_id);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_sale_refreshes_its_series_on_its_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = loaded(dir.path()).await;
    // The history itself touched every series: let those incremental runs pass.
    eventually("the history's incremental refresh", Duration::from_secs(30), || async {
        s.engine.store.documents(vec![records::forecast_doc("rising", "berlin")]).await.expect("docs").len() == 1
    })
    .await;
    let next_day = jiff::Timestamp::from_second(START_S + DAYS * 86_400).expect("instant").to_string();
    publish(
        &s.bus,
        vec![record(
            "fresh",
            types::SALE,
            json!({"sku": "rising", "location": "berlin", "quantity": 30, "occurred_at": next_day}),
        )],
    )
    .await;
    let want = day::iso(day::parse_iso("2026-01-01").expect("day") + DAYS as i32);
    eventually("the fresh sale's forecast", Duration::from_secs(10), || async {
        latest(&s, "rising").await.as_of == want
    })
    .await;
    let r = latest(&s, "rising").await;
    assert!(r.run_id.starts_with("incremental-"), "{}", r.run_id);
    s.stop().await;
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("root")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_oip_v2_the_model_server_gives_the_direct_forecasts_and_when_it_dies_the_last_ones_are_served_stale() {
    let cancel = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = tally_model_server::ServeOptions {
        repository: root().join("models"),
        rest: "127.0.0.1:0".parse().expect("addr"),
        grpc: "127.0.0.1:0".parse().expect("addr"),
        batch_window: Duration::from_micros(200),
        poll: Duration::from_secs(5),
        faults: tally_model_server::faults::FaultSettings::default(),
    };
    let c = cancel.clone();
    let server = tokio::spawn(async move {
        tally_model_server::serve(opts, None, c, move |b| {
            let _ = tx.send(b);
        })
        .await
        .expect("serves")
    });
    let bound = rx.await.expect("bound");
    let transport = tally_model::client::Transport::grpc(&format!("http://{}", bound.grpc)).expect("transport");
    let remote =
        tally_forecast_engine::model::Remote { transport, model: "demand".into(), deadline: Duration::from_secs(30) };
    let dir = tempfile::tempdir().expect("tmp");
    let s = loaded_with(dir.path(), |e| e.with_model(remote)).await;

    let over_grpc = s.engine.refresh_now().await.expect("refresh").expect("data");
    assert_eq!((over_grpc.series, over_grpc.stale), (3, 0));
    let served = [latest(&s, "steady").await, latest(&s, "rare").await, latest(&s, "rising").await];
    // The same history evaluated directly.
    let mut direct = s.engine.clone();
    direct.model = tally_forecast_engine::DemandModel::direct(tally_forecast_engine::model_settings(&direct.cfg), "1");
    direct.refresh_now().await.expect("refresh").expect("data");
    for r in &served {
        let d = latest(&s, &r.sku).await;
        assert_eq!(r.method, d.method, "{}", r.sku);
        assert_eq!(r.days.len(), d.days.len());
        for (a, b) in r.days.iter().zip(&d.days) {
            assert!((a.mean - b.mean).abs() <= 1e-4 * b.mean.abs().max(1.0), "{}: {} vs {}", r.sku, a.mean, b.mean);
            assert!((a.quantiles["p90"] - b.quantiles["p90"]).abs() <= 1e-3 * b.quantiles["p90"].abs().max(1.0));
        }
        assert_eq!(r.suggestion.order_quantity, d.suggestion.order_quantity, "{}", r.sku);
    }

    // The model server dies: every series gets its last forecast, marked stale.
    cancel.cancel();
    server.await.expect("stopped");
    let down = s.engine.refresh_now().await.expect("refresh").expect("data");
    assert_eq!((down.series, down.stale), (3, 3));
    let rows = s.engine.store.appended(records::run_rows(&down.run_id)).await.expect("rows");
    assert!(rows.iter().all(|(_, body)| serde_json::from_str::<ForecastRecord>(body).expect("record").stale));
    s.stop().await;
}
