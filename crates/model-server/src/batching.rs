//! Server-side dynamic batching: inferences for one model version that arrive within the
//! window are stacked into one evaluation (up to the version's `max_batch_size` rows), and
//! each caller gets its own rows of every output back ([`tally_model::batch`], the mechanism
//! the client's micro-batching shares). The evaluation runs on the blocking pool, so a large
//! batch never stalls the I/O threads.

use std::sync::Arc;
use std::time::Duration;

use tally_model::batch::{Batcher, Evaluate, rows_of};
use tally_trees::{Model, Tensor};

/// A finished evaluation of this many rows, for the metrics.
pub type OnBatch = Arc<dyn Fn(usize) + Send + Sync>;

/// One model version's evaluator.
struct Trees {
    model: Arc<Model>,
    on_batch: OnBatch,
}

impl Evaluate for Trees {
    type Batch = Vec<Tensor>;
    type Part = Vec<Tensor>;

    async fn evaluate(&self, rows: usize, data: Vec<f32>) -> Result<Vec<Tensor>, String> {
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || model.run(&data, rows))
            .await
            .map_err(|e| format!("the evaluation failed: {e}"))?
            .map_err(|e| e.0)
    }

    fn part(batch: &Vec<Tensor>, total: usize, offset: usize, n: usize) -> Vec<Tensor> {
        batch
            .iter()
            .map(|t| match t {
                Tensor::F32(v) => Tensor::F32(rows_of(v, total, offset, n)),
                Tensor::I64(v) => Tensor::I64(rows_of(v, total, offset, n)),
            })
            .collect()
    }

    fn evaluated(&self, rows: usize) {
        (self.on_batch)(rows);
    }
}

/// The batching queue in front of a model version.
pub fn start(model: Arc<Model>, max_rows: usize, window: Duration, on_batch: OnBatch) -> Batcher<Vec<Tensor>> {
    Batcher::start(Trees { model, on_batch }, max_rows, window)
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
        let batcher = start(Arc::clone(&model), 40, Duration::from_millis(20), on_batch);
        // 30 callers with 1..=3 rows each, distinct rows, all at once.
        let calls: Vec<(usize, Vec<f32>)> = (0..30)
            .map(|i| {
                let rows = 1 + i % 3;
                (rows, (0..rows * 17).map(|k| ((i * 31 + k) % 97) as f32 * 10.0).collect())
            })
            .collect();
        let answers = futures_util::future::join_all(calls.iter().cloned().map(|(rows, data)| {
            let b = batcher.clone();
            async move { b.call(rows, data).await }
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
