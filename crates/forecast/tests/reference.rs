//! tally's methods against statsforecast 2.1 on the same series: `reference.json` is written by
//! `scripts/forecast/reference.py` (statsforecast's own output, committed).

use serde_json::Value;
use tally_forecast::Method;

const TOLERANCE: f64 = 1e-6;

fn reference() -> Value {
    serde_json::from_str(include_str!("reference.json")).expect("reference.json")
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= TOLERANCE * w.abs().max(1.0), "{what}[{i}]: tally {g}, statsforecast {w}");
    }
}

#[test]
fn every_method_forecasts_what_statsforecast_forecasts_for_the_same_series() {
    let r = reference();
    let h = r["h"].as_u64().expect("h") as usize;
    let methods = [
        ("croston_classic", Method::CrostonClassic),
        ("croston_optimized", Method::CrostonOptimized),
        ("croston_sba", Method::CrostonSba),
        ("tsb", Method::Tsb { alpha_d: 0.1, alpha_p: 0.1 }),
        ("adida", Method::Adida),
        ("imapa", Method::Imapa),
        ("seasonal_naive", Method::SeasonalNaive { period: 7 }),
    ];
    let series = r["series"].as_object().expect("series");
    assert!(series.len() >= 4);
    for (name, s) in series {
        let y = numbers(&s["y"]);
        for (key, method) in methods {
            let want = &s["forecasts"][key];
            let got = method.forecast(&y, h);
            close(&format!("{name}/{key} mean"), &got.mean, &numbers(&want["mean"]));
            if key == "seasonal_naive" && y.len() >= 7 {
                // statsforecast's 80 % interval = mean ± z·σ.
                let z = 1.281_551_565_544_600_4;
                let sigma = got.sigma.expect("sigma");
                let lo: Vec<f64> = got.mean.iter().zip(&sigma).map(|(m, s)| m - z * s).collect();
                let hi: Vec<f64> = got.mean.iter().zip(&sigma).map(|(m, s)| m + z * s).collect();
                close(&format!("{name}/{key} lo-80"), &lo, &numbers(&want["lo_80"]));
                close(&format!("{name}/{key} hi-80"), &hi, &numbers(&want["hi_80"]));
            }
        }
    }
}

/// `method`'s WAPE on each held-out series is within 5 % (+0.005) of statsforecast's `key`.
fn as_accurate_as_the_peer(method: Method, key: &str) {
    let r = reference();
    for (name, s) in r["holdout"].as_object().expect("holdout") {
        let y = numbers(&s["y"]);
        let h = s["h"].as_u64().expect("h") as usize;
        let (train, test) = y.split_at(y.len() - h);
        let ours = method.forecast(train, h);
        let wape = tally_forecast::accuracy::wape(test, &ours.mean).expect("wape");
        let peer_wape = tally_forecast::accuracy::wape(test, &numbers(&s[key]["mean"])).expect("wape");
        eprintln!("{name}: tally {} WAPE {wape:.4}; statsforecast {peer_wape:.4}", method.name());
        assert!(wape <= peer_wape * 1.05 + 0.005, "{name}: tally WAPE {wape} against statsforecast's {peer_wape}");
    }
}

#[test]
fn auto_theta_is_as_accurate_as_statsforecasts_on_held_out_weeks() {
    as_accurate_as_the_peer(Method::AutoTheta { period: 7 }, "auto_theta");
}

#[test]
fn mstl_is_as_accurate_as_statsforecasts_on_held_out_weeks() {
    as_accurate_as_the_peer(Method::Mstl { period: 7, yearly: false }, "mstl");
}

#[test]
fn auto_ets_is_as_accurate_as_statsforecasts_on_held_out_weeks() {
    let r = reference();
    let holdout = r["holdout"].as_object().expect("holdout");
    assert!(holdout.len() >= 3);
    for (name, s) in holdout {
        let y = numbers(&s["y"]);
        let h = s["h"].as_u64().expect("h") as usize;
        let (train, test) = y.split_at(y.len() - h);
        let started = std::time::Instant::now();
        let fit = tally_forecast::methods::ets::auto(train, 7).expect("a model");
        let took = started.elapsed();
        let ours = fit.forecast(h);
        let peer = numbers(&s["auto_ets"]["mean"]);
        let wape = tally_forecast::accuracy::wape(test, &ours.mean).expect("wape");
        let peer_wape = tally_forecast::accuracy::wape(test, &peer).expect("wape");
        let z = 1.281_551_565_544_600_4;
        let sigma = ours.sigma.expect("sigma");
        let lo: Vec<f64> = ours.mean.iter().zip(&sigma).map(|(m, s)| m - z * s).collect();
        let hi: Vec<f64> = ours.mean.iter().zip(&sigma).map(|(m, s)| m + z * s).collect();
        let coverage = tally_forecast::accuracy::coverage(test, &lo, &hi).expect("coverage");
        eprintln!(
            "{name}: tally {} WAPE {wape:.4} coverage {coverage:.2} in {took:?}; statsforecast {} WAPE {peer_wape:.4}",
            fit.spec.name(),
            s["auto_ets"]["model"]
        );
        assert!(wape <= peer_wape * 1.05 + 0.005, "{name}: tally WAPE {wape} against statsforecast's {peer_wape}");
    }
}
