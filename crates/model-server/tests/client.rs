//! tally's model client against real servers: `tally model-server` over REST, gRPC and in
//! process, and MLServer (a third-party OIP v2 server, from the test venv) serving the same
//! trees from the LightGBM booster — the same scores within float precision, no code path
//! specific to either server. Then the envelope: a model that is down or slow gives errors
//! within the deadline, the breaker opens, and scoring resumes when the model returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_model::breaker::Position;
use tally_model::{ModelClient, ScoreConfig, ScoreError, Transport};
use tally_model_server::ModelServer;

mod common;
use common::{root, start};

/// The reference model's check rows and onnxruntime's P(fraud) for each.
fn check_rows() -> (Vec<f32>, Vec<f32>) {
    let csv = std::fs::read_to_string(root().join("models/fraud/1/check.csv")).expect("check.csv");
    let (mut x, mut p) = (Vec::new(), Vec::new());
    for line in csv.lines().skip(1).take(200) {
        let v: Vec<f32> = line.split(',').map(|s| s.parse().expect("number")).collect();
        x.extend_from_slice(&v[..17]);
        p.push(v[18]);
    }
    (x, p)
}

fn config(output: &str, column: usize) -> ScoreConfig {
    ScoreConfig {
        model: "fraud".into(),
        input: "features".into(),
        output: output.into(),
        column,
        deadline: Duration::from_millis(500),
        retries: 2,
        batch_max_rows: 256,
        batch_window: Duration::from_micros(500),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(300),
    }
}

async fn assert_scores_match(client: &ModelClient, what: &str) {
    let (x, want) = check_rows();
    // Concurrent callers of different sizes, as partition workers call it.
    let chunks: Vec<(usize, Vec<f32>)> = x.chunks(17 * 25).map(|c| (c.len() / 17, c.to_vec())).collect();
    let answers =
        futures_util::future::join_all(chunks.iter().map(|(rows, data)| client.score("1", *rows, data.clone()))).await;
    let got: Vec<f32> = answers.into_iter().flat_map(|a| a.unwrap_or_else(|e| panic!("{what}: {e}"))).collect();
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{what}: max |Δp| {worst}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_scores_the_same_over_rest_grpc_and_in_process() {
    let (bound, cancel) = start(&root().join("models"), Duration::from_secs(1)).await;
    let rest =
        ModelClient::new(Transport::rest(&format!("http://{}", bound.rest)).expect("rest"), config("probabilities", 1));
    assert_scores_match(&rest, "REST").await;
    let grpc =
        ModelClient::new(Transport::grpc(&format!("http://{}", bound.grpc)).expect("grpc"), config("probabilities", 1));
    assert_scores_match(&grpc, "gRPC").await;
    let local = ModelServer::open(root().join("models"), Duration::from_micros(100), None);
    let local = ModelClient::new(Transport::Local(local), config("probabilities", 1));
    assert_scores_match(&local, "in process").await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_scores_the_same_against_mlserver_over_rest_and_grpc() {
    let ml = tally_model_server::peers::start_mlserver(&root().join("models/fraud/1/model.txt"), "1").await;
    // MLServer's LightGBM runtime answers one output, `predict`: P(fraud) as FP64 [N, 1].
    let rest = ModelClient::new(
        Transport::rest(&format!("http://127.0.0.1:{}", ml.rest)).expect("rest"),
        config("predict", 0),
    );
    assert_scores_match(&rest, "MLServer REST").await;
    let grpc = ModelClient::new(
        Transport::grpc(&format!("http://127.0.0.1:{}", ml.grpc)).expect("grpc"),
        config("predict", 0),
    );
    assert_scores_match(&grpc, "MLServer gRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_slow_model_fails_fast_opens_the_breaker_and_recovers() {
    let (bound, cancel) = start(&root().join("models"), Duration::from_secs(1)).await;
    let http = reqwest::Client::new();
    let faults = |f: serde_json::Value| {
        let (http, url) = (http.clone(), format!("http://{}/v2/faults", bound.rest));
        async move { assert!(http.put(url).json(&f).send().await.expect("put").status().is_success()) }
    };
    let client = Arc::new(ModelClient::new(
        Transport::grpc(&format!("http://{}", bound.grpc)).expect("grpc"),
        config("probabilities", 1),
    ));
    let (x, _) = check_rows();
    let row = x[..17].to_vec();
    assert!(client.score("1", 1, row.clone()).await.is_ok());

    // Slow: every call waits out the deadline (500 ms), never longer.
    faults(serde_json::json!({"latency_ms": 2000})).await;
    let started = Instant::now();
    assert_eq!(client.score("1", 1, row.clone()).await, Err(ScoreError::Deadline));
    assert!(started.elapsed() < Duration::from_millis(900), "{:?}", started.elapsed());

    // Down: failures (after retries) open the breaker (the deadline above was the first of
    // the three consecutive failures); then no call is made at all.
    faults(serde_json::json!({"down": true})).await;
    for _ in 0..2 {
        assert!(matches!(client.score("1", 1, row.clone()).await, Err(ScoreError::Failed(_))));
    }
    assert_eq!(client.breaker(), Position::Open);
    let started = Instant::now();
    assert_eq!(client.score("1", 1, row.clone()).await, Err(ScoreError::Open));
    assert!(started.elapsed() < Duration::from_millis(5), "open: answered at once");

    // Back up: after the cool-down one probe closes it again.
    faults(serde_json::json!({})).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(client.score("1", 1, row.clone()).await.is_ok(), "the probe succeeds");
    assert_eq!(client.breaker(), Position::Closed);
    // The server killed outright: transient errors, not a hang.
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert!(client.score("1", 1, row).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(900));
}
