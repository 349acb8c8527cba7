"""Reference values from Nixtla's statsforecast for tally's forecasting methods.

Writes crates/forecast/tests/reference.json: a few fixed series and what statsforecast 2.1
forecasts for them, so `cargo test -p tally-forecast` checks tally's methods against the peer
without Python at test time. Run with a venv holding statsforecast (scripts/forecast/requirements.txt):

    python scripts/forecast/reference.py > crates/forecast/tests/reference.json
"""

import json
import math

import numpy as np
from statsforecast.models import (
    ADIDA,
    AutoETS,
    AutoTheta,
    IMAPA,
    TSB,
    CrostonClassic,
    CrostonOptimized,
    CrostonSBA,
    MSTL,
    SeasonalNaive,
)


def series():
    """Deterministic series: weekly-seasonal with trend, intermittent, short and lumpy."""
    n = 120
    smooth = [
        round(20 + 0.05 * t + 6 * math.sin(2 * math.pi * t / 7) + 3 * math.cos(2 * math.pi * t / 7 * 2) + ((t * 7919) % 13 - 6) * 0.5, 3)
        for t in range(n)
    ]
    intermittent = [float(((t * 2654435761) >> 7) % 9) if ((t * 40503) % 11) < 3 else 0.0 for t in range(n)]
    lumpy = [float((t * 97) % 41) if t % 6 == 0 else 0.0 for t in range(60)]
    short = [3.0, 0.0, 5.0, 2.0, 0.0, 0.0, 7.0, 1.0, 0.0, 4.0]
    return {"smooth": smooth, "intermittent": intermittent, "lumpy": lumpy, "short": short}


def holdout_series():
    """Two years of daily demand, seeded: weekly and yearly season, a slow trend, Poisson noise."""
    rng = np.random.default_rng(7)
    t = np.arange(730)
    weekly = np.array([1.25, 0.85, 0.9, 0.95, 1.05, 1.3, 0.7])
    out = {}
    for name, level in [("retail_busy", 60.0), ("retail_slow", 4.0)]:
        rate = level * weekly[t % 7] * (1 + 0.2 * np.sin(2 * np.pi * t / 365.25)) * (1 + 0.0004 * t)
        out[name] = rng.poisson(rate).astype(float).tolist()
    return out


def main():
    h = 14
    out = {"h": h, "series": {}}
    for name, y in series().items():
        arr = np.asarray(y, dtype=np.float64)
        got = {}
        sn = SeasonalNaive(season_length=7).forecast(y=arr, h=h, level=[80])
        got["seasonal_naive"] = {"mean": sn["mean"].tolist(), "lo_80": sn["lo-80"].tolist(), "hi_80": sn["hi-80"].tolist()}
        for key, model in [
            ("croston_classic", CrostonClassic()),
            ("croston_optimized", CrostonOptimized()),
            ("croston_sba", CrostonSBA()),
            ("tsb", TSB(alpha_d=0.1, alpha_p=0.1)),
            ("adida", ADIDA()),
            ("imapa", IMAPA()),
        ]:
            got[key] = {"mean": model.forecast(y=arr, h=h)["mean"].tolist()}
        out["series"][name] = {"y": y, "forecasts": got}
    # AutoETS, AutoTheta and MSTL (weekly) on a held-out final four weeks: the accuracy tally's are held to.
    out["holdout"] = {}
    for name, y in {**holdout_series(), "smooth": series()["smooth"]}.items():
        arr = np.asarray(y, dtype=np.float64)
        train, test = arr[:-28], arr[-28:]
        model = AutoETS(season_length=7).fit(train)
        fc = model.predict(h=28, level=[80])
        theta = AutoTheta(season_length=7).forecast(y=train, h=28, level=[80])
        mstl = MSTL(season_length=7).forecast(y=train, h=28, level=[80])
        out["holdout"][name] = {
            "y": y,
            "h": 28,
            "auto_ets": {
                "model": model.model_["method"],
                "mean": fc["mean"].tolist(),
                "lo_80": fc["lo-80"].tolist(),
                "hi_80": fc["hi-80"].tolist(),
            },
            "auto_theta": {
                "mean": theta["mean"].tolist(),
                "lo_80": theta["lo-80"].tolist(),
                "hi_80": theta["hi-80"].tolist(),
            },
            "mstl": {
                "mean": mstl["mean"].tolist(),
                "lo_80": mstl["lo-80"].tolist(),
                "hi_80": mstl["hi-80"].tolist(),
            },
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
