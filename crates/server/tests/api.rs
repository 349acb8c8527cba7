//! HTTP API against the real app on port 0 with a fresh data file per test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use tally_bus::{Bus, Record};

async fn ingested_snapshot_becomes_readable_per_location_and_channel(stack: Stack) {
    let app = spawn_app_on(stack).await;
    let resp = app.post("/v1/events", WMS_KEY, &snapshot("e1", "SKU-1", "wh-1", 40, 1)).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"][0]["id"], "e1");
    let stock = app.eventually("/v1/stock/SKU-1", |b| on_hand(b, "wh-1") == Some(40)).await;
    assert_eq!(ats(&stock, "storefront"), Some(40));
    // partner:ozon: 50 % share, cap 100, buffer 2 → 18.
    assert_eq!(ats(&stock, "partner:ozon"), Some(18));
    let ch: Value = app.get("/v1/channels/partner:ozon/stock/SKU-1", READER_KEY).await.json().await.unwrap();
    assert_eq!(ch["available_to_sell"], 18);
    let batch: Value = app
        .post("/v1/stock/batch-read", READER_KEY, &json!({"skus": ["SKU-1", "SKU-404"]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(batch["items"].as_array().unwrap().len(), 1);
    assert_eq!(batch["missing"], json!(["SKU-404"]));
}

async fn invalid_events_are_refused_with_a_specific_reason_and_none_is_accepted(stack: Stack) {
    let app = spawn_app_on(stack).await;
    let good = snapshot("g1", "SKU-2", "wh-1", 5, 1);
    let negative = snapshot("b1", "SKU-2", "wh-1", -5, 2);
    let unknown = event("b2", "/wms", "stock.teleported", json!({"sku": "SKU-2"}));
    let resp = app.post("/v1/events", ADMIN_KEY, &json!([good, negative, unknown])).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["status"], 422);
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["index"], 1);
    assert!(errors[0]["detail"].as_str().unwrap().contains("on_hand must be 0 to 1000000000000, got -5"), "{problem}");
    assert_eq!(errors[1]["code"], "unknown_type");
    // Nothing was accepted, not even the valid event: nothing reached the input topic.
    let engine = app.engine();
    let ends = engine.bus.end_offsets(&engine.cfg.topics.events).await.unwrap();
    assert!(ends.iter().all(|&end| end == 0), "a record was published: {ends:?}");
    assert_eq!(app.get("/v1/stock/SKU-2", ADMIN_KEY).await.status(), 404);

    for (body, want) in [("not json", "invalid-json"), ("[]", "invalid-batch-size"), ("42", "invalid-json")] {
        let resp = app
            .client
            .post(format!("{}/v1/events", app.url))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let p: Value = resp.json().await.unwrap();
        assert!(p["type"].as_str().unwrap().ends_with(want), "{body}: {p}");
    }
    let resp = app.get("/v1/stock/bad%20sku", ADMIN_KEY).await;
    assert_eq!(resp.status(), 400);
    let resp = app.get("/v1/nope", ADMIN_KEY).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

async fn keys_are_required_and_a_partner_cannot_write_another_channel(stack: Stack) {
    let app = spawn_app_on(stack).await;
    let resp = app.client.get(format!("{}/v1/stock/SKU-1", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(app.get("/v1/stock/SKU-1", "wrong-key").await.status(), 401);

    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-3", "wh-1", 10, 1)).await;
    app.eventually("/v1/stock/SKU-3", |b| on_hand(b, "wh-1") == Some(10)).await;

    let theirs = json!({"reservation_id": "r1", "sku": "SKU-3", "channel": "storefront", "quantity": 1});
    let resp = app.post("/v1/reservations", OZON_KEY, &theirs).await;
    assert_eq!(resp.status(), 403);
    let p: Value = resp.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("stock:write:storefront"), "{p}");
    // Nor through raw ingest, nor stock facts.
    let ev = event("x1", "/ozon", "reservation.requested", theirs.clone());
    assert_eq!(app.post("/v1/events", OZON_KEY, &ev).await.status(), 403);
    assert_eq!(app.post("/v1/events", OZON_KEY, &snapshot("x2", "SKU-3", "wh-1", 999, 9)).await.status(), 403);
    assert_eq!(app.post("/v1/events", READER_KEY, &snapshot("x3", "SKU-3", "wh-1", 999, 9)).await.status(), 403);

    let own = json!({"reservation_id": "r2", "sku": "SKU-3", "channel": "partner:ozon", "quantity": 1});
    assert_eq!(app.post("/v1/reservations", OZON_KEY, &own).await.status(), 201);
}

async fn compare_and_set_adjustment_applies_once_and_refuses_a_stale_expectation(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-4", "wh-1", 10, 1)).await;
    app.eventually("/v1/stock/SKU-4", |b| on_hand(b, "wh-1") == Some(10)).await;
    let path = "/v1/stock/SKU-4/locations/wh-1/adjustments";
    let body = json!({"delta": 5, "reason": "receipt", "change_from_quantity": 10});

    let resp = app.post(path, WMS_KEY, &body).await;
    assert_eq!(resp.status(), 400, "Idempotency-Key is required");

    let resp = app.post_with_key(path, WMS_KEY, "adj-1", &body).await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["outcome"]["outcome"], "applied");
    assert_eq!(on_hand(&out["stock"], "wh-1"), Some(15));

    // A retry with the same key returns the same outcome and does not add 5 again.
    let resp = app.post_with_key(path, WMS_KEY, "adj-1", &body).await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(on_hand(&out["stock"], "wh-1"), Some(15));

    // The same expectation with a new key is now stale.
    let resp = app.post_with_key(path, WMS_KEY, "adj-2", &body).await;
    assert_eq!(resp.status(), 409);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["outcome"], json!({"outcome": "cas_mismatch", "expected": 10, "actual": 15}));

    let bad = json!({"delta": 5, "reason": "shipment"});
    let resp = app.post_with_key(path, WMS_KEY, "adj-3", &bad).await;
    assert_eq!(resp.status(), 422);
    let p: Value = resp.json().await.unwrap();
    assert!(p["errors"][0]["detail"].as_str().unwrap().contains("negative delta"), "{p}");
}

async fn concurrent_reservations_never_oversell(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-5", "wh-1", 10, 1)).await;
    app.eventually("/v1/stock/SKU-5", |b| on_hand(b, "wh-1") == Some(10)).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (client, url) = (app.client.clone(), app.url.clone());
        let channel = if i % 2 == 0 { "storefront" } else { "wms" };
        tasks.push(tokio::spawn(async move {
            let body = json!({"reservation_id": format!("r{i}"), "sku": "SKU-5", "channel": channel, "location": "wh-1", "quantity": 1});
            client.post(format!("{url}/v1/reservations")).bearer_auth(ADMIN_KEY).json(&body).send().await.unwrap().status().as_u16()
        }));
    }
    let mut accepted = 0;
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => accepted += 1,
            409 => rejected += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((accepted, rejected), (10, 40));
    let stock: Value = app.get("/v1/stock/SKU-5", ADMIN_KEY).await.json().await.unwrap();
    assert_eq!(stock["locations"][0]["available"], 0);
    assert_eq!(stock["locations"][0]["reserved"], 10);
}

async fn a_resent_event_is_applied_once_and_the_audit_trail_shows_each_change(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-6", "wh-1", 10, 1)).await;
    let adj = event(
        "a1",
        "/wms",
        "stock.adjusted",
        json!({"sku": "SKU-6", "location": "wh-1", "delta": 3, "reason": "receipt", "source_version": 2}),
    );
    for _ in 0..3 {
        assert_eq!(app.post("/v1/events", WMS_KEY, &adj).await.status(), 202);
    }
    // A late, older snapshot must not overwrite the newer state.
    app.post("/v1/events", WMS_KEY, &snapshot("s0", "SKU-6", "wh-1", 99, 1)).await;
    let marker = snapshot("s2", "SKU-7", "wh-1", 1, 1);
    app.post("/v1/events", WMS_KEY, &marker).await;
    app.eventually("/v1/stock/SKU-7", |b| on_hand(b, "wh-1") == Some(1)).await;
    let stock = app.eventually("/v1/stock/SKU-6", |b| on_hand(b, "wh-1").is_some()).await;
    assert_eq!(on_hand(&stock, "wh-1"), Some(13));
    let audit =
        app.eventually("/v1/stock/SKU-6/audit?limit=10", |b| b["items"].as_array().is_some_and(|a| a.len() >= 3)).await;
    let outcomes: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["stale_snapshot", "applied", "applied"], "newest first, the duplicates absent");
    assert_eq!(app.get("/v1/stock/SKU-6/audit?limit=0", ADMIN_KEY).await.status(), 400);
}

async fn reservation_expires_and_release_and_commit_follow_the_rules(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-8", "wh-1", 10, 1)).await;
    app.eventually("/v1/stock/SKU-8", |b| on_hand(b, "wh-1") == Some(10)).await;
    let r = |id: &str, ttl: Option<u32>| json!({"reservation_id": id, "sku": "SKU-8", "channel": "storefront", "quantity": 4, "order_id": format!("o-{id}"), "ttl_seconds": ttl});
    assert_eq!(app.post("/v1/reservations", ADMIN_KEY, &r("short", Some(1))).await.status(), 201);
    assert_eq!(app.post("/v1/reservations", ADMIN_KEY, &r("kept", None)).await.status(), 201);
    let stock: Value = app.get("/v1/stock/SKU-8", ADMIN_KEY).await.json().await.unwrap();
    assert_eq!(ats(&stock, "storefront"), Some(2));
    // The short one lapses and its stock comes back.
    app.eventually("/v1/stock/SKU-8", |b| ats(b, "storefront") == Some(6)).await;
    // Commit, then the warehouse confirms by a shipment referencing the order: counted once.
    let resp = app.post("/v1/reservations/kept/commit", ADMIN_KEY, &json!({"sku": "SKU-8"})).await;
    assert_eq!(resp.status(), 200);
    let ship = event(
        "ship-1",
        "/wms",
        "stock.adjusted",
        json!({"sku": "SKU-8", "location": "wh-1", "delta": -4, "reason": "shipment", "reference": "o-kept", "source_version": 2}),
    );
    app.post("/v1/events", WMS_KEY, &ship).await;
    let stock = app.eventually("/v1/stock/SKU-8", |b| on_hand(b, "wh-1") == Some(6)).await;
    assert_eq!(ats(&stock, "storefront"), Some(6));
    assert_eq!(stock["active_reservations"], 0);
    let resp = app.post("/v1/reservations/kept/release", ADMIN_KEY, &json!({"sku": "SKU-8"})).await;
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["outcome"]["outcome"], "ignored");
}

async fn state_survives_a_graceful_restart(stack: Stack) {
    let mut app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-9", "wh-1", 21, 1)).await;
    app.eventually("/v1/stock/SKU-9", |b| on_hand(b, "wh-1") == Some(21)).await;
    app.stop().await;
    let cfg = app.config.clone();
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let again = spawn_with(cfg, dir).await;
    let stock: Value = again.get("/v1/stock/SKU-9", ADMIN_KEY).await.json().await.unwrap();
    assert_eq!(on_hand(&stock, "wh-1"), Some(21), "read from the store after restart");
    // Re-sending the same event after the restart is still a duplicate.
    let adjustment = event(
        "a1",
        "/wms",
        "stock.adjusted",
        json!({"sku": "SKU-9", "location": "wh-1", "delta": 1, "reason": "receipt"}),
    );
    for _ in 0..2 {
        let resp = again.post("/v1/events", WMS_KEY, &adjustment).await;
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    }
    again.eventually("/v1/stock/SKU-9/audit", |b| b["items"].as_array().is_some_and(|a| a.len() == 2)).await;
    let stock: Value = again.get("/v1/stock/SKU-9", ADMIN_KEY).await.json().await.unwrap();
    assert_eq!(on_hand(&stock, "wh-1"), Some(22));
}

async fn ops_endpoints_report_health_readiness_and_metrics(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-10", "wh-1", 1, 1)).await;
    app.eventually("/v1/stock/SKU-10", |b| on_hand(b, "wh-1") == Some(1)).await;
    assert_eq!(app.get("/healthz", "").await.status(), 200);
    let ready: Value = app.get("/readyz", "").await.json().await.unwrap();
    assert_eq!(ready["checks"], json!({"bus": "ok", "store": "ok", "cache": "ok"}));
    let metrics = app.get("/metrics", "").await.text().await.unwrap();
    for name in
        ["tally_inventory_events_applied_total", "tally_inventory_event_to_visible_seconds", "tally_api_requests_total"]
    {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let doc: Value = app.get("/openapi.json", "").await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn checked_in_openapi_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let generated = tally_server::api::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, format!("{generated}\n")).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in.trim_end() == generated.trim_end(),
        "docs/openapi.json is out of date; run `make openapi` (UPDATE_OPENAPI=1 cargo test -p tally-server --test api)"
    );
}

async fn the_trace_of_an_http_request_reaches_kafka_and_the_outputs_it_causes(stack: Stack) {
    let app = spawn_app_on(stack).await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = app
        .client
        .post(format!("{}/v1/events", app.url))
        .bearer_auth(WMS_KEY)
        .header("traceparent", trace)
        .json(&snapshot("traced-1", "SKU-T", "wh-1", 12, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let topics = &app.config.inventory.topics;
    let traced = |r: &Record| r.header("traceparent") == Some(trace);
    let input = read_topic(&app, &topics.events, |rs| rs.iter().any(|r| r.header("ce_id") == Some("traced-1"))).await;
    assert!(input.iter().any(|r| r.header("ce_id") == Some("traced-1") && traced(r)), "input record lost the trace");
    let output =
        read_topic(&app, &topics.availability, |rs| rs.iter().any(|r| r.key.as_deref() == Some("SKU-T"))).await;
    assert!(
        output.iter().any(|r| r.key.as_deref() == Some("SKU-T") && traced(r)),
        "availability is not in the request's trace"
    );
}

on_every_stack!(
    the_trace_of_an_http_request_reaches_kafka_and_the_outputs_it_causes,
    ingested_snapshot_becomes_readable_per_location_and_channel,
    invalid_events_are_refused_with_a_specific_reason_and_none_is_accepted,
    keys_are_required_and_a_partner_cannot_write_another_channel,
    compare_and_set_adjustment_applies_once_and_refuses_a_stale_expectation,
    concurrent_reservations_never_oversell,
    a_resent_event_is_applied_once_and_the_audit_trail_shows_each_change,
    reservation_expires_and_release_and_commit_follow_the_rules,
    state_survives_a_graceful_restart,
    ops_endpoints_report_health_readiness_and_metrics,
);
