//! Gathering rows into batches — the one mechanism behind both sides of the wire: the model
//! server's dynamic batching (requests for one version within T µs are evaluated together) and
//! the client's micro-batching (up to B rows or T since the first, one call for many callers).
//! Each caller sends its rows and awaits only its own reply, so a caller never waits on
//! another's work beyond the window.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// One caller's rows.
struct Job<O> {
    rows: usize,
    data: Vec<f32>,
    reply: oneshot::Sender<Result<O, String>>,
}

/// Evaluates a whole batch: (rows, row-major data) → a result each caller takes its rows from.
pub trait Evaluate: Send + Sync + 'static {
    /// The batch's result.
    type Batch: Send + 'static;
    /// One caller's part of it.
    type Part: Send + 'static;
    /// Evaluates `rows` rows.
    fn evaluate(&self, rows: usize, data: Vec<f32>) -> impl Future<Output = Result<Self::Batch, String>> + Send;
    /// Rows `offset..offset + n` of a batch of `total` rows.
    fn part(batch: &Self::Batch, total: usize, offset: usize, n: usize) -> Self::Part;
    /// A batch of `rows` rows was evaluated (metrics).
    fn evaluated(&self, _rows: usize) {}
}

/// The queue in front of one evaluator.
#[derive(Debug)]
pub struct Batcher<O> {
    tx: mpsc::Sender<Job<O>>,
}

impl<O> Clone for Batcher<O> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<O: Send + 'static> Batcher<O> {
    /// Starts the gathering task: a batch closes at `max_rows` rows or `window` after its first
    /// caller (`window` zero: whatever is already queued). The task ends when the last handle is
    /// dropped.
    pub fn start<E: Evaluate<Part = O>>(evaluator: E, max_rows: usize, window: Duration) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(rx, Arc::new(evaluator), max_rows.max(1), window));
        Self { tx }
    }

    /// Evaluates `rows` rows with whoever else arrives within the window; returns this caller's
    /// part.
    pub async fn call(&self, rows: usize, data: Vec<f32>) -> Result<O, String> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { rows, data, reply }).await.map_err(|_| "the batcher stopped".to_owned())?;
        answer.await.map_err(|_| "the batcher stopped".to_owned())?
    }
}

async fn run<E: Evaluate>(mut rx: mpsc::Receiver<Job<E::Part>>, evaluator: Arc<E>, max_rows: usize, window: Duration) {
    let mut carried: Option<Job<E::Part>> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut rows = first.rows;
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + window;
        while rows < max_rows {
            let next = if window.is_zero() {
                rx.try_recv().ok()
            } else {
                tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()
            };
            let Some(job) = next else { break };
            if rows + job.rows > max_rows {
                carried = Some(job); // it opens the next batch
                break;
            }
            rows += job.rows;
            jobs.push(job);
        }
        let data: Vec<f32> = if jobs.len() == 1 {
            std::mem::take(&mut jobs[0].data)
        } else {
            jobs.iter().flat_map(|j| j.data.iter().copied()).collect()
        };
        // Evaluated on its own task: the next batch gathers meanwhile (the client's calls are
        // network round trips; several may be in flight).
        let evaluator = Arc::clone(&evaluator);
        tokio::spawn(async move {
            let result = evaluator.evaluate(rows, data).await;
            evaluator.evaluated(rows);
            let mut offset = 0;
            for job in jobs {
                let part = result.as_ref().map(|b| E::part(b, rows, offset, job.rows)).map_err(Clone::clone);
                offset += job.rows;
                let _ = job.reply.send(part); // a caller that gave up needs no answer
            }
        });
    }
}

/// Rows `offset..offset + n` of a row-major buffer of `total` rows.
pub fn rows_of<T: Clone>(v: &[T], total: usize, offset: usize, n: usize) -> Vec<T> {
    let cols = v.len() / total.max(1);
    v[offset * cols..(offset + n) * cols].to_vec()
}
