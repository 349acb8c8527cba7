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

/// The whole pipeline pointed at MLServer (a third-party OIP v2 server, serving the same trees
/// from the LightGBM booster) over REST and over gRPC: every score equals what the model
/// evaluates in process on the decision's own features.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_scores_through_mlserver_over_rest_and_grpc() {
    let ml = tally_model_server::peers::start_mlserver(&repo_root().join("models/fraud/1/model.txt"), "1").await;
    let trees =
        tally_trees::Model::from_onnx(&std::fs::read(repo_root().join("models/fraud/1/model.onnx")).unwrap()).unwrap();
    for (transport, url) in [
        (tally_config::ModelTransport::Rest, format!("http://127.0.0.1:{}", ml.rest)),
        (tally_config::ModelTransport::Grpc, format!("http://127.0.0.1:{}", ml.grpc)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), tally_config::AuthMode::Keys);
        config.model.transport = transport;
        config.model.url = url;
        // MLServer's LightGBM runtime answers `predict`: P(fraud) as FP64 [N, 1].
        config.model.output = "predict".into();
        config.model.output_column = 0;
        let mut app = spawn_with(config, dir).await;
        for i in 0..20 {
            let (country, minor) = if i % 4 == 0 { ("BR", 90_000) } else { ("DE", 1_500 + i * 100) };
            let r = app
                .post("/v1/fraud/score", CHECKOUT_KEY, &payment(&format!("ml-{i}"), "acct-ml", minor, country, "d"))
                .await;
            assert_eq!(r.status(), 200, "{transport:?}: {}", r.text().await.unwrap());
            let d: Value = r.json().await.unwrap();
            assert_eq!(d["decided_by"], "model", "{transport:?}: {d}");
            let features: Vec<f32> = serde_json::from_value(d["features"].clone()).unwrap();
            let out = trees.run(&features, 1).unwrap();
            let tally_trees::Tensor::F32(p) = &out[1] else { panic!("probabilities") };
            let got = d["score"].as_f64().unwrap() as f32;
            assert!((got - p[1]).abs() < 1e-5, "{transport:?}: MLServer scored {got}, the trees {}", p[1]);
        }
        app.stop().await;
    }
}

/// Two instances on Kafka + PostgreSQL + Redis share the fraud partitions; checkout traffic
/// goes to both while the active version is switched through one of them: no request fails,
/// and from a second after the switch every decision is made by the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_switch_under_load_fails_no_request_and_is_used_everywhere_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let config = stack_config(Stack::KafkaPostgresRedis, dir.path(), tally_config::AuthMode::Keys).await;
    let dir_b = tempfile::tempdir().unwrap();
    let mut a = spawn_with(config.clone(), dir).await;
    let mut b = spawn_with(config, dir_b).await;
    let urls = [a.url.clone(), b.url.clone()];
    let client = reqwest::Client::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 100 {
                let url = &urls[(i % 2) as usize];
                let body =
                    payment(&format!("sw-{i}"), &format!("acct-{}", i % 50), 2_000 + (i as i64 % 700), "DE", "d");
                let r = client.post(format!("{url}/v1/fraud/score")).bearer_auth(CHECKOUT_KEY).json(&body).send().await;
                let answered = std::time::Instant::now();
                let status = r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                let body: Value = match r {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                answers.push((answered, status, body));
                i += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            answers
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let switched = std::time::Instant::now();
    let r = a.put("/v1/fraud/flags", ADMIN_KEY, &json!({"active": "2"})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = load.await.unwrap();
    let failed: Vec<_> = answers.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), answers.len(), failed.first());
    let before = answers.iter().filter(|(t, _, _)| *t < switched).collect::<Vec<_>>();
    assert!(before.iter().all(|(_, _, d)| d["model_version"] == "1"), "version 1 before the switch");
    let late: Vec<_> =
        answers.iter().filter(|(t, _, _)| t.duration_since(switched) > std::time::Duration::from_secs(1)).collect();
    assert!(late.len() > 20, "load kept going after the switch: {}", late.len());
    let old: Vec<_> = late.iter().filter(|(_, _, d)| d["model_version"] != "2").collect();
    assert!(
        old.is_empty(),
        "{} decisions more than 1 s after the switch used another version: {:?}",
        old.len(),
        old.first()
    );
    a.stop().await;
    b.stop().await;
}
