//! The port through which replenishment reads stock on hand: forecasting never reaches into
//! the inventory engine's internals, it asks this trait, which the wiring implements over the
//! inventory engine's own read path (`server::app`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

/// A series: `(sku, location)`.
pub type SeriesId = (String, String);

/// A boxed future (the port is a trait object chosen at wiring time).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Stock on hand per series.
pub trait StockPort: Send + Sync + 'static {
    /// Units on hand of each series that the inventory knows (the others are omitted).
    fn on_hand(&self, series: Vec<SeriesId>) -> BoxFuture<'_, Result<HashMap<SeriesId, i64>, String>>;
}

/// No inventory to ask: every series reads as unknown (suggestions assume nothing on hand).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStock;

impl StockPort for NoStock {
    fn on_hand(&self, _series: Vec<SeriesId>) -> BoxFuture<'_, Result<HashMap<SeriesId, i64>, String>> {
        Box::pin(async { Ok(HashMap::new()) })
    }
}

/// Fixed stock levels (tests, `tally forecast` dry runs).
#[derive(Debug, Default, Clone)]
pub struct FixedStock(pub HashMap<SeriesId, i64>);

impl StockPort for FixedStock {
    fn on_hand(&self, series: Vec<SeriesId>) -> BoxFuture<'_, Result<HashMap<SeriesId, i64>, String>> {
        let found = series.into_iter().filter_map(|s| self.0.get(&s).map(|v| (s, *v))).collect();
        Box::pin(async move { Ok(found) })
    }
}
