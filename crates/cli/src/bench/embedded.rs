//! `tally bench inventory`: throughput, event-to-visible latency at a fixed rate, store
//! statements per 1,000 events and peak memory, on the embedded stack.

use std::time::{Duration, Instant};

use tally_bus::Bus;
use tally_config::{Config, LogConfig, LogFormat};
use tally_server::App;
use tally_server::app::Role;
use tally_sim::Simulator;
use tally_store::Ledger;
use tokio_util::sync::CancellationToken;

use super::args::{InventoryBenchArgs, InventoryBenchResult, peak_rss_mb, reset_peak_rss, sim_config};
use crate::driver::{self, Sink};

async fn start(base: &Config, dir: &std::path::Path) -> anyhow::Result<tally_server::RunningApp> {
    let mut config = base.clone();
    config.embedded.path = dir.join("bench.db");
    // The role's health and metrics listener: any free port.
    config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.log = LogConfig { format: LogFormat::Pretty, level: "error".into() };
    tally_server::telemetry::init(&config.log);
    App::new(config).start(Role::Inventory).await
}

async fn wait_handled(stats: &tally_inventory_engine::EngineStats, n: u64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while stats.handled() < n {
        anyhow::ensure!(Instant::now() < deadline, "only {} of {n} events handled within {limit:?}", stats.handled());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Runs the benchmark and prints the table (and the JSON line).
///
/// `base` is the configuration to measure (engine settings, channels); the data file, the
/// listen address and logging are the benchmark's own.
pub async fn run(base: Config, args: InventoryBenchArgs) -> anyhow::Result<()> {
    // Phase 1: the engine catching up on a backlog. The log is filled first (in chunks, so the
    // generator holds little memory), then the engine starts and is timed until it has
    // handled every event: its sustained consume → apply → flush → commit rate.
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("bench.db");
    eprintln!(
        "filling the log with {} events over {} SKUs (Zipf 1.1, {:.0}% duplicates)…",
        args.events,
        args.skus,
        args.duplicates * 100.0
    );
    let partitions = base.bus.partitions();
    let publish_rate = {
        let log = tally_bus::EmbeddedLog::open(tally_bus::EmbeddedLogOptions {
            path: path.clone(),
            default_partitions: partitions,
            durability: tally_sqlite::Durability::Normal,
        })?;
        log.create_topic(&base.inventory.topics.events, partitions).await?;
        let mut sim = Simulator::new(sim_config(&args, 7));
        let mut left = args.events;
        let mut publishing = Duration::ZERO;
        while left > 0 {
            let n = left.min(5000);
            let records: Vec<_> = sim.next_batch(n).iter().map(driver::record).collect();
            let t = Instant::now();
            log.publish(&base.inventory.topics.events, records).await?;
            publishing += t.elapsed();
            left -= n;
        }
        args.events as f64 / publishing.as_secs_f64()
    };
    reset_peak_rss();
    eprintln!("log filled at {publish_rate:.0} appends/s; starting the engine on the backlog…");
    let started = Instant::now();
    let app = start(&base, tmp.path()).await?;
    let engine = app.engine.clone();
    let statements_before = engine.store.statements();
    wait_handled(&engine.stats, args.events as u64, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    let events_per_s = args.events as f64 / elapsed.as_secs_f64();
    tokio::time::sleep(Duration::from_millis(250)).await; // let the last flush land
    let statements_max_rate = (engine.store.statements() - statements_before) as f64 * 1000.0 / args.events as f64;
    let dup1 = tally_inventory_engine::EngineStats::get(&engine.stats.duplicates);
    let peak_rss = peak_rss_mb();
    app.shutdown().await;
    eprintln!("backlog: {} events drained in {:.2} s ({:.0}/s)", args.events, elapsed.as_secs_f64(), events_per_s);

    // Phase 1b: producer and engine at once, end to end (both share the two cores).
    let e2e_events = args.events / 2;
    let tmp_e2e = tempfile::tempdir()?;
    let app = start(&base, tmp_e2e.path()).await?;
    let engine = app.engine.clone();
    let mut sim = Simulator::new(sim_config(&args, 9));
    let records: Vec<_> = sim.next_batch(e2e_events).iter().map(driver::record).collect();
    let topic = engine.cfg.topics.events.clone();
    let started = Instant::now();
    let bus = engine.bus.clone();
    let publisher = tokio::spawn(async move {
        let mut it = records.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<_> = it.by_ref().take(5000).collect();
            bus.publish(&topic, chunk).await?;
        }
        anyhow::Ok(())
    });
    publisher.await??;
    wait_handled(&engine.stats, e2e_events as u64, Duration::from_secs(600)).await?;
    let end_to_end_events_per_s = e2e_events as f64 / started.elapsed().as_secs_f64();
    app.shutdown().await;
    eprintln!("end to end: {e2e_events} events published and applied at {end_to_end_events_per_s:.0}/s");

    // Phase 2: latency at a fixed rate on a fresh file, events stamped as they are sent.
    let tmp2 = tempfile::tempdir()?;
    let app = start(&base, tmp2.path()).await?;
    let engine = app.engine.clone();
    let sink = Sink::Bus { bus: engine.bus.clone(), topic: engine.cfg.topics.events.clone() };
    let mut sim = Simulator::new(sim_config(&args, 8));
    // Warm-up: the initial snapshots of every SKU, not measured.
    let warm = sim.next_batch(args.skus * 3);
    let warm_n = warm.len() as u64;
    sink.send(warm).await?;
    wait_handled(&engine.stats, warm_n, Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.stats.visible_latency_us.lock().unwrap_or_else(|p| p.into_inner()).reset();
    engine.stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner()).reset();
    let handled_before = engine.stats.handled();
    let statements_before = engine.store.statements();
    let stop = CancellationToken::new();
    let driven =
        driver::drive(&mut sim, &sink, args.rate, Duration::from_secs(args.latency_seconds), &stop, |_| {}).await?;
    wait_handled(&engine.stats, handled_before + driven.sent, Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let latency_events = engine.stats.handled() - handled_before;
    let statements = (engine.store.statements() - statements_before) as f64 * 1000.0 / latency_events.max(1) as f64;
    let hist = engine.stats.visible_latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let desync = engine.stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let dup2 = tally_inventory_engine::EngineStats::get(&engine.stats.duplicates);
    app.shutdown().await;

    let result = InventoryBenchResult {
        events_per_s,
        end_to_end_events_per_s,
        log_append_events_per_s: publish_rate,
        latency_p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        latency_p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        latency_max_ms: hist.max() as f64 / 1000.0,
        desync_p50_ms: desync.value_at_quantile(0.5) as f64 / 1000.0,
        desync_p99_ms: desync.value_at_quantile(0.99) as f64 / 1000.0,
        store_statements_per_1k_events: statements,
        store_statements_per_1k_events_max_rate: statements_max_rate,
        peak_rss_mb: peak_rss,
        throughput_events: args.events,
        latency_rate: args.rate,
        latency_events,
        duplicates_dropped: dup1 + dup2,
    };
    println!("tally bench inventory (embedded: SQLite log + SQLite store + in-process cache)");
    println!("  {:<48} {:>12}", "metric", "value");
    println!("  {:<48} {:>12.0}", "sustained engine events/s (backlog, Zipf, dups)", result.events_per_s);
    println!("  {:<48} {:>12.0}", "end-to-end events/s (producer + engine at once)", result.end_to_end_events_per_s);
    println!("  {:<48} {:>12.0}", "log appends/s (producer side alone)", result.log_append_events_per_s);
    println!("  {:<48} {:>12.2}", format!("event→visible p50 ms @ {} ev/s", args.rate), result.latency_p50_ms);
    println!("  {:<48} {:>12.2}", format!("event→visible p99 ms @ {} ev/s", args.rate), result.latency_p99_ms);
    println!("  {:<48} {:>12.2}", format!("event→visible max ms @ {} ev/s", args.rate), result.latency_max_ms);
    println!("  {:<48} {:>12.2}", format!("channel desync p50 ms @ {} ev/s", args.rate), result.desync_p50_ms);
    println!("  {:<48} {:>12.2}", format!("channel desync p99 ms @ {} ev/s", args.rate), result.desync_p99_ms);
    println!(
        "  {:<48} {:>12.2}",
        format!("store statements / 1k events @ {} ev/s", args.rate),
        result.store_statements_per_1k_events
    );
    println!(
        "  {:<48} {:>12.2}",
        "store statements / 1k events @ max rate", result.store_statements_per_1k_events_max_rate
    );
    println!("  {:<48} {:>12.1}", "peak RSS MiB (engine draining the backlog)", result.peak_rss_mb);
    println!("  {:<48} {:>12}", "duplicates dropped", result.duplicates_dropped);
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    }
    Ok(())
}
