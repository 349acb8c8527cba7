"""statsforecast on exactly the series and cut tally is measured on (issue 11).

Reads `train.csv` and `test.csv` (columns unique_id, ds, y; ds a day number), fits
statsforecast's SeasonalNaive, AutoETS, AutoTheta, MSTL(7), CrostonOptimized (season length 7)
on the training days, forecasts the test days (80 % intervals where the model has them), and
prints one JSON object: per model WAPE, MASE, bias, 80 % coverage and fit-and-forecast seconds;
the best single model (least WAPE over all series); and the per-series choice by statsforecast's
own cross-validation (the same folds as tally's: `windows` windows of `horizon` days at the end
of the training days, `step` days apart, MAE), scored on the test days.

    python compare.py train.csv test.csv --horizon 28 --windows 2 [--step 28] [--n-jobs 1]
"""

import argparse
import json
import time

import numpy as np
import pandas as pd
from statsforecast import StatsForecast
from statsforecast.models import MSTL, AutoETS, AutoTheta, CrostonOptimized, SeasonalNaive

LEVEL = 80


def models(m):
    return {
        "SeasonalNaive": SeasonalNaive(season_length=m),
        "AutoETS": AutoETS(season_length=m),
        "AutoTheta": AutoTheta(season_length=m),
        "MSTL": MSTL(season_length=m),
        "CrostonOptimized": CrostonOptimized(),
    }


def frame(path):
    df = pd.read_csv(path)
    df["ds"] = pd.to_datetime(df["ds"], unit="D")
    return df


def scores(train, test, forecast, m):
    """WAPE, MASE (seasonal naive scale), bias, 80 % coverage of one model's forecast column."""
    joined = test.merge(forecast, on=["unique_id", "ds"])
    a, f = joined["y"].to_numpy(), joined["f"].to_numpy()
    total = np.abs(a).sum()
    wape = float(np.abs(a - f).sum() / total) if total > 0 else None
    bias = float((f - a).sum() / total) if total > 0 else None
    coverage = None
    if "lo" in joined and joined["lo"].notna().all():
        coverage = float(((joined["lo"] <= a) & (a <= joined["hi"])).mean())
    mases = []
    for uid, g in joined.groupby("unique_id"):
        h = train.loc[train["unique_id"] == uid, "y"].to_numpy()
        if len(h) <= m:
            continue
        scale = np.abs(h[m:] - h[:-m]).mean()
        if scale > 0:
            mases.append(np.abs(g["y"].to_numpy() - g["f"].to_numpy()).mean() / scale)
    return {"wape": wape, "mase": float(np.mean(mases)) if mases else None, "bias": bias, "coverage_80": coverage}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("train")
    p.add_argument("test")
    p.add_argument("--horizon", type=int, default=28)
    p.add_argument("--windows", type=int, default=2)
    p.add_argument("--step", type=int, default=None, help="days between fold origins (default: the horizon)")
    p.add_argument("--season", type=int, default=7)
    p.add_argument("--n-jobs", type=int, default=1)
    a = p.parse_args()
    train, test = frame(a.train), frame(a.test)
    out = {"series": int(train["unique_id"].nunique()), "models": {}}
    forecasts = {}
    for name, model in models(a.season).items():
        sf = StatsForecast(models=[model], freq="D", n_jobs=a.n_jobs)
        started = time.perf_counter()
        try:
            fc = sf.forecast(df=train, h=a.horizon, level=[LEVEL])
        except Exception:  # models without intervals (Croston)
            fc = sf.forecast(df=train, h=a.horizon)
        seconds = time.perf_counter() - started
        fc = fc.reset_index() if "unique_id" not in fc.columns else fc
        col = [c for c in fc.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
        f = pd.DataFrame({"unique_id": fc["unique_id"], "ds": fc["ds"], "f": fc[col]})
        if f"{col}-lo-{LEVEL}" in fc.columns:
            f["lo"] = fc[f"{col}-lo-{LEVEL}"].clip(lower=0)
            f["hi"] = fc[f"{col}-hi-{LEVEL}"]
        forecasts[name] = f
        out["models"][name] = {**scores(train, test, f, a.season), "seconds": seconds}
    best = min(out["models"], key=lambda k: out["models"][k]["wape"] if out["models"][k]["wape"] is not None else 1e9)
    out["best_single"] = {"model": best, **out["models"][best]}

    # The per-series choice by statsforecast's own cross-validation (same folds as tally's).
    started = time.perf_counter()
    sf = StatsForecast(models=list(models(a.season).values()), freq="D", n_jobs=a.n_jobs)
    cv = sf.cross_validation(df=train, h=a.horizon, n_windows=a.windows, step_size=a.step or a.horizon)
    cv = cv.reset_index() if "unique_id" not in cv.columns else cv
    names = [c for c in cv.columns if c not in ("unique_id", "ds", "cutoff", "y")]
    mae = cv.groupby("unique_id")[["y", *names]].apply(lambda g: pd.Series({n: np.abs(g["y"] - g[n]).mean() for n in names}))
    pick = mae.idxmin(axis=1)
    label = {type(m).__name__ if not hasattr(m, "alias") else m.alias: k for k, m in models(a.season).items()}
    chosen = []
    for uid, model_name in pick.items():
        key = label.get(model_name, model_name)
        f = forecasts[key]
        chosen.append(f[f["unique_id"] == uid])
    chosen = pd.concat(chosen)
    out["choice_by_cv"] = {**scores(train, test, chosen, a.season), "cv_seconds": time.perf_counter() - started}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
