//! The model server over real sockets: the official OIP v2 clients (tritonclient http/grpc,
//! the KServe SDK REST/gRPC, from the test venv `scripts/venv.sh` builds) get correct answers
//! and parse its errors; the repository loads and unloads versions without a restart; fault
//! injection changes what clients see at runtime.

use std::path::Path;
use std::time::Duration;

mod common;
use common::{root, start, venv_python};

/// A copy of the reference model as `<dir>/fraud/<version>`.
fn install(dir: &Path, version: &str) {
    let to = dir.join("fraud").join(version);
    std::fs::create_dir_all(&to).expect("mkdir");
    for f in ["config.toml", "model.onnx"] {
        std::fs::copy(root().join("models/fraud/1").join(f), to.join(f)).expect("copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_and_the_kserve_sdk_get_correct_answers_and_errors() {
    // Only version 1 (whose onnxruntime outputs check.csv holds) is the default here.
    let dir = tempfile::tempdir().expect("tmp");
    install(dir.path(), "1");
    let (bound, cancel) = start(dir.path(), Duration::from_secs(1)).await;
    let python = venv_python();
    let script = root().join("crates/model-server/tests/oip_clients.py");
    let check = root().join("models/fraud/1/check.csv");
    for client in ["triton-http", "triton-grpc", "kserve-rest", "kserve-grpc"] {
        let out = tokio::process::Command::new(&python)
            .arg(&script)
            .args([bound.rest.to_string(), bound.grpc.to_string()])
            .arg(&check)
            .arg(client)
            .output()
            .await
            .expect("python runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{client} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("ok "), "{client} checked nothing: {stdout}");
    }
    cancel.cancel();
}

async fn infer(http: &reqwest::Client, rest: &str, path: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"inputs": [{"name": "features", "shape": [1, 17], "datatype": "FP32",
        "data": [[50.0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 604800, 1.0, 0, 0, 1, 400, 12]]}]});
    let r = http.post(format!("http://{rest}{path}")).json(&body).send().await.expect("answers");
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(ct, "application/json", "errors and JSON answers say so exactly");
    (status, r.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_load_and_unload_without_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    install(dir.path(), "1");
    let (bound, cancel) = start(dir.path(), Duration::from_millis(50)).await;
    let http = reqwest::Client::new();
    let rest = bound.rest.to_string();
    assert_eq!(infer(&http, &rest, "/v2/models/fraud/infer").await.1["model_version"], "1");

    install(dir.path(), "2");
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        seen = infer(&http, &rest, "/v2/models/fraud/infer").await.1["model_version"].clone();
        if seen == "2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "2", "the new version became the default");
    assert_eq!(infer(&http, &rest, "/v2/models/fraud/versions/1/infer").await.0, 200, "version 1 still served");

    std::fs::remove_dir_all(dir.path().join("fraud/1")).expect("rm");
    let mut status = 200;
    for _ in 0..100 {
        status = infer(&http, &rest, "/v2/models/fraud/versions/1/infer").await.0;
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 404, "version 1 unloaded");
    // A broken file in a new version is reported and not served; the others keep serving.
    let broken = dir.path().join("fraud/3");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::copy(dir.path().join("fraud/2/config.toml"), broken.join("config.toml")).expect("copy");
    std::fs::write(broken.join("model.onnx"), b"garbage").expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = infer(&http, &rest, "/v2/models/fraud/infer").await;
    assert_eq!((status, body["model_version"].as_str()), (200, Some("2")));
    let meta: serde_json::Value =
        http.get(format!("http://{rest}/v2/models/fraud")).send().await.expect("meta").json().await.expect("json");
    assert_eq!(meta["versions"], serde_json::json!(["2"]));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_set_at_runtime_change_what_clients_see() {
    let (bound, cancel) = start(&root().join("models"), Duration::from_secs(1)).await;
    let http = reqwest::Client::new();
    let rest = bound.rest.to_string();
    let set = |f: serde_json::Value| {
        let http = http.clone();
        let url = format!("http://{rest}/v2/faults");
        async move { http.put(url).json(&f).send().await.expect("put").status().as_u16() }
    };
    assert_eq!(set(serde_json::json!({"down": true})).await, 200);
    assert_eq!(infer(&http, &rest, "/v2/models/fraud/infer").await.0, 503);
    let ready = http.get(format!("http://{rest}/v2/health/ready")).send().await.expect("ready");
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(set(serde_json::json!({"error_rate": 1.0})).await, 200);
    let (status, body) = infer(&http, &rest, "/v2/models/fraud/infer").await;
    assert_eq!(status, 500);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("injected")), "{body}");
    assert_eq!(set(serde_json::json!({"latency_ms": 150})).await, 200);
    let started = std::time::Instant::now();
    assert_eq!(infer(&http, &rest, "/v2/models/fraud/infer").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(150), "the latency was added");
    assert_eq!(set(serde_json::json!({"error_rate": 3})).await, 400, "bad settings are refused");
    assert_eq!(set(serde_json::json!({})).await, 200);
    assert_eq!(infer(&http, &rest, "/v2/models/fraud/infer").await.0, 200, "back to normal");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_rows_back() {
    let (bound, cancel) = start(&root().join("models"), Duration::from_secs(1)).await;
    let http = reqwest::Client::new();
    let rest = bound.rest.to_string();
    // 64 concurrent single-row requests (batched together: see batching's own test) each answer
    // the same as one alone.
    let alone = infer(&http, &rest, "/v2/models/fraud/infer").await.1;
    let many = futures_util::future::join_all((0..64).map(|_| {
        let (http, rest) = (http.clone(), rest.clone());
        async move { infer(&http, &rest, "/v2/models/fraud/infer").await.1 }
    }))
    .await;
    for answer in many {
        assert_eq!(answer["outputs"], alone["outputs"]);
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demand_model_answers_padded_histories_with_forecasts_and_refuses_rows_that_do_not_fill_the_shape() {
    let (bound, cancel) = start(&root().join("models"), Duration::from_secs(5)).await;
    let http = reqwest::Client::new();
    let rest = bound.rest.to_string();
    let meta: serde_json::Value =
        http.get(format!("http://{rest}/v2/models/demand")).send().await.expect("meta").json().await.expect("json");
    assert_eq!(meta["platform"], "tally-demand");
    // Two series: 56 days of a weekly pattern, and 20 days (left-padded with -1).
    let weekly: Vec<f64> = (0..56).map(|i| [5.0, 6.0, 7.0, 8.0, 9.0, 14.0, 3.0][i % 7]).collect();
    let short: Vec<f64> = (0..56).map(|i| if i >= 36 { 2.0 } else { -1.0 }).collect();
    let data: Vec<serde_json::Value> = weekly.iter().chain(&short).map(|v| serde_json::json!(v)).collect();
    let body = serde_json::json!({"inputs": [{"name": "history", "shape": [2, 56], "datatype": "FP32", "data": data}]});
    let r = http.post(format!("http://{rest}/v2/models/demand/infer")).json(&body).send().await.expect("infer");
    let status = r.status().as_u16();
    let answer: serde_json::Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{answer}");
    let output =
        |name: &str| answer["outputs"].as_array().expect("outputs").iter().find(|o| o["name"] == name).cloned();
    let mean = output("mean").expect("mean");
    assert_eq!(mean["shape"], serde_json::json!([2, 28]));
    let method = output("method").expect("method");
    assert_eq!(method["datatype"], "INT64");
    assert_eq!(output("quantiles").expect("quantiles")["shape"], serde_json::json!([2, 28, 3]));
    let direct = tally_forecast::model::forecast(&weekly, &tally_forecast::model::Settings::default());
    let got: Vec<f64> =
        mean["data"].as_array().expect("data").iter().take(28).map(|v| v.as_f64().expect("number")).collect();
    for (a, b) in got.iter().zip(&direct.mean) {
        assert!((a - b).abs() < 1e-3 * b.abs().max(1.0), "{a} vs {b}");
    }
    let short_mean: Vec<f64> =
        mean["data"].as_array().expect("data").iter().skip(28).map(|v| v.as_f64().expect("number")).collect();
    assert!(
        short_mean.iter().all(|v| (v - 2.0).abs() < 0.5),
        "the padded series is its own 20 days of 2: {short_mean:?}"
    );
    // Rows that do not fill the shape: refused, 400.
    let mut short_body = body.clone();
    short_body["inputs"][0]["shape"] = serde_json::json!([3, 56]);
    let r = http.post(format!("http://{rest}/v2/models/demand/infer")).json(&short_body).send().await.expect("infer");
    assert_eq!(r.status().as_u16(), 400);
    cancel.cancel();
}
