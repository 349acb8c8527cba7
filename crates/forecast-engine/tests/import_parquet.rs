//! `tally forecast import` from Parquet: a file pyarrow writes with native types (timestamps,
//! integers, booleans, strings) stages exactly what the same rows as CSV stage; importing it
//! again stages nothing twice; a bad row is refused by its row number.

mod common;

use common::*;

const CSV: &str = "type,sku,location,quantity,unit,occurred_at,ordered_at,received_at,promo,id\n\
    sale,milk,berlin,3,,2026-03-10T10:00:00.000Z,,,true,a\n\
    sale,milk,berlin,2,pack,2026-03-10T22:30:00.000Z,,,false,b\n\
    return,milk,berlin,1,,2026-03-11T09:00:00.000Z,,,false,c\n\
    supply,milk,berlin,60,,,2026-03-01T08:00:00.000Z,2026-03-05T08:00:00.000Z,false,d\n\
    sale,bread,berlin,4,,2026-03-10T10:00:00.000Z,,,false,e\n";

/// The same rows as CSV, written by pyarrow with typed columns, plus a row with a zero quantity.
const WRITE_PARQUET: &str = r#"
import sys
from datetime import datetime, timezone
import pyarrow as pa, pyarrow.parquet as pq
t = lambda s: datetime.fromisoformat(s).replace(tzinfo=timezone.utc) if s else None
rows = [
    ("sale", "milk", 3, None, "2026-03-10T10:00:00", None, None, True, "a"),
    ("sale", "milk", 2, "pack", "2026-03-10T22:30:00", None, None, False, "b"),
    ("return", "milk", 1, None, "2026-03-11T09:00:00", None, None, False, "c"),
    ("supply", "milk", 60, None, None, "2026-03-01T08:00:00", "2026-03-05T08:00:00", False, "d"),
    ("sale", "bread", 4, None, "2026-03-10T10:00:00", None, None, False, "e"),
    ("sale", "milk", 0, None, "2026-03-10T10:00:00", None, None, False, "f"),
]
ts = pa.timestamp("ms", tz="UTC")
table = pa.table({
    "type": [r[0] for r in rows], "sku": [r[1] for r in rows], "location": ["berlin"] * len(rows),
    "quantity": pa.array([r[2] for r in rows], pa.int64()), "unit": [r[3] for r in rows],
    "occurred_at": pa.array([t(r[4]) for r in rows], ts), "ordered_at": pa.array([t(r[5]) for r in rows], ts),
    "received_at": pa.array([t(r[6]) for r in rows], ts), "promo": [r[7] for r in rows], "id": [r[8] for r in rows],
})
pq.write_table(table, sys.argv[1])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_import_stages_what_the_same_rows_as_csv_stage() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("history.parquet");
    let out = std::process::Command::new(venv_python())
        .args(["-c", WRITE_PARQUET, file.to_str().expect("path")])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "pyarrow: {}", String::from_utf8_lossy(&out.stderr));

    let (from_csv, from_parquet) = (dir.path().join("csv"), dir.path().join("parquet"));
    std::fs::create_dir_all(&from_csv).expect("dir");
    std::fs::create_dir_all(&from_parquet).expect("dir");
    let (a, b) = (stack(&from_csv).await, stack(&from_parquet).await);
    for s in [&a, &b] {
        s.engine
            .put_references(vec![sku("milk", 6)], vec![location("berlin", "Europe/Berlin")])
            .await
            .expect("references");
    }
    let csv = tally_forecast_engine::import::import_csv(&a.engine.store, &a.engine.references, "/h", CSV.as_bytes())
        .await
        .expect("csv import");
    assert_eq!((csv.staged, csv.parked, csv.refused_count), (4, 1, 0), "{csv:?}");
    let import = || async {
        let f = std::fs::File::open(&file).expect("open");
        tally_forecast_engine::import::import_parquet(&b.engine.store, &b.engine.references, "/h", f)
            .await
            .expect("parquet import")
    };
    let parquet = import().await;
    assert_eq!((parquet.rows, parquet.staged, parquet.parked, parquet.refused_count), (6, 4, 1, 1), "{parquet:?}");
    assert_eq!(parquet.refused[0].0, 6, "the zero-quantity row, by row number: {:?}", parquet.refused);
    let staged = rollup(&b.engine.store).await;
    assert!(!staged.is_empty());
    assert_eq!(staged, rollup(&a.engine.store).await, "Parquet and CSV stage the same");
    import().await;
    assert_eq!(rollup(&b.engine.store).await, staged, "imported twice, staged once");
    a.stop().await;
    b.stop().await;
}
