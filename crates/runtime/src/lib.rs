//! tally's consumer runtime: the machinery that makes a subsystem's effects exactly-once,
//! written once and shared by every subsystem (inventory, fraud, forecast).
//!
//! - one ordered worker per assigned partition ([`worker`]), over any number of input topics;
//! - resume from the offset stored with the effects, and an idempotency window seeded from the
//!   ledger — or from its copy in a shared cache ([`window`]) — before it ([`dedupe`]);
//! - the event contract checked before the handler sees a record (poison to `<topic>.dlq`
//!   with a reason, misplaced records forwarded to their key's partition);
//! - outputs published before the offset moves ([`publisher`]); effects, idempotency records
//!   and offsets written in one transaction by a shared batcher ([`batcher`]);
//! - drain on revocation and shutdown; callers waiting on an event's outcome ([`waiters`]);
//! - consumer metrics named per subsystem ([`metrics`]), readiness ([`health`]), and
//!   supervision: a failed engine (an error, a panicking worker) is restarted with backoff
//!   while `/readyz` says why, and a permanent store error stops only its partition.
//!
//! A subsystem plugs in a [`Handler`]; the runtime knows no domain type. It depends on the
//! bus, the store's ledger and the cache traits only.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tally_bus::{Assignment, Bus, Consumer as _, PartitionReader};
use tally_cache::Cache;
use tally_store::Journal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod backoff;
pub mod batcher;
pub mod dedupe;
pub mod handler;
pub mod health;
pub mod metrics;
pub mod publisher;
pub mod records;
pub mod waiters;
pub mod window;
mod worker;

pub use backoff::Backoff;
pub use batcher::FlushSettings;
pub use handler::{Fresh, Handler, HandlerError, Output, OutputId, OutputTopic, Parsed, Refusal};
pub use health::{EngineState, Health, HealthReport, StoppedPartition};
pub use metrics::{ConsumerMetrics, ConsumerStats, ContractViolation, Stage};
pub use publisher::{PublishHook, Published};
pub use waiters::{Resolution, Waiters};

/// What stops a consumer engine (it is then restarted by [`Engine::supervise`]).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bus failed in a way that was not retried (joining the group, creating topics).
    #[error("bus: {0}")]
    Bus(#[from] tally_bus::BusError),
    /// A partition worker panicked (a bug): its partition is replayed from the committed
    /// offset after the restart.
    #[error("the worker of {topic}/{partition} panicked: {message}")]
    WorkerPanicked {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The panic's message.
        message: String,
    },
    /// The flush batcher ended while workers still needed it.
    #[error("the flush batcher stopped: {0}")]
    BatcherStopped(String),
}

/// Errors of a subsystem engine's own reads and setup, outside its consumer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bus failed in a way that was not retried.
    #[error("bus: {0}")]
    Bus(#[from] tally_bus::BusError),
    /// The store failed in a way that was not retried.
    #[error("store: {0}")]
    Store(#[from] tally_store::StoreError),
    /// The consumer runtime failed.
    #[error("consumer: {0}")]
    Runtime(#[from] RuntimeError),
}

/// What a subsystem's consumer reads, writes and how.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Subsystem name: metric names (`tally_<subsystem>_…`) and logs.
    pub subsystem: &'static str,
    /// Consumer group.
    pub group: String,
    /// Input topics, consumed by one group (each has a `<topic>.dlq`).
    pub topics: Vec<String>,
    /// Output topics the handler publishes to ([`OutputId`] indexes them).
    pub outputs: Vec<OutputTopic>,
    /// Prefix of the runtime's own cache keys (`inv` → `inv:window:…`).
    pub cache_prefix: String,
    /// Most records per poll.
    pub poll_max_records: usize,
    /// Events remembered per partition by the idempotency window.
    pub dedupe_window: u64,
    /// Flush batching.
    pub flush: FlushSettings,
}

/// Builds a partition's handler: `(topic, partition)`.
pub type HandlerFactory<H> = Arc<dyn Fn(&str, u32) -> H + Send + Sync>;

/// A subsystem's consumer over the backends configuration selected. Cheap to clone.
pub struct Engine<B, S, C, H: Handler> {
    /// Event bus.
    pub bus: B,
    /// The subsystem's store (its journal and the ledger).
    pub store: S,
    /// Cache (the window's shared copy; handlers keep their own entries there).
    pub cache: C,
    /// What to consume and how.
    pub spec: Arc<ConsumerSpec>,
    /// Pending synchronous requests.
    pub waiters: Arc<Waiters<H::Outcome>>,
    /// Consumer metrics.
    pub metrics: Arc<ConsumerMetrics>,
    /// Readiness.
    pub health: Arc<Health>,
    pub(crate) outputs: Arc<[OutputTopic]>,
    pub(crate) hook: Option<PublishHook>,
    factory: HandlerFactory<H>,
}

impl<B: Clone, S: Clone, C: Clone, H: Handler> Clone for Engine<B, S, C, H> {
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            store: self.store.clone(),
            cache: self.cache.clone(),
            spec: self.spec.clone(),
            waiters: self.waiters.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            outputs: self.outputs.clone(),
            hook: self.hook.clone(),
            factory: self.factory.clone(),
        }
    }
}

/// Wall-clock time in microseconds since the epoch (event times are wall-clock too).
pub fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Restarts after a failure start at this delay and double up to [`RESTART_MAX`].
const RESTART_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
const RESTART_MAX: Duration = Duration::from_secs(60);

impl<B, S, C, H> Engine<B, S, C, H>
where
    B: Bus,
    S: Journal<H::Effects>,
    C: Cache,
    H: Handler,
{
    /// An engine; `factory` builds the handler of each assigned partition, `hook` hears of
    /// every publish (for the subsystem's own latency metrics), `waiters` are the callers
    /// waiting on events (shared with the HTTP API).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bus: B,
        store: S,
        cache: C,
        spec: Arc<ConsumerSpec>,
        waiters: Arc<Waiters<H::Outcome>>,
        metrics: Arc<ConsumerMetrics>,
        health: Arc<Health>,
        hook: Option<PublishHook>,
        factory: HandlerFactory<H>,
    ) -> Self {
        let outputs: Arc<[OutputTopic]> = spec.outputs.clone().into();
        Self { bus, store, cache, spec, waiters, metrics, health, outputs, hook, factory }
    }

    /// Creates the input, output and dead-letter topics.
    pub async fn create_topics(&self, partitions: u32) -> Result<(), RuntimeError> {
        for topic in &self.spec.topics {
            self.bus.create_topic(topic, partitions).await?;
            self.bus.create_topic(&records::dead_letter_topic(topic), partitions).await?;
        }
        for output in self.outputs.iter() {
            self.bus.create_topic(&output.name, partitions).await?;
        }
        Ok(())
    }

    /// Runs the engine until `shutdown`, restarting it with capped, jittered backoff whenever
    /// it fails (an error or a panic), with the failure on `/readyz` meanwhile.
    pub async fn supervise(self, shutdown: CancellationToken) {
        let subsystem = self.spec.subsystem;
        let mut backoff = Backoff::new(RESTART_FIRST, RESTART_MAX);
        // Ready from the start (as the backends are); after a failure, not ready again until a
        // restarted engine has joined its group (`run` says so).
        self.health.set_engine(subsystem, EngineState::Running);
        loop {
            let started = Instant::now();
            let result = AssertUnwindSafe(self.run(shutdown.clone())).catch_unwind().await;
            if shutdown.is_cancelled() {
                self.health.set_engine(subsystem, EngineState::Stopped);
                return;
            }
            let reason = match result {
                Ok(Ok(())) => "the engine stopped without being asked to".to_owned(),
                Ok(Err(e)) => format!("{e}: {}", batcher::source_chain(&e)),
                Err(panic) => format!("the engine panicked: {}", panic_message(panic.as_ref())),
            };
            if started.elapsed() > RESTART_MAX {
                backoff.reset(RESTART_FIRST);
            }
            let delay = backoff.next_delay();
            tracing::error!(
                subsystem, reason = %reason, restart_in_ms = delay.as_millis() as u64,
                "the consumer engine failed; restarting it from the committed offsets"
            );
            self.metrics.engine_restarted();
            self.health.set_engine(subsystem, EngineState::Restarting { reason });
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.health.set_engine(subsystem, EngineState::Stopped);
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Runs the consumer until `shutdown`: spawns a worker per assigned partition, drains a
    /// worker before its partition is released, and drains all of them on shutdown. Returns
    /// an error (after draining the others) when a worker panics or the batcher stops.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        let spec = &self.spec;
        // This run's own token: whatever ends the run — even a panic unwinding out of it —
        // cancels its workers (they drain on their own), so a restarted run never finds the
        // previous one's workers still consuming.
        let run = shutdown.child_token();
        let _cancel_on_exit = run.clone().drop_guard();
        let (flush_tx, flush_rx) = mpsc::channel(8);
        let settings = Arc::new(spec.flush.clone());
        let mut batcher =
            tokio::spawn(batcher::run(self.store.clone(), settings, self.metrics.clone(), flush_rx, run.clone()));
        let mut consumer = self.bus.subscribe(&spec.group, &spec.topics).await?;
        self.health.set_engine(spec.subsystem, EngineState::Running);
        let (panic_tx, mut panic_rx) = mpsc::unbounded_channel::<RuntimeError>();
        type Running = (CancellationToken, tokio::task::JoinHandle<()>);
        let mut workers: std::collections::HashMap<(String, u32), Running> = std::collections::HashMap::new();
        let mut failure = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(panicked) = panic_rx.recv() => {
                    failure = Some(panicked);
                    break;
                }
                done = &mut batcher => {
                    let why = match done {
                        Ok(()) => "it returned".to_owned(),
                        Err(e) => panic_message_of(e),
                    };
                    failure = Some(RuntimeError::BatcherStopped(why));
                    break;
                }
                change = consumer.next_assignment() => match change {
                    Ok(Assignment::Assigned(parts)) => {
                        for reader in parts {
                            let (topic, partition) = (reader.topic().to_owned(), reader.partition());
                            let cancel = run.child_token();
                            let handler = (self.factory)(&topic, partition);
                            let worker =
                                worker::PartitionWorker::new(self.clone(), handler, topic.clone(), partition, flush_tx.clone());
                            let panics = panic_tx.clone();
                            let (t, p) = (topic.clone(), partition);
                            let token = cancel.clone();
                            let handle = tokio::spawn(async move {
                                if let Err(panic) = AssertUnwindSafe(worker.run(reader, token)).catch_unwind().await {
                                    let message = panic_message(panic.as_ref());
                                    tracing::error!(topic = %t, partition = p, message = %message, "a partition worker panicked");
                                    let _ = panics.send(RuntimeError::WorkerPanicked { topic: t, partition: p, message });
                                }
                            });
                            tracing::info!(topic = %topic, partition, "partition assigned; worker started");
                            workers.insert((topic, partition), (cancel, handle));
                        }
                    }
                    Ok(Assignment::Revoked(parts)) => {
                        for key in parts {
                            if let Some((cancel, handle)) = workers.remove(&key) {
                                cancel.cancel();
                                let _ = handle.await;
                                tracing::info!(topic = %key.0, partition = key.1, "partition revoked; worker drained");
                            }
                            self.release(&key);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
            }
        }
        if let Some(e) = &failure {
            // Not ready from now on, not only once the others have drained.
            self.health.set_engine(spec.subsystem, EngineState::Restarting { reason: e.to_string() });
        }
        // Every worker drains at once (a store that is slow costs one drain wait, not one per
        // partition), and only then is the group left: the next owner starts from what they
        // committed.
        for (cancel, _) in workers.values() {
            cancel.cancel();
        }
        for (key, (_, handle)) in workers.drain() {
            let _ = handle.await;
            self.release(&key);
        }
        drop(flush_tx);
        if failure.is_none() {
            let _ = batcher.await;
        } else {
            batcher.abort();
        }
        drop(consumer);
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!(subsystem = spec.subsystem, "consumer engine stopped after draining every partition");
                Ok(())
            }
        }
    }

    /// Forgets a stop recorded for `key`: a worker starts on it again, or this member no longer
    /// owns it (then the stop is the next owner's to report).
    pub(crate) fn release(&self, key: &(String, u32)) {
        if self.health.clear_stopped(&key.0, key.1) {
            self.metrics.partitions_stopped(-1.0);
        }
    }
}

fn panic_message_of(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => format!("it panicked: {}", panic_message(panic.as_ref())),
        Err(e) => e.to_string(),
    }
}
