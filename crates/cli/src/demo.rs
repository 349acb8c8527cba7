//! `tally demo`: tally embedded, simulated traffic, a readable summary.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tally_config::{Config, LogConfig, LogFormat};
use tally_core::Sku;
use tally_inventory_engine::EngineStats;
use tally_server::App;
use tally_server::app::Role;
use tally_sim::{SimConfig, Simulator, sku_name};
use tokio_util::sync::CancellationToken;

use crate::driver::{self, Sink};

/// Arguments of `tally demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of simulated traffic.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Events per second.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Number of SKUs.
    #[arg(long, default_value_t = 2000)]
    pub skus: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the data file here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Send traffic through the HTTP API instead of straight into the embedded log.
    #[arg(long)]
    pub via_http: bool,
}

fn get(c: &AtomicU64) -> u64 {
    EngineStats::get(c)
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let mut config = Config::default();
    config.embedded.path = dir.join("tally-demo.db");
    config.server.listen = "127.0.0.1:0".parse()?;
    config.log = LogConfig { format: LogFormat::Pretty, level: "warn,tally_server=error".into() };
    tally_server::telemetry::init(&config.log);
    let data_file = config.embedded.path.clone();
    let app = App::new(config).start(Role::All).await?;
    let url = format!("http://{}", app.addr.map(|a| a.to_string()).unwrap_or_default());
    let engine = app.engine.clone();

    println!("tally demo — embedded mode (one process, no servers)");
    println!("  data file   {}", data_file.display());
    println!("  HTTP API    {url}   (try: curl {url}/v1/stock/{})", sku_name(0));
    println!(
        "  traffic     {} events/s for {} s over {} SKUs ({}), seed {}",
        args.rate,
        args.duration,
        args.skus,
        if args.via_http { "via HTTP" } else { "into the embedded log" },
        args.seed
    );
    println!();

    let sink = if args.via_http {
        Sink::Http {
            client: reqwest::Client::new(),
            url: url.clone(),
            api_key: None,
            retry_for: Duration::from_secs(30),
        }
    } else {
        Sink::Bus { bus: engine.bus.clone(), topic: engine.cfg.topics.events.clone() }
    };
    let mut sim = Simulator::new(SimConfig { seed: args.seed, skus: args.skus, ..SimConfig::default() });
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s2.cancel();
    });
    let started = Instant::now();
    let mut last = Instant::now();
    let stats = engine.stats.clone();
    let driven = driver::drive(&mut sim, &sink, args.rate, Duration::from_secs(args.duration), &stop, |d| {
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            println!(
                "  {:>4.0} s  sent {:>8}  applied {:>8}  duplicates dropped {:>6}  availability msgs {:>7}",
                started.elapsed().as_secs_f64(),
                d.sent,
                get(&stats.applied),
                get(&stats.duplicates),
                get(&stats.availability_published)
            );
        }
    })
    .await?;
    // Let the engine finish what was sent (expiry releases it emits itself add to the count).
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let mut previous = u64::MAX;
    while Instant::now() < drain_deadline {
        let handled = stats.handled();
        if handled >= driven.sent && handled == previous {
            break;
        }
        previous = handled;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await; // one more flush interval

    let hist = stats.visible_latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let desync = stats.desync_latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let statements = tally_store::Ledger::statements(&engine.store);
    let handled = stats.handled().max(1);
    println!();
    println!("summary after {:.1} s", elapsed.as_secs_f64());
    println!("  events sent                  {:>10}", driven.sent);
    println!("  events applied               {:>10}", get(&stats.applied));
    println!("  duplicates dropped           {:>10}", get(&stats.duplicates));
    println!("  stale snapshots ignored      {:>10}", get(&stats.stale_snapshots));
    println!("  adjustments already covered  {:>10}", get(&stats.covered_adjustments));
    println!("  reservations accepted        {:>10}", get(&stats.reservations_accepted));
    println!("  reservations rejected        {:>10}   (never oversold)", get(&stats.reservations_rejected));
    println!("  reservations expired         {:>10}", get(&stats.reservations_expired));
    println!("  dead-lettered (invalid)      {:>10}", get(&stats.dead_lettered) + driven.refused);
    println!("  availability messages        {:>10}   (coalesced per SKU)", get(&stats.availability_published));
    println!(
        "  store flushes                {:>10}   ({} statements, {:.1} per 1,000 events)",
        get(&stats.flushes),
        statements,
        statements as f64 * 1000.0 / handled as f64
    );
    print_latency("event → visible (readable)", &hist);
    print_latency("event → availability published", &desync);
    println!();
    print_skus(&engine, &url).await?;
    app.shutdown().await;
    Ok(())
}

fn print_latency(label: &str, hist: &hdrhistogram::Histogram<u64>) {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  {label:<34} p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
}

async fn print_skus(engine: &tally_server::app::Engine, url: &str) -> anyhow::Result<()> {
    let skus: Vec<Sku> = [0, 1, 2, 10, 100].iter().map(|i| Sku::parse(sku_name(*i))).collect::<Result<_, _>>()?;
    let states = engine.read_states(&skus).await?;
    let channels: Vec<String> = engine.rules.iter().map(|r| r.id.to_string()).collect();
    println!("stock of a few SKUs (on_hand / reserved / available per location; available-to-sell per channel)");
    print!("  {:<12}", "sku");
    for c in &channels {
        print!(" {c:>13}");
    }
    println!("   locations");
    for sku in &skus {
        let Some(s) = states.get(sku) else { continue };
        print!("  {:<12}", sku.as_str());
        for a in s.availability(&engine.rules) {
            print!(" {:>13}", a.available_to_sell);
        }
        let locs: Vec<String> =
            s.levels().iter().map(|l| format!("{} {}/{}/{}", l.location, l.on_hand, l.reserved, l.available)).collect();
        println!("   {}", locs.join("  "));
    }
    // The same numbers over the API, as a channel would read them.
    let body: serde_json::Value =
        reqwest::get(format!("{url}/v1/channels/storefront/stock/{}", sku_name(0))).await?.json().await?;
    println!();
    println!("GET {url}/v1/channels/storefront/stock/{} → {body}", sku_name(0));
    Ok(())
}
