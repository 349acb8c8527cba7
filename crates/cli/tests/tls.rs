//! The production stack over TLS: a Kafka-protocol broker (nisshi, also requiring a SASL
//! SCRAM-SHA-512 login), a PostgreSQL and a Redis that each accept only TLS connections, with
//! certificates from a throwaway CA, started by this test (with the binaries
//! `scripts/test.sh` found or built).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, env, kafka_bus, kafka_bus_with};
use tally_bus::Bus;
use tally_cache::{Cache, RedisCache, RedisCacheOptions};
use tally_store::{InventoryStore, Ledger, PostgresStore, PostgresStoreOptions};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A command run as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", program]);
        cmd
    } else {
        Command::new(program)
    }
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tally test CA",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        .unwrap();
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the cluster when the test ends.
struct PgCluster {
    bin: String,
    data: std::path::PathBuf,
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pg_ctl = format!("{}/pg_ctl", self.bin);
        let _ = as_postgres(&pg_ctl).arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
    }
}

fn start_postgres(dir: &Path, port: u16) -> PgCluster {
    let bin = env("TEST_TALLY_POSTGRES_BIN");
    let data = dir.join("pg");
    if is_root() {
        run(Command::new("chown").args(["-R", "postgres"]).arg(dir));
    }
    run(as_postgres(&format!("{bin}/initdb")).arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust"]));
    // TLS only: a plain connection finds no pg_hba entry.
    std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n").unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        dir.display(),
        cert.display(),
        key.display()
    );
    run(as_postgres(&format!("{bin}/pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("pg.log"))
        .args(["-w", "-o", &options, "start"]));
    PgCluster { bin, data }
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on its TLS port");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The SCRAM user the broker knows.
const KAFKA_USER: (&str, &str) = ("tally", "s3cret");

fn nisshi_broker(dir: &Path, port: u16, secure: bool) -> Killed {
    let mut cmd = Command::new(env("TEST_TALLY_NISSHI_BIN"));
    cmd.current_dir(dir)
        .arg("broker")
        .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args(["--advertised-listener-url", &format!("tcp://localhost:{port}")])
        // SCRAM users need a storage that keeps them (not memory://); the path is relative.
        .args(["--storage-engine", "sqlite://nisshi.db", "--group-initial-rebalance-delay", "100ms"]);
    if secure {
        cmd.args(["--authentication", "--cert"]).arg(dir.join("server.pem")).arg("--key").arg(dir.join("server.key"));
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_port(port, "nisshi");
    Killed(child)
}

/// A broker that accepts only TLS connections that log in with SCRAM-SHA-512. Its CLI cannot
/// log in, so the user is created on a plain start of the same storage first.
fn start_kafka(dir: &Path, port: u16) -> Killed {
    let plain = nisshi_broker(dir, port, false);
    run(Command::new(env("TEST_TALLY_NISSHI_BIN")).args([
        "user",
        "create",
        "--broker",
        &format!("tcp://127.0.0.1:{port}"),
        KAFKA_USER.0,
        KAFKA_USER.1,
    ]));
    drop(plain);
    nisshi_broker(dir, port, true)
}

fn start_redis(dir: &Path, port: u16) -> Killed {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(dir.join("server.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, "redis");
    Killed(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_runs_on_kafka_postgres_and_redis_that_require_tls_and_kafka_a_scram_login() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (pg_port, redis_port, kafka_port) = (free_port(), free_port(), free_port());
    let _pg = start_postgres(dir.path(), pg_port);
    let _redis = start_redis(dir.path(), redis_port);
    let _kafka = start_kafka(dir.path(), kafka_port);
    let ca = dir.path().join("ca.pem");
    let pg_url = |mode: &str| {
        format!("postgres://postgres@localhost:{pg_port}/postgres?sslmode={mode}&sslrootcert={}", ca.display())
    };

    // The store verifies the server's certificate against the CA given in the URL, and the
    // server refuses a client that does not use TLS.
    let options = |url: String| PostgresStoreOptions {
        url,
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    };
    let store = PostgresStore::connect(&options(pg_url("verify-full"))).unwrap();
    store.migrate().await.unwrap();
    assert!(
        PostgresStore::connect(&options(pg_url("disable"))).unwrap().ping().await.is_err(),
        "the server must refuse connections without TLS"
    );
    let plain_redis = RedisCache::connect(RedisCacheOptions {
        url: format!("redis://localhost:{redis_port}"),
        key_prefix: "tls:".into(),
        ttl: Duration::from_secs(60),
        timeout: Duration::from_secs(2),
    })
    .await;
    assert!(
        plain_redis.is_err() || plain_redis.unwrap().ping().await.is_err(),
        "a plain connection to Redis's TLS port must fail"
    );

    let plain_kafka = kafka_bus(&format!("localhost:{kafka_port}"), "tls-test");
    assert!(plain_kafka.ping().await.is_err(), "a plaintext Kafka client must not get metadata from a TLS listener");
    let sasl = |password: &str| {
        [
            ("security.protocol", "sasl_ssl".to_owned()),
            ("sasl.mechanism", "SCRAM-SHA-512".to_owned()),
            ("sasl.username", KAFKA_USER.0.to_owned()),
            ("sasl.password", password.to_owned()),
            ("ssl.ca.location", ca.display().to_string()),
        ]
    };
    let intruder = kafka_bus_with(&format!("localhost:{kafka_port}"), "tls-test", &sasl("wrong"));
    assert!(intruder.ping().await.is_err(), "a wrong SCRAM password must not get metadata");
    let properties: String = sasl(KAFKA_USER.1).iter().map(|(k, v)| format!("{k:?} = {v:?}\n")).collect();

    // The whole service on them. The Redis client verifies against the system's roots, to
    // which OpenSSL's SSL_CERT_FILE adds a private CA.
    let config = dir.path().join("tally.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
         [bus]\nkind = \"kafka\"\nbrokers = {:?}\n\
         [bus.properties]\n{}\
         [store]\nkind = \"postgres\"\nurl = {:?}\n[cache]\nkind = \"redis\"\nurl = {:?}\n",
        format!("localhost:{kafka_port}"),
        properties,
        pg_url("verify-full"),
        format!("rediss://localhost:{redis_port}"),
    );
    std::fs::write(&config, toml).unwrap();
    let server = Server::start_with_env(&config, &[("SSL_CERT_FILE", &ca)]);
    let client = reqwest::Client::new();
    let ready = client.get(format!("{}/readyz", server.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let snapshot = serde_json::json!({
        "specversion": "1.0", "id": "tls-1", "source": "/wms", "type": "stock.snapshot",
        "time": "2026-11-25T10:00:00Z",
        "data": {"sku": "SKU-TLS", "location": "wh-1", "on_hand": 7, "source_version": 1},
    });
    let resp = client.post(format!("{}/v1/events", server.url)).json(&snapshot).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stock: serde_json::Value =
            client.get(format!("{}/v1/stock/SKU-TLS", server.url)).send().await.unwrap().json().await.unwrap();
        if stock["locations"][0]["on_hand"] == 7 {
            break;
        }
        assert!(Instant::now() < deadline, "the snapshot never became readable: {stock}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop();
    // The flush reached PostgreSQL over TLS, and the cache entry Redis over TLS.
    let stored = store.load_states(vec![tally_core::Sku::parse("SKU-TLS").unwrap()]).await.unwrap();
    assert_eq!(stored.len(), 1, "the state was not flushed to PostgreSQL");
    let cache = RedisCache::connect(RedisCacheOptions {
        url: format!("rediss://localhost:{redis_port}/#insecure"),
        key_prefix: String::new(),
        ttl: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let cached = cache.get_many(&["tally:inv:sku:SKU-TLS".into()]).await.unwrap();
    assert!(cached[0].is_some(), "the state was not written to Redis");
}
