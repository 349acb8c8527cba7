//! Helpers of the process-level tests: run the real `tally` binary, and compare what a store
//! holds with the oracle.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tally_core::{Envelope, Sku};
use tally_inventory::oracle::{apply_each_once, effects};
use tally_inventory::{ChannelRules, SkuState};
use tally_store::InventoryStore;

/// A variable `scripts/test.sh` sets for the servers it starts.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test.sh"))
}

/// A Kafka bus client of a test, on `brokers` with librdkafka's defaults.
pub fn kafka_bus(brokers: &str, client_id: &str) -> tally_bus::KafkaBus {
    kafka_bus_with(brokers, client_id, &[])
}

/// The same with librdkafka settings.
pub fn kafka_bus_with(brokers: &str, client_id: &str, properties: &[(&str, String)]) -> tally_bus::KafkaBus {
    tally_bus::KafkaBus::connect(tally_bus::KafkaBusOptions {
        brokers: brokers.to_owned(),
        client_id: client_id.to_owned(),
        replication_factor: 1,
        properties: properties.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        publish_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

/// `tally serve --config <config> <args…>`, its stdout lines handed to `on_line`.
pub fn spawn_serve(config: &std::path::Path, args: &[&str], on_line: impl FnMut(&str) + Send + 'static) -> Child {
    spawn_serve_with_env(config, args, &[], on_line)
}

/// The same with extra environment variables.
pub fn spawn_serve_with_env(
    config: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &std::path::Path)],
    on_line: impl FnMut(&str) + Send + 'static,
) -> Child {
    spawn_serve_via(&[], config, args, vars, on_line)
}

/// The same started through `wrapper` — a program and its arguments before tally's path
/// (`["setsid"]`: in a session of its own, as a service manager starts it).
pub fn spawn_serve_via(
    wrapper: &[&str],
    config: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &std::path::Path)],
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> Child {
    let tally = env!("CARGO_BIN_EXE_tally");
    let mut command = match wrapper {
        [program, before @ ..] => {
            let mut c = Command::new(program);
            c.args(before).arg(tally);
            c
        }
        [] => Command::new(tally),
    };
    let mut child = command
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(&line);
        }
    });
    child
}

/// A `tally serve` process with its HTTP API.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts every role and waits until the API listens.
    pub fn start(config: &std::path::Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// The same with extra environment variables.
    pub fn start_with_env(config: &std::path::Path, vars: &[(&str, &std::path::Path)]) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let child = spawn_serve_with_env(config, &[], vars, move |line| {
            if let Some(url) = line.strip_prefix("tally listening on ") {
                let _ = tx.send(url.to_owned());
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).expect("server did not start");
        Self { child, url }
    }

    /// SIGTERM: the process must drain and exit 0.
    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

/// Sends SIGTERM and checks the process drained and exited 0.
pub fn terminate(child: &mut Child) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM should drain and exit 0, got {status}");
}

/// The store holds exactly the oracle's state for every SKU of `log`; returns the oracle.
pub async fn assert_store_matches_oracle(
    store: &impl InventoryStore,
    log: &[Envelope],
    rules: &ChannelRules,
) -> HashMap<Sku, SkuState> {
    let expected = apply_each_once(log, rules);
    let stored: HashMap<Sku, SkuState> = store
        .load_states(expected.keys().cloned().collect())
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.sku.clone(), s))
        .collect();
    assert_eq!(stored.len(), expected.len(), "every SKU is stored");
    let differing: Vec<&Sku> =
        expected.iter().filter(|(sku, want)| effects(&stored[*sku]) != effects(want)).map(|(s, _)| s).collect();
    assert!(
        differing.is_empty(),
        "{} SKUs differ from the oracle: {:?}",
        differing.len(),
        &differing[..differing.len().min(5)]
    );
    expected
}
