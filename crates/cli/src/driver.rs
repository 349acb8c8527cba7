//! Drives simulator traffic into tally at a target rate: straight into the embedded log, or
//! over HTTP like a channel without Kafka would.

use std::time::{Duration, Instant};

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
        /// How long one batch is retried after transport errors, 5xx or 429 before it is
        /// given up (and counted as unsent).
        retry_for: Duration,
    },
}

/// Counts of one drive.
#[derive(Debug, Default, Clone, Copy)]
pub struct Driven {
    /// Events delivered (duplicates included).
    pub sent: u64,
    /// Events the HTTP API refused as invalid (the deliberate poison).
    pub refused: u64,
    /// Events that could not be delivered: the server stayed unreachable (or kept failing)
    /// for the whole retry period.
    pub unsent: u64,
}

impl Driven {
    fn add(&mut self, other: Self) {
        self.sent += other.sent;
        self.refused += other.refused;
        self.unsent += other.unsent;
    }
}

/// POSTs `body` to `/v1/events`, retrying transport errors, 5xx and 429 with jittered
/// exponential backoff (100 ms doubling to 5 s) for up to `retry_for`. Retrying is safe: the
/// events carry their ids, so a batch that did arrive the first time is applied once. `None`
/// when it gave up.
async fn post_with_retry(
    client: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
    body: &[Envelope],
    retry_for: Duration,
) -> Option<reqwest::Response> {
    use rand::Rng as _;
    let give_up = Instant::now() + retry_for;
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut req = client.post(format!("{url}/v1/events")).json(body);
        if let Some(k) = api_key {
            req = req.bearer_auth(k);
        }
        let why = match req.send().await {
            Ok(resp)
                if !(resp.status().is_server_error() || resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS) =>
            {
                return Some(resp);
            }
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(e) => format!("{e}"),
        };
        if Instant::now() + backoff > give_up {
            eprintln!("giving up on a batch of {} events after {retry_for:?}: {why}", body.len());
            return None;
        }
        tracing::warn!(error = %why, retry_in_ms = backoff.as_millis() as u64, "POST /v1/events failed; retrying");
        let jitter = rand::rng().random_range(0.5..1.0);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
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
                Ok(Driven { sent: n, ..Driven::default() })
            }
            Self::Http { client, url, api_key, retry_for } => {
                let key = api_key.as_deref();
                let Some(resp) = post_with_retry(client, url, key, &events, *retry_for).await else {
                    return Ok(Driven { unsent: n, ..Driven::default() });
                };
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
                    let refused = bad.len() as u64;
                    if !good.is_empty() {
                        let Some(resp) = post_with_retry(client, url, key, &good, *retry_for).await else {
                            return Ok(Driven { sent: 0, refused, unsent: sent });
                        };
                        anyhow::ensure!(resp.status().is_success(), "ingest failed: {}", resp.text().await?);
                    }
                    return Ok(Driven { sent, refused, unsent: 0 });
                }
                anyhow::ensure!(resp.status().is_success(), "ingest failed: {} {}", resp.status(), resp.text().await?);
                Ok(Driven { sent: n, ..Driven::default() })
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
        total.add(sink.send(sim.next_batch(n)).await?);
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
    /// With --http: seconds one batch is retried while the server is unreachable (or answers
    /// 5xx or 429) before it is counted as unsent.
    #[arg(long, default_value_t = 30)]
    pub retry_seconds: u64,
    /// Payments instead of inventory events: customer profiles, transactions with labelled
    /// fraud patterns and their labels (`--rate` transactions per second) into the fraud topics,
    /// or over HTTP (profiles and synchronous scoring; labels need the bus).
    #[arg(long)]
    pub payments: bool,
    /// With --payments: customer accounts.
    #[arg(long, default_value_t = 5000)]
    pub accounts: usize,
}

/// `tally simulate`.
pub async fn simulate(config: Config, args: SimulateArgs) -> anyhow::Result<()> {
    if args.payments {
        return simulate_payments(config, args).await;
    }
    let sink = match &args.http {
        Some(url) => Sink::Http {
            client: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_owned(),
            api_key: args.api_key.clone(),
            retry_for: Duration::from_secs(args.retry_seconds),
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
            eprintln!("sent {} events ({} refused as invalid, {} unsent)", d.sent, d.refused, d.unsent);
        }
    })
    .await?;
    println!("sent {} events ({} refused as invalid, {} could not be sent)", done.sent, done.refused, done.unsent);
    anyhow::ensure!(done.unsent == 0, "{} events could not be sent: the server stayed unreachable", done.unsent);
    Ok(())
}

/// `tally simulate --payments`.
async fn simulate_payments(config: Config, args: SimulateArgs) -> anyhow::Result<()> {
    let cfg = tally_sim::payments::PaymentsConfig {
        seed: args.seed,
        accounts: args.accounts,
        start_ms: tally_core::now_ms(),
        mean_gap_seconds: 1.0 / args.rate.max(1) as f64,
        ..tally_sim::payments::PaymentsConfig::default()
    };
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s2.cancel();
    });
    let duration = Duration::from_secs(args.duration);
    let done = match &args.http {
        Some(url) => {
            let url = url.trim_end_matches('/');
            crate::payments::drive_payments_http(url, args.api_key.as_deref(), cfg, args.rate, duration, &stop).await?
        }
        None => {
            let bus = tally_server::app::open_bus(&config)?;
            for t in [&config.fraud.topics.transactions, &config.fraud.topics.profiles, &config.fraud.topics.labels] {
                bus.create_topic(t, config.bus.partitions()).await?;
            }
            crate::payments::drive_payments(&bus, &config.fraud.topics, cfg, args.rate, duration, &stop).await?
        }
    };
    println!(
        "sent {} transactions, {} profiles{}",
        done.transactions,
        done.profiles,
        if args.http.is_some() {
            format!(" ({} labels came due: labels need the bus)", done.labels)
        } else {
            format!(", {} labels", done.labels)
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn sink(port: u16, retry_for: Duration) -> Sink {
        Sink::Http { client: reqwest::Client::new(), url: format!("http://127.0.0.1:{port}"), api_key: None, retry_for }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
    }

    /// A server that comes up late and accepts one request with 202.
    async fn accept_once_after(port: u16, delay: Duration) {
        tokio::time::sleep(delay).await;
        let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await else { return };
        if let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 1 << 20];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
        }
    }

    #[tokio::test]
    async fn a_batch_is_retried_until_the_server_answers() {
        let port = free_port();
        let server = tokio::spawn(accept_once_after(port, Duration::from_millis(700)));
        let events = Simulator::new(SimConfig::default()).next_batch(10);
        let d = sink(port, Duration::from_secs(20)).send(events).await.expect("sent");
        assert_eq!((d.sent, d.unsent), (10, 0));
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_batch_the_server_never_takes_is_reported_unsent() {
        let events = Simulator::new(SimConfig::default()).next_batch(7);
        let d = sink(free_port(), Duration::from_millis(500)).send(events).await.expect("no error");
        assert_eq!((d.sent, d.unsent), (0, 7));
    }
}
