//! Exports end to end: a run's forecasts and suggestions reach a real ClickHouse server
//! (`scripts/services.sh` starts Debian's 18.16 on loopback; one database per test) and Parquet
//! files that pyarrow (the test venv's) reads back with the stored values; an export heard
//! twice writes the rows twice and ClickHouse still holds them once; a destination that is down
//! is a retryable failure; a `forecast.ready` event that names no valid run is dead-lettered.

mod common;

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tally_bus::{Bus, OutRecord};
use tally_config::ForecastExport;
use tally_forecast::demand::types;
use tally_forecast_engine::export::{ExportError, Exporter};
use tally_forecast_engine::records::{self, ForecastRecord};
use tally_store::ledger::DocumentStore;

const SERIES: usize = 6;
const DAYS: i64 = 70;
const START_S: i64 = 1_767_268_800; // 2026-01-01T12:00:00Z

fn clickhouse_url() -> String {
    std::env::var("TEST_TALLY_CLICKHOUSE_URL")
        .expect("TEST_TALLY_CLICKHOUSE_URL is not set: run the tests with scripts/test.sh, which starts ClickHouse")
}

/// A database name no other test uses.
fn fresh_database() -> String {
    format!("tally_test_{}_{}", std::process::id(), tally_core::now_ms())
}

/// Runs `query` on the test server; its answer.
async fn clickhouse(query: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/", clickhouse_url()))
        .body(query.to_owned())
        .send()
        .await
        .expect("ClickHouse answers");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{query}: {status} {text}");
    text
}

async fn count(query: &str) -> usize {
    clickhouse(query).await.trim().parse().expect("a count")
}

/// What pyarrow makes of a Parquet file: rows, columns and their types, the sum of `mean` (or
/// of `column`), the nulls in `days_of_cover` and the smallest `day`.
fn read_with_pyarrow(file: &Path, column: &str) -> serde_json::Value {
    let script = r#"
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
out = {"rows": t.num_rows, "columns": {f.name: str(f.type) for f in t.schema},
       "sum": sum(v for v in t.column(sys.argv[2]).to_pylist() if v is not None)}
if "days_of_cover" in t.column_names:
    out["cover_nulls"] = t.column("days_of_cover").null_count
if "day" in t.column_names:
    out["first_day"] = str(min(t.column("day").to_pylist()))
print(json.dumps(out))
"#;
    let out = std::process::Command::new(venv_python())
        .args(["-c", script, file.to_str().expect("path"), column])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "pyarrow: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn history() -> Vec<(&'static str, OutRecord)> {
    let mut out = Vec::new();
    let at = |d: i64| jiff::Timestamp::from_second(START_S + d * 86_400).expect("instant").to_string();
    for s in 0..SERIES as i64 {
        for d in 0..DAYS {
            let qty = 3 + s + [0, 1, 2, 3, 4, 8, 1][(d % 7) as usize];
            out.push(record(
                &format!("s{s}-{d}"),
                types::SALE,
                json!({"sku": format!("sku-{s}"), "location": "berlin", "quantity": qty, "occurred_at": at(d)}),
            ));
        }
    }
    out
}

/// An embedded stack exporting to ClickHouse database `db` and Parquet files under `parquet`,
/// with the history staged.
async fn exporting(dir: &Path, db: &str, parquet: &Path) -> Stack {
    let (db, parquet) = (db.to_owned(), parquet.to_path_buf());
    let s = stack_with(dir, Arc::new(tally_forecast_engine::NoStock), move |mut c| {
        c.export.clickhouse_url = Some(clickhouse_url());
        c.export.clickhouse_database = db;
        c.export.parquet_dir = Some(parquet.to_string_lossy().into_owned());
        c
    })
    .await;
    let skus = (0..SERIES).map(|i| sku(&format!("sku-{i}"), 1)).collect();
    s.engine.put_references(skus, vec![location("berlin", "Europe/Berlin")]).await.expect("references");
    let events = history();
    let n = events.len() as u64;
    publish(&s.bus, events).await;
    wait_staged(&s, n, SERIES).await;
    s
}

/// A run's forecasts as stored.
async fn stored_run(s: &Stack, run_id: &str) -> Vec<ForecastRecord> {
    let rows = s.engine.store.appended(records::run_rows(run_id)).await.expect("run rows");
    rows.into_iter().map(|(_, body)| serde_json::from_str(&body).expect("record")).collect()
}

/// The `forecast.ready` event of `run_id` again, under a new event id (a second announcement
/// of the same run, as a retried publish or a second share would make).
async fn announce_again(s: &Stack, run_id: &str) {
    let summary = json!({"run_id": run_id, "kind": "manual", "share": "again", "model_version": "1",
        "as_of": "2026-03-11", "series": SERIES, "stale": 0, "skipped": 0, "started_at_ms": 0, "finished_at_ms": 0});
    let mut e = tally_core::Envelope::new("/tally/forecast", "forecast.ready", summary);
    e.id = format!("{run_id}/again");
    let (headers, payload) = e.to_binary();
    s.bus.publish("forecast.ready", vec![OutRecord::keyed(run_id, headers, payload)]).await.expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_reach_clickhouse_once_per_key_and_parquet_files_pyarrow_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, parquet) = (fresh_database(), dir.path().join("parquet"));
    let s = exporting(dir.path(), &db, &parquet).await;
    let horizon = s.engine.cfg.horizon_days;

    let summary = s.engine.refresh_now().await.expect("refresh").expect("a run");
    assert_eq!(summary.series, SERIES);
    let run = summary.run_id.clone();
    let stored = stored_run(&s, &run).await;
    assert_eq!(stored.len(), SERIES);

    // ClickHouse: every series × day of the run, once per key however many runs wrote it.
    let of_run = format!("SELECT count() FROM {db}.forecasts WHERE run_id = '{run}'");
    // The suggestions go in after the forecasts: wait for both.
    let suggestions_of_run = format!("SELECT count() FROM {db}.suggestions WHERE run_id = '{run}'");
    eventually("the manual run in ClickHouse", Duration::from_secs(30), || async {
        clickhouse(&format!("EXISTS TABLE {db}.forecasts")).await.trim() == "1"
            && count(&of_run).await == SERIES * horizon
            && count(&suggestions_of_run).await == SERIES
    })
    .await;
    assert_eq!(count(&format!("SELECT count() FROM {db}.forecasts FINAL")).await, SERIES * horizon);
    assert_eq!(count(&format!("SELECT count() FROM {db}.suggestions FINAL")).await, SERIES);
    // The values are the stored ones.
    let rows = clickhouse(&format!(
        "SELECT sku, day, mean, quantile_levels, quantiles, service, method FROM {db}.forecasts \
         WHERE run_id = '{run}' FORMAT JSONEachRow"
    ))
    .await;
    let mut seen = 0;
    for line in rows.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("row");
        let record = stored.iter().find(|r| r.sku == row["sku"]).expect("a stored series");
        let day = record.days.iter().find(|d| d.day == row["day"]).expect("a stored day");
        assert!((row["mean"].as_f64().expect("mean") - day.mean).abs() < 1e-9, "{row}");
        assert!((row["service"].as_f64().expect("service") - day.quantiles["service"]).abs() < 1e-9);
        assert_eq!(row["quantile_levels"], json!([0.1, 0.5, 0.9]));
        assert!((row["quantiles"][2].as_f64().expect("p90") - day.quantiles["p90"]).abs() < 1e-9);
        assert_eq!(row["method"], record.method.as_str());
        seen += 1;
    }
    assert_eq!(seen, SERIES * horizon);

    // Heard twice: written twice, held once (ReplacingMergeTree by run version).
    announce_again(&s, &run).await;
    eventually("the run exported again", Duration::from_secs(30), || async {
        count(&of_run).await == 2 * SERIES * horizon
    })
    .await;
    assert_eq!(count(&format!("SELECT count() FROM {db}.forecasts FINAL")).await, SERIES * horizon);
    clickhouse(&format!("OPTIMIZE TABLE {db}.forecasts FINAL")).await;
    assert_eq!(
        count(&format!("SELECT count() FROM {db}.forecasts")).await,
        SERIES * horizon,
        "merged to one row per key"
    );

    // A newer run of the same data replaces the older one's rows.
    let newer = s.engine.refresh_now().await.expect("refresh").expect("a run");
    eventually("the newer run wins", Duration::from_secs(30), || async {
        count(&format!("SELECT count() FROM {db}.forecasts FINAL WHERE run_id = '{}'", newer.run_id)).await
            == SERIES * horizon
    })
    .await;

    // Parquet: the run's two files, as pyarrow reads them.
    let forecasts = read_with_pyarrow(&parquet.join("forecasts").join(format!("{run}.parquet")), "mean");
    assert_eq!(forecasts["rows"], SERIES * horizon);
    let mean_sum: f64 = stored.iter().flat_map(|r| r.days.iter().map(|d| d.mean)).sum();
    assert!((forecasts["sum"].as_f64().expect("sum") - mean_sum).abs() < 1e-6, "{forecasts}");
    for (column, ty) in
        [("day", "date32[day]"), ("p10", "double"), ("p90", "double"), ("service", "double"), ("sku", "string")]
    {
        assert_eq!(forecasts["columns"][column], ty, "{forecasts}");
    }
    assert_eq!(forecasts["first_day"], stored[0].days[0].day);
    let suggestions = read_with_pyarrow(&parquet.join("suggestions").join(format!("{run}.parquet")), "order_up_to");
    assert_eq!(suggestions["rows"], SERIES);
    let up_to: f64 = stored.iter().map(|r| r.suggestion.order_up_to).sum();
    assert!((suggestions["sum"].as_f64().expect("sum") - up_to).abs() < 1e-6, "{suggestions}");
    let no_cover = stored.iter().filter(|r| r.suggestion.days_of_cover.is_none()).count();
    assert_eq!(suggestions["cover_nulls"], no_cover);
    // Incremental runs get no files by default (many small files); manual and full runs do.
    let files: Vec<PathBuf> =
        std::fs::read_dir(parquet.join("forecasts")).expect("dir").map(|e| e.expect("entry").path()).collect();
    assert!(files.iter().all(|f| {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.starts_with("manual-") || name.starts_with("full-")
    }));

    // A ready event naming no valid run: dead-lettered with the reason.
    let mut escaping = tally_core::Envelope::new(
        "/tally/forecast",
        "forecast.ready",
        json!({
        "run_id": "../../etc", "kind": "manual", "share": "p0", "model_version": "1", "as_of": "2026-03-11",
        "series": 1, "stale": 0, "skipped": 0, "started_at_ms": 0, "finished_at_ms": 0}),
    );
    escaping.id = "bad-run-id".into();
    let mut shapeless = tally_core::Envelope::new("/tally/forecast", "forecast.ready", json!({"run": 1}));
    shapeless.id = "not-a-summary".into();
    for e in [escaping, shapeless] {
        let (headers, payload) = e.to_binary();
        s.bus.publish("forecast.ready", vec![OutRecord::keyed("x", headers, payload)]).await.expect("publish");
    }
    let dead = dead_letters(&s.bus, "forecast.ready", 2).await;
    assert_eq!(
        dead,
        vec![
            ("bad-run-id".to_owned(), "invalid_field".to_owned()),
            ("not-a-summary".to_owned(), "invalid_payload".to_owned())
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn a_destination_that_is_down_is_a_retryable_failure() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let cfg = ForecastExport {
        clickhouse_url: Some(format!("http://127.0.0.1:{closed}")),
        clickhouse_timeout_ms: 2_000,
        ..ForecastExport::default()
    };
    let exporter = Exporter::new(&cfg, &[0.5]).expect("exporter").expect("enabled");
    let record: ForecastRecord = serde_json::from_value(json!({
        "sku": "a", "location": "b", "run_id": "manual-1", "run_version": 1, "as_of": "2026-03-01",
        "model_version": "1", "method": "seasonal_naive", "sigma_daily": 1.0, "service_level": 0.95,
        "days": [{"day": "2026-03-02", "mean": 1.0, "quantiles": {"p50": 1.0, "service": 2.0}}],
        "suggestion": {"lead_time_days": 7.0, "daily_demand": 1.0, "safety_stock": 1.0, "reorder_point": 8.0,
            "order_up_to": 15.0, "order_quantity": 15, "on_hand": 0, "days_of_cover": null, "stockout_probability": 1.0},
        "made_at_ms": 1
    }))
    .expect("record");
    let failed = exporter.export("manual-1", false, Arc::new(vec![record])).await;
    assert!(matches!(failed, Err(ExportError::Transient(_))), "{failed:?}");
    // Not configured at all: no exporter.
    assert!(Exporter::new(&ForecastExport::default(), &[0.5]).expect("ok").is_none());
}
