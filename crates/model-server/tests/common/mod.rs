//! What the model server's integration tests share: the repository root, a server on free
//! loopback ports, the test venv's python.
#![allow(dead_code, unused_imports)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::time::Duration;

use tally_model_server::faults::FaultSettings;
use tally_model_server::{Bound, ServeOptions, serve};
use tokio_util::sync::CancellationToken;

/// The checkout's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// `tally model-server` over `repository` on free ports, rescanning every `poll`.
pub async fn start(repository: &Path, poll: Duration) -> (Bound, CancellationToken) {
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = ServeOptions {
        repository: repository.to_path_buf(),
        rest: "127.0.0.1:0".parse().expect("addr"),
        grpc: "127.0.0.1:0".parse().expect("addr"),
        batch_window: Duration::from_micros(200),
        poll,
        faults: FaultSettings::default(),
    };
    let c = cancel.clone();
    tokio::spawn(async move {
        serve(opts, None, c, move |b| {
            let _ = tx.send(b);
        })
        .await
        .expect("serves")
    });
    (rx.await.expect("bound"), cancel)
}

pub use tally_model_server::peers::venv_python;
