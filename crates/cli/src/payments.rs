//! Drives simulated payments into the fraud topics at a target rate: profiles first, then
//! transactions (with their labels as they come due), each stamped with the wall-clock time it
//! is sent so event → decision latency is real.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tally_bus::{AnyBus, Bus, OutRecord};
use tally_config::FraudTopics;
use tally_sim::payments::{Pattern, Payments, PaymentsConfig, types};
use tokio_util::sync::CancellationToken;

/// What was sent.
#[derive(Debug, Default)]
pub struct PaymentsDriven {
    /// Transactions sent.
    pub transactions: u64,
    /// Profiles sent.
    pub profiles: u64,
    /// Labels sent.
    pub labels: u64,
    /// A few transactions and the simulator's truth, to show their decisions.
    pub sample: Vec<(String, Pattern)>,
}

/// Payments at `rate` transactions per second for `duration` (or until `stop`).
pub async fn drive_payments(
    bus: &AnyBus,
    topics: &FraudTopics,
    cfg: PaymentsConfig,
    rate: u64,
    duration: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<PaymentsDriven> {
    let mut sim = Payments::new(cfg);
    let mut driven = PaymentsDriven::default();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen_patterns: HashMap<&'static str, usize> = HashMap::new();
    while started.elapsed() < duration && !stop.is_cancelled() {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        let mut batch: HashMap<&str, Vec<OutRecord>> = HashMap::new();
        while driven.transactions < due {
            let Some(g) = sim.next_batch(1).pop() else { break };
            let mut event = g.event;
            event.time = time::OffsetDateTime::now_utc();
            let topic = match event.ty.as_str() {
                types::TRANSACTION => {
                    driven.transactions += 1;
                    if let Some(p) = g.pattern {
                        // A few of each kind, to show what was decided about them.
                        let n = seen_patterns.entry(p.code()).or_default();
                        if *n < 2
                            && driven.sample.len() < 10
                            && (p != Pattern::Legitimate || driven.transactions % 97 == 0)
                        {
                            *n += 1;
                            driven.sample.push((event.id.clone(), p));
                        }
                    }
                    topics.transactions.as_str()
                }
                types::PROFILE => {
                    driven.profiles += 1;
                    topics.profiles.as_str()
                }
                _ => {
                    driven.labels += 1;
                    topics.labels.as_str()
                }
            };
            let (headers, payload) = event.to_binary();
            let key = event.subject.clone().unwrap_or_default();
            batch.entry(topic).or_default().push(OutRecord::keyed(&key, headers, payload));
        }
        for (topic, records) in batch {
            bus.publish(topic, records).await?;
        }
    }
    Ok(driven)
}

/// The same over HTTP for a tally without bus access: profiles with `PUT
/// /v1/fraud/profiles/{account}`, transactions with `POST /v1/fraud/score` (at most 64 at once).
/// Labels have no HTTP endpoint (they come from the labelling systems' topic): counted, not sent.
pub async fn drive_payments_http(
    url: &str,
    api_key: Option<&str>,
    cfg: PaymentsConfig,
    rate: u64,
    duration: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<PaymentsDriven> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let auth = |r: reqwest::RequestBuilder| match api_key {
        Some(k) => r.bearer_auth(k),
        None => r,
    };
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sim = Payments::new(cfg);
    let mut driven = PaymentsDriven::default();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut inflight = Vec::new();
    while started.elapsed() < duration && !stop.is_cancelled() {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while driven.transactions < due {
            let Some(g) = sim.next_batch(1).pop() else { break };
            let mut data = g.event.data;
            let request = match g.event.ty.as_str() {
                types::TRANSACTION => {
                    driven.transactions += 1;
                    auth(client.post(format!("{url}/v1/fraud/score"))).json(&data)
                }
                types::PROFILE => {
                    driven.profiles += 1;
                    let account = data["account_id"].as_str().unwrap_or_default().to_owned();
                    if let Some(o) = data.as_object_mut() {
                        o.remove("account_id");
                    }
                    auth(client.put(format!("{url}/v1/fraud/profiles/{account}"))).json(&data)
                }
                _ => {
                    driven.labels += 1;
                    continue;
                }
            };
            let permit = limit.clone().acquire_owned().await?;
            let failed = failed.clone();
            inflight.push(tokio::spawn(async move {
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                drop(permit);
            }));
        }
        inflight.retain(|h| !h.is_finished());
    }
    for h in inflight {
        let _ = h.await;
    }
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} requests were not answered 2xx");
    Ok(driven)
}
