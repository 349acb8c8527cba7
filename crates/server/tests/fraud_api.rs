//! The fraud API over real connections on every stack (embedded; PostgreSQL + Redis; Kafka +
//! PostgreSQL + Redis): synchronous scoring through the same pipeline as the bus, the same
//! transaction id answered with the same decision and one model call, a reused id refused,
//! lookups, profiles enriching the next score, flags, quality, scopes, problem+json errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use serde_json::{Value, json};

fn payment(id: &str, account: &str, minor: i64, country: &str, device: &str) -> Value {
    json!({"transaction_id": id, "account_id": account, "card_id": "card-1",
           "amount": {"minor": minor, "currency": "EUR"}, "merchant_id": "m-1", "mcc": "5999",
           "country": country, "channel": "ecom", "device_id": device,
           "occurred_at": "2026-11-30T10:00:00Z"})
}

async fn checkout_scoring_is_the_pipeline_and_idempotent(stack: Stack) {
    let mut app = spawn_app_on(stack).await;
    let r = app
        .put(
            "/v1/fraud/profiles/acct-7",
            CHECKOUT_KEY,
            &json!({"opened_at": "2024-01-01T00:00:00Z", "home_country": "DE", "typical_amount": 30.0}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let first = app.post("/v1/fraud/score", CHECKOUT_KEY, &payment("t-1", "acct-7", 2500, "DE", "phone")).await;
    assert_eq!(first.status(), 200, "{}", first.text().await.unwrap());
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["transaction_id"], "t-1");
    assert_eq!(first["model_version"], "1");
    assert_eq!(first["schema_version"], 1);
    assert!(["model", "cache"].contains(&first["decided_by"].as_str().unwrap()), "{first}");
    let calls = app.fraud().stats.by_model.load(Ordering::Relaxed);

    // The same transaction again: the same decision, no second model call.
    let again: Value = app
        .post("/v1/fraud/score", CHECKOUT_KEY, &payment("t-1", "acct-7", 2500, "DE", "phone"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(app.fraud().stats.by_model.load(Ordering::Relaxed), calls, "one model call");

    // The same id for another payment is refused.
    let reused = app.post("/v1/fraud/score", CHECKOUT_KEY, &payment("t-1", "acct-7", 99_999, "BR", "x")).await;
    assert_eq!(reused.status(), 422);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["type"].as_str().map(|t| t.ends_with("idempotency-key-reused")),
        Some(true)
    );

    // The profile enriched it: a new device abroad for 40× the typical amount is not approved,
    // and the reasons say why.
    let takeover: Value = app
        .post("/v1/fraud/score", CHECKOUT_KEY, &payment("t-2", "acct-7", 120_000, "BR", "laptop-x"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(takeover["verdict"], "approve", "{takeover}");
    let reasons = takeover["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r["feature"].is_string()), "features that pushed the score: {takeover}");
    assert!(reasons.iter().any(|r| r["code"] == "new_device_foreign_unusual_amount"), "{takeover}");
    assert_eq!(takeover["features"].as_array().unwrap().len(), 17);

    // Lookup.
    let found: Value = app.get("/v1/fraud/decisions/t-2", ANALYST_KEY).await.json().await.unwrap();
    assert_eq!(found["verdict"], takeover["verdict"]);
    let missing = app.get("/v1/fraud/decisions/nope", ANALYST_KEY).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");

    // Bad input: problem+json naming the field.
    let bad = app.post("/v1/fraud/score", CHECKOUT_KEY, &payment("t-3", "acct-7", -5, "DE", "p")).await;
    assert_eq!(bad.status(), 422);
    let bad: Value = bad.json().await.unwrap();
    assert!(bad["errors"][0]["detail"].as_str().unwrap().contains("amount.minor"), "{bad}");

    // Flags (admin), quality (fraud:read), scopes.
    let flags = app.put("/v1/fraud/flags", ADMIN_KEY, &json!({"active": "1", "shadow": "1"})).await;
    assert_eq!(flags.status(), 200);
    assert_eq!(app.put("/v1/fraud/flags", ANALYST_KEY, &json!({"active": "1"})).await.status(), 403);
    let unknown = app.put("/v1/fraud/flags", ADMIN_KEY, &json!({"active": "9"})).await;
    assert_eq!(unknown.status(), 422);
    let got: Value = app.get("/v1/fraud/flags", ANALYST_KEY).await.json().await.unwrap();
    assert_eq!(got["shadow"], "1");
    assert_eq!(app.get("/v1/fraud/quality", ANALYST_KEY).await.status(), 200);
    assert_eq!(app.post("/v1/fraud/score", ANALYST_KEY, &payment("t-9", "a", 100, "DE", "p")).await.status(), 403);
    assert_eq!(app.get("/v1/fraud/decisions/t-1", CHECKOUT_KEY).await.status(), 403);
    app.stop().await;
}

on_every_stack!(checkout_scoring_is_the_pipeline_and_idempotent);
