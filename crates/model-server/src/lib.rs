//! `tally model-server`: the Open Inference Protocol v2 (the contract KServe, Triton and
//! MLServer share) over REST and gRPC, so the clients users already have — tritonclient, the
//! KServe SDK — work unchanged, and tally's own model client can point at this server or at
//! theirs.
//!
//! - A model repository on disk ([`repository`]): `<root>/<model>/<version>/config.toml` + the
//!   model file; versions load and unload without a restart.
//! - ONNX tree ensembles evaluated in pure Rust (`tally-trees`).
//! - Server-side dynamic batching ([`batching`]): requests within a window are evaluated
//!   together.
//! - Fault injection ([`faults`]): added latency, error rate, hard down — off by default.
//! - Per-model metrics ([`metrics`]).
//!
//! The same [`ModelServer`] answers in process (embedded mode) through [`ModelServer::infer`].

pub mod batching;
pub mod config;
pub mod faults;
pub mod grpc;
pub mod infer;
pub mod metrics;
#[cfg(feature = "peers")]
pub mod peers;
pub mod repository;
pub mod rest;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::faults::{FaultSettings, Faults};
use crate::repository::Repository;

pub use infer::{Answer, Call, ServeError};

/// Protocol extensions served (reported by server metadata).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository_polling", "tally_fault_injection"];

/// Server metadata (`GET /v2`).
pub fn server_metadata() -> serde_json::Value {
    serde_json::json!({ "name": "tally", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS })
}

/// A model server: the repository, the faults in force, and where its metrics render.
#[derive(Debug)]
pub struct ModelServer {
    /// Loaded models.
    pub repository: Arc<Repository>,
    /// Fault injection.
    pub faults: Faults,
    /// The Prometheus exporter, when this server renders `/metrics` itself.
    pub prometheus: Option<PrometheusHandle>,
}

impl ModelServer {
    /// A server over the repository at `root`, batching within `window`.
    pub fn open(root: impl Into<PathBuf>, window: Duration, prometheus: Option<PrometheusHandle>) -> Arc<Self> {
        metrics::describe();
        let repository = Repository::open(root, window, |model, version| {
            let (model, version) = (model.to_owned(), version.to_owned());
            Arc::new(move |rows| metrics::batch(&model, &version, rows))
        });
        Arc::new(Self { repository, faults: Faults::default(), prometheus })
    }
}

/// How `tally model-server` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The model repository.
    pub repository: PathBuf,
    /// REST address.
    pub rest: SocketAddr,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Dynamic-batching window.
    pub batch_window: Duration,
    /// How often the repository is rescanned.
    pub poll: Duration,
    /// Faults from the start.
    pub faults: FaultSettings,
}

/// Where a started server listens.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// REST.
    pub rest: SocketAddr,
    /// gRPC.
    pub grpc: SocketAddr,
}

/// Binds both listeners and serves until `cancel` fires; `on_bound` learns the addresses
/// (port 0 picks free ones).
pub async fn serve(
    opts: ServeOptions,
    prometheus: Option<PrometheusHandle>,
    cancel: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> std::io::Result<()> {
    let server = ModelServer::open(&opts.repository, opts.batch_window, prometheus);
    server.faults.set(opts.faults);
    let rest = tokio::net::TcpListener::bind(opts.rest).await?;
    let grpc = tokio::net::TcpListener::bind(opts.grpc).await?;
    let bound = Bound { rest: rest.local_addr()?, grpc: grpc.local_addr()? };
    tracing::info!(rest = %bound.rest, grpc = %bound.grpc, repository = %opts.repository.display(),
        models = ?server.repository.index(), "model server listening");
    on_bound(bound);
    tokio::spawn(Arc::clone(&server.repository).watch(opts.poll, cancel.clone()));

    let app = rest::router(Arc::clone(&server));
    let rest_cancel = cancel.clone();
    let rest_task = tokio::spawn(async move {
        axum::serve(rest, app).with_graceful_shutdown(async move { rest_cancel.cancelled().await }).await
    });
    let service = tally_model::grpc::grpc_inference_service_server::GrpcInferenceServiceServer::new(grpc::Service(
        Arc::clone(&server),
    ))
    .max_decoding_message_size(tally_model::grpc::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(tally_model::grpc::MAX_MESSAGE_BYTES);
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let grpc_result = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, cancel.cancelled())
        .await;
    let rest_result = rest_task.await.map_err(std::io::Error::other)?;
    grpc_result.map_err(std::io::Error::other)?;
    rest_result
}
