//! `/metrics` as Prometheus tooling reads it, in a process of its own so that nothing has
//! counted yet: every family has help text and passes `promtool check metrics`, and every
//! counter series whose labels are known up front exists at 0 from start-up.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

#[tokio::test]
async fn metrics_pass_promtool_and_every_counter_exists_at_zero_from_start_up() {
    let app = spawn_app_on(Stack::Embedded).await;
    let text = app.get("/metrics", "").await.text().await.unwrap();
    for series in [
        "tally_inventory_records_forwarded_total 0",
        "tally_inventory_duplicates_dropped_total 0",
        "tally_inventory_reservations_expired_total 0",
        "tally_inventory_dead_lettered_total{reason=\"wrong_partition\"} 0",
        "tally_inventory_dead_lettered_total{reason=\"idempotency_key_reused\"} 0",
        "tally_inventory_events_applied_total{outcome=\"reconciled\"} 0",
        "tally_inventory_reservations_rejected_total{reason=\"insufficient_stock\"} 0",
        "tally_inventory_flushes_total{result=\"error\"} 0",
        "tally_api_events_rejected_total{reason=\"invalid_field\"} 0",
    ] {
        assert!(text.lines().any(|l| l == series), "{series} missing at start-up:\n{text}");
    }
    // Some traffic, so histograms and gauges have series too.
    app.post("/v1/events", WMS_KEY, &snapshot("m1", "SKU-M", "wh-1", 3, 1)).await;
    app.eventually("/v1/stock/SKU-M", |b| on_hand(b, "wh-1") == Some(3)).await;
    let text = app.get("/metrics", "").await.text().await.unwrap();
    // Where the event's time went: every stage of the poll that applied it was timed.
    for stage in ["delivery", "prepare", "apply", "finish", "publish"] {
        let prefix = format!("tally_inventory_poll_stage_seconds_count{{stage=\"{stage}\"}} ");
        let count = text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.parse::<f64>().ok());
        assert!(count.is_some_and(|n| n >= 1.0), "{prefix}is missing or 0:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: scripts/setup.sh installs it (apt package prometheus)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let complaints = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && complaints.trim().is_empty(), "promtool check metrics:\n{complaints}");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no help text");
    }
}
