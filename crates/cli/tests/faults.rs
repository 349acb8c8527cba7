//! Fault injection on the production stack (Kafka + PostgreSQL + Redis, the servers
//! `scripts/test.sh` starts): while `tally serve` consumes a stream, the broker is paused, the
//! database restarted, Redis flushed. Afterwards the stored state and the API must equal the
//! oracle — nothing lost, nothing applied twice.
//!
//! These tests disturb the shared servers, so they live in a test binary of their own (cargo
//! runs test binaries one at a time) and run one after another.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, env, kafka_bus};
use tally_bus::{Bus, KafkaBus};
use tally_core::Envelope;
use tally_sim::{SimConfig, Simulator};
use tally_store::Ledger;

const PARTITIONS: u32 = 4;

/// One fault at a time: they act on servers every test shares.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn services_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env("TEST_TALLY_SERVICES_DIR"))).unwrap().trim().to_owned()
}

/// A deployment on fresh topics, group, database and key prefix.
struct Stack {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    cfg: tally_config::Config,
    bus: KafkaBus,
    store: tally_store::AnyStore,
    sim: Simulator,
    log: Vec<Envelope>,
}

impl Stack {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = uuid::Uuid::new_v4().simple().to_string();
        let brokers = env("TEST_TALLY_KAFKA_BROKERS");
        let pg = tally_store::postgres::testing::fresh_database().await;
        let config = dir.path().join("tally.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
                 [bus]\nkind = \"kafka\"\nbrokers = {brokers:?}\npartitions = {PARTITIONS}\n\
                 [store]\nkind = \"postgres\"\nurl = {pg:?}\nacquire_timeout_ms = 1000\n\
                 [cache]\nkind = \"redis\"\nurl = {redis:?}\nkey_prefix = \"faults:{run}:\"\n\
                 [inventory]\nconsumer_group = \"faults-{run}\"\nflush_interval_ms = 30\npoll_max_records = 200\n\
                 [inventory.topics]\nevents = \"inventory.events.{run}\"\n\
                 availability = \"inventory.availability.{run}\"\noutcomes = \"inventory.outcomes.{run}\"\n",
                redis = env("TEST_TALLY_REDIS_URL"),
            ),
        )
        .unwrap();
        let cfg = tally_config::Config::load(Some(&config), Vec::new()).unwrap();
        let store = tally_server::app::open_store(&cfg).unwrap();
        store.migrate().await.unwrap();
        let bus = kafka_bus(&brokers, "faults-test");
        bus.create_topic(&cfg.inventory.topics.events, PARTITIONS).await.unwrap();
        let sim = Simulator::new(SimConfig {
            seed: 11,
            skus: 150,
            duplicate_rate: 0.1,
            poison_rate: 0.0,
            reservation_ttl_seconds: None,
            fixed_clock: true,
            ..SimConfig::default()
        });
        Self { _dir: dir, config, cfg, bus, store, sim, log: Vec::new() }
    }

    /// Publishes `n` more events, retrying a failed batch until it is acknowledged (a retried
    /// batch may land twice; the engine drops the copies).
    async fn publish(&mut self, n: usize) {
        let topic = self.cfg.inventory.topics.events.clone();
        let batch = self.sim.next_batch(n);
        for chunk in batch.chunks(500) {
            let deadline = Instant::now() + Duration::from_secs(60);
            while let Err(e) = self.bus.publish(&topic, chunk.iter().map(tally_cli::driver::record).collect()).await {
                assert!(Instant::now() < deadline, "publishing kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.log.extend(batch);
    }

    /// Publishes `n` more events spread over `over`, in the background, so a fault lands while
    /// records are still arriving and being applied.
    fn publish_in_background(&mut self, n: usize, over: Duration) -> tokio::task::JoinHandle<()> {
        let (bus, topic) = (self.bus.clone(), self.cfg.inventory.topics.events.clone());
        let batch = self.sim.next_batch(n);
        self.log.extend(batch.clone());
        let chunks = batch.len().div_ceil(200);
        let pause = over / u32::try_from(chunks.max(1)).unwrap_or(1);
        tokio::spawn(async move {
            for chunk in batch.chunks(200) {
                let deadline = Instant::now() + Duration::from_secs(60);
                while let Err(e) = bus.publish(&topic, chunk.iter().map(tally_cli::driver::record).collect()).await {
                    assert!(Instant::now() < deadline, "publishing kept failing: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(pause).await;
            }
        })
    }

    async fn applied(&self) -> u64 {
        let (group, topic) = (&self.cfg.inventory.consumer_group, &self.cfg.inventory.topics.events);
        let mut total = 0;
        for p in 0..PARTITIONS {
            // The store may be down for a moment: count what can be read.
            total += self.store.committed_offset(group, topic, p).await.ok().flatten().unwrap_or(0);
        }
        total
    }

    /// Waits until the engine has applied at least `n` records of the log.
    async fn wait_applied(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.applied().await < n {
            assert!(Instant::now() < deadline, "applied {} of {n}", self.applied().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The store and the API agree with the oracle.
    async fn assert_exactly_once(&self, server: &Server) {
        let rules = tally_inventory_engine::channel_rules(&self.cfg.inventory);
        let expected = common::assert_store_matches_oracle(&self.store, &self.log, &rules).await;
        let client = reqwest::Client::new();
        for sku in expected.keys().take(20) {
            let body: serde_json::Value =
                client.get(format!("{}/v1/stock/{sku}", server.url)).send().await.unwrap().json().await.unwrap();
            let want: Vec<i64> = expected[sku].availability(&rules).iter().map(|a| a.available_to_sell).collect();
            let got: Vec<i64> =
                body["channels"].as_array().unwrap().iter().map(|c| c["available_to_sell"].as_i64().unwrap()).collect();
            assert_eq!(got, want, "the API serves the truth for {sku}");
        }
    }
}

/// Runs a stream through a fresh deployment, injects `fault` while records are still arriving,
/// then checks exactly-once effects in the store and through the API.
async fn survives(fault: impl AsyncFnOnce(&Stack)) {
    let _one_at_a_time = SERIAL.lock().await;
    let mut stack = Stack::new().await;
    let server = Server::start(&stack.config);
    stack.publish(2_000).await;
    let stream = stack.publish_in_background(6_000, Duration::from_secs(6));
    stack.wait_applied(2_500).await;
    fault(&stack).await;
    let during = stack.applied().await;
    stream.await.unwrap();
    assert!(during < stack.log.len() as u64, "the fault hit the stream ({during} applied)");
    stack.wait_applied(stack.log.len() as u64).await;
    stack.assert_exactly_once(&server).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_unavailable_for_a_while_then_back_loses_nothing() {
    survives(async |_| {
        // SIGSTOP: the broker keeps its data but answers nothing, like a network partition.
        let broker = services_file("kafka/broker.pid");
        Command::new("kill").args(["-STOP", &broker]).status().unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        Command::new("kill").args(["-CONT", &broker]).status().unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_nothing() {
    survives(async |_| {
        let (bin, data) = (env("TEST_TALLY_POSTGRES_BIN"), env("TEST_TALLY_POSTGRES_DATA"));
        let mut restart = Command::new(format!("{bin}/pg_ctl"));
        if is_root() {
            restart = Command::new("runuser");
            restart.args(["-u", "postgres", "--", &format!("{bin}/pg_ctl")]);
        }
        let status = restart.args(["-D", &data, "-m", "fast", "-w", "restart"]).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "pg_ctl restart");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_under_load_keeps_reads_correct() {
    // Afterwards, reads of SKUs not touched since the flush come from PostgreSQL.
    survives(async |_| {
        let flushed =
            Command::new("redis-cli").args(["-u", &env("TEST_TALLY_REDIS_URL"), "FLUSHALL"]).output().unwrap();
        assert!(flushed.status.success(), "redis-cli FLUSHALL");
    })
    .await;
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_load_keeps_reads_correct() {
    survives(async |_| {
        let url = env("TEST_TALLY_REDIS_URL");
        let port = url.rsplit(':').next().unwrap().to_owned();
        // SHUTDOWN closes the connection, so its own exit status says nothing; PING does.
        let _ = Command::new("redis-cli").args(["-u", &url, "SHUTDOWN", "NOSAVE"]).output().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ping = Command::new("redis-cli").args(["-u", &url, "PING"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&ping.stdout).contains("PONG"), "Redis is down during the fault");
        let dir = format!("{}/redis", env("TEST_TALLY_SERVICES_DIR"));
        let up = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port, "--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .args(["--dir", &dir, "--pidfile", &format!("{dir}/redis.pid"), "--logfile", &format!("{dir}/redis.log")])
            .status()
            .unwrap();
        assert!(up.success(), "redis-server restarted");
    })
    .await;
}
