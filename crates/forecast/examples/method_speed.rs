//! Time per series of each method and of the per-series choice, on the held-out series of
//! `tests/reference.json` (two years of daily demand, busy and slow; a 120-day series), fitted
//! on all but their last four weeks — what `docs/forecast.md` and `docs/benchmarks.md` quote.
//!
//! ```sh
//! cargo run --release -p tally-forecast --example method_speed
//! ```

use std::time::{Duration, Instant};

use serde_json::Value;
use tally_forecast::Method;
use tally_forecast::select::{self, Config};

const ROUNDS: u32 = 20;

fn per_series(f: impl Fn()) -> Duration {
    f(); // warm-up
    let started = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    started.elapsed() / ROUNDS
}

fn main() {
    let reference: Value = serde_json::from_str(include_str!("../tests/reference.json")).expect("reference.json");
    let methods = [
        Method::SeasonalNaive { period: 7 },
        Method::CrostonSba,
        Method::AutoEts { period: 7 },
        Method::AutoTheta { period: 7 },
        Method::Mstl { period: 7, yearly: true },
    ];
    for (name, s) in reference["holdout"].as_object().expect("holdout") {
        let y: Vec<f64> = s["y"].as_array().expect("y").iter().map(|v| v.as_f64().expect("number")).collect();
        let train = &y[..y.len() - 28];
        let mut line = format!("{name} ({} days):", train.len());
        for method in methods {
            let took = per_series(|| {
                std::hint::black_box(method.forecast(train, 28));
            });
            line.push_str(&format!("  {} {:.2} ms", method.name(), took.as_secs_f64() * 1000.0));
        }
        let took = per_series(|| {
            std::hint::black_box(select::choose(train, Config::default()));
        });
        line.push_str(&format!("  | choice (2-fold backtest + fit) {:.2} ms", took.as_secs_f64() * 1000.0));
        println!("{line}");
    }
}
