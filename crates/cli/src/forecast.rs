//! `tally forecast import`: demand history from CSV or Parquet into the staging tables (see
//! `tally_forecast_engine::import`), with the rate it loaded at.

use std::time::{Duration, Instant};

use tally_config::Config;
use tally_store::Ledger;

/// Arguments of `tally forecast import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The CSV or Parquet file (told apart by Parquet's magic bytes; columns: type, sku,
    /// location, quantity, occurred_at | ordered_at + received_at; optional unit, unit_price,
    /// promo, id).
    pub file: std::path::PathBuf,
    /// Idempotency source of the rows (default `/import/<file name>/<hash of its contents>`):
    /// importing the same rows again under the same source stages nothing twice.
    #[arg(long)]
    pub source: Option<String>,
}

/// Runs the import.
pub async fn import(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    let store = tally_server::app::open_forecast_store(&config)?.documents(tally_server::app::FORECAST_SUBSYSTEM);
    if config.store.migrate_on_start() {
        store.migrate().await?;
    }
    let bytes = std::fs::read(&args.file).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    // By default the source names the file and its contents: another file of the same name
    // (next month's `sales.csv`) is new data, the same file again is not.
    let source = args.source.clone().unwrap_or_else(|| {
        format!(
            "/import/{}/{:016x}",
            args.file.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            tally_core::fnv1a(bytes.iter().copied())
        )
    });
    let references = tally_forecast_engine::References::new(Duration::from_secs(config.forecast.reference_ttl_seconds));
    let started = Instant::now();
    let done = if bytes.starts_with(b"PAR1") {
        let file = std::fs::File::open(&args.file).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
        tally_forecast_engine::import::import_parquet(&store, &references, &source, file).await?
    } else {
        tally_forecast_engine::import::import_csv(&store, &references, &source, bytes.as_slice()).await?
    };
    let took = started.elapsed().as_secs_f64();
    println!(
        "imported {}: {} rows in {took:.2} s ({:.0} rows/s) — {} staged, {} parked (reference data missing; staged once it arrives), {} refused",
        args.file.display(),
        done.rows,
        done.rows as f64 / took.max(1e-9),
        done.staged,
        done.parked,
        done.refused_count
    );
    for (line, reason) in done.refused.iter().take(20) {
        println!("  line {line}: {reason}");
    }
    anyhow::ensure!(done.refused_count == 0, "{} rows were refused (the others are staged)", done.refused_count);
    Ok(())
}
