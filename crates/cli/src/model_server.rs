//! `tally model-server`: serves the model repository over OIP v2 REST and gRPC until SIGTERM
//! or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tally_model_server::faults::FaultSettings;
use tally_model_server::{ServeOptions, serve};

/// `tally model-server` arguments.
#[derive(Debug, clap::Args)]
pub struct ModelServerArgs {
    /// The model repository (`<root>/<model>/<version>/config.toml`).
    #[arg(long, env = "TALLY_MODEL_REPOSITORY", default_value = "models")]
    pub repository: PathBuf,
    /// REST address (port 0: any free port).
    #[arg(long, env = "TALLY_MODEL_REST", default_value = "127.0.0.1:8000")]
    pub rest: SocketAddr,
    /// gRPC address (port 0: any free port).
    #[arg(long, env = "TALLY_MODEL_GRPC", default_value = "127.0.0.1:8001")]
    pub grpc: SocketAddr,
    /// Dynamic batching: how long the first request of a batch waits for others (µs). 0: no
    /// wait — every request queued while the previous evaluation ran is evaluated together,
    /// which batches under load without delaying a lone request (tokio's timers tick in
    /// milliseconds, so a window under 1,000 µs waits about 1 ms).
    #[arg(long, default_value_t = 0)]
    pub batch_window_us: u64,
    /// How often the repository is rescanned for new, changed or removed versions (ms).
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Fault injection from the start: added latency (ms).
    #[arg(long, default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// Fault injection from the start: share of inferences that fail (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_error_rate: f64,
    /// Write the bound addresses as JSON (`{"rest": …, "grpc": …}`) to this file once listening.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
}

/// Runs the model server.
pub async fn run(args: ModelServerArgs) -> anyhow::Result<()> {
    let faults = FaultSettings { latency_ms: args.fault_latency_ms, error_rate: args.fault_error_rate, down: false };
    faults.validate().map_err(anyhow::Error::msg)?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        crate::serve::shutdown_signal().await;
        stop.cancel();
    });
    let opts = ServeOptions {
        repository: args.repository,
        rest: args.rest,
        grpc: args.grpc,
        batch_window: Duration::from_micros(args.batch_window_us),
        poll: Duration::from_millis(args.poll_ms.max(10)),
        faults,
    };
    let addr_file = args.addr_file;
    serve(opts, Some(prometheus), cancel, move |bound| {
        if let Some(path) = addr_file {
            let json = serde_json::json!({ "rest": bound.rest.to_string(), "grpc": bound.grpc.to_string() });
            if let Err(e) = std::fs::write(&path, json.to_string()) {
                tracing::error!(error = %e, path = %path.display(), "cannot write the address file");
            }
        }
    })
    .await
    .context("the model server stopped")
}
