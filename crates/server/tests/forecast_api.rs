//! Demand forecasting through the API on every stack (embedded; PostgreSQL + Redis; Kafka +
//! PostgreSQL + Redis): reference data and demand events in over HTTP — each batch sent
//! twice, and again after a restart — staged exactly once (the rollup equals the simulator's
//! truth); a manual refresh; forecasts per series and per location, suggestions and the run
//! history read with `forecast:read`, refused without it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tally_sim::demand::{DemandConfig, DemandSim};
use tally_store::demand::DemandStore;

const DAYS: i32 = 90;

fn sim() -> DemandSim {
    DemandSim::new(DemandConfig { seed: 11, skus: 5, locations: 2, ..DemandConfig::default() })
}

fn structured(e: &tally_core::Envelope) -> Value {
    json!({"specversion": "1.0", "id": e.id, "source": e.source, "type": e.ty, "data": e.data})
}

/// The days' events in batches of at most 500.
fn batches(sim: &DemandSim, days: std::ops::Range<i32>) -> Vec<Value> {
    let events: Vec<Value> = days.flat_map(|d| sim.events(sim.first_day() + d)).map(|e| structured(&e)).collect();
    events.chunks(500).map(|c| Value::Array(c.to_vec())).collect()
}

/// `(sku, location) → units sold` over the whole rollup.
async fn sold(app: &TestApp) -> std::collections::BTreeMap<(String, String), i64> {
    let store = &app.app.as_ref().unwrap().forecast.store;
    let mut out = std::collections::BTreeMap::new();
    for (sku, location) in store.series().await.unwrap() {
        let total = store.daily(sku.clone(), location.clone()).await.unwrap().iter().map(|d| d.sold).sum();
        out.insert((sku, location), total);
    }
    out
}

async fn forecast_through_the_api(stack: Stack) {
    let dir = tempfile::tempdir().unwrap();
    let config = stack_config(stack, dir.path(), tally_config::AuthMode::Keys).await;
    let mut app = spawn_with(config.clone(), dir).await;
    let sim = sim();
    let truth: std::collections::BTreeMap<(String, String), i64> = sim
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.sku.clone(), s.location.clone()), sim.truth(i, DAYS as usize).iter().sum::<f64>() as i64))
        .collect();
    let refs = json!({"skus": sim.skus(), "locations": sim.locations()});
    assert_eq!(app.put("/v1/forecast/references", PLANNER_KEY, &refs).await.status(), 403, "admin only");
    assert_eq!(app.put("/v1/forecast/references", ADMIN_KEY, &refs).await.status(), 204);
    let all = batches(&sim, 0..DAYS);
    let (first, rest) = all.split_at(all.len() / 2);
    for b in first {
        for _ in 0..2 {
            assert_eq!(app.post("/v1/forecast/events", ADMIN_KEY, b).await.status(), 202);
        }
    }
    // Restarted: the rest, and the first half again.
    app.stop().await;
    let dir = app.dir;
    let mut app = spawn_with(config.clone(), dir).await;
    for b in rest.iter().chain(first) {
        assert_eq!(app.post("/v1/forecast/events", ADMIN_KEY, b).await.status(), 202);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while sold(&app).await != truth {
        assert!(Instant::now() < deadline, "the rollup never matched the truth");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sold(&app).await, truth, "every event counted once");

    let bad = json!({"specversion": "1.0", "id": "bad-1", "source": "/pos", "type": "demand.sale",
        "data": {"sku": "sku-00000", "location": "berlin", "quantity": 0, "occurred_at": "2026-01-01T10:00:00Z"}});
    let r = app.post("/v1/forecast/events", ADMIN_KEY, &bad).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let r = app.post("/v1/forecast/refresh", ADMIN_KEY, &json!({})).await;
    assert_eq!(r.status(), 202);
    let run_id = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_owned();
    let runs = app
        .eventually("/v1/forecast/runs", |b| {
            b["runs"].as_array().unwrap().iter().any(|r| r["run_id"] == run_id.as_str())
        })
        .await;
    let run = runs["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == run_id.as_str()).unwrap().clone();
    assert_eq!(run["series"], json!(truth.len()), "{run}");

    let (sku, location) = truth.keys().next().unwrap().clone();
    let path = format!("/v1/forecast/series/{sku}/{location}");
    assert_eq!(app.get(&path, READER_KEY).await.status(), 403, "stock:read is not forecast:read");
    let one: Value = app.get(&path, PLANNER_KEY).await.json().await.unwrap();
    assert_eq!(one["days"].as_array().unwrap().len(), 28, "{one}");
    assert!(
        one["days"][0]["quantiles"]["p90"].as_f64().unwrap() >= one["days"][0]["quantiles"]["p10"].as_f64().unwrap()
    );
    assert!(one["method"].as_str().is_some() && one["model_version"] == "1");
    assert_eq!(app.get("/v1/forecast/series/nope/berlin", PLANNER_KEY).await.status(), 404);
    let at: Value =
        app.get(&format!("/v1/forecast/locations/{location}?limit=3"), PLANNER_KEY).await.json().await.unwrap();
    assert_eq!(at["forecasts"].as_array().unwrap().len(), 3);
    assert!(at["forecasts"].as_array().unwrap().iter().all(|f| f["location"] == location.as_str()));
    assert_eq!(app.get("/v1/forecast/runs?limit=0", PLANNER_KEY).await.status(), 400);
    let sug: Value = app.get("/v1/forecast/suggestions?limit=50", PLANNER_KEY).await.json().await.unwrap();
    let risks: Vec<f64> = sug["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["suggestion"]["stockout_probability"].as_f64().unwrap())
        .collect();
    assert!(!risks.is_empty(), "nothing is in stock: every series needs an order");
    assert!(risks.windows(2).all(|w| w[0] >= w[1]), "most urgent first: {risks:?}");
    // The model version flag: a version the model does not have is refused; the one it has is
    // taken, and the next forecasts record it.
    assert_eq!(app.get("/v1/forecast/flags", PLANNER_KEY).await.json::<Value>().await.unwrap()["active"], "1");
    let r = app.put("/v1/forecast/flags", ADMIN_KEY, &json!({"active": "9"})).await;
    assert_eq!(r.status(), 422, "no version 9 of the demand model");
    assert_eq!(app.put("/v1/forecast/flags", PLANNER_KEY, &json!({"active": "1"})).await.status(), 403);
    let set: Value = app.put("/v1/forecast/flags", ADMIN_KEY, &json!({"active": "1"})).await.json().await.unwrap();
    assert_eq!((set["revision"].as_i64(), set["active"].as_str()), (Some(1), Some("1")));
    app.stop().await;
}

on_every_stack!(forecast_through_the_api);
