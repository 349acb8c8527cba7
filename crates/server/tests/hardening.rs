//! What independent testers broke around the engine (issue 8), each as a test that failed
//! before its fix: callers taking each other's idempotency keys, a key reused for a different
//! request, quantities that wrapped, partners' own releases, error shapes and id lengths.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    resp.json().await.unwrap()
}

/// The reproduction from the issue: `ozon` posts an event under `wms`'s API source with the id
/// `wms`'s next adjustment will use. It is refused, and `wms`'s adjustment is applied.
async fn a_caller_cannot_take_another_callers_idempotency_keys(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SPOOF-1", "wh-1", 10, 1)).await;
    app.eventually("/v1/stock/SPOOF-1", |b| on_hand(b, "wh-1") == Some(10)).await;
    let spoof = event(
        "wms-adj-42",
        "/api/wms",
        "channel.reported",
        json!({"sku": "SPOOF-1", "channel": "partner:ozon", "shown": 0}),
    );
    let p = problem(app.post("/v1/events", OZON_KEY, &spoof).await, 403).await;
    assert!(p["type"].as_str().unwrap().ends_with("/source-not-allowed"), "{p}");
    // Nor a source another key was configured with, nor one under another key's namespace.
    for source in ["/wms", "/api/wms/eu-1", "/api/ozonx"] {
        let ev =
            event("x", source, "channel.reported", json!({"sku": "SPOOF-1", "channel": "partner:ozon", "shown": 0}));
        assert_eq!(app.post("/v1/events", OZON_KEY, &ev).await.status(), 403, "{source}");
    }
    // Its own namespace and its configured source are fine.
    for (id, source) in [("o1", "/api/ozon"), ("o2", "/api/ozon/feed"), ("o3", "/ozon")] {
        let ev =
            event(id, source, "channel.reported", json!({"sku": "SPOOF-1", "channel": "partner:ozon", "shown": 0}));
        assert_eq!(app.post("/v1/events", OZON_KEY, &ev).await.status(), 202, "{source}");
    }
    // The same trick against a reservation id.
    let reserve = event(
        "reserve:r-wms",
        "/api/wms",
        "reservation.requested",
        json!({"reservation_id": "r-wms", "sku": "SPOOF-1", "channel": "partner:ozon", "quantity": 1}),
    );
    assert_eq!(app.post("/v1/events", OZON_KEY, &reserve).await.status(), 403);

    let path = "/v1/stock/SPOOF-1/locations/wh-1/adjustments";
    let resp = app.post_with_key(path, WMS_KEY, "wms-adj-42", &json!({"delta": 30, "reason": "receipt"})).await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["outcome"]["outcome"], "applied", "{out}");
    assert_eq!(on_hand(&out["stock"], "wh-1"), Some(40));
}

/// An Idempotency-Key (or a `source` + `id`) reused for a different request is refused with
/// 422, on every write path; the same request again still gets its stored outcome.
async fn an_idempotency_key_reused_for_a_different_request_is_refused(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-K", "wh-1", 10, 1)).await;
    app.eventually("/v1/stock/SKU-K", |b| on_hand(b, "wh-1") == Some(10)).await;

    let path = "/v1/stock/SKU-K/locations/wh-1/adjustments";
    let first = json!({"delta": 5, "reason": "receipt"});
    assert_eq!(app.post_with_key(path, WMS_KEY, "k-1", &first).await.status(), 200);
    // The same request (fields in another order) is a retry: the stored outcome, no new effect.
    let retry = json!({"reason": "receipt", "delta": 5});
    let out: Value = app.post_with_key(path, WMS_KEY, "k-1", &retry).await.json().await.unwrap();
    assert_eq!(on_hand(&out["stock"], "wh-1"), Some(15), "{out}");
    let p =
        problem(app.post_with_key(path, WMS_KEY, "k-1", &json!({"delta": 6, "reason": "receipt"})).await, 422).await;
    assert!(p["type"].as_str().unwrap().ends_with("/idempotency-key-reused"), "{p}");

    // A reservation id reused with new terms after it was closed.
    let r = json!({"reservation_id": "r-k", "sku": "SKU-K", "channel": "storefront", "quantity": 2, "ttl_seconds": 60});
    assert_eq!(app.post("/v1/reservations", ADMIN_KEY, &r).await.status(), 201);
    assert_eq!(
        app.post("/v1/reservations", ADMIN_KEY, &r).await.status(),
        201,
        "a retry (same ttl) is the same request"
    );
    let release = json!({"sku": "SKU-K"});
    assert_eq!(app.post("/v1/reservations/r-k/release", ADMIN_KEY, &release).await.status(), 200);
    let bigger = json!({"reservation_id": "r-k", "sku": "SKU-K", "channel": "storefront", "quantity": 5});
    let p = problem(app.post("/v1/reservations", ADMIN_KEY, &bigger).await, 422).await;
    assert!(p["type"].as_str().unwrap().ends_with("/idempotency-key-reused"), "{p}");

    // POST /v1/events: the same source + id with another body, once the first is applied …
    let report = |shown: i64| {
        event("rep-1", "/wms", "channel.reported", json!({"sku": "SKU-K", "channel": "storefront", "shown": shown}))
    };
    assert_eq!(app.post("/v1/events", ADMIN_KEY, &report(1)).await.status(), 202);
    assert_eq!(app.post("/v1/events", ADMIN_KEY, &report(1)).await.status(), 202, "a resent event is accepted again");
    let audit = "/v1/stock/SKU-K/audit";
    app.eventually(audit, |b| b["items"].as_array().unwrap().iter().any(|e| e["event_id"] == "rep-1")).await;
    let p = problem(app.post("/v1/events", ADMIN_KEY, &report(2)).await, 422).await;
    assert_eq!(p["errors"][0]["code"], "idempotency_key_reused", "{p}");
    // … and within one batch.
    let a = event("rep-2", "/wms", "channel.reported", json!({"sku": "SKU-K", "channel": "storefront", "shown": 1}));
    let b = event("rep-2", "/wms", "channel.reported", json!({"sku": "SKU-K", "channel": "storefront", "shown": 2}));
    let p = problem(app.post("/v1/events", ADMIN_KEY, &json!([a, b])).await, 422).await;
    assert_eq!(p["errors"][0]["index"], 1, "{p}");
}

/// A partner releases and commits its own reservations through `POST /v1/events` as through
/// the reservation endpoints; its retries get the stored outcome; another channel's
/// reservation stays out of its reach; the Bearer scheme is case-insensitive.
async fn a_partner_releases_and_commits_its_own_reservations_on_every_path(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-P", "wh-1", 40, 1)).await;
    app.eventually("/v1/stock/SKU-P", |b| on_hand(b, "wh-1") == Some(40)).await;
    let own = |id: &str| json!({"reservation_id": id, "sku": "SKU-P", "channel": "partner:ozon", "quantity": 1});
    for id in ["oz-1", "oz-2", "oz-3"] {
        assert_eq!(app.post("/v1/reservations", OZON_KEY, &own(id)).await.status(), 201, "{id}");
    }
    let theirs = json!({"reservation_id": "sf-1", "sku": "SKU-P", "channel": "storefront", "quantity": 1});
    assert_eq!(app.post("/v1/reservations", ADMIN_KEY, &theirs).await.status(), 201);

    let release = event(
        "rel-oz-1",
        "/ozon",
        "reservation.released",
        json!({"reservation_id": "oz-1", "sku": "SKU-P", "channel": "partner:ozon"}),
    );
    assert_eq!(app.post("/v1/events", OZON_KEY, &release).await.status(), 202);
    let commit = event(
        "com-oz-2",
        "/ozon",
        "reservation.committed",
        json!({"reservation_id": "oz-2", "sku": "SKU-P", "channel": "partner:ozon", "order_id": "o-2"}),
    );
    assert_eq!(app.post("/v1/events", OZON_KEY, &commit).await.status(), 202);
    // Reserved: oz-2 (committed, still held until the warehouse ships), oz-3, sf-1.
    app.eventually("/v1/stock/SKU-P", |b| b["locations"][0]["reserved"] == 3).await;

    // Naming itself as the channel does not let it touch the storefront's reservation.
    let grab = event(
        "rel-sf-1",
        "/ozon",
        "reservation.released",
        json!({"reservation_id": "sf-1", "sku": "SKU-P", "channel": "partner:ozon"}),
    );
    assert_eq!(app.post("/v1/events", OZON_KEY, &grab).await.status(), 202);
    let audit = "/v1/stock/SKU-P/audit";
    let trail =
        app.eventually(audit, |b| b["items"].as_array().unwrap().iter().any(|e| e["event_id"] == "rel-sf-1")).await;
    let entry = trail["items"].as_array().unwrap().iter().find(|e| e["event_id"] == "rel-sf-1").unwrap().clone();
    assert_eq!(entry["outcome"], "ignored", "{entry}");
    assert_eq!(app.post("/v1/reservations/sf-1/release", OZON_KEY, &json!({"sku": "SKU-P"})).await.status(), 403);
    // Without a channel, a release is a warehouse act.
    let anonymous = event("rel-x", "/ozon", "reservation.released", json!({"reservation_id": "oz-3", "sku": "SKU-P"}));
    assert_eq!(app.post("/v1/events", OZON_KEY, &anonymous).await.status(), 403);

    // Through the endpoint, then the retry after it is gone from the state.
    let path = "/v1/reservations/oz-3/release";
    let resp = app
        .client
        .post(format!("{}{path}", app.url))
        .header("authorization", format!("bearer {OZON_KEY}"))
        .json(&json!({"sku": "SKU-P"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the scheme is case-insensitive");
    let first: Value = resp.json().await.unwrap();
    let retry = app.post(path, OZON_KEY, &json!({"sku": "SKU-P"})).await;
    assert_eq!(retry.status(), 200, "a retry of its own release gets the stored outcome");
    let retried: Value = retry.json().await.unwrap();
    assert_eq!(retried["outcome"], first["outcome"]);
}

/// Every error is problem+json with the status that names it.
#[tokio::test]
async fn every_error_is_problem_json_with_the_right_status() {
    let app = spawn_app_on(Stack::Embedded).await;
    let resp = app.client.delete(format!("{}/v1/events", app.url)).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    let p = problem(resp, 405).await;
    assert!(p["detail"].as_str().unwrap().contains("DELETE is not allowed"), "{p}");

    let p = problem(app.get("/v1/stock/A%FFB", ADMIN_KEY).await, 400).await;
    assert!(!p["detail"].as_str().unwrap().is_empty(), "{p}");

    let huge = format!("[{}]", vec![snapshot("x", "SKU-1", "wh-1", 1, 1).to_string(); 30_000].join(","));
    let resp = app
        .client
        .post(format!("{}/v1/events", app.url))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let p = problem(resp, 413).await;
    assert!(p["type"].as_str().unwrap().ends_with("/payload-too-large"), "{p}");

    for content_type in [None, Some("text/plain")] {
        let mut req = app
            .client
            .post(format!("{}/v1/events", app.url))
            .bearer_auth(ADMIN_KEY)
            .body(snapshot("ct", "SKU-1", "wh-1", 1, 1).to_string());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let p = problem(req.send().await.unwrap(), 415).await;
        assert!(p["type"].as_str().unwrap().ends_with("/unsupported-media-type"), "{p}");
    }
}

/// Ids and free text have documented limits; quantities past the documented maximum, or
/// versions past int64, are refused before they reach the engine.
#[tokio::test]
async fn overlong_ids_and_out_of_range_quantities_are_refused() {
    let app = spawn_app_on(Stack::Embedded).await;
    let long = |n: usize| "x".repeat(n);
    let reserve = json!({"reservation_id": long(1_000_000), "sku": "SKU-1", "channel": "storefront", "quantity": 1});
    let p = problem(app.post("/v1/reservations", ADMIN_KEY, &reserve).await, 422).await;
    assert!(p["errors"][0]["detail"].as_str().unwrap().contains("the limit is 100"), "{p}");
    let mut ev = snapshot(&long(1_000_000), "SKU-1", "wh-1", 1, 1);
    let p = problem(app.post("/v1/events", ADMIN_KEY, &ev).await, 422).await;
    assert!(p["errors"][0]["detail"].as_str().unwrap().contains("the limit is 256"), "{p}");
    ev["id"] = json!("ok-id");
    ev["source"] = json!(format!("/{}", long(500_000)));
    assert_eq!(app.post("/v1/events", ADMIN_KEY, &ev).await.status(), 422);
    // The request's traceparent header travels into the event and is bounded like it.
    let resp = app
        .client
        .post(format!("{}/v1/events", app.url))
        .bearer_auth(ADMIN_KEY)
        .header("traceparent", long(200))
        .json(&snapshot("tp", "SKU-1", "wh-1", 1, 1))
        .send()
        .await
        .unwrap();
    let p = problem(resp, 422).await;
    assert!(p["errors"][0]["detail"].as_str().unwrap().contains("traceparent"), "{p}");
    let adjust = json!({"delta": i64::MIN, "reason": "correction"});
    let p =
        problem(app.post_with_key("/v1/stock/SKU-1/locations/wh-1/adjustments", ADMIN_KEY, "min", &adjust).await, 422)
            .await;
    assert!(p["errors"][0]["detail"].as_str().unwrap().contains("delta must be"), "{p}");
    for (on_hand, version) in [(i64::MAX, 1u64), (1, u64::MAX)] {
        let resp = app.post("/v1/events", ADMIN_KEY, &snapshot("big", "SKU-1", "wh-1", on_hand, version)).await;
        assert_eq!(resp.status(), 422, "on_hand {on_hand}, version {version}");
    }
}

fn availability_versions(records: &[tally_bus::Record], sku: &str) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.key.as_deref() == Some(sku))
        .map(|r| serde_json::from_slice::<Value>(&r.payload).unwrap()["version"].as_u64().unwrap())
        .collect()
}

/// A channel that keeps showing the wrong number is healed each time with a message of a new
/// version: a consumer deduplicating by sku + version never drops the healing message.
async fn every_healing_message_carries_a_new_version(stack: Stack) {
    let app = spawn_app_on(stack).await;
    app.post("/v1/events", WMS_KEY, &snapshot("s1", "SKU-H", "wh-1", 10, 1)).await;
    app.eventually("/v1/stock/SKU-H/audit", |b| b["items"].as_array().unwrap().len() == 1).await;
    let report = |id: &str| {
        event(id, "/api/admin", "channel.reported", json!({"sku": "SKU-H", "channel": "storefront", "shown": 0}))
    };
    for id in ["rep-1", "rep-2", "rep-3"] {
        assert_eq!(app.post("/v1/events", ADMIN_KEY, &report(id)).await.status(), 202);
        app.eventually("/v1/stock/SKU-H/audit", |b| b["items"].as_array().unwrap().iter().any(|e| e["event_id"] == id))
            .await;
    }
    let topic = &app.config.inventory.topics.availability;
    let read = read_topic(&app, topic, |rs| availability_versions(rs, "SKU-H").len() >= 4).await;
    let versions = availability_versions(&read, "SKU-H");
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "versions must grow: {versions:?}");
}

/// Two records with one `source` + `id` and different payloads reach the worker (a producer
/// bug, or a race past the HTTP check): the second is dead-lettered, not dropped as a
/// duplicate and not applied.
async fn a_reused_event_key_on_the_bus_is_dead_lettered(stack: Stack) {
    let app = spawn_app_on(stack).await;
    let engine = app.engine();
    let record = |on_hand: i64| {
        let mut env = tally_core::Envelope::new(
            "/wms",
            "stock.snapshot",
            json!({"sku": "SKU-R", "location": "wh-1", "on_hand": on_hand, "source_version": 1}),
        );
        env.id = "same-id".into();
        let (headers, payload) = env.to_binary();
        tally_bus::OutRecord::keyed("SKU-R", headers, payload)
    };
    tally_bus::Bus::publish(&engine.bus, &engine.cfg.topics.events, vec![record(7), record(8), record(7)])
        .await
        .unwrap();
    let dlq = format!("{}.dlq", engine.cfg.topics.events);
    let dead = read_topic(&app, &dlq, |rs| !rs.is_empty()).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("tally_dlq_reason"), Some("idempotency_key_reused"));
    let stock = app.eventually("/v1/stock/SKU-R", |b| on_hand(b, "wh-1").is_some()).await;
    assert_eq!(on_hand(&stock, "wh-1"), Some(7));
}

on_every_stack!(
    a_caller_cannot_take_another_callers_idempotency_keys,
    an_idempotency_key_reused_for_a_different_request_is_refused,
    a_partner_releases_and_commits_its_own_reservations_on_every_path,
    every_healing_message_carries_a_new_version,
    a_reused_event_key_on_the_bus_is_dead_lettered,
    the_whole_audit_trail_is_read_in_pages,
);

/// The audit trail of a SKU with more rows than one page holds is read in full, page by page.
async fn the_whole_audit_trail_is_read_in_pages(stack: Stack) {
    let app = spawn_app_on(stack).await;
    let events: Vec<Value> = (1..=25).map(|v| snapshot(&format!("pg-{v}"), "SKU-PG", "wh-1", v, v as u64)).collect();
    assert_eq!(app.post("/v1/events", WMS_KEY, &Value::from(events)).await.status(), 202);
    app.eventually("/v1/stock/SKU-PG/audit?limit=1000", |b| b["items"].as_array().unwrap().len() == 25).await;
    let (mut seen, mut before, mut pages) = (Vec::new(), None::<i64>, 0);
    loop {
        let path = match before {
            Some(b) => format!("/v1/stock/SKU-PG/audit?limit=10&before={b}"),
            None => "/v1/stock/SKU-PG/audit?limit=10".to_owned(),
        };
        let page: Value = app.get(&path, READER_KEY).await.json().await.unwrap();
        pages += 1;
        seen.extend(page["items"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    let want: Vec<String> = (1..=25).rev().map(|v| format!("pg-{v}")).collect();
    assert_eq!(seen, want, "every row once, newest first");
    assert_eq!(pages, 3);
    let p = problem(app.get("/v1/stock/SKU-PG/audit?before=0", READER_KEY).await, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("before"), "{p}");
}
