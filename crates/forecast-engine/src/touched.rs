//! Series whose rollup changed durably and are waiting for a refresh: the partition handlers
//! mark them once their events are in the store, the refresher takes those that have been
//! quiet for the debounce time (or waited longest).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A series: `(sku, location)`.
pub type SeriesId = (String, String);

/// Series touched, with when first and last.
#[derive(Debug, Default)]
pub struct Touched {
    series: Mutex<HashMap<SeriesId, (Instant, Instant)>>,
    wake: tokio::sync::Notify,
}

impl Touched {
    /// Marks series as changed now.
    pub fn mark(&self, series: impl IntoIterator<Item = SeriesId>) {
        let now = Instant::now();
        let mut map = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in series {
            map.entry(s).and_modify(|(_, last)| *last = now).or_insert((now, now));
        }
        drop(map);
        self.wake.notify_one();
    }

    /// Takes the series quiet for `debounce`, or waiting for longer than `max_wait`.
    pub fn take_due(&self, debounce: Duration, max_wait: Duration) -> Vec<SeriesId> {
        let now = Instant::now();
        let mut map = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due: Vec<SeriesId> = map
            .iter()
            .filter(|(_, (first, last))| {
                now.duration_since(*last) >= debounce || now.duration_since(*first) >= max_wait
            })
            .map(|(s, _)| s.clone())
            .collect();
        for s in &due {
            map.remove(s);
        }
        due
    }

    /// How many are waiting.
    pub fn len(&self) -> usize {
        self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until a series is marked.
    pub async fn marked(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_due_once_it_is_quiet_or_has_waited_long_enough() {
        let t = Touched::default();
        let s = ("milk".to_owned(), "b".to_owned());
        t.mark([s.clone()]);
        assert!(t.take_due(Duration::from_secs(60), Duration::from_secs(60)).is_empty());
        assert_eq!(t.take_due(Duration::ZERO, Duration::from_secs(60)), vec![s.clone()]);
        assert!(t.is_empty(), "taken once");
        t.mark([s.clone()]);
        assert_eq!(t.take_due(Duration::from_secs(60), Duration::ZERO), vec![s], "waited its longest");
    }
}
