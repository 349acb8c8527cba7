//! Demand for the demo: the simulator's history published onto the demand topics (as a
//! retailer's point-of-sale and warehouse systems would), then a forecast run and a readable
//! account of it — a few series' forecasts with their bands, and the most urgent reorders.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tally_bus::{Bus, OutRecord};
use tally_forecast_engine::{ForecastRecord, RunSummary};
use tally_server::app::Forecast;
use tally_sim::demand::{DemandConfig, DemandSim};

/// What the demo published.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemandDriven {
    /// Demand events published.
    pub events: u64,
    /// Series.
    pub series: usize,
    /// Days of history.
    pub days: i32,
}

/// The demo's demand: `skus` of the inventory simulator's SKUs at its locations, `days` of
/// history up to yesterday.
pub fn simulator(seed: u64, skus: usize, days: i32) -> DemandSim {
    let today = i32::try_from(tally_core::now_ms().div_euclid(86_400_000)).unwrap_or_default();
    DemandSim::new(DemandConfig {
        seed,
        skus,
        first_day: today - days,
        sku_name: tally_sim::sku_name,
        location_names: vec![
            ("wh-1".into(), "EU".into(), "Europe/Berlin".into()),
            ("wh-2".into(), "EU".into(), "Europe/Lisbon".into()),
            ("store-1".into(), "US".into(), "America/New_York".into()),
        ],
        ..DemandConfig::default()
    })
}

/// Stores the simulator's reference data and publishes its history.
pub async fn publish_history(forecast: &Forecast, sim: &DemandSim, days: i32) -> anyhow::Result<DemandDriven> {
    forecast.put_references(sim.skus().to_vec(), sim.locations().to_vec()).await?;
    let topics = &forecast.cfg.topics;
    let mut events = 0;
    let mut pending: BTreeMap<&str, Vec<OutRecord>> = BTreeMap::new();
    for d in 0..days {
        for e in sim.events(sim.first_day() + d) {
            let topic = match tally_forecast::demand::DemandKind::of_type(&e.ty) {
                Some(tally_forecast::demand::DemandKind::Sale) => topics.sales.as_str(),
                Some(tally_forecast::demand::DemandKind::Supply) => topics.supplies.as_str(),
                _ => topics.returns.as_str(),
            };
            let key = e.subject.clone().unwrap_or_default();
            let (headers, payload) = e.to_binary();
            pending.entry(topic).or_default().push(OutRecord::keyed(key, headers, payload));
            events += 1;
        }
        if pending.values().map(Vec::len).sum::<usize>() >= 5_000 || d == days - 1 {
            for (topic, records) in std::mem::take(&mut pending) {
                forecast.bus.publish(topic, records).await?;
            }
        }
    }
    Ok(DemandDriven { events, series: sim.series.len(), days })
}

/// Waits for the history to be staged, runs a forecast and prints it.
pub async fn report(forecast: &Forecast, sim: &DemandSim, driven: &DemandDriven, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally_runtime::ConsumerStats::get(&forecast.consumer_stats.applied) < driven.events
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let Some(run) = forecast.refresh_now().await? else {
        println!("demand forecasting: no demand staged");
        return Ok(());
    };
    let took = started.elapsed();
    println!();
    println!("demand forecasting");
    println!(
        "  history published           {:>10} events   ({} series × {} days, sales / supplies / returns)",
        driven.events, driven.series, driven.days
    );
    println!("  staged                      {:>10}", forecast.stats.staged.load(std::sync::atomic::Ordering::Relaxed));
    print_run(&run, took);
    let picks = [0usize, sim.series.len() / 3, sim.series.iter().position(|s| s.demand_chance < 1.0).unwrap_or(1)];
    for i in picks {
        let s = &sim.series[i];
        let docs = tally_store::ledger::DocumentStore::documents(
            &forecast.store,
            vec![tally_forecast_engine::records::forecast_doc(&s.sku, &s.location)],
        )
        .await?;
        let Some(record) = docs.first().and_then(|(_, _, body)| serde_json::from_str::<ForecastRecord>(body).ok())
        else {
            continue;
        };
        print_series(&record);
    }
    let body: serde_json::Value = reqwest::get(format!("{url}/v1/forecast/suggestions?limit=5")).await?.json().await?;
    println!();
    println!("  most urgent reorders (GET {url}/v1/forecast/suggestions?limit=5):");
    println!(
        "    {:<12} {:<8} {:>8} {:>9} {:>8} {:>9} {:>8}",
        "sku", "location", "on hand", "cover (d)", "reorder", "order qty", "P(out)"
    );
    for r in body["suggestions"].as_array().into_iter().flatten() {
        let s = &r["suggestion"];
        println!(
            "    {:<12} {:<8} {:>8} {:>9} {:>8.0} {:>9} {:>7.0}%",
            r["sku"].as_str().unwrap_or_default(),
            r["location"].as_str().unwrap_or_default(),
            s["on_hand"].as_i64().unwrap_or_default(),
            s["days_of_cover"].as_f64().map_or_else(|| "-".to_owned(), |d| format!("{d:.1}")),
            s["reorder_point"].as_f64().unwrap_or_default(),
            s["order_quantity"].as_i64().unwrap_or_default(),
            s["stockout_probability"].as_f64().unwrap_or_default() * 100.0
        );
    }
    Ok(())
}

fn print_run(run: &RunSummary, took: Duration) {
    println!(
        "  forecast run {}   {} series in {:.2} s, as of {}, model version {}",
        run.run_id,
        run.series,
        took.as_secs_f64(),
        run.as_of,
        run.model_version
    );
}

fn print_series(r: &ForecastRecord) {
    println!();
    println!(
        "  {} at {} — {} (next-day σ {:.1}); suggestion: order {} (reorder point {:.0}, safety stock {:.0}, lead time {:.1} d)",
        r.sku,
        r.location,
        r.method,
        r.sigma_daily,
        r.suggestion.order_quantity,
        r.suggestion.reorder_point,
        r.suggestion.safety_stock,
        r.suggestion.lead_time_days
    );
    println!("    {:<11} {:>7} {:>7} {:>7}   80 % band (p10 … p90, | the mean)", "day", "p10", "mean", "p90");
    let band = |d: &tally_forecast_engine::records::ForecastDay| {
        (d.quantiles.get("p10").copied().unwrap_or(0.0), d.quantiles.get("p90").copied().unwrap_or(0.0))
    };
    let top = r.days.iter().take(7).map(|d| band(d).1).fold(1e-9, f64::max);
    let scale = 48.0 / top;
    for d in r.days.iter().take(7) {
        let (lo, hi) = band(d);
        let at = |v: f64| (v * scale).round() as usize;
        let bar: String = (0..=at(hi))
            .map(|i| {
                if i < at(lo) {
                    ' '
                } else if i == at(d.mean) {
                    '|'
                } else {
                    '-'
                }
            })
            .collect();
        println!("    {:<11} {:>7.1} {:>7.1} {:>7.1}   {bar}", d.day, lo, d.mean, hi);
    }
}
