//! Drives simulator traffic into tally at a target rate: straight into the embedded log, or
//! over HTTP like a channel without Kafka would.

use std::time::{Duration, Instant};

use anyhow::Context;
use tally_bus::{AnyBus, Bus, OutRecord};
use tally_config::Config;
use tally_core::Envelope;
use tally_sim::{SimConfig, Simulator};
use tokio_util::sync::CancellationToken;

/// Where simulated events go.
pub enum Sink {
    /// Publish to the input topic of a bus (the embedded log or Kafka).
    Bus {
        /// The bus.
        bus: AnyBus,
        /// Input topic.
        topic: String,
    },
    /// POST batches to `/v1/events`.
    Http {
        /// Client.
        client: reqwest::Client,
        /// Base URL, e.g. `http://127.0.0.1:8080`.
        url: String,
        /// Bearer key, if the server needs one.
        api_key: Option<String>,
    },
}

/// Counts of one drive.
#[derive(Debug, Default, Clone, Copy)]
pub struct Driven {
    /// Events delivered (duplicates included).
    pub sent: u64,
    /// Events the HTTP API refused as invalid (the deliberate poison).
    pub refused: u64,
}

/// The binary-mode record of an envelope, keyed by its subject (the SKU).
pub fn record(env: &Envelope) -> OutRecord {
    let (headers, payload) = env.to_binary();
    OutRecord { key: env.subject.clone(), headers, payload }
}

impl Sink {
    /// Delivers one batch.
    pub async fn send(&self, events: Vec<Envelope>) -> anyhow::Result<Driven> {
        let n = events.len() as u64;
        match self {
            Self::Bus { bus, topic } => {
                bus.publish(topic, events.iter().map(record).collect()).await?;
                Ok(Driven { sent: n, refused: 0 })
            }
            Self::Http { client, url, api_key } => {
                let post = |body: &Vec<Envelope>| {
                    let mut req = client.post(format!("{url}/v1/events")).json(body);
                    if let Some(k) = api_key {
                        req = req.bearer_auth(k);
                    }
                    req.send()
                };
                let resp = post(&events).await.context("POST /v1/events")?;
                if resp.status() == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
                    // All-or-nothing validation: drop the invalid items the problem names, resend.
                    let problem: serde_json::Value = resp.json().await?;
                    let bad: std::collections::HashSet<u64> = problem["errors"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|e| e["index"].as_u64()).collect())
                        .unwrap_or_default();
                    let good: Vec<Envelope> = events
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !bad.contains(&(*i as u64)))
                        .map(|(_, e)| e)
                        .collect();
                    let sent = good.len() as u64;
                    if !good.is_empty() {
                        let resp = post(&good).await?;
                        anyhow::ensure!(resp.status().is_success(), "ingest failed: {}", resp.text().await?);
                    }
                    return Ok(Driven { sent, refused: bad.len() as u64 });
                }
                anyhow::ensure!(resp.status().is_success(), "ingest failed: {} {}", resp.status(), resp.text().await?);
                Ok(Driven { sent: n, refused: 0 })
            }
        }
    }
}

/// Sends simulator events at `rate` per second (0: as fast as possible) for `duration`.
pub async fn drive(
    sim: &mut Simulator,
    sink: &Sink,
    rate: u64,
    duration: Duration,
    stop: &CancellationToken,
    mut progress: impl FnMut(Driven),
) -> anyhow::Result<Driven> {
    let started = Instant::now();
    let mut total = Driven::default();
    let mut generated: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while started.elapsed() < duration && !stop.is_cancelled() {
        tick.tick().await;
        let due = if rate == 0 { generated + 2000 } else { (started.elapsed().as_secs_f64() * rate as f64) as u64 };
        let n = due.saturating_sub(generated).min(5000) as usize;
        if n == 0 {
            continue;
        }
        generated += n as u64;
        let d = sink.send(sim.next_batch(n)).await?;
        total.sent += d.sent;
        total.refused += d.refused;
        progress(total);
    }
    Ok(total)
}

/// Arguments of `tally simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Events per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Random seed (same seed, same traffic).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of SKUs.
    #[arg(long, default_value_t = 1000)]
    pub skus: usize,
    /// Send over HTTP to this base URL instead of publishing to the configured bus (the
    /// embedded log file, or Kafka).
    #[arg(long)]
    pub http: Option<String>,
    /// API key for --http.
    #[arg(long, env = "TALLY_SIM_API_KEY")]
    pub api_key: Option<String>,
}

/// `tally simulate`.
pub async fn simulate(config: Config, args: SimulateArgs) -> anyhow::Result<()> {
    let sink = match &args.http {
        Some(url) => Sink::Http {
            client: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_owned(),
            api_key: args.api_key.clone(),
        },
        None => Sink::Bus { bus: tally_server::app::open_bus(&config)?, topic: config.inventory.topics.events.clone() },
    };
    let mut sim = Simulator::new(SimConfig { seed: args.seed, skus: args.skus, ..SimConfig::default() });
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s2.cancel();
    });
    let mut last = Instant::now();
    let done = drive(&mut sim, &sink, args.rate, Duration::from_secs(args.duration), &stop, |d| {
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!("sent {} events ({} refused as invalid)", d.sent, d.refused);
        }
    })
    .await?;
    println!("sent {} events ({} refused as invalid)", done.sent, done.refused);
    Ok(())
}
