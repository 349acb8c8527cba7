//! Lets an HTTP request wait for the outcome of the event it published (a reservation, a
//! compare-and-set adjustment, a synchronous score) without polling, when the partition's
//! worker runs in the same process.

use std::collections::HashMap;
use std::sync::Mutex;

use tally_core::EventKey;
use tokio::sync::oneshot;

/// What became of a waited-on event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<O> {
    /// Applied (now or earlier, for a duplicate) with this outcome.
    Applied(O),
    /// A duplicate whose original outcome is no longer in memory: read it from the store.
    DuplicateUnknown,
    /// Dead-lettered (not applied).
    DeadLettered {
        /// The `tally_dlq_reason` code.
        reason: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Registry of pending waits by event key.
pub struct Waiters<O> {
    pending: Mutex<HashMap<EventKey, Vec<oneshot::Sender<Resolution<O>>>>>,
}

impl<O> Default for Waiters<O> {
    fn default() -> Self {
        Self { pending: Mutex::new(HashMap::new()) }
    }
}

impl<O: Clone> Waiters<O> {
    /// Registers interest before publishing, so a fast worker cannot resolve it unseen.
    pub fn register(&self, key: EventKey) -> oneshot::Receiver<Resolution<O>> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(key).or_default().push(tx);
        rx
    }

    /// Resolves every wait on `key`.
    pub fn resolve(&self, key: &EventKey, resolution: Resolution<O>) {
        let waiting = self.lock().remove(key);
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(resolution.clone());
        }
    }

    /// Whether anyone waits on `key` (cheap check before building a resolution).
    pub fn is_waiting(&self, key: &EventKey) -> bool {
        let map = self.lock();
        !map.is_empty() && map.contains_key(key)
    }

    /// Drops a wait that timed out.
    pub fn forget(&self, key: &EventKey) {
        self.lock().remove(key);
    }

    #[allow(clippy::type_complexity)]
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventKey, Vec<oneshot::Sender<Resolution<O>>>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}
