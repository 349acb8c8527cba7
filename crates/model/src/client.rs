//! tally's model client: speaks only the protocol, so the same code talks to `tally
//! model-server`, MLServer, Triton or KServe — over REST (JSON tensors with
//! `Content-Type: application/json`, which every server parses; MLServer has no binary
//! extension) or gRPC (`raw_input_contents`; outputs read from raw or typed contents,
//! whichever the server sent) — or to a model server in the same process (embedded mode).
//!
//! [`ModelClient::score`] is what the fraud engine calls: micro-batched with other callers
//! ([`crate::batch`]), a deadline per call, jittered retries on transient errors within it,
//! and a circuit breaker ([`crate::breaker`]) that turns a dead model into an immediate
//! "no score" instead of a wait.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::batch::{Batcher, Evaluate, rows_of};
use crate::breaker::{Breaker, Position};
use crate::grpc::{self as pb, grpc_inference_service_client::GrpcInferenceServiceClient};
use crate::rest::HEADER_LENGTH;
use crate::{InferRequest, InferResponse, Named, RequestedOutput, Tensor, Values};

/// One inference as the client asks it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The model.
    pub model: String,
    /// Its version (`None`: the server's default).
    pub version: Option<String>,
    /// The one input.
    pub input: Named,
    /// Outputs asked for.
    pub outputs: Vec<String>,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Worth retrying: no connection, a 5xx or 429, UNAVAILABLE, a timeout.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: the server refused the request (4xx, INVALID_ARGUMENT, …) or
    /// answered something that is not the protocol.
    #[error("refused: {0}")]
    Refused(String),
}

/// A boxed future (the in-process transport is a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A model server in the same process.
pub trait Local: Send + Sync + 'static {
    /// Answers one inference.
    fn infer(&self, request: Request) -> BoxFuture<'_, Result<Vec<Named>, CallError>>;
}

/// How the client reaches the model.
#[derive(Clone)]
pub enum Transport {
    /// OIP v2 REST at a base URL (`http://host:port`).
    Rest {
        /// The HTTP client (connection pool).
        http: reqwest::Client,
        /// Base URL, no trailing slash.
        base: String,
    },
    /// OIP v2 gRPC.
    Grpc(GrpcInferenceServiceClient<tonic::transport::Channel>),
    /// In process.
    Local(Arc<dyn Local>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rest { base, .. } => write!(f, "Rest({base})"),
            Self::Grpc(_) => write!(f, "Grpc"),
            Self::Local(_) => write!(f, "Local"),
        }
    }
}

impl Transport {
    /// REST to `base`.
    pub fn rest(base: &str) -> Result<Self, CallError> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| CallError::Refused(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self::Rest { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// gRPC to `url` (`http://host:port`); connects lazily, so a server that is down at start
    /// is a transient error per call, not a startup failure.
    pub fn grpc(url: &str) -> Result<Self, CallError> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| CallError::Refused(format!("bad gRPC url {url:?}: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        Ok(Self::Grpc(
            GrpcInferenceServiceClient::new(channel)
                .max_decoding_message_size(pb::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(pb::MAX_MESSAGE_BYTES),
        ))
    }

    /// One call.
    pub async fn call(&self, request: Request) -> Result<Vec<Named>, CallError> {
        match self {
            Self::Rest { http, base } => rest_call(http, base, request).await,
            Self::Grpc(client) => grpc_call(client.clone(), request).await,
            Self::Local(local) => local.infer(request).await,
        }
    }
}

async fn rest_call(http: &reqwest::Client, base: &str, r: Request) -> Result<Vec<Named>, CallError> {
    let url = match &r.version {
        Some(v) => format!("{base}/v2/models/{}/versions/{v}/infer", r.model),
        None => format!("{base}/v2/models/{}/infer", r.model),
    };
    let body = InferRequest {
        id: None,
        parameters: Default::default(),
        inputs: vec![Tensor {
            name: r.input.name,
            shape: r.input.shape,
            datatype: r.input.values.datatype(),
            parameters: Default::default(),
            data: Some(r.input.values.to_json()),
            raw: None,
        }],
        outputs: Some(
            r.outputs.into_iter().map(|name| RequestedOutput { name, parameters: Default::default() }).collect(),
        ),
    };
    let (body, _) = body.to_body().map_err(|e| CallError::Refused(e.0))?;
    let response = http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| CallError::Transient(format!("POST {url}: {e}")))?;
    let status = response.status();
    let header = response.headers().get(HEADER_LENGTH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = response.bytes().await.map_err(|e| CallError::Transient(format!("reading the answer: {e}")))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").map(|e| e.to_string()).or_else(|| v.get("detail").map(|d| d.to_string())))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        let text = format!("{status}: {message}");
        return Err(if status.is_server_error() || status.as_u16() == 429 {
            CallError::Transient(text)
        } else {
            CallError::Refused(text)
        });
    }
    let answer = InferResponse::from_body(&bytes, header.as_deref()).map_err(|e| CallError::Refused(e.0))?;
    answer
        .outputs
        .into_iter()
        .map(|t| {
            let values = match (&t.raw, &t.data) {
                (Some(raw), _) => Values::from_raw(t.datatype, raw, &t.shape),
                (None, Some(data)) => Values::from_json(t.datatype, data, &t.shape),
                (None, None) => Err(crate::ProtocolError(format!("output {} has no data", t.name))),
            }
            .map_err(|e| CallError::Refused(format!("output {}: {e}", t.name)))?;
            Ok(Named { name: t.name, shape: t.shape, values })
        })
        .collect()
}

async fn grpc_call(
    mut client: GrpcInferenceServiceClient<tonic::transport::Channel>,
    r: Request,
) -> Result<Vec<Named>, CallError> {
    let request = pb::ModelInferRequest {
        model_name: r.model,
        model_version: r.version.unwrap_or_default(),
        id: String::new(),
        parameters: Default::default(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: r.input.name,
            datatype: pb::datatype_name(r.input.values.datatype()),
            shape: r.input.shape,
            parameters: Default::default(),
            contents: None,
        }],
        outputs: r
            .outputs
            .into_iter()
            .map(|name| pb::model_infer_request::InferRequestedOutputTensor { name, parameters: Default::default() })
            .collect(),
        raw_input_contents: vec![r.input.values.to_raw()],
    };
    let answer = client.model_infer(request).await.map_err(|s| {
        use tonic::Code::*;
        let text = format!("{:?}: {}", s.code(), s.message());
        match s.code() {
            Unavailable | DeadlineExceeded | ResourceExhausted | Aborted | Internal | Unknown | Cancelled => {
                CallError::Transient(text)
            }
            _ => CallError::Refused(text),
        }
    })?;
    let answer = answer.into_inner();
    answer
        .outputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let dt = pb::datatype(&t.datatype).map_err(|e| CallError::Refused(e.0))?;
            let values = match answer.raw_output_contents.get(i) {
                Some(raw) => Values::from_raw(dt, raw, &t.shape),
                None => pb::from_contents(dt, &t.contents.unwrap_or_default(), &t.shape),
            }
            .map_err(|e| CallError::Refused(format!("output {}: {e}", t.name)))?;
            Ok(Named { name: t.name, shape: t.shape, values })
        })
        .collect()
}

/// How scores are asked for and read.
#[derive(Debug, Clone)]
pub struct ScoreConfig {
    /// The model's name on the server.
    pub model: String,
    /// Its input tensor's name.
    pub input: String,
    /// The output holding the score.
    pub output: String,
    /// The score's column in that output (1: P(fraud) of a `[N, 2]` probabilities output; 0:
    /// a `[N, 1]` or `[N]` output such as MLServer's lightgbm `predict`).
    pub column: usize,
    /// Longest wait for one call, retries included.
    pub deadline: Duration,
    /// Retries of a transient failure within the deadline.
    pub retries: u32,
    /// Most rows per call.
    pub batch_max_rows: usize,
    /// How long the first row of a batch waits for others.
    pub batch_window: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long it stays open.
    pub breaker_cooldown: Duration,
}

/// Why there is no score.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    /// The breaker is open: no call was made.
    #[error("the circuit breaker is open")]
    Open,
    /// The deadline passed.
    #[error("the model did not answer within the deadline")]
    Deadline,
    /// The call failed.
    #[error("{0}")]
    Failed(String),
}

struct Caller {
    transport: Transport,
    cfg: Arc<ScoreConfig>,
    version: Option<String>,
    breaker: Arc<Breaker>,
    /// Retry jitter.
    rng: Mutex<SmallRng>,
}

impl Caller {
    async fn attempt(&self, rows: usize, data: &[f32]) -> Result<Vec<f32>, CallError> {
        let request = Request {
            model: self.cfg.model.clone(),
            version: self.version.clone(),
            input: Named {
                name: self.cfg.input.clone(),
                shape: vec![rows as i64, (data.len() / rows.max(1)) as i64],
                values: Values::F32(data.to_vec()),
            },
            outputs: vec![self.cfg.output.clone()],
        };
        let outputs = self.transport.call(request).await?;
        let out = outputs
            .into_iter()
            .find(|o| o.name == self.cfg.output)
            .ok_or_else(|| CallError::Refused(format!("the answer has no output {:?}", self.cfg.output)))?;
        let values = out.values.to_f64();
        let cols = values.len() / rows.max(1);
        if cols * rows != values.len() || self.cfg.column >= cols.max(1) {
            return Err(CallError::Refused(format!(
                "output {} of shape {:?} has no column {} for {rows} rows",
                out.name, out.shape, self.cfg.column
            )));
        }
        Ok((0..rows).map(|r| values[r * cols + self.cfg.column] as f32).collect())
    }
}

impl Evaluate for Caller {
    type Batch = Vec<f32>;
    type Part = Vec<f32>;

    async fn evaluate(&self, rows: usize, data: Vec<f32>) -> Result<Vec<f32>, String> {
        let attempts = async {
            let mut tried = 0;
            loop {
                match self.attempt(rows, &data).await {
                    Err(CallError::Transient(e)) if tried < self.cfg.retries => {
                        tried += 1;
                        // Full jitter: a retry storm from many instances spreads out.
                        let cap = 5u64 << tried.min(6);
                        let ms =
                            self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random_range(1..=cap);
                        tracing::debug!(error = %e, retry = tried, "model call failed; retrying");
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(self.cfg.deadline, attempts).await {
            Ok(Ok(scores)) => {
                self.breaker.success();
                Ok(scores)
            }
            Ok(Err(e)) => {
                self.breaker.failure();
                Err(e.to_string())
            }
            Err(_) => {
                self.breaker.failure();
                Err(DEADLINE.to_owned())
            }
        }
    }

    fn part(batch: &Vec<f32>, total: usize, offset: usize, n: usize) -> Vec<f32> {
        rows_of(batch, total, offset, n)
    }
}

const DEADLINE: &str = "deadline";

/// A seed that differs between processes and batchers (for retry jitter, not secrecy).
fn jitter_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// The scoring client: one micro-batcher per model version, one breaker for the model.
pub struct ModelClient {
    transport: Transport,
    cfg: Arc<ScoreConfig>,
    breaker: Arc<Breaker>,
    batchers: Mutex<HashMap<String, Batcher<Vec<f32>>>>,
}

impl std::fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelClient").field("transport", &self.transport).field("model", &self.cfg.model).finish()
    }
}

impl ModelClient {
    /// A client over `transport`.
    pub fn new(transport: Transport, cfg: ScoreConfig) -> Self {
        let breaker = Arc::new(Breaker::new(cfg.breaker_failures, cfg.breaker_cooldown));
        Self { transport, cfg: Arc::new(cfg), breaker, batchers: Mutex::new(HashMap::new()) }
    }

    /// The configuration.
    pub fn config(&self) -> &ScoreConfig {
        &self.cfg
    }

    /// Where the breaker stands.
    pub fn breaker(&self) -> Position {
        self.breaker.position()
    }

    fn batcher(&self, version: &str) -> Batcher<Vec<f32>> {
        let mut batchers = self.batchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        batchers
            .entry(version.to_owned())
            .or_insert_with(|| {
                let caller = Caller {
                    transport: self.transport.clone(),
                    cfg: Arc::clone(&self.cfg),
                    version: Some(version.to_owned()).filter(|v| !v.is_empty()),
                    breaker: Arc::clone(&self.breaker),
                    rng: Mutex::new(SmallRng::seed_from_u64(jitter_seed())),
                };
                Batcher::start(caller, self.cfg.batch_max_rows, self.cfg.batch_window)
            })
            .clone()
    }

    /// Scores `rows` rows (row-major, all of one width: the version's feature schema) with
    /// model `version` ("" for the server's default): one score per row.
    pub async fn score(&self, version: &str, rows: usize, data: Vec<f32>) -> Result<Vec<f32>, ScoreError> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        if !self.breaker.allow_after_probe(self.cfg.deadline).await {
            return Err(ScoreError::Open);
        }
        match self.batcher(version).call(rows, data).await {
            Ok(scores) => Ok(scores),
            Err(e) if e == DEADLINE => Err(ScoreError::Deadline),
            Err(e) => Err(ScoreError::Failed(e)),
        }
    }
}
