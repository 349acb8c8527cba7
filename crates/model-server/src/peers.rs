//! Peers to compare with (feature `peers`, for tests and `tally bench fraud`): MLServer, a
//! third-party OIP v2 server, serving a LightGBM booster on free loopback ports, from the test
//! venv (`scripts/venv.sh`, which these helpers run from the checkout). They panic on a broken
//! setup: a test or a benchmark should stop there, not carry on with a missing peer.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The checkout's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// The python of the test venv (`scripts/venv.sh` builds it once per pin set).
pub fn venv_python() -> String {
    let out = std::process::Command::new(root().join("scripts/venv.sh")).output().expect("scripts/venv.sh runs");
    assert!(out.status.success(), "the test venv: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running MLServer; killed when dropped.
pub struct MlServer {
    child: tokio::process::Child,
    /// Its REST port.
    pub rest: u16,
    /// Its gRPC port.
    pub grpc: u16,
    _dir: tempfile::TempDir,
}

impl Drop for MlServer {
    fn drop(&mut self) {
        // MLServer forks workers and a multiprocessing resource tracker that outlive a killed
        // parent (216 MB each, orphaned by every run before this): it runs in its own process
        // group, and the whole group goes.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
        let _ = self.child.start_kill();
    }
}

/// MLServer 1.7.1 serving the LightGBM booster `booster` as model `fraud` version `version`
/// with its LightGBM runtime (which answers one output, `predict`: P(fraud), FP64 [N, 1]);
/// returns once the model is ready.
pub async fn start_mlserver(booster: &Path, version: &str) -> MlServer {
    start_mlserver_with(booster, version, 0).await
}

/// The same with `parallel_workers` inference processes (0: in MLServer's main process, the
/// quickest to start; MLServer's default is 1).
pub async fn start_mlserver_with(booster: &Path, version: &str, parallel_workers: u32) -> MlServer {
    let python = venv_python();
    let dir = tempfile::tempdir().expect("tmp");
    let (rest, grpc, metrics) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("settings.json"),
        serde_json::json!({"host": "127.0.0.1", "http_port": rest, "grpc_port": grpc, "metrics_port": metrics,
                           "parallel_workers": parallel_workers})
        .to_string(),
    )
    .expect("settings");
    let model_dir = dir.path().join("fraud");
    std::fs::create_dir_all(&model_dir).expect("mkdir");
    std::fs::write(
        model_dir.join("model-settings.json"),
        serde_json::json!({"name": "fraud", "implementation": "mlserver_lightgbm.LightGBMModel",
            "parameters": {"uri": booster, "version": version}})
        .to_string(),
    )
    .expect("model settings");
    let child = tokio::process::Command::new(&python)
        .process_group(0)
        .args(["-m", "mlserver.cli.main", "start"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mlserver starts");
    let server = MlServer { child, rest, grpc, _dir: dir };
    let started = Instant::now();
    loop {
        let ready = tokio::net::TcpStream::connect(("127.0.0.1", rest)).await.is_ok()
            && http_ok(rest, "/v2/models/fraud/ready").await;
        if ready {
            return server;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "MLServer did not get ready in 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether GET `path` answers 200 (a minimal HTTP/1.1 request: no client crate needed).
async fn http_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.1 200")
}
