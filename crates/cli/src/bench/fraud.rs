//! `tally bench fraud`: the fraud scoring service measured as the issue asks, on the embedded
//! stack (model in process) or on Kafka + PostgreSQL + Redis with `tally model-server` over
//! gRPC (a child process), in one run:
//! - model quality: ROC-AUC and precision at 80 % recall of the reference model and of the
//!   rules on held-out simulated payments (a seed neither model was trained on);
//! - the model server against MLServer serving the same trees, gRPC, same batch size and
//!   concurrency: inferences/s and p99;
//! - the pipeline: a backlog of transactions decided per second; decision latency (event time
//!   → decision published) at a fixed rate; the same with the model killed a third of the way
//!   in; synchronous HTTP scoring latency at a fixed request rate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tally_bus::{AnyBus, Bus, OutRecord};
use tally_config::{BusConfig, CacheConfig, Config, LogConfig, LogFormat, ModelTransport, Secret, StoreConfig};
use tally_fraud::{FeatureSchema, HardRules, History, Labelled, Profile, Transaction, assess, roc_auc};
use tally_model::Transport;
use tally_server::App;
use tally_server::app::Role;
use tally_sim::payments::{Pattern, Payments, PaymentsConfig, types};
use tally_store::Ledger;

use super::args::{BenchStack, env_or};

const PARTITIONS: u32 = 4;

/// Arguments of `tally bench fraud`.
#[derive(Debug, clap::Args)]
pub struct FraudBenchArgs {
    /// Which backends: the embedded default (model in process), or Kafka + PostgreSQL + Redis
    /// with `tally model-server` over gRPC.
    #[arg(long, value_enum, default_value_t = BenchStack::Embedded)]
    pub stack: BenchStack,
    /// Transactions in the throughput backlog.
    #[arg(long, default_value_t = 200_000)]
    pub transactions: usize,
    /// Customer accounts.
    #[arg(long, default_value_t = 20_000)]
    pub accounts: usize,
    /// Rate of the latency phases (transactions/s).
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Seconds of each latency phase.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Rate of synchronous HTTP scoring (requests/s).
    #[arg(long, default_value_t = 1_000)]
    pub sync_rate: u64,
    /// Seconds of synchronous scoring.
    #[arg(long, default_value_t = 10)]
    pub sync_seconds: u64,
    /// Rows per inference in the model-server comparison.
    #[arg(long, default_value_t = 64)]
    pub infer_batch: usize,
    /// Concurrent callers in the model-server comparison.
    #[arg(long, default_value_t = 8)]
    pub infer_concurrency: usize,
    /// Seconds per server in the model-server comparison.
    #[arg(long, default_value_t = 5)]
    pub infer_seconds: u64,
    /// Skip MLServer (no test venv on this machine).
    #[arg(long)]
    pub no_mlserver: bool,
    /// Held-out transactions for the quality figures.
    #[arg(long, default_value_t = 100_000)]
    pub quality_transactions: usize,
    /// The model repository (`<dir>/fraud/<version>`).
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Kafka brokers for `--stack kafka` (default: $TEST_TALLY_KAFKA_BROKERS).
    #[arg(long)]
    pub brokers: Option<String>,
    /// PostgreSQL URL for `--stack kafka` (a fresh database is created there; default:
    /// $TEST_TALLY_POSTGRES_URL).
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Redis URL for `--stack kafka` (default: $TEST_TALLY_REDIS_URL).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// Results (the JSON line).
#[derive(Debug, Default, Serialize)]
pub struct FraudBenchResult {
    /// `embedded` or `kafka`.
    pub stack: &'static str,
    /// Backlog transactions decided (scored, stored, published, committed) per second.
    pub tx_per_s: f64,
    /// Event time → decision published, p50, at `rate`.
    pub decision_p50_ms: f64,
    /// p99 of the same.
    pub decision_p99_ms: f64,
    /// The same p99 with the model killed a third of the way in.
    pub decision_p99_model_down_ms: f64,
    /// Decisions the rules made in that phase (the model was gone).
    pub model_down_rules_share: f64,
    /// Transactions lost in that phase (sent but never decided): must be 0.
    pub model_down_lost: u64,
    /// The latency phases' rate.
    pub rate: u64,
    /// Synchronous `POST /v1/fraud/score` latency p50 at `sync_rate`.
    pub sync_p50_ms: f64,
    /// p99 of the same.
    pub sync_p99_ms: f64,
    /// Requests that did not answer 200.
    pub sync_failed: u64,
    /// The request rate.
    pub sync_rate: u64,
    /// tally model-server, gRPC: rows scored per second.
    pub model_server_infer_per_s: f64,
    /// Its p99 per request.
    pub model_server_p99_ms: f64,
    /// MLServer (same trees, LightGBM runtime), gRPC, same load.
    pub mlserver_infer_per_s: Option<f64>,
    /// Its p99 per request.
    pub mlserver_p99_ms: Option<f64>,
    /// Rows per request and callers of the comparison.
    pub infer_batch: usize,
    /// Concurrent callers.
    pub infer_concurrency: usize,
    /// Reference model ROC-AUC on held-out payments.
    pub model_roc_auc: f64,
    /// Its precision at 80 % recall.
    pub model_precision_at_80_recall: f64,
    /// The rule scorer's ROC-AUC on the same payments.
    pub rules_roc_auc: f64,
    /// Its precision at 80 % recall.
    pub rules_precision_at_80_recall: f64,
    /// Where a poll's time went in the latency phase: mean milliseconds per poll in each stage of
    /// `tally_fraud_poll_stage_seconds` (delivery, prepare, apply, finish, publish).
    pub stage_mean_ms: BTreeMap<String, f64>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Precision at the threshold where recall first reaches `recall`.
fn precision_at_recall(scored: &[Labelled], recall: f64) -> f64 {
    let mut s: Vec<Labelled> = scored.to_vec();
    s.sort_by(|a, b| b.score.total_cmp(&a.score));
    let positives = s.iter().filter(|l| l.fraud).count().max(1);
    let (mut tp, mut best) = (0usize, 0.0f64);
    let mut i = 0;
    while i < s.len() {
        // Ties share a threshold: take them together.
        let mut j = i;
        while j < s.len() && s[j].score == s[i].score {
            tp += usize::from(s[j].fraud);
            j += 1;
        }
        if tp as f64 / positives as f64 >= recall {
            best = best.max(tp as f64 / j as f64);
            break;
        }
        i = j;
    }
    best
}

/// Quality of the reference model (version 1) and of the rules on held-out payments.
fn quality(models: &Path, n: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
    let onnx = std::fs::read(models.join("fraud/1/model.onnx"))?;
    let trees = tally_trees::Model::from_onnx(&onnx)?;
    let schema = FeatureSchema::v1();
    let mut sim = Payments::new(PaymentsConfig { seed: 5_000, accounts: 5_000, ..PaymentsConfig::default() });
    let (mut profiles, mut histories) =
        (std::collections::HashMap::new(), std::collections::HashMap::<String, History>::new());
    let (mut rows, mut truth, mut rules) = (Vec::new(), Vec::new(), Vec::new());
    while truth.len() < n {
        for g in sim.next_batch(4096) {
            let payload = serde_json::to_vec(&g.event.data)?;
            match g.event.ty.as_str() {
                types::PROFILE => {
                    let (a, p) = Profile::from_payload(&payload)?;
                    profiles.insert(a.as_str().to_owned(), p);
                }
                types::TRANSACTION if truth.len() < n => {
                    let tx = Transaction::from_payload(&payload)?;
                    let account = tx.account_id.as_str().to_owned();
                    let h = histories.entry(account.clone()).or_default();
                    let a = assess(&schema, &HardRules::default(), h, &tx, profiles.get(&account));
                    rows.extend(a.features.unwrap_or_default());
                    truth.push(g.pattern.is_some_and(|p| p != Pattern::Legitimate));
                    rules.push(a.rule_score);
                }
                _ => {}
            }
        }
    }
    let out = trees.run(&rows, truth.len()).map_err(|e| anyhow::anyhow!(e.0))?;
    let tally_trees::Tensor::F32(p) = &out[1] else { anyhow::bail!("the reference model has no probabilities") };
    let model: Vec<Labelled> =
        truth.iter().enumerate().map(|(i, f)| Labelled { score: p[i * 2 + 1], fraud: *f }).collect();
    let rule: Vec<Labelled> = truth.iter().zip(&rules).map(|(f, s)| Labelled { score: *s, fraud: *f }).collect();
    Ok((
        roc_auc(&model).unwrap_or(0.0),
        precision_at_recall(&model, 0.8),
        roc_auc(&rule).unwrap_or(0.0),
        precision_at_recall(&rule, 0.8),
    ))
}

/// `tally model-server` as a child process on free ports; its gRPC URL.
struct ModelServerChild {
    child: std::process::Child,
    grpc: String,
}

impl ModelServerChild {
    fn start(models: &Path, dir: &Path) -> anyhow::Result<Self> {
        let addr = dir.join("model-server.addr");
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["model-server", "--rest", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--addr-file"])
            .arg(&addr)
            .arg("--repository")
            .arg(models)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                let grpc = format!("http://{}", v["grpc"].as_str().unwrap_or_default());
                return Ok(Self { child, grpc });
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "tally model-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: the model is gone, mid-run
        let _ = self.child.wait();
    }
}

impl Drop for ModelServerChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `concurrency` callers sending `batch` rows per request for `seconds`: rows/s and p99 ms.
async fn infer_load(url: &str, batch: usize, concurrency: usize, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let transport = Transport::grpc(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let row: Vec<f32> =
        vec![50.0, 1.0, 3.0, 9.0, 20.0, 80.0, 300.0, 2.0, 1.0, 1.0, 900.0, 1.2, 0.0, 0.0, 1.0, 400.0, 12.0];
    let data: Vec<f32> = (0..batch).flat_map(|i| row.iter().map(move |v| v * (1.0 + i as f32 * 0.01))).collect();
    let request = tally_model::client::Request {
        model: "fraud".into(),
        version: Some("1".into()),
        input: tally_model::Named {
            name: "features".into(),
            shape: vec![batch as i64, row.len() as i64],
            values: tally_model::Values::F32(data),
        },
        outputs: vec![],
    };
    // Warm up (connections, MLServer's first call).
    for _ in 0..20 {
        transport.call(request.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (t, r) = (transport.clone(), request.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let s = Instant::now();
                    if t.call(r.clone()).await.is_ok() {
                        lat.push(s.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await?);
    }
    let took = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok(((all.len() * batch) as f64 / took, percentile(&all, 0.99)))
}

fn record(e: &tally_core::Envelope) -> OutRecord {
    let (headers, payload) = e.to_binary();
    OutRecord::keyed(e.subject.as_deref().unwrap_or_default(), headers, payload)
}

async fn committed(store: &impl Ledger, group: &str, topic: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for p in 0..PARTITIONS {
        total += store.committed_offset(group, topic, p).await?.unwrap_or(0);
    }
    Ok(total)
}

/// Sends `rate` transactions/s for `seconds` (event time = now); `at_third` runs once a third
/// of the way in. Returns the ids sent.
async fn paced(
    bus: &AnyBus,
    topic: &str,
    sim: &mut Payments,
    rate: u64,
    seconds: u64,
    mut at_third: impl FnMut(),
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut third_done = false;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        if !third_done && started.elapsed() >= Duration::from_secs(seconds) / 3 {
            third_done = true;
            at_third();
        }
        let due = (started.elapsed().as_secs_f64() * rate as f64) as usize;
        let mut batch = Vec::new();
        while ids.len() < due {
            let Some(g) = sim.next_batch(1).pop() else { break };
            if g.event.ty != types::TRANSACTION {
                continue;
            }
            let mut e = g.event;
            e.time = time::OffsetDateTime::now_utc();
            ids.push(e.id.clone());
            batch.push(record(&e));
        }
        if !batch.is_empty() {
            bus.publish(topic, batch).await?;
        }
    }
    Ok(ids)
}

/// Sum and count per stage of `tally_fraud_poll_stage_seconds`, scraped from `/metrics`.
async fn stage_totals(http: &reqwest::Client, url: &str) -> anyhow::Result<BTreeMap<String, (f64, f64)>> {
    let text = http.get(format!("{url}/metrics")).send().await?.error_for_status()?.text().await?;
    let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("tally_fraud_poll_stage_seconds_") else { continue };
        let (is_sum, rest) = match (rest.strip_prefix("sum{"), rest.strip_prefix("count{")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => continue,
        };
        let Some(stage) = rest.split("stage=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let Some(value) = line.split_whitespace().last().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let entry = totals.entry(stage.to_owned()).or_default();
        if is_sum { entry.0 = value } else { entry.1 = value }
    }
    Ok(totals)
}

/// Mean milliseconds per poll in each stage between two scrapes.
fn stage_means(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(stage, (sum, count))| {
            let (sum0, count0) = before.get(stage).copied().unwrap_or_default();
            let polls = count - count0;
            (polls > 0.0).then(|| (stage.clone(), (sum - sum0) / polls * 1000.0))
        })
        .collect()
}

fn take_latencies(app: &tally_server::RunningApp) -> Vec<f64> {
    let mut samples = app.fraud.stats.latency_us.lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<f64> = samples.drain(..).map(|us| us as f64 / 1000.0).collect();
    v.sort_by(f64::total_cmp);
    v
}

async fn wait_decided(app: &tally_server::RunningApp, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while app.fraud.stats.decisions() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the benchmark.
pub async fn run(base: Config, args: FraudBenchArgs) -> anyhow::Result<()> {
    tally_server::telemetry::init(&LogConfig { format: LogFormat::Pretty, level: "error".into() });
    let models = args.models.canonicalize().map_err(|e| {
        anyhow::anyhow!("the model repository {} ({e}): run from the checkout or pass --models", args.models.display())
    })?;
    let mut result = FraudBenchResult {
        stack: match args.stack {
            BenchStack::Embedded => "embedded",
            BenchStack::Kafka => "kafka",
        },
        rate: args.rate,
        sync_rate: args.sync_rate,
        infer_batch: args.infer_batch,
        infer_concurrency: args.infer_concurrency,
        ..FraudBenchResult::default()
    };

    eprintln!("quality on {} held-out transactions…", args.quality_transactions);
    (
        result.model_roc_auc,
        result.model_precision_at_80_recall,
        result.rules_roc_auc,
        result.rules_precision_at_80_recall,
    ) = quality(&models, args.quality_transactions)?;

    let dir = tempfile::tempdir()?;
    let mut model_server = ModelServerChild::start(&models, dir.path())?;
    eprintln!("tally model-server vs MLServer: gRPC, {} rows × {} callers…", args.infer_batch, args.infer_concurrency);
    (result.model_server_infer_per_s, result.model_server_p99_ms) =
        infer_load(&model_server.grpc, args.infer_batch, args.infer_concurrency, args.infer_seconds).await?;
    if !args.no_mlserver {
        let ml = tally_model_server::peers::start_mlserver_with(&models.join("fraud/1/model.txt"), "1", 1).await;
        let (per_s, p99) = infer_load(
            &format!("http://127.0.0.1:{}", ml.grpc),
            args.infer_batch,
            args.infer_concurrency,
            args.infer_seconds,
        )
        .await?;
        (result.mlserver_infer_per_s, result.mlserver_p99_ms) = (Some(per_s), Some(p99));
    }

    // The pipeline.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = base.clone();
    cfg.log = LogConfig { format: LogFormat::Pretty, level: "error".into() };
    cfg.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.fraud.models = models.join("fraud").display().to_string();
    cfg.model.repository = models.display().to_string();
    cfg.embedded.path = dir.path().join("bench.db");
    if args.stack == BenchStack::Kafka {
        let pg_admin = env_or(&args.postgres_url, "TEST_TALLY_POSTGRES_URL")?;
        let pg = tally_store::postgres::create_database(&pg_admin, "tally_bench_fraud").await?;
        cfg.bus = BusConfig::Kafka {
            brokers: env_or(&args.brokers, "TEST_TALLY_KAFKA_BROKERS")?,
            client_id: "tally-bench".into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            publish_timeout_ms: 30_000,
            drain_timeout_ms: 30_000,
            properties: Default::default(),
        };
        cfg.store = StoreConfig::Postgres {
            url: Secret::new(pg),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            migrate_on_start: true,
        };
        cfg.cache = CacheConfig::Redis {
            url: Secret::new(env_or(&args.redis_url, "TEST_TALLY_REDIS_URL")?),
            key_prefix: format!("bench:{run_id}:"),
            ttl_seconds: 3600,
            timeout_ms: 1_000,
        };
        cfg.model.transport = ModelTransport::Grpc;
        cfg.model.url = model_server.grpc.clone();
        cfg.fraud.consumer_group = format!("bench-fraud-{run_id}");
        cfg.fraud.topics.transactions = format!("bench.transactions.{run_id}");
        cfg.fraud.topics.profiles = format!("bench.profiles.{run_id}");
        cfg.fraud.topics.labels = format!("bench.labels.{run_id}");
        cfg.fraud.topics.decisions = format!("bench.decisions.{run_id}");
        cfg.inventory.consumer_group = format!("bench-inv-{run_id}");
        cfg.inventory.topics.events = format!("bench.events.{run_id}");
        cfg.inventory.topics.availability = format!("bench.availability.{run_id}");
        cfg.inventory.topics.outcomes = format!("bench.outcomes.{run_id}");
        cfg.forecast.namespace(&format!("bench-{run_id}"));
    } else {
        cfg.bus = BusConfig::Embedded { partitions: PARTITIONS };
    }

    // A backlog before the consumers start: profiles, then the transactions. (This bus handle
    // is dropped before the app opens its own: the embedded log has one writer per file.)
    let bus = tally_server::app::open_bus(&cfg)?;
    for t in [&cfg.fraud.topics.transactions, &cfg.fraud.topics.profiles] {
        bus.create_topic(t, PARTITIONS).await?;
    }
    let mut sim = Payments::new(PaymentsConfig {
        seed: 77,
        accounts: args.accounts,
        start_ms: tally_core::now_ms() - 3_600_000,
        mean_gap_seconds: 0.01,
        label_delay_days: 10_000, // no labels in the measured stream
        ..PaymentsConfig::default()
    });
    eprintln!("publishing {} profiles and {} transactions…", args.accounts, args.transactions);
    let (mut profiles, mut txs) = (Vec::new(), 0usize);
    let mut pending = Vec::new();
    while txs < args.transactions {
        for g in sim.next_batch(5_000) {
            match g.event.ty.as_str() {
                types::PROFILE => profiles.push(record(&g.event)),
                types::TRANSACTION if txs < args.transactions => {
                    txs += 1;
                    pending.push(record(&g.event));
                }
                _ => {}
            }
        }
        if pending.len() >= 20_000 {
            bus.publish(&cfg.fraud.topics.transactions, std::mem::take(&mut pending)).await?;
        }
    }
    bus.publish(&cfg.fraud.topics.profiles, profiles).await?;
    bus.publish(&cfg.fraud.topics.transactions, pending).await?;
    drop(bus);

    let app = App::new(cfg.clone()).start(Role::All).await?;
    let bus = app.fraud.bus.clone();
    let store = app.fraud.store.clone();
    let started = Instant::now();
    loop {
        let done = committed(&store, &cfg.fraud.consumer_group, &cfg.fraud.topics.transactions).await?;
        if done >= args.transactions as u64 {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(900), "the backlog was not decided in 15 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    result.tx_per_s = args.transactions as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "backlog: {:.0} transactions/s; latency at {}/s for {} s…",
        result.tx_per_s, args.rate, args.latency_seconds
    );
    take_latencies(&app);

    // Latency at a fixed rate.
    let url = format!("http://{}", app.addr.map(|a| a.to_string()).unwrap_or_default());
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let stages_before = stage_totals(&http, &url).await?;
    let before = app.fraud.stats.decisions();
    let ids = paced(&bus, &cfg.fraud.topics.transactions, &mut sim, args.rate, args.latency_seconds, || {}).await?;
    wait_decided(&app, before + ids.len() as u64, Duration::from_secs(30)).await;
    let lat = take_latencies(&app);
    (result.decision_p50_ms, result.decision_p99_ms) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    result.stage_mean_ms = stage_means(&stages_before, &stage_totals(&http, &url).await?);

    // Synchronous HTTP scoring at a fixed request rate (open loop).
    eprintln!("sync HTTP scoring at {}/s for {} s…", args.sync_rate, args.sync_seconds);
    let mut requests = Vec::new();
    let sync_started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    while sync_started.elapsed() < Duration::from_secs(args.sync_seconds) {
        tick.tick().await;
        let due = (sync_started.elapsed().as_secs_f64() * args.sync_rate as f64) as u64;
        while sent < due {
            let Some(g) = sim.next_batch(1).pop() else { break };
            if g.event.ty != types::TRANSACTION {
                continue;
            }
            sent += 1;
            let (http, url, body) = (http.clone(), url.clone(), g.event.data);
            requests.push(tokio::spawn(async move {
                let s = Instant::now();
                let ok = http
                    .post(format!("{url}/v1/fraud/score"))
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (ok, s.elapsed().as_secs_f64() * 1000.0)
            }));
        }
    }
    let mut sync = Vec::new();
    for r in requests {
        let (ok, ms) = r.await?;
        if ok {
            sync.push(ms);
        } else {
            result.sync_failed += 1;
        }
    }
    sync.sort_by(f64::total_cmp);
    (result.sync_p50_ms, result.sync_p99_ms) = (percentile(&sync, 0.5), percentile(&sync, 0.99));
    take_latencies(&app);

    // The model killed a third of the way in: the rules decide, nothing waits, nothing is lost.
    eprintln!("latency at {}/s with the model killed a third of the way in…", args.rate);
    let rules_before = app.fraud.stats.by_rules.load(std::sync::atomic::Ordering::Relaxed);
    let before = app.fraud.stats.decisions();
    let in_process = app.model_server.clone();
    let ids =
        paced(&bus, &cfg.fraud.topics.transactions, &mut sim, args.rate, args.latency_seconds, || match &in_process {
            Some(server) => {
                server.faults.set(tally_model_server::faults::FaultSettings { down: true, ..Default::default() })
            }
            None => model_server.kill(),
        })
        .await?;
    wait_decided(&app, before + ids.len() as u64, Duration::from_secs(60)).await;
    let decided = app.fraud.stats.decisions() - before;
    result.model_down_lost = (ids.len() as u64).saturating_sub(decided);
    let by_rules = app.fraud.stats.by_rules.load(std::sync::atomic::Ordering::Relaxed) - rules_before;
    result.model_down_rules_share = by_rules as f64 / decided.max(1) as f64;
    let lat = take_latencies(&app);
    result.decision_p99_model_down_ms = percentile(&lat, 0.99);
    app.shutdown().await;

    println!("tally bench fraud — stack {}", result.stack);
    println!("  quality (held-out simulated payments, seed 5000)");
    println!(
        "    reference model   ROC-AUC {:.4}   precision at 80 % recall {:.4}",
        result.model_roc_auc, result.model_precision_at_80_recall
    );
    println!(
        "    rules             ROC-AUC {:.4}   precision at 80 % recall {:.4}",
        result.rules_roc_auc, result.rules_precision_at_80_recall
    );
    println!("  pipeline");
    println!("    backlog decided             {:>10.0} transactions/s", result.tx_per_s);
    println!(
        "    decision latency at {}/s   p50 {:.2} ms   p99 {:.2} ms",
        result.rate, result.decision_p50_ms, result.decision_p99_ms
    );
    let stages: Vec<String> = tally_runtime::Stage::ALL
        .iter()
        .filter_map(|s| result.stage_mean_ms.get(s.label()).map(|ms| format!("{} {ms:.2}", s.label())))
        .collect();
    println!("      mean ms per poll: {}", stages.join(" · "));
    println!(
        "    … model killed at 1/3       p99 {:.2} ms   rules decided {:.0} %   lost {}",
        result.decision_p99_model_down_ms,
        result.model_down_rules_share * 100.0,
        result.model_down_lost
    );
    println!(
        "    sync HTTP at {}/s          p50 {:.2} ms   p99 {:.2} ms   failed {}",
        result.sync_rate, result.sync_p50_ms, result.sync_p99_ms, result.sync_failed
    );
    println!("  model server (gRPC, {} rows × {} callers)", result.infer_batch, result.infer_concurrency);
    println!(
        "    tally model-server   {:>10.0} rows/s   p99 {:.2} ms",
        result.model_server_infer_per_s, result.model_server_p99_ms
    );
    if let (Some(per_s), Some(p99)) = (result.mlserver_infer_per_s, result.mlserver_p99_ms) {
        println!(
            "    MLServer 1.7.1       {:>10.0} rows/s   p99 {:.2} ms   (tally {:.1}× its throughput)",
            per_s,
            p99,
            result.model_server_infer_per_s / per_s.max(1e-9)
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    }
    Ok(())
}
