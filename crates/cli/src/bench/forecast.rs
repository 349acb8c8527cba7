//! `tally bench forecast`: the demand model's full refresh over simulated series (weekly and
//! yearly seasons, promotions, an intermittent long tail), and its accuracy on the last
//! `horizon` days held out.
//!
//! Two measurements, both printed (`--json`: one object on the last line):
//! - **model**: every series' choice by backtest and forecast (`tally_forecast::model`, all
//!   cores), the series in memory — the compute a full refresh needs;
//! - **refresh**: a full run through the forecast engine on the embedded store for
//!   `--refresh-series` of them — reading each series and its supplies, features, the model,
//!   replenishment, storing — whose per-series cost is scaled to `--series` (said so).
//!
//! - **incremental**: with the engine running on those series, a sale published for one series
//!   until that series' new forecast is readable (debounce, the run, the store and the cache),
//!   for `--incremental-samples` sales, ten series at a time: its p99.
//!
//! Accuracy: on `--accuracy-series` series, each method and the per-series choice forecast
//! the last `horizon` days from the days before; WAPE, MASE, bias and the 80 % interval's
//! coverage against the simulator's truth.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_forecast::accuracy;
use tally_forecast::model::{self, Settings};
use tally_forecast_engine::{ForecastEngine, NoStock, RunKind};
use tally_sim::demand::{DemandConfig, DemandSim};
use tally_store::demand::{DemandEffects, StagedRow};
use tally_store::ledger::Journal;
use tally_store::{Flush, Ledger, SqliteStore, SqliteStoreOptions};

/// Arguments of `tally bench forecast`.
#[derive(Debug, clap::Args)]
pub struct ForecastBenchArgs {
    /// Series forecast (SKUs × 3 locations).
    #[arg(long, default_value_t = 30_000)]
    pub series: usize,
    /// Days of history per series.
    #[arg(long, default_value_t = 730)]
    pub days: usize,
    /// Series run end to end through the engine and the store (per-series cost scaled).
    #[arg(long, default_value_t = 300)]
    pub refresh_series: usize,
    /// Series of the accuracy measurement.
    #[arg(long, default_value_t = 300)]
    pub accuracy_series: usize,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Sales timed from publication to their series' new forecast.
    #[arg(long, default_value_t = 100)]
    pub incremental_samples: usize,
    /// Also run statsforecast (a venv `scripts/forecast/venv.sh` makes) on the accuracy
    /// series with the same cut: its models' accuracy and per-series choice, and its time
    /// scaled to `--series` (one core per process, as many processes as cores).
    #[arg(long)]
    pub statsforecast: bool,
    /// One JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Accuracy on real series instead of the simulator's: a `unique_id,ds,y` CSV
    /// (`scripts/forecast/datasets.py` writes M5's and CDNOW's); `--accuracy-series` of them,
    /// spread evenly over the file, the last `--horizon` days held out. Skips the speed phases.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Days held out and forecast with `--data` (the backtest folds are as long).
    #[arg(long, default_value_t = 28)]
    pub horizon: usize,
}

/// The series of a `unique_id,ds,y` CSV, in file order (each series' rows consecutive and
/// in day order).
fn read_series(path: &std::path::Path) -> anyhow::Result<Vec<(String, Vec<f64>)>> {
    let mut reader = csv::Reader::from_path(path)?;
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for row in reader.records() {
        let row = row?;
        let (id, y) = (row.get(0).unwrap_or_default(), row.get(2).unwrap_or_default());
        let y: f64 = y.parse().map_err(|e| anyhow::anyhow!("{}: y {y:?}: {e}", path.display()))?;
        match out.last_mut() {
            Some((last, values)) if last == id => values.push(y),
            _ => out.push((id.to_owned(), vec![y])),
        }
    }
    Ok(out)
}

/// Every series' choice and forecast on all cores: the forecasts, the seconds it took and how
/// often each method was chosen (most first).
async fn choose_all(
    histories: &[Vec<f64>],
    settings: &Settings,
) -> anyhow::Result<(Vec<model::SeriesForecast>, f64, Vec<(&'static str, usize)>)> {
    let started = Instant::now();
    let forecasts = tokio::task::spawn_blocking({
        let (histories, settings) = (histories.to_vec(), settings.clone());
        move || model::forecast_many(&histories, &settings)
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut methods: HashMap<&'static str, usize> = HashMap::new();
    for f in &forecasts {
        *methods.entry(f.method).or_default() += 1;
    }
    let mut by_method: Vec<(&'static str, usize)> = methods.into_iter().collect();
    by_method.sort_by_key(|m| std::cmp::Reverse(m.1));
    Ok((forecasts, seconds, by_method))
}

/// `tally bench forecast --data`: tally's per-series choice, and statsforecast's models and
/// choice with `--statsforecast`, on real series.
async fn run_on_data(args: &ForecastBenchArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let all = read_series(path)?;
    let h = args.horizon.max(1);
    let n = args.accuracy_series.min(all.len()).max(1);
    let picked: Vec<&(String, Vec<f64>)> = (0..n).map(|i| &all[i * all.len() / n]).collect();
    anyhow::ensure!(picked.iter().all(|(_, y)| y.len() > h), "every series needs more than {h} days");
    let settings = Settings { horizon: h, ..Settings::default() };
    let train: Vec<Vec<f64>> = picked.iter().map(|(_, y)| y[..y.len() - h].to_vec()).collect();
    let actual: Vec<Vec<f64>> = picked.iter().map(|(_, y)| y[y.len() - h..].to_vec()).collect();
    let days = train.iter().map(Vec::len).max().unwrap_or(0);
    println!(
        "tally bench forecast --data {} — {n} of {} series, up to {days} training days, the last {h} held out",
        path.display(),
        all.len()
    );
    let (chosen, model_s, by_method) = choose_all(&train, &settings).await?;
    let bands: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        chosen.iter().map(|f| (f.mean.clone(), f.quantile(0.1), f.quantile(0.9))).collect();
    let tally = score(&train, &actual, &bands);
    println!(
        "  tally        WAPE {:.4}  MASE {:.3}  bias {:+.4}  80 % coverage {:.3}  ({model_s:.2} s; chosen: {})",
        tally.wape,
        tally.mase,
        tally.bias,
        tally.coverage_80,
        by_method.iter().map(|(m, c)| format!("{m} {c}")).collect::<Vec<_>>().join(", ")
    );
    let dir = tempfile::tempdir()?;
    let peer = if args.statsforecast { Some(statsforecast(dir.path(), &train, &actual, h)?) } else { None };
    if let Some(peer) = &peer {
        print_peer(peer);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "data": path.display().to_string(),
                "series": n,
                "horizon": h,
                "wape": tally.wape,
                "mase": tally.mase,
                "bias": tally.bias,
                "coverage_80": tally.coverage_80,
                "model_s": model_s,
                "statsforecast_best_wape": peer.as_ref().and_then(|p| p.best_single.wape),
                "statsforecast_best_model": peer.as_ref().map(|p| p.best_single.model.clone()),
                "statsforecast_choice_wape": peer.as_ref().and_then(|p| p.choice_by_cv.wape),
                "statsforecast_models": peer.as_ref().map(|p| p.models.iter().map(|(k, m)| (k.clone(), serde_json::json!({
                    "wape": m.wape, "mase": m.mase, "bias": m.bias, "coverage_80": m.coverage_80
                }))).collect::<serde_json::Map<_, _>>()),
            })
        );
    }
    Ok(())
}

/// statsforecast's figures, one line per model.
fn print_peer(peer: &Peer) {
    for (name, m) in &peer.models {
        let f = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.4}"));
        println!(
            "  statsforecast {name:<17} WAPE {}  MASE {}  bias {}  80 % coverage {}  ({:.1} ms per series, one core)",
            f(m.wape),
            f(m.mase),
            f(m.bias),
            f(m.coverage_80),
            m.seconds * 1000.0 / peer.series.max(1) as f64
        );
    }
    println!(
        "  statsforecast best single model: {} (WAPE {:.4}); its per-series choice by cross-validation: WAPE {:.4}",
        peer.best_single.model,
        peer.best_single.wape.unwrap_or(f64::NAN),
        peer.choice_by_cv.wape.unwrap_or(f64::NAN)
    );
}

/// What statsforecast measured on the accuracy series (`scripts/forecast/compare.py`).
#[derive(Debug, serde::Deserialize)]
struct Peer {
    series: usize,
    models: std::collections::BTreeMap<String, PeerModel>,
    best_single: PeerBest,
    choice_by_cv: PeerChoice,
}

#[derive(Debug, serde::Deserialize)]
struct PeerModel {
    wape: Option<f64>,
    mase: Option<f64>,
    bias: Option<f64>,
    coverage_80: Option<f64>,
    seconds: f64,
}

#[derive(Debug, serde::Deserialize)]
struct PeerBest {
    model: String,
    wape: Option<f64>,
}

#[derive(Debug, serde::Deserialize)]
struct PeerChoice {
    wape: Option<f64>,
    cv_seconds: f64,
}

/// Writes `unique_id,ds,y` rows of `series` starting at day `first`.
fn write_csv(path: &std::path::Path, series: &[Vec<f64>], first: &[i32]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "unique_id,ds,y")?;
    for (i, (ys, start)) in series.iter().zip(first).enumerate() {
        for (d, y) in ys.iter().enumerate() {
            writeln!(out, "s{i},{},{y}", start + d as i32)?;
        }
    }
    Ok(())
}

/// Runs statsforecast on the same training days and scores it on the same held-out days.
fn statsforecast(dir: &std::path::Path, train: &[Vec<f64>], actual: &[Vec<f64>], h: usize) -> anyhow::Result<Peer> {
    let root = std::env::current_dir()?;
    let venv = root.join("scripts/forecast/venv.sh");
    anyhow::ensure!(venv.exists(), "run from the checkout: {} is not here", venv.display());
    let python = std::process::Command::new(&venv).output()?;
    anyhow::ensure!(
        python.status.success(),
        "making the statsforecast venv failed: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    let python = String::from_utf8(python.stdout)?.trim().to_owned();
    let (train_csv, test_csv) = (dir.join("train.csv"), dir.join("test.csv"));
    write_csv(&train_csv, train, &vec![0; train.len()])?;
    let starts: Vec<i32> = train.iter().map(|t| t.len() as i32).collect();
    write_csv(&test_csv, actual, &starts)?;
    // Its cross-validation cuts one set of folds for every series: tally's for the shortest.
    let shortest = train.iter().map(Vec::len).min().unwrap_or(0);
    let defaults = tally_forecast::model::Settings::default();
    let (step, windows) = tally_forecast::folds::spacing(shortest, h, defaults.windows, defaults.period);
    let out = std::process::Command::new(python)
        .arg(root.join("scripts/forecast/compare.py"))
        .args([train_csv.as_os_str(), test_csv.as_os_str()])
        .args(["--horizon", &h.to_string(), "--windows", &windows.max(1).to_string()])
        .args(["--step", &step.to_string(), "--n-jobs", "1"])
        .output()?;
    anyhow::ensure!(out.status.success(), "statsforecast failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(text.lines().last().unwrap_or_default())?)
}

fn simulator(args: &ForecastBenchArgs) -> DemandSim {
    DemandSim::new(DemandConfig {
        seed: args.seed,
        skus: args.series.div_ceil(3),
        locations: 3,
        ..DemandConfig::default()
    })
}

/// Staged rows of a series' simulated days (one sale per day with sales).
pub(crate) fn staged(sim: &DemandSim, i: usize, days: usize) -> Vec<StagedRow> {
    let s = &sim.series[i];
    (0..days)
        .filter_map(|d| {
            let day = sim.first_day() + d as i32;
            let v = sim.day(i, day);
            (v.sold > 0).then(|| StagedRow {
                source: "/bench".into(),
                id: format!("{}-{}-{day}", s.sku, s.location),
                kind: "sale".into(),
                sku: s.sku.clone(),
                location: s.location.clone(),
                day,
                units: v.sold,
                revenue: 0.0,
                promo: v.promo,
                lead_time_days: None,
                event_time_ms: i64::from(day) * 86_400_000,
                topic: "bench".into(),
                partition: 0,
                offset: d as u64,
            })
        })
        .collect()
}

/// Series given a sale at once in the incremental measurement.
const AT_A_TIME: usize = 10;

/// The `q` quantile of `samples` (nearest rank), if any.
fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// Runs `engine` and times `samples` sales (at `sale_ms`), `AT_A_TIME` series at once, from
/// publication until each series' new forecast is readable; milliseconds each.
async fn incremental<S, C>(
    engine: &ForecastEngine<tally_bus::EmbeddedLog, S, C>,
    series: &[(String, String)],
    samples: usize,
    sale_ms: i64,
) -> anyhow::Result<Vec<f64>>
where
    S: tally_store::demand::DemandStore
        + tally_store::ledger::DocumentStore
        + Journal<tally_store::ledger::Documents>
        + Journal<DemandEffects>,
    C: tally_cache::Cache,
{
    use tally_bus::Bus;
    if series.is_empty() || samples == 0 {
        return Ok(Vec::new());
    }
    let skus: std::collections::BTreeSet<&str> = series.iter().map(|(s, _)| s.as_str()).collect();
    let locations: std::collections::BTreeSet<&str> = series.iter().map(|(_, l)| l.as_str()).collect();
    let skus = skus
        .into_iter()
        .map(|s| {
            Ok(tally_forecast::reference::SkuInfo {
                sku: tally_core::Sku::parse(s)?,
                category: "bench".into(),
                brand: "bench".into(),
                price: 1.0,
                pack_size: 1,
                moq: 0,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let locations = locations
        .into_iter()
        .map(|l| {
            Ok(tally_forecast::reference::LocationInfo {
                location: tally_core::LocationId::parse(l)?,
                region: "bench".into(),
                time_zone: "UTC".into(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    engine.put_references(skus, locations).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let runs_before = engine.stats.runs.load(std::sync::atomic::Ordering::Relaxed);
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(cancel.clone()));
    // The schedule starts with a full run of every series: timed sales begin after it.
    let deadline = Instant::now() + Duration::from_secs(600);
    while engine.stats.runs.load(std::sync::atomic::Ordering::Relaxed) <= runs_before {
        anyhow::ensure!(Instant::now() < deadline, "the first full run did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut took = Vec::with_capacity(samples);
    let mut next = 0;
    while took.len() < samples {
        let round: Vec<(String, String)> = (0..AT_A_TIME.min(samples - took.len()))
            .map(|_| {
                next += 1;
                series[(next * 7919) % series.len()].clone()
            })
            .collect();
        let sent_ms = tally_core::now_ms();
        let sale_day = tally_forecast::day::iso(i32::try_from(sale_ms.div_euclid(86_400_000)).unwrap_or_default());
        let started = Instant::now();
        let mut records = Vec::with_capacity(round.len());
        for (sku, location) in &round {
            let data = serde_json::json!({"sku": sku, "location": location, "quantity": 1,
                "occurred_at": tally_forecast::day::rfc3339(sale_ms)});
            let e = tally_core::Envelope::new("/bench", tally_forecast::demand::types::SALE, data);
            let (headers, payload) = e.to_binary();
            records.push(tally_bus::OutRecord::keyed(format!("{sku}@{location}"), headers, payload));
        }
        engine.bus.publish(&engine.cfg.topics.sales, records).await?;
        let mut waiting: Vec<usize> = (0..round.len()).collect();
        while !waiting.is_empty() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "a sale's forecast did not come within 60 s");
            let pending: Vec<(String, String)> = waiting.iter().map(|&i| round[i].clone()).collect();
            let latest = engine.last_forecasts(&pending).await?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut still = Vec::with_capacity(waiting.len());
            for (i, f) in waiting.into_iter().zip(latest) {
                // A forecast made after the sale, from a history that includes its day.
                if f.is_some_and(|f| f.made_at_ms >= sent_ms && f.as_of == sale_day) {
                    took.push(elapsed_ms);
                } else {
                    still.push(i);
                }
            }
            waiting = still;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    cancel.cancel();
    let _ = running.await;
    if std::env::var_os("TALLY_BENCH_SAMPLES").is_some() {
        let mut sorted = took.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!("incremental samples (ms): {sorted:?}");
    }
    Ok(took)
}

/// Accuracy of one way of forecasting over the held-out days.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Scores {
    /// Weighted absolute percentage error over all series.
    pub wape: f64,
    /// Mean MASE (seasonal naive scale, period 7).
    pub mase: f64,
    /// Bias: (Σ forecast − Σ actual) / Σ actual.
    pub bias: f64,
    /// Share of actuals inside the 80 % interval.
    pub coverage_80: f64,
}

fn score(histories: &[Vec<f64>], actuals: &[Vec<f64>], forecasts: &[(Vec<f64>, Vec<f64>, Vec<f64>)]) -> Scores {
    let (mut abs, mut total, mut signed, mut inside, mut n) = (0.0, 0.0, 0.0, 0usize, 0usize);
    let mut mases = Vec::new();
    for ((h, a), (mean, lo, hi)) in histories.iter().zip(actuals).zip(forecasts) {
        for i in 0..a.len() {
            abs += (a[i] - mean[i]).abs();
            signed += mean[i] - a[i];
            total += a[i];
            inside += usize::from(lo[i] <= a[i] && a[i] <= hi[i]);
            n += 1;
        }
        if let Some(m) = accuracy::mase(h, a, mean, 7) {
            mases.push(m);
        }
    }
    Scores {
        wape: if total > 0.0 { abs / total } else { 0.0 },
        mase: mases.iter().sum::<f64>() / mases.len().max(1) as f64,
        bias: if total > 0.0 { signed / total } else { 0.0 },
        coverage_80: inside as f64 / n.max(1) as f64,
    }
}

/// Runs the benchmark.
pub async fn run(args: ForecastBenchArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.data {
        return run_on_data(&args, path).await;
    }
    let sim = simulator(&args);
    let series = sim.series.len().min(args.series);
    let settings = Settings::default();
    println!(
        "tally bench forecast — {series} series × {} days, horizon {} days, seed {}",
        args.days, settings.horizon, args.seed
    );

    // Model: every series' choice and forecast, all cores.
    let started = Instant::now();
    let histories: Vec<Vec<f64>> = (0..series).map(|i| sim.truth(i, args.days)).collect();
    let generated = started.elapsed();
    let (forecasts, model_s, by_method) = choose_all(&histories, &settings).await?;
    anyhow::ensure!(forecasts.len() == series, "{} forecasts for {series} series", forecasts.len());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "  model        {series} series in {model_s:.2} s ({:.1} ms per series per core, {cores} cores; simulated in {:.2} s)",
        model_s * 1000.0 * cores as f64 / series as f64,
        generated.as_secs_f64()
    );
    println!("  methods chosen  {}", by_method.iter().map(|(m, n)| format!("{m} {n}")).collect::<Vec<_>>().join(", "));

    // Refresh end to end on the embedded store.
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(SqliteStoreOptions {
        path: dir.path().join("bench.db"),
        durability: tally_sqlite::Durability::Normal,
    })?
    .documents("forecast");
    store.migrate().await?;
    let n = args.refresh_series.min(series);
    let started = Instant::now();
    let mut rows = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let staged: Vec<StagedRow> = chunk.iter().flat_map(|&i| staged(&sim, i, args.days)).collect();
        rows += staged.len();
        let flush =
            Flush { effects: DemandEffects { staged, parked: Vec::new() }, processed: Vec::new(), offsets: Vec::new() };
        Journal::<DemandEffects>::flush(&store, &[flush]).await?;
    }
    let staging_s = started.elapsed().as_secs_f64();
    let bus = tally_bus::EmbeddedLog::open(tally_bus::EmbeddedLogOptions {
        path: dir.path().join("bench.db"),
        default_partitions: 4,
        durability: tally_sqlite::Durability::Normal,
    })?;
    let cache = tally_cache::MemoryCache::new(256 << 20, Duration::from_secs(3600));
    let cfg = tally_config::ForecastConfig { model: tally_config::ForecastModel::Direct, ..Default::default() };
    let engine = ForecastEngine::new(
        bus,
        store.clone(),
        cache,
        cfg,
        Arc::new(NoStock),
        Arc::new(tally_runtime::Health::default()),
    );
    engine.create_topics(4).await?;
    let run =
        engine.start_run("bench".into(), RunKind::Full).await?.ok_or_else(|| anyhow::anyhow!("nothing staged"))?;
    let all = engine.owned_series(None).await?;
    let started = Instant::now();
    let summary = engine.run_share(&run, all.clone(), "all").await?;
    let refresh_s = started.elapsed().as_secs_f64();
    let per_series_ms = refresh_s * 1000.0 / summary.series.max(1) as f64;
    let full_refresh_s = per_series_ms * series as f64 / 1000.0;
    println!(
        "  staging      {rows} events of {n} series in {staging_s:.2} s ({:.0} events/s)",
        rows as f64 / staging_s.max(1e-9)
    );
    println!(
        "  refresh      {} series end to end in {refresh_s:.2} s ({per_series_ms:.1} ms per series) → {series} series ≈ {full_refresh_s:.0} s (scaled from {} series)",
        summary.series, summary.series
    );

    // The sales land on the day after the simulated history, as today's would.
    let sale_ms = (i64::from(sim.first_day()) + args.days as i64) * 86_400_000 + 12 * 3_600_000;
    let incremental = incremental(&engine, &all, args.incremental_samples, sale_ms).await?;
    let incremental_p99_ms = percentile(&incremental, 0.99);
    println!(
        "  incremental  a sale → its series' new forecast readable: p50 {:.0} ms, p99 {:.0} ms ({} sales, {} series at a time; debounce {}–{} ms)",
        percentile(&incremental, 0.5).unwrap_or(f64::NAN),
        incremental_p99_ms.unwrap_or(f64::NAN),
        incremental.len(),
        AT_A_TIME,
        engine.cfg.debounce_ms,
        engine.cfg.debounce_max_wait_ms
    );

    // Accuracy on the last horizon days held out.
    let h = settings.horizon;
    let a = args.accuracy_series.min(series);
    let cut = args.days - h;
    let train: Vec<Vec<f64>> = histories[..a].iter().map(|y| y[..cut].to_vec()).collect();
    let actual: Vec<Vec<f64>> = histories[..a].iter().map(|y| y[cut..].to_vec()).collect();
    let (chosen, _, _) = choose_all(&train, &settings).await?;
    let chosen: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        chosen.iter().map(|f| (f.mean.clone(), f.quantile(0.1), f.quantile(0.9))).collect();
    let tally = score(&train, &actual, &chosen);
    println!(
        "  accuracy     {a} series, last {h} days held out: WAPE {:.4}  MASE {:.3}  bias {:+.4}  80 % coverage {:.3}",
        tally.wape, tally.mase, tally.bias, tally.coverage_80
    );
    let peer = if args.statsforecast {
        let peer = statsforecast(dir.path(), &train, &actual, h)?;
        print_peer(&peer);
        Some(peer)
    } else {
        None
    };
    // statsforecast fitting the same candidates and choosing by the same folds, per series on
    // one core, scaled to every series on every core.
    let peer_s = peer.as_ref().map(|p| {
        let per_series =
            (p.models.values().map(|m| m.seconds).sum::<f64>() + p.choice_by_cv.cv_seconds) / p.series.max(1) as f64;
        per_series * series as f64 / cores as f64
    });
    if let Some(s) = peer_s {
        println!(
            "  statsforecast full refresh ≈ {s:.0} s for {series} series (measured on {a}, scaled; models fitted and chosen by cross-validation) vs tally's model {:.0} s: {:.1}×",
            model_s * series as f64 / series as f64,
            s / model_s.max(1e-9)
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "series": series,
                "days": args.days,
                "model_s": model_s,
                "full_refresh_s": full_refresh_s,
                "full_refresh_scaled_from": summary.series,
                "staging_events_per_s": rows as f64 / staging_s.max(1e-9),
                "wape": tally.wape,
                "mase": tally.mase,
                "bias": tally.bias,
                "coverage_80": tally.coverage_80,
                "accuracy_series": a,
                "statsforecast_s": peer_s,
                "statsforecast_subset": peer.as_ref().map(|p| p.series),
                "statsforecast_best_wape": peer.as_ref().and_then(|p| p.best_single.wape),
                "statsforecast_best_model": peer.as_ref().map(|p| p.best_single.model.clone()),
                "statsforecast_choice_wape": peer.as_ref().and_then(|p| p.choice_by_cv.wape),
                "incremental_p99_ms": incremental_p99_ms,
            })
        );
    }
    Ok(())
}
