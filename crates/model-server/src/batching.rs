//! Server-side dynamic batching: inferences for one model version that arrive within the
//! window are stacked into one evaluation (up to the version's `max_batch_size` rows), then
//! each caller gets its own rows of every output back. One task per loaded version; the
//! evaluation runs on the blocking pool so a large batch never stalls the I/O threads.

use std::sync::Arc;
use std::time::Duration;

use tally_trees::{Model, Tensor};
use tokio::sync::{mpsc, oneshot};

/// One caller's rows.
struct Job {
    rows: usize,
    data: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<Tensor>, String>>,
}

/// The queue in front of one model version.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

/// A finished evaluation, for the metrics.
pub type OnBatch = Arc<dyn Fn(usize) + Send + Sync>;

impl Batcher {
    /// Starts the batching task for `model`; it ends when the last handle is dropped.
    pub fn start(model: Arc<Model>, max_rows: usize, window: Duration, on_batch: OnBatch) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(rx, model, max_rows.max(1), window, on_batch));
        Self { tx }
    }

    /// Evaluates `rows` rows; the outputs hold only these rows.
    pub async fn infer(&self, rows: usize, data: Vec<f32>) -> Result<Vec<Tensor>, String> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { rows, data, reply }).await.map_err(|_| "the model version was unloaded".to_owned())?;
        answer.await.map_err(|_| "the model version was unloaded".to_owned())?
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, model: Arc<Model>, max_rows: usize, window: Duration, on_batch: OnBatch) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut jobs = vec![first];
        let mut rows = jobs[0].rows;
        let deadline = tokio::time::Instant::now() + window;
        while rows < max_rows {
            let next = if window.is_zero() {
                rx.try_recv().ok()
            } else {
                tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()
            };
            let Some(job) = next else { break };
            if rows + job.rows > max_rows {
                carried = Some(job); // starts the next batch
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
        let m = Arc::clone(&model);
        let result = tokio::task::spawn_blocking(move || m.run(&data, rows))
            .await
            .map_err(|e| format!("the evaluation failed: {e}"))
            .and_then(|r| r.map_err(|e| e.0));
        on_batch(rows);
        match result {
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
            Ok(outputs) => {
                let mut offset = 0;
                for job in jobs {
                    let part = outputs.iter().map(|t| slice(t, rows, offset, job.rows)).collect();
                    offset += job.rows;
                    let _ = job.reply.send(Ok(part)); // a caller that gave up needs no answer
                }
            }
        }
    }
}

/// Rows `offset..offset + n` of a tensor of `total` rows.
fn slice(t: &Tensor, total: usize, offset: usize, n: usize) -> Tensor {
    fn rows<T: Clone>(v: &[T], total: usize, offset: usize, n: usize) -> Vec<T> {
        let cols = v.len() / total.max(1);
        v[offset * cols..(offset + n) * cols].to_vec()
    }
    match t {
        Tensor::F32(v) => Tensor::F32(rows(v, total, offset, n)),
        Tensor::I64(v) => Tensor::I64(rows(v, total, offset, n)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_within_the_window_are_evaluated_together_and_split_back() {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/fraud/1/model.onnx"))
            .expect("the reference model");
        let model = Arc::new(Model::from_onnx(&bytes).expect("loads"));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&batches);
        let on_batch: OnBatch = Arc::new(move |rows| seen.lock().expect("lock").push(rows));
        let batcher = Batcher::start(Arc::clone(&model), 40, Duration::from_millis(20), on_batch);
        // 30 callers with 1..=3 rows each, distinct rows, all at once.
        let calls: Vec<(usize, Vec<f32>)> = (0..30)
            .map(|i| {
                let rows = 1 + i % 3;
                (rows, (0..rows * 17).map(|k| ((i * 31 + k) % 97) as f32 * 10.0).collect())
            })
            .collect();
        let answers = futures_util::future::join_all(calls.iter().cloned().map(|(rows, data)| {
            let b = batcher.clone();
            async move { b.infer(rows, data).await }
        }))
        .await;
        for ((rows, data), answer) in calls.iter().zip(answers) {
            let alone = model.run(data, *rows).expect("runs");
            assert_eq!(answer.expect("answered"), alone, "each caller gets exactly its own rows");
        }
        let batches = batches.lock().expect("lock").clone();
        assert_eq!(batches.iter().sum::<usize>(), calls.iter().map(|c| c.0).sum::<usize>());
        assert!(batches.len() < calls.len() / 2, "batched: {batches:?}");
        assert!(batches.iter().all(|&r| r <= 40), "never above max_batch_size: {batches:?}");
    }
}
