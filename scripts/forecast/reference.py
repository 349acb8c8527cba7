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
    IMAPA,
    TSB,
    CrostonClassic,
    CrostonOptimized,
    CrostonSBA,
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
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
