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
use crate::payments::{self, PaymentsDriven};
use tally_sim::payments::PaymentsConfig;

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
    /// Payment transactions per second through fraud scoring (0: none).
    #[arg(long, default_value_t = 500)]
    pub payments_rate: u64,
    /// SKUs with demand history for forecasting (each at three locations; 0: none).
    #[arg(long, default_value_t = 40)]
    pub demand_skus: usize,
    /// Days of demand history.
    #[arg(long, default_value_t = 400)]
    pub demand_days: i32,
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
    config.model.repository = "models".into();
    config.fraud.models = "models/fraud".into();
    if !std::path::Path::new("models/fraud/1/config.toml").exists() {
        println!(
            "note: models/fraud/1 is not here (run the demo from the checkout): the rules will decide every payment"
        );
    }
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
    let payments = (args.payments_rate > 0).then(|| {
        let (bus, topics, stop) = (app.fraud.bus.clone(), app.fraud.cfg.topics.clone(), stop.clone());
        let cfg = PaymentsConfig {
            seed: args.seed,
            accounts: 5_000,
            fraud_rate: 0.01,
            // Labels as if the days had passed: the quality report has something to show.
            label_delay_days: 0,
            start_ms: tally_core::now_ms(),
            mean_gap_seconds: 1.0 / args.payments_rate as f64,
            ..PaymentsConfig::default()
        };
        let (rate, duration) = (args.payments_rate, Duration::from_secs(args.duration));
        tokio::spawn(async move { payments::drive_payments(&bus, &topics, cfg, rate, duration, &stop).await })
    });
    let demand = (args.demand_skus > 0).then(|| {
        let sim = crate::demand::simulator(args.seed, args.demand_skus, args.demand_days);
        println!(
            "  demand      {} days of sales, supplies and returns for {} series (forecasting), after the traffic",
            args.demand_days,
            sim.series.len()
        );
        sim
    });
    if payments.is_some() {
        println!(
            "  payments    {} transactions/s through fraud scoring (model in process, OIP v2)",
            args.payments_rate
        );
        println!();
    }
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
    if let Some(payments) = payments {
        let driven = payments.await??;
        print_fraud(&app.fraud, &driven, &url).await?;
    }
    if let Some(sim) = demand {
        // After the traffic: the history is a backfill, and its burst would otherwise show in
        // the latencies printed above.
        let driven = crate::demand::publish_history(&app.forecast, &sim, args.demand_days).await?;
        crate::demand::report(&app.forecast, &sim, &driven, &url).await?;
    }
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

async fn print_fraud(fraud: &tally_server::app::Fraud, driven: &PaymentsDriven, url: &str) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    // Let the last decisions land.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fraud.stats.decisions() < driven.transactions && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = &fraud.stats;
    println!();
    println!("fraud scoring");
    println!(
        "  transactions sent            {:>10}   ({} profiles, {} labels)",
        driven.transactions, driven.profiles, driven.labels
    );
    println!("  decided                      {:>10}", s.decisions());
    println!(
        "  approve / review / decline   {:>10} / {} / {}",
        s.approved.load(Relaxed),
        s.reviewed.load(Relaxed),
        s.declined.load(Relaxed)
    );
    println!(
        "  decided by model / cache / rules {:>6} / {} / {}",
        s.by_model.load(Relaxed),
        s.by_cache.load(Relaxed),
        s.by_rules.load(Relaxed)
    );
    let mut lat = s.latency_us.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_unstable();
    if !lat.is_empty() {
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "  transaction → decision published  p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    }
    println!("  a few decisions (simulator's truth → verdict, score, who decided, reasons):");
    for (id, pattern) in &driven.sample {
        let Some(d) = fraud.decision(id).await? else { continue };
        let reasons: Vec<String> = d
            .decision
            .reasons
            .iter()
            .map(|r| match (&r.feature, r.contribution) {
                (Some(f), Some(c)) => format!("{f} +{c:.2}"),
                _ => r.code.clone(),
            })
            .collect();
        println!(
            "    {id}  {:<17} {:<8} {:.3}  {:<5}  {}",
            pattern.code(),
            d.decision.verdict.code(),
            d.decision.score,
            match d.decision.decided_by {
                tally_fraud::DecidedBy::Model => "model",
                tally_fraud::DecidedBy::Cache => "cache",
                tally_fraud::DecidedBy::Rules => "rules",
            },
            reasons.join(", ")
        );
    }
    for v in fraud.quality.report() {
        let f = |x: Option<f64>| x.map_or("—".to_owned(), |v| format!("{v:.3}"));
        let worst = v.drift.iter().max_by(|a, b| a.psi.total_cmp(&b.psi));
        println!(
            "  model version {}: {} scored, {} labelled: ROC-AUC {}, precision {}, recall {} (at {:.3}); highest drift {}",
            v.version,
            v.scored,
            v.labels.labelled,
            f(v.labels.roc_auc),
            f(v.labels.precision),
            f(v.labels.recall),
            v.threshold,
            worst.map_or("—".to_owned(), |d| format!("{} PSI {:.3}", d.feature, d.psi))
        );
    }
    if let Some((id, _)) = driven.sample.first() {
        println!();
        println!(
            "GET {url}/v1/fraud/decisions/{id} (scope fraud:read) returns the decision with its features and reasons"
        );
    }
    Ok(())
}
