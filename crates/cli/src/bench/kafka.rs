//! `tally bench inventory --stack kafka`: the production stack (Kafka + PostgreSQL + Redis)
//! on servers given by URL (`scripts/bench-kafka.sh` starts throwaway ones). Measures, in one
//! run: the engine's end-to-end rate on a backlog beside the rate at which a no-op consumer
//! reads the same topic (the ceiling), how long a restarted engine takes to apply again, the
//! channel desync at a fixed rate, and PostgreSQL
//! statements and rows per 1,000 events as the server counts them, against a naive
//! one-upsert-per-event consumer of the same events. With `--forecast-series`, three more desync
//! phases — before, during and after a full refresh of that many series by a separate forecast
//! process (forecasting's isolation from the main contour: its own process, group and pool, but
//! the same machine).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tally_bus::{Assignment, Bus, Consumer, KafkaBus, KafkaBusOptions, PartitionReader};
use tally_config::{BusConfig, CacheConfig, Config, LogConfig, LogFormat, Secret, StoreConfig};
use tally_core::Sku;
use tally_inventory::aggregate::EventMeta;
use tally_inventory::{ChannelRules, InventoryEvent, SkuState};
use tally_server::App;
use tally_server::app::Role;
use tally_sim::Simulator;
use tally_store::Ledger;
use tally_store::postgres::{create_database, server_stats};
use tokio_util::sync::CancellationToken;

use super::args::{InventoryBenchArgs, env_or, sim_config};
use crate::driver::{self, Sink};

const PARTITIONS: u32 = 4;

/// Results (the JSON line).
#[derive(Debug, Serialize)]
pub struct KafkaBenchResult {
    /// Backlog consumed, applied, flushed to PostgreSQL and committed, per second.
    pub events_per_s: f64,
    /// A no-op consumer reading the same backlog: the ceiling.
    pub ceiling_events_per_s: f64,
    /// events_per_s ÷ ceiling_events_per_s.
    pub ratio_to_ceiling: f64,
    /// Event time → availability published on Kafka, at the fixed rate.
    pub desync_p50_ms: f64,
    /// p99 of the same.
    pub desync_p99_ms: f64,
    /// Rate of the desync phase.
    pub desync_rate: u64,
    /// Event time → readable through the API (hot aggregate written), at the same rate.
    pub visible_p50_ms: f64,
    /// p99 of the same.
    pub visible_p99_ms: f64,
    /// PostgreSQL statements (pg_stat_statements calls) per 1,000 backlog events.
    pub pg_statements_per_1k_events: f64,
    /// Rows those statements wrote or returned, per 1,000 events.
    pub pg_rows_per_1k_events: f64,
    /// The same for a naive consumer that upserts the SKU once per event.
    pub naive_pg_statements_per_1k_events: f64,
    /// Rows of the naive consumer per 1,000 events.
    pub naive_pg_rows_per_1k_events: f64,
    /// Events in the measured backlog (the steady mix, after the opening stock).
    pub backlog_events: usize,
    /// Opening-stock snapshots consumed before the measured part.
    pub seed_events: usize,
    /// Rate at which the engine consumed the opening stock.
    pub seed_events_per_s: f64,
    /// A new engine on the same group (as after a rebalance or restart): from its start until
    /// it applies again on every partition.
    pub restart_to_applied_ms: f64,
    /// SKUs.
    pub skus: usize,
    /// The desync phase again, while a forecast process runs a full refresh (`--forecast-series`).
    pub isolation: Option<Isolation>,
}

/// Inventory's desync with and without a full forecast refresh running beside it, in rounds of
/// three phases at the same rate — before the refresh, during it, after it (`desync_phase`).
#[derive(Debug, Serialize)]
pub struct Isolation {
    /// Series each refresh forecast.
    pub forecast_series: usize,
    /// The median of the rounds' `p99_ratio` (aim ≤ 1.2).
    pub p99_ratio_median: f64,
    /// The lowest …
    pub p99_ratio_min: f64,
    /// … and the highest.
    pub p99_ratio_max: f64,
    /// Rounds whose ratio is within the aim.
    pub rounds_within_aim: usize,
    /// Every round (`--forecast-rounds`), in order.
    pub rounds: Vec<IsolationRound>,
}

/// The aim: inventory's desync p99 beside a refresh within this factor of without.
const ISOLATION_AIM: f64 = 1.2;

/// One before/during/after comparison, around one full refresh by its own forecast process.
#[derive(Debug, Serialize)]
pub struct IsolationRound {
    /// Desync p99 before the forecast process started.
    pub desync_p99_before_ms: f64,
    /// Desync p50 while the refresh ran.
    pub desync_p50_ms: f64,
    /// Desync p99 while the refresh ran.
    pub desync_p99_ms: f64,
    /// Desync p99 after the refresh, its process stopped.
    pub desync_p99_after_ms: f64,
    /// The p99 while it ran ÷ the mean of the p99s before and after.
    pub p99_ratio: f64,
    /// The p99 while it ran ÷ the p99 before.
    pub p99_ratio_to_before: f64,
    /// The p99 while it ran ÷ the p99 after.
    pub p99_ratio_to_after: f64,
    /// Share of the phase the refresh was running (1: throughout).
    pub refresh_overlap: f64,
    /// How long the refresh took.
    pub refresh_s: f64,
    /// Desync p99 (ms) per second of the phase before the refresh, …
    pub timeline_before_ms: Vec<f64>,
    /// … during it (whether the slow events bunch — the forecast process's start, one
    /// statement — or spread over the refresh) …
    pub timeline_with_ms: Vec<f64>,
    /// … and after it.
    pub timeline_after_ms: Vec<f64>,
}

impl IsolationRound {
    /// The round of these three phases, around a refresh from `spawned_ms` to `finished_ms`.
    fn of(before: DesyncPhase, during: DesyncPhase, after: DesyncPhase, spawned_ms: i64, finished_ms: i64) -> Self {
        let overlap = (finished_ms.min(during.ended_ms) - during.started_ms).max(0) as f64
            / (during.ended_ms - during.started_ms).max(1) as f64;
        let without_p99_ms = (before.p99_ms() + after.p99_ms()) / 2.0;
        eprintln!("desync p99 per second before the refresh (ms): {}", timeline_text(&before.timeline_ms));
        eprintln!("desync p99 per second during it (ms):          {}", timeline_text(&during.timeline_ms));
        eprintln!("desync p99 per second after it (ms):           {}", timeline_text(&after.timeline_ms));
        Self {
            desync_p99_before_ms: before.p99_ms(),
            desync_p50_ms: during.desync.value_at_quantile(0.5) as f64 / 1000.0,
            desync_p99_ms: during.p99_ms(),
            desync_p99_after_ms: after.p99_ms(),
            p99_ratio: during.p99_ms() / without_p99_ms.max(1e-9),
            p99_ratio_to_before: during.p99_ms() / before.p99_ms().max(1e-9),
            p99_ratio_to_after: during.p99_ms() / after.p99_ms().max(1e-9),
            refresh_overlap: overlap.min(1.0),
            refresh_s: (finished_ms - spawned_ms) as f64 / 1000.0,
            timeline_before_ms: before.timeline_ms,
            timeline_with_ms: during.timeline_ms,
            timeline_after_ms: after.timeline_ms,
        }
    }
}

impl Isolation {
    /// The rounds and their spread.
    fn of(forecast_series: usize, rounds: Vec<IsolationRound>) -> Self {
        let mut ratios: Vec<f64> = rounds.iter().map(|r| r.p99_ratio).collect();
        ratios.sort_by(f64::total_cmp);
        let median = match ratios.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => ratios[n / 2],
            n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
        };
        Self {
            forecast_series,
            p99_ratio_median: median,
            p99_ratio_min: ratios.first().copied().unwrap_or(f64::NAN),
            p99_ratio_max: ratios.last().copied().unwrap_or(f64::NAN),
            rounds_within_aim: ratios.iter().filter(|r| **r <= ISOLATION_AIM).count(),
            rounds,
        }
    }
}

/// One desync phase: the histogram, the p99 of each second and when the driving ran.
struct DesyncPhase {
    desync: hdrhistogram::Histogram<u64>,
    timeline_ms: Vec<f64>,
    started_ms: i64,
    ended_ms: i64,
}

impl DesyncPhase {
    fn p99_ms(&self) -> f64 {
        self.desync.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// Inventory's desync p99 per second from now until `stop`.
fn desync_timeline(
    stats: std::sync::Arc<tally_inventory_engine::EngineStats>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let snapshot = || stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut previous = snapshot();
        let mut p99s = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            let now = snapshot();
            let mut second = now.clone();
            if second.subtract(&previous).is_ok() {
                p99s.push(second.value_at_quantile(0.99) as f64 / 1000.0);
            }
            previous = now;
        }
        p99s
    })
}

/// A timeline as `12 15 340 …` (ms, rounded).
fn timeline_text(p99s: &[f64]) -> String {
    p99s.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(" ")
}

fn config(base: &Config, args: &InventoryBenchArgs, brokers: &str, pg: &str, redis: &str, run: &str) -> Config {
    let mut c = base.clone();
    c.bus = BusConfig::Kafka {
        brokers: brokers.to_owned(),
        client_id: "tally-bench".into(),
        partitions: PARTITIONS,
        replication_factor: 1,
        publish_timeout_ms: 30_000,
        drain_timeout_ms: 30_000,
        properties: args.kafka_properties.iter().map(|(k, v)| (k.clone(), Secret::new(v))).collect(),
    };
    c.store = StoreConfig::Postgres {
        url: Secret::new(pg),
        max_connections: 8,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 30_000,
        migrate_on_start: false,
    };
    c.cache = CacheConfig::Redis {
        url: Secret::new(redis),
        key_prefix: format!("bench:{run}:"),
        ttl_seconds: 3600,
        timeout_ms: 1_000,
    };
    c.inventory.consumer_group = format!("bench-{run}");
    c.inventory.topics.events = format!("bench.events.{run}");
    c.inventory.topics.availability = format!("bench.availability.{run}");
    c.inventory.topics.outcomes = format!("bench.outcomes.{run}");
    c.forecast.namespace(&format!("bench-{run}"));
    c.log = LogConfig { format: LogFormat::Pretty, level: "error".into() };
    // The role's health and metrics listener: any free port.
    c.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c
}

/// The store's committed position of each partition.
async fn committed(store: &impl Ledger, cfg: &Config) -> anyhow::Result<Vec<u64>> {
    let mut offsets = Vec::with_capacity(PARTITIONS as usize);
    for p in 0..PARTITIONS {
        let (group, topic) = (&cfg.inventory.consumer_group, &cfg.inventory.topics.events);
        offsets.push(store.committed_offset(group, topic, p).await?.unwrap_or(0));
    }
    Ok(offsets)
}

/// Reads `n` records of `topic` with a fresh group and does nothing with them.
async fn ceiling(bus: &KafkaBus, topic: &str, n: u64, run: &str) -> anyhow::Result<f64> {
    let mut consumer = bus.subscribe(&format!("ceiling-{run}"), &[topic.to_owned()]).await?;
    let Assignment::Assigned(mut parts) = consumer.next_assignment().await? else {
        anyhow::bail!("no assignment for the ceiling consumer")
    };
    for p in &mut parts {
        p.seek(0);
    }
    let started = Instant::now();
    let mut read = 0u64;
    while read < n {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "ceiling consumer read only {read} of {n}");
        for p in &mut parts {
            if let Ok(batch) = tokio::time::timeout(Duration::from_millis(5), p.poll(5000)).await {
                read += batch?.len() as u64;
            }
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// One upsert of the SKU's whole state per event, each in its own transaction: what a
/// consumer without the hot aggregate and the batcher would send.
async fn naive(
    seed: &[tally_core::Envelope],
    events: &[tally_core::Envelope],
    url: &str,
    rules: &ChannelRules,
) -> anyhow::Result<(u64, u64)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("CREATE TABLE naive_sku (sku TEXT PRIMARY KEY, version BIGINT NOT NULL, state JSONB NOT NULL)")
        .execute(&mut conn)
        .await?;
    /// Applies `env` unless it is invalid or a duplicate (even a naive consumer dedupes, or
    /// its numbers would be wrong); returns the SKU's new state.
    fn apply<'a>(
        states: &'a mut HashMap<Sku, SkuState>,
        seen: &mut std::collections::HashSet<tally_core::EventKey>,
        env: &tally_core::Envelope,
        rules: &ChannelRules,
    ) -> Option<&'a SkuState> {
        let ev = InventoryEvent::from_envelope(env).ok()?;
        if !seen.insert(env.key()) {
            return None;
        }
        let state = states.entry(ev.sku().clone()).or_insert_with(|| SkuState::new(ev.sku().clone()));
        state.apply(&ev, EventMeta { source: &env.source, id: &env.id, time_ms: env.time_ms() }, rules).ok()?;
        Some(state)
    }
    let (mut states, mut seen) = (HashMap::new(), std::collections::HashSet::new());
    // The opening stock is applied in memory only: like the engine's, the measured part is
    // the steady mix.
    for env in seed {
        apply(&mut states, &mut seen, env, rules);
    }
    server_stats::reset(url).await?;
    for env in events {
        let Some(state) = apply(&mut states, &mut seen, env, rules) else { continue };
        let (sku, version, json) =
            (state.sku.to_string(), i64::try_from(state.version).unwrap_or(i64::MAX), serde_json::to_string(state)?);
        sqlx::query(
            "INSERT INTO naive_sku (sku, version, state) VALUES ($1, $2, $3::jsonb)
             ON CONFLICT (sku) DO UPDATE SET version = excluded.version, state = excluded.state
             WHERE naive_sku.version < excluded.version",
        )
        .bind(sku)
        .bind(version)
        .bind(json)
        .execute(&mut conn)
        .await?;
    }
    Ok(server_stats::statements_and_rows(url).await?)
}

/// Runs the Kafka-stack benchmark.
pub async fn run(base: Config, args: &InventoryBenchArgs) -> anyhow::Result<()> {
    let brokers = env_or(&args.brokers, "TEST_TALLY_KAFKA_BROKERS")?;
    let pg_admin = env_or(&args.postgres_url, "TEST_TALLY_POSTGRES_URL")?;
    let redis = env_or(&args.redis_url, "TEST_TALLY_REDIS_URL")?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let rules = tally_inventory_engine::channel_rules(&base.inventory);
    tally_server::telemetry::init(&LogConfig { format: LogFormat::Pretty, level: "error".into() });

    // Phase 1: a backlog on Kafka; the ceiling, then the engine on the same records.
    let pg = create_database(&pg_admin, "tally_bench").await?;
    let cfg = config(&base, args, &brokers, &pg, &redis, &run);
    let bus = KafkaBus::connect(KafkaBusOptions {
        brokers: brokers.clone(),
        client_id: "tally-bench".into(),
        replication_factor: 1,
        properties: args.kafka_properties.iter().cloned().collect(),
        publish_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(30),
    })?;
    bus.create_topic(&cfg.inventory.topics.events, PARTITIONS).await?;
    eprintln!(
        "publishing {} events over {} SKUs (Zipf 1.1, {:.0}% duplicates) to Kafka…",
        args.events,
        args.skus,
        args.duplicates * 100.0
    );
    let mut sim = Simulator::new(sim_config(args, 7));
    // The opening stock of every (sku, location) comes first; the engine consumes it before
    // the measured part, which is the steady mix (reservations, adjustments, snapshots).
    let mut seed = Vec::new();
    while sim.seeding() {
        seed.extend(sim.next_batch(5000));
    }
    let backlog = sim.next_batch(args.events);
    let mut seed_per_partition = [0u64; PARTITIONS as usize];
    for env in &seed {
        let key = driver::record(env).key.unwrap_or_default();
        seed_per_partition[tally_core::partition::partition_for_key(key.as_bytes(), PARTITIONS) as usize] += 1;
    }
    for chunk in seed.chunks(5000).chain(backlog.chunks(5000)) {
        bus.publish(&cfg.inventory.topics.events, chunk.iter().map(driver::record).collect()).await?;
    }
    let total = (seed.len() + backlog.len()) as u64;
    let ceiling_events_per_s = ceiling(&bus, &cfg.inventory.topics.events, total, &run).await?;
    eprintln!("no-op consumer (ceiling): {ceiling_events_per_s:.0} events/s");

    let store = tally_server::app::open_store(&cfg)?;
    store.migrate().await?;
    server_stats::reset(&pg).await?;
    let started = Instant::now();
    let app = App::new(cfg.clone()).start(Role::Inventory).await?;
    let timeout = Duration::from_secs(1200);
    loop {
        let committed = committed(&store, &cfg).await?;
        if committed.iter().zip(&seed_per_partition).all(|(c, s)| c >= s) {
            break;
        }
        anyhow::ensure!(started.elapsed() < timeout, "the engine did not finish the opening stock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (steady_from, steady_started) = (committed(&store, &cfg).await?.iter().sum::<u64>(), Instant::now());
    let seed_events_per_s = steady_from as f64 / started.elapsed().as_secs_f64();
    let (statements_before, rows_before) = server_stats::statements_and_rows(&pg).await?;
    eprintln!("engine: opening stock ({} events) at {seed_events_per_s:.0} events/s", seed.len());
    while committed(&store, &cfg).await?.iter().sum::<u64>() < total {
        anyhow::ensure!(started.elapsed() < timeout, "the engine did not finish the backlog");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let measured = total - steady_from;
    let events_per_s = measured as f64 / steady_started.elapsed().as_secs_f64();
    let (statements, rows) = server_stats::statements_and_rows(&pg).await?;
    let (statements, rows) = (statements - statements_before, rows - rows_before);
    eprintln!(
        "engine: {events_per_s:.0} events/s end to end over {measured} events ({statements} statements, {rows} rows)"
    );

    // Phase 2: a restart on the same group, as when partitions move to a new owner: from the
    // start of a new engine until it applies again on every partition (group join, the resume
    // position and idempotency window read from PostgreSQL, the first fetch).
    app.shutdown().await;
    let restarted = Instant::now();
    let app = App::new(cfg.clone()).start(Role::Inventory).await?;
    until_applying(&app, &mut sim, &bus, &cfg.inventory.topics.events, restarted).await?;
    let restart_to_applied_ms = restarted.elapsed().as_secs_f64() * 1000.0;
    eprintln!("restart: applying again on every partition after {restart_to_applied_ms:.0} ms");

    // The isolation phases' demand history is staged (and the database vacuumed and analysed)
    // before the desync phase, so that every phase after it sees the same database.
    let demand_series = if args.forecast_series > 0 { stage_demand(&cfg, &pg, args.forecast_series).await? } else { 0 };

    // Phase 3: desync at a fixed rate, the restarted engine continuing on the same topic.
    let engine = app.engine.clone();
    let sink = Sink::Bus { bus: engine.bus.clone(), topic: cfg.inventory.topics.events.clone() };
    engine.stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner()).reset();
    engine.stats.visible_latency_us.lock().unwrap_or_else(|p| p.into_inner()).reset();
    eprintln!("desync phase: driving {} ev/s for {} s…", args.kafka_rate, args.latency_seconds);
    let stop = CancellationToken::new();
    let rate = args.kafka_rate;
    let before = engine.stats.handled();
    let driven = driver::drive(&mut sim, &sink, rate, Duration::from_secs(args.latency_seconds), &stop, |_| {}).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while engine.stats.handled() < before + driven.sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let desync = engine.stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let visible = engine.stats.visible_latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let isolation = if args.forecast_series > 0 {
        let phase = PhaseContext { cfg: &cfg, args, engine: &engine, sink: &sink, bus: &bus, store: &store, pg: &pg };
        let all_rounds = async {
            let (mut rounds, mut buckets) = (Vec::new(), Vec::new());
            for round in 1..=args.forecast_rounds {
                eprintln!("isolation: round {round} of {}", args.forecast_rounds);
                rounds.push(isolation(&phase, &mut sim, &run, &mut buckets).await?);
            }
            anyhow::Ok(rounds)
        };
        // On Ctrl-C the round is dropped, and with it the forecast process (in a session of
        // its own, the terminal's signal does not reach it).
        let rounds = tokio::select! {
            rounds = all_rounds => rounds?,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        };
        Some(Isolation::of(demand_series, rounds))
    } else {
        None
    };
    app.shutdown().await;

    // Phase 4: the naive consumer on the same events, on its own database.
    let naive_db = create_database(&pg_admin, "tally_bench_naive").await?;
    let naive_events = &backlog[..backlog.len().min(50_000)];
    let naive_started = Instant::now();
    let (naive_statements, naive_rows) = naive(&seed, naive_events, &naive_db, &rules).await?;
    let naive_n = naive_events.len() as f64;
    eprintln!(
        "naive consumer: {naive_statements} statements for {} events in {:.1} s",
        naive_events.len(),
        naive_started.elapsed().as_secs_f64()
    );

    let per_1k = |n: u64, events: f64| n as f64 * 1000.0 / events.max(1.0);
    let result = KafkaBenchResult {
        events_per_s,
        ceiling_events_per_s,
        ratio_to_ceiling: events_per_s / ceiling_events_per_s.max(1.0),
        desync_p50_ms: desync.value_at_quantile(0.5) as f64 / 1000.0,
        desync_p99_ms: desync.value_at_quantile(0.99) as f64 / 1000.0,
        desync_rate: rate,
        visible_p50_ms: visible.value_at_quantile(0.5) as f64 / 1000.0,
        visible_p99_ms: visible.value_at_quantile(0.99) as f64 / 1000.0,
        pg_statements_per_1k_events: per_1k(statements, measured as f64),
        pg_rows_per_1k_events: per_1k(rows, measured as f64),
        naive_pg_statements_per_1k_events: per_1k(naive_statements, naive_n),
        naive_pg_rows_per_1k_events: per_1k(naive_rows, naive_n),
        backlog_events: backlog.len(),
        seed_events: seed.len(),
        seed_events_per_s,
        restart_to_applied_ms,
        skus: args.skus,
        isolation,
    };
    println!("tally bench inventory --stack kafka (Kafka + PostgreSQL + Redis, {PARTITIONS} partitions)");
    println!("  {:<52} {:>12}", "metric", "value");
    println!("  {:<52} {:>12.0}", "end-to-end events/s (backlog → PostgreSQL, committed)", result.events_per_s);
    println!("  {:<52} {:>12.0}", "no-op consumer events/s (ceiling)", result.ceiling_events_per_s);
    println!(
        "  {:<52} {:>12.0}",
        format!("opening stock events/s ({} snapshots)", result.seed_events),
        result.seed_events_per_s
    );
    println!("  {:<52} {:>12.2}", "ratio to the ceiling", result.ratio_to_ceiling);
    println!("  {:<52} {:>12.0}", "restart → applying on every partition, ms", result.restart_to_applied_ms);
    println!("  {:<52} {:>12.2}", format!("channel desync p50 ms @ {rate} ev/s"), result.desync_p50_ms);
    println!("  {:<52} {:>12.2}", format!("channel desync p99 ms @ {rate} ev/s"), result.desync_p99_ms);
    println!("  {:<52} {:>12.2}", format!("event → visible p50 ms @ {rate} ev/s"), result.visible_p50_ms);
    println!("  {:<52} {:>12.2}", format!("event → visible p99 ms @ {rate} ev/s"), result.visible_p99_ms);
    println!("  {:<52} {:>12.2}", "PostgreSQL statements / 1k events", result.pg_statements_per_1k_events);
    println!("  {:<52} {:>12.2}", "PostgreSQL rows / 1k events", result.pg_rows_per_1k_events);
    println!("  {:<52} {:>12.2}", "naive: statements / 1k events", result.naive_pg_statements_per_1k_events);
    println!("  {:<52} {:>12.2}", "naive: rows / 1k events", result.naive_pg_rows_per_1k_events);
    if let Some(i) = &result.isolation {
        let during = format!("a {}-series forecast refresh", i.forecast_series);
        for (n, r) in i.rounds.iter().enumerate() {
            let round = if i.rounds.len() > 1 { format!("round {}: ", n + 1) } else { String::new() };
            println!("  {:<52} {:>12.2}", format!("… {round}desync p99 ms before {during}"), r.desync_p99_before_ms);
            println!("  {:<52} {:>12.2}", "… during it", r.desync_p99_ms);
            println!("  {:<52} {:>12.2}", "… after it", r.desync_p99_after_ms);
            println!(
                "  {:<52} {:>12.2}",
                format!("… during ÷ mean(before, after) (ran {:.0} %)", r.refresh_overlap * 100.0),
                r.p99_ratio
            );
            println!("  {:<52} {:>12.2}", "… during ÷ before", r.p99_ratio_to_before);
            println!("  {:<52} {:>12.2}", "… during ÷ after", r.p99_ratio_to_after);
        }
        println!(
            "  {:<52} {:>12.2}",
            format!("during ÷ mean, median of {} (aim ≤ {ISOLATION_AIM})", i.rounds.len()),
            i.p99_ratio_median
        );
        println!(
            "  {:<52} {:>5.2}–{:<6.2}",
            format!("… range ({} of {} within the aim)", i.rounds_within_aim, i.rounds.len()),
            i.p99_ratio_min,
            i.p99_ratio_max
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    }
    Ok(())
}

/// The forecast role's configuration for the same servers as `cfg`: one full refresh at once
/// (the interval is an hour), evaluated directly (no model server).
fn forecast_config(
    cfg: &Config,
    interval_s: u64,
    threads: usize,
    settings: &[(String, String)],
    dir: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let (
        BusConfig::Kafka { brokers, .. },
        StoreConfig::Postgres { url, .. },
        CacheConfig::Redis { url: redis, key_prefix, .. },
    ) = (&cfg.bus, &cfg.store, &cfg.cache)
    else {
        anyhow::bail!("the isolation phase runs on the Kafka stack")
    };
    let f = &cfg.forecast;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"error\"\n\
         [bus]\nkind = \"kafka\"\nbrokers = {brokers:?}\npartitions = {PARTITIONS}\n\
         [store]\nkind = \"postgres\"\nurl = {pg:?}\n\
         [cache]\nkind = \"redis\"\nurl = {redis:?}\nkey_prefix = {key_prefix:?}\n\
         [forecast]\nconsumer_group = {group:?}\nmodel = \"direct\"\nrefresh_interval_seconds = {interval_s}\nmodel_threads = {threads}\n{extra}\
         [forecast.topics]\nsales = {sales:?}\nsupplies = {supplies:?}\nreturns = {returns:?}\nready = {ready:?}\n",
        extra = settings.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>(),
        pg = url.expose(),
        redis = redis.expose(),
        group = f.consumer_group,
        sales = f.topics.sales,
        supplies = f.topics.supplies,
        returns = f.topics.returns,
        ready = f.topics.ready,
    );
    let path = dir.join("forecast.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Stages `series` simulated series × 730 days of demand for the forecast role, then settles
/// the database (so autovacuum does not start during a measured phase).
async fn stage_demand(cfg: &Config, pg: &str, series: usize) -> anyhow::Result<usize> {
    let store = tally_server::app::open_forecast_store(cfg)?.documents(tally_server::app::FORECAST_SUBSYSTEM);
    let demand = tally_sim::demand::DemandSim::new(tally_sim::demand::DemandConfig {
        seed: 11,
        skus: series.div_ceil(3),
        locations: 3,
        ..Default::default()
    });
    let series = demand.series.len().min(series);
    eprintln!("isolation: staging {series} series × 730 days of demand…");
    for chunk in (0..series).collect::<Vec<_>>().chunks(50) {
        let staged = chunk.iter().flat_map(|&i| super::forecast::staged(&demand, i, 730)).collect();
        let effects = tally_store::demand::DemandEffects { staged, parked: Vec::new() };
        let flush = tally_store::Flush { effects, processed: Vec::new(), offsets: Vec::new() };
        tally_store::ledger::Journal::flush(&store, &[flush]).await?;
    }
    settle_database(pg).await?;
    Ok(series)
}

/// Publishes the simulator's next events until every partition of `topic` has one, and waits
/// until `app`'s engine has handled them all (at most 120 s after `since`): it applies on every
/// partition.
async fn until_applying(
    app: &tally_server::app::RunningApp,
    sim: &mut Simulator,
    bus: &KafkaBus,
    topic: &str,
    since: Instant,
) -> anyhow::Result<()> {
    let mut probes = Vec::new();
    let mut covered = [false; PARTITIONS as usize];
    while !covered.iter().all(|c| *c) {
        for env in sim.next_batch(1) {
            let key = driver::record(&env).key.unwrap_or_default();
            covered[tally_core::partition::partition_for_key(key.as_bytes(), PARTITIONS) as usize] = true;
            probes.push(env);
        }
    }
    let before = app.engine.stats.handled();
    bus.publish(topic, probes.iter().map(driver::record).collect()).await?;
    while app.engine.stats.handled() < before + probes.len() as u64 {
        anyhow::ensure!(since.elapsed() < Duration::from_secs(120), "the engine did not start applying on {topic}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// What every isolation phase drives and measures.
struct PhaseContext<'a> {
    cfg: &'a Config,
    args: &'a InventoryBenchArgs,
    engine: &'a tally_server::app::Engine,
    sink: &'a Sink,
    bus: &'a KafkaBus,
    store: &'a tally_store::AnyStore,
    /// The database's URL, to settle it before each phase.
    pg: &'a str,
}

/// Deletes what the engine consumed and committed from its topic.
async fn trim(bus: &KafkaBus, store: &tally_store::AnyStore, cfg: &Config) -> anyhow::Result<()> {
    let consumed: Vec<(u32, u64)> =
        committed(store, cfg).await?.into_iter().enumerate().map(|(p, o)| (p as u32, o)).collect();
    Ok(bus.delete_records_before(&cfg.inventory.topics.events, &consumed).await?)
}

/// The same state before every phase: the database settled, then `SETTLE` of quiet.
async fn settle(pg: &str) -> anyhow::Result<()> {
    settle_database(pg).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(())
}

/// What the last phase wrote vacuumed, analysed and checkpointed, so that neither autovacuum
/// nor a checkpoint falls into one phase and not another.
async fn settle_database(pg: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(pg).await?;
    sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
    sqlx::query("CHECKPOINT").execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Quiet before each isolation phase; for the phase beside the refresh, also the forecast
/// process's start (group join, the run's first statement).
const SETTLE: Duration = Duration::from_secs(3);

/// The running engine at `args.kafka_rate` events/s for `args.latency_seconds`, on a topic
/// trimmed of what it consumed, before and every second during the phase (the test broker
/// lists every stored batch of a partition on each fetch, so its cost grows with the
/// partition; Kafka indexes its log).
async fn desync_phase(phase: &PhaseContext<'_>, sim: &mut Simulator) -> anyhow::Result<DesyncPhase> {
    let PhaseContext { cfg, args, engine, sink, bus, store, .. } = phase;
    trim(bus, store, cfg).await?;
    engine.stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner()).reset();
    let (before, stop, timeline_stop) = (engine.stats.handled(), CancellationToken::new(), CancellationToken::new());
    let timeline = desync_timeline(engine.stats.clone(), timeline_stop.clone());
    let started_ms = tally_core::now_ms();
    let seconds = Duration::from_secs(args.latency_seconds);
    // Trimmed every second during the phase too, as retention keeps a Kafka log short.
    let trimming = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = trim(bus, store, cfg).await {
                eprintln!("isolation: trimming the topic failed: {e:#}");
            }
        }
    };
    let driven = tokio::select! {
        driven = driver::drive(sim, sink, args.kafka_rate, seconds, &stop, |_| {}) => driven?,
        never = trimming => never,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while engine.stats.handled() < before + driven.sent {
        anyhow::ensure!(Instant::now() < deadline, "the engine did not handle the phase's events within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Desync is booked when the availability is published, after the events are handled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    timeline_stop.cancel();
    let timeline_ms = timeline.await?;
    let ended_ms = tally_core::now_ms();
    let desync = engine.stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(DesyncPhase { desync, timeline_ms, started_ms, ended_ms })
}

/// The forecast process, killed when the round ends — an error or Ctrl-C included (in a
/// session of its own it is out of the terminal's process group).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SIGTERM first: a process that drains leaves its consumer group at once, so the next
        // round's process is not kept waiting for the dead member's session to time out.
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A refresh interval (about an hour) whose current bucket no earlier round used: a full run
/// is named by its interval's bucket (`full-<bucket start>`) and one already finished is not
/// run again, so each round's refresh needs a bucket of its own.
fn fresh_interval_s(used: &mut Vec<i64>) -> u64 {
    let now = tally_core::now_ms();
    let mut interval_s = 3600;
    loop {
        let ms = i64::try_from(interval_s * 1000).unwrap_or(i64::MAX);
        let bucket = now - now.rem_euclid(ms);
        if !used.contains(&bucket) {
            used.push(bucket);
            return interval_s;
        }
        interval_s += 1;
    }
}

/// `tally serve --role forecast --config config` as a service manager starts it: in a
/// session of its own, so it can lower its own scheduling group (`forecast.group_nice`;
/// `--forecast-setting group_nice=0` leaves it at the others' weight). The spawned process
/// leads no process group, so `setsid` execs in place and the pid stays the one to kill.
fn forecast_command(args: &InventoryBenchArgs, config: &std::path::Path) -> anyhow::Result<std::process::Command> {
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new("setsid");
    if args.forecast_nice > 0 {
        command.args(["nice", "-n", &args.forecast_nice.to_string()]);
    }
    command.arg(exe).args(["serve", "--role", "forecast", "--config"]).arg(config);
    Ok(command)
}

/// When the first full refresh that finished after `spawned_ms` did (its summary row, not an
/// earlier round's); `None` past 20 minutes.
async fn refresh_finished_after(cfg: &Config, spawned_ms: i64) -> anyhow::Result<Option<i64>> {
    use tally_store::ledger::DocumentStore;
    let store = tally_server::app::open_forecast_store(cfg)?.documents(tally_server::app::FORECAST_SUBSYSTEM);
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(1200) {
        let summaries = store.appended(tally_forecast_engine::records::RUNS.to_owned()).await?;
        let finished = summaries
            .iter()
            .filter_map(|(_, body)| serde_json::from_str::<tally_forecast_engine::RunSummary>(body).ok())
            .filter(|s| s.run_id.starts_with("full-") && s.series > 0 && s.finished_at_ms > spawned_ms)
            .map(|s| s.finished_at_ms)
            .min();
        if finished.is_some() {
            return Ok(finished);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(None)
}

/// Inventory's desync before, during and after a full refresh of the staged `series` by
/// `tally serve --role forecast` (a separate process, started for the phase in between; its
/// refresh begins at once).
async fn isolation(
    phase: &PhaseContext<'_>,
    sim: &mut Simulator,
    run: &str,
    buckets: &mut Vec<i64>,
) -> anyhow::Result<IsolationRound> {
    let (cfg, args) = (phase.cfg, phase.args);
    let (rate, seconds) = (args.kafka_rate, args.latency_seconds);
    eprintln!("isolation: {rate} ev/s for {seconds} s before the refresh…");
    settle(phase.pg).await?;
    let before = desync_phase(phase, sim).await?;
    settle_database(phase.pg).await?;

    // The forecast process (none for the control: the same phases, nothing started — the
    // ratio's spread by chance alone).
    let child = if args.forecast_control {
        None
    } else {
        let dir = tempfile::tempdir()?;
        let interval_s = fresh_interval_s(buckets);
        let config =
            forecast_config(cfg, interval_s, args.forecast_model_threads, &args.forecast_settings, dir.path())?;
        let spawned = forecast_command(args, &config)?
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Some((KillOnDrop(spawned), dir))
    };
    let spawned_ms = tally_core::now_ms();
    tokio::time::sleep(SETTLE).await;
    eprintln!("isolation: the same {}…", if child.is_some() { "beside the refresh" } else { "again (control)" });
    let during = desync_phase(phase, sim).await?;
    let finished_ms = match child {
        None => spawned_ms,
        Some(child) => {
            let finished_ms = refresh_finished_after(cfg, spawned_ms).await?;
            drop(child);
            finished_ms.ok_or_else(|| anyhow::anyhow!("the forecast refresh did not finish ({run})"))?
        }
    };
    eprintln!("isolation: the same after it…");
    settle(phase.pg).await?;
    let after = desync_phase(phase, sim).await?;

    Ok(IsolationRound::of(before, during, after, spawned_ms, finished_ms))
}
