//! How the refresh reaches the `demand` model: evaluated in this process (embedded mode, and
//! the reference answer), or — once the model server serves it — over OIP v2. Either way a
//! batch of histories in, one forecast per series out, or an error the refresh answers with
//! the last forecasts (marked stale).

use std::sync::Arc;

use tally_forecast::model::{self, SeriesForecast, Settings};

/// Why the model did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the demand model is unavailable: {0}")]
pub struct ModelUnavailable(pub String);

/// Test and game-day switch: a model that fails every call.
#[derive(Debug, Default)]
pub struct Outage(std::sync::atomic::AtomicBool);

impl Outage {
    /// Makes every call fail (`true`) or succeed again.
    pub fn set(&self, down: bool) {
        self.0.store(down, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_down(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The demand model as the refresh calls it.
#[derive(Debug, Clone)]
pub struct DemandModel {
    settings: Arc<Settings>,
    /// Fault injection.
    pub outage: Arc<Outage>,
}

impl DemandModel {
    /// Evaluated in this process with `settings`.
    pub fn in_process(settings: Settings) -> Self {
        Self { settings: Arc::new(settings), outage: Arc::default() }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Forecasts a batch of histories, spread over the machine's cores (off the async
    /// threads).
    pub async fn forecast(&self, histories: Vec<Vec<f64>>) -> Result<Vec<SeriesForecast>, ModelUnavailable> {
        if self.outage.is_down() {
            return Err(ModelUnavailable("injected outage".into()));
        }
        let settings = self.settings.clone();
        tokio::task::spawn_blocking(move || {
            let threads = std::thread::available_parallelism().map_or(1, usize::from).min(histories.len().max(1));
            let chunk = histories.len().div_ceil(threads).max(1);
            std::thread::scope(|scope| {
                let parts: Vec<_> = histories
                    .chunks(chunk)
                    .map(|part| {
                        let settings = &settings;
                        scope.spawn(move || part.iter().map(|h| model::forecast(h, settings)).collect::<Vec<_>>())
                    })
                    .collect();
                parts.into_iter().flat_map(|p| p.join().unwrap_or_default()).collect()
            })
        })
        .await
        .map_err(|e| ModelUnavailable(e.to_string()))
    }
}
