//! Forecasting reads its series from a read replica when `forecast.replica_url` is set: a real
//! PostgreSQL hot standby (a primary and its standby made for this test with the test server's
//! binaries, `pg_basebackup -R`, streaming replication on loopback). With the standby's replay
//! paused, a refresh sees only what the standby has — proof that the reads go there — and once
//! replay resumes, it sees the rest. Writes (forecasts) land on the primary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tally_forecast_engine::RunKind;
use tally_server::App;
use tally_server::app::Role;
use tally_store::demand::{DemandEffects, DemandStore, StagedRow};
use tally_store::ledger::{DocumentStore, Journal};

/// A throwaway PostgreSQL cluster; stopped when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    // initdb and the server refuse to run as root: the cluster belongs to `postgres` then.
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A directory the `postgres` user may own (under /tmp, like scripts/services.sh's).
fn cluster_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tally-replica-{}-{}-{name}", std::process::id(), tally_core::now_ms()));
    std::fs::create_dir_all(&dir).expect("dir");
    if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n")) {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres"]).arg(&dir);
                c
            },
            "chown",
        );
    }
    dir
}

impl Cluster {
    fn start(bin: &Path, data: PathBuf, port: u16) -> Self {
        let socket_dir = data.parent().expect("parent").to_path_buf();
        let mut c = as_postgres(bin, "pg_ctl");
        c.arg("-D").arg(&data).arg("-l").arg(data.with_extension("log")).args(["-w", "-o"]).arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=replica -c max_wal_senders=4 -c hot_standby=on",
            socket_dir.display()
        ));
        c.arg("start");
        run(c, "pg_ctl start");
        Self { bin: bin.to_path_buf(), data, port }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]);
        let _ = c.output();
        let _ = std::fs::remove_dir_all(self.data.parent().expect("parent"));
    }
}

/// A primary and its streaming hot standby.
fn primary_and_standby() -> (Cluster, Cluster) {
    let bin = PathBuf::from(
        std::env::var("TEST_TALLY_POSTGRES_BIN")
            .expect("TEST_TALLY_POSTGRES_BIN is not set: run the tests with scripts/test.sh, which finds PostgreSQL"),
    );
    let primary_dir = cluster_dir("primary").join("data");
    let mut init = as_postgres(&bin, "initdb");
    init.arg("-D").arg(&primary_dir).args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]);
    run(init, "initdb");
    let primary = Cluster::start(&bin, primary_dir, free_port());
    let standby_dir = cluster_dir("standby").join("data");
    let mut backup = as_postgres(&bin, "pg_basebackup");
    backup.arg("-D").arg(&standby_dir).args(["-R", "-X", "stream", "-h", "127.0.0.1", "-U", "postgres"]);
    backup.args(["-p", &primary.port.to_string()]);
    run(backup, "pg_basebackup");
    let standby = Cluster::start(&bin, standby_dir, free_port());
    (primary, standby)
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await.expect(sql)
}

fn sale(sku: &str, day: i32, units: i64) -> StagedRow {
    StagedRow {
        source: "/test".into(),
        id: format!("{sku}-{day}"),
        kind: "sale".into(),
        sku: sku.into(),
        location: "berlin".into(),
        day,
        units,
        revenue: 0.0,
        promo: false,
        lead_time_days: None,
        event_time_ms: i64::from(day) * 86_400_000,
        topic: "test".into(),
        partition: 0,
        offset: day as u64,
    }
}

async fn stage(store: &impl Journal<DemandEffects>, rows: Vec<StagedRow>) {
    let effects = DemandEffects { staged: rows, parked: Vec::new() };
    store.flush(&[tally_store::Flush { effects, processed: Vec::new(), offsets: Vec::new() }]).await.expect("stage");
}

/// Waits until the standby's rollup has `rows` rows.
async fn replicated(standby: &str, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar(standby, "SELECT count(*) FROM demand_daily").await != rows {
        assert!(Instant::now() < deadline, "the standby did not replay to {rows} rollup rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_read_their_series_from_the_replica() {
    let (primary, standby) = primary_and_standby();
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = common::config(dir.path(), tally_config::AuthMode::Keys);
    config.store = tally_config::StoreConfig::Postgres {
        url: tally_config::Secret::new(primary.url()),
        max_connections: 8,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 10_000,
        migrate_on_start: true,
    };
    config.forecast.replica_url = Some(tally_config::Secret::new(standby.url()));
    config.forecast.model = tally_config::ForecastModel::Direct;
    config.forecast.refresh_interval_seconds = 86_400;
    let app = App::new(config).start(Role::Forecast).await.expect("start");
    let engine = app.forecast.clone();

    let start = tally_forecast::day::from_civil(2026, 1, 1);
    stage(&engine.store, (0..90).map(|d| sale("seen", start + d, 5 + i64::from(d % 7))).collect()).await;
    replicated(&standby.url(), 90).await;
    scalar(&standby.url(), "SELECT count(*) FROM (SELECT pg_wal_replay_pause()) AS p").await;
    // On the primary only, while the standby's replay is paused: a new series and a new day.
    stage(&engine.store, (0..90).map(|d| sale("unseen", start + d, 3)).collect()).await;
    stage(&engine.store, vec![sale("seen", start + 90, 9)]).await;
    assert_eq!(scalar(&primary.url(), "SELECT count(*) FROM demand_daily").await, 181);

    let run = engine.start_run("manual-replica-1".into(), RunKind::Manual).await.expect("run").expect("data");
    assert_eq!(run.as_of, start + 89, "the last day as the replica has it, not the primary's");
    let series = engine.owned_series(None).await.expect("series");
    assert_eq!(series, vec![("seen".to_owned(), "berlin".to_owned())], "only the replica's series");
    let summary = engine.run_share(&run, series, "all").await.expect("refresh");
    assert_eq!(summary.series, 1);
    // The forecast went to the primary.
    let written = engine.store.documents(vec!["forecast/seen@berlin".to_owned()]).await.expect("read");
    assert_eq!(written.len(), 1);

    scalar(&standby.url(), "SELECT count(*) FROM (SELECT pg_wal_replay_resume()) AS p").await;
    replicated(&standby.url(), 181).await;
    let run = engine.start_run("manual-replica-2".into(), RunKind::Manual).await.expect("run").expect("data");
    assert_eq!(run.as_of, start + 90);
    let series = engine.owned_series(None).await.expect("series");
    assert_eq!(series.len(), 2);
    assert_eq!(engine.run_share(&run, series, "all").await.expect("refresh").series, 2);
    assert!(engine.reads.histories(vec![("unseen".into(), "berlin".into())]).await.expect("read")[0].daily.len() == 90);
    app.shutdown().await;
}
