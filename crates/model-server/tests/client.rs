//! tally's model client against real servers: `tally model-server` over REST, gRPC and in
//! process, and MLServer (a third-party OIP v2 server, from the test venv) serving the same
//! trees from the LightGBM booster — the same scores within float precision, no code path
//! specific to either server. Then the envelope: a model that is down or slow gives errors
//! within the deadline, the breaker opens, and scoring resumes when the model returns.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_model::breaker::Position;
use tally_model::{ModelClient, ScoreConfig, ScoreError, Transport};
use tally_model_server::ModelServer;

mod common;
use common::{root, start, venv_python};

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct MlServer {
    child: tokio::process::Child,
    rest: u16,
    grpc: u16,
    _dir: tempfile::TempDir,
}

impl Drop for MlServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// MLServer 1.7.1 serving the reference booster (`models/fraud/1/model.txt`) with its
/// LightGBM runtime, on free loopback ports; returns once the model is ready.
async fn start_mlserver() -> MlServer {
    let python = venv_python();
    let dir = tempfile::tempdir().expect("tmp");
    let (rest, grpc, metrics) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("settings.json"),
        serde_json::json!({"host": "127.0.0.1", "http_port": rest, "grpc_port": grpc, "metrics_port": metrics,
                           "parallel_workers": 0})
        .to_string(),
    )
    .expect("settings");
    let model_dir = dir.path().join("fraud");
    std::fs::create_dir_all(&model_dir).expect("mkdir");
    std::fs::write(
        model_dir.join("model-settings.json"),
        serde_json::json!({"name": "fraud", "implementation": "mlserver_lightgbm.LightGBMModel",
            "parameters": {"uri": root().join("models/fraud/1/model.txt"), "version": "1"}})
        .to_string(),
    )
    .expect("model settings");
    let child = tokio::process::Command::new(&python)
        .args(["-m", "mlserver.cli.main", "start"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mlserver starts");
    let server = MlServer { child, rest, grpc, _dir: dir };
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = http.get(format!("http://127.0.0.1:{rest}/v2/models/fraud/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return server;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "MLServer did not get ready in 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_scores_the_same_against_mlserver_over_rest_and_grpc() {
    let ml = start_mlserver().await;
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
