//! A circuit breaker in front of the model: after `failures` consecutive failed calls (errors
//! or deadlines) it opens, and for `cooldown` no call is made — the rules decide at once
//! instead of every caller waiting out a deadline on a dead model. Then one probe is let
//! through (half-open): success closes it, failure opens it again.
//!
//! Why not a crate: failsafe-rs (the maintained one) wraps the futures it guards and has no
//! notion of a caller that skips the call when open while another probes; this is the whole
//! state machine, tested below.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker's state as metrics and health report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// One probe is allowed.
    HalfOpen,
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    failures: u32,
    cooldown: Duration,
    /// Wakes the callers that wait on a probe's outcome.
    probed: tokio::sync::Notify,
}

impl Breaker {
    /// Opens after `failures` consecutive failures, for `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures: failures.max(1),
            cooldown,
            probed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call may be made now (half-open: only the one probe).
    pub fn allow(&self) -> bool {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen { probing: true };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probing: false } => {
                *s = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => false,
        }
    }

    /// A call succeeded.
    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
        self.probed.notify_waiters();
    }

    /// While a probe is out (half-open), waits for its outcome, at most `within`; then says
    /// whether a call may be made. Callers arriving during the probe thus get the model as soon
    /// as it answers instead of the rules for the whole first round after an outage.
    pub async fn allow_after_probe(&self, within: Duration) -> bool {
        if self.allow() {
            return true;
        }
        if self.position() != Position::HalfOpen {
            return false;
        }
        let woken = self.probed.notified();
        // The probe may have finished between the check and the registration.
        if self.position() != Position::HalfOpen {
            return self.allow();
        }
        let _ = tokio::time::timeout(within, woken).await;
        self.allow()
    }

    /// A call failed; returns whether this opened the breaker.
    pub fn failure(&self) -> bool {
        let mut s = self.lock();
        let open = match *s {
            State::Closed { failures } => failures + 1 >= self.failures,
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        let was_probe = matches!(*s, State::HalfOpen { .. });
        *s = if open {
            State::Open { until: Instant::now() + self.cooldown }
        } else if let State::Closed { failures } = *s {
            State::Closed { failures: failures + 1 }
        } else {
            *s
        };
        drop(s);
        if was_probe {
            self.probed.notify_waiters();
        }
        open
    }

    /// Where it stands.
    pub fn position(&self) -> Position {
        match *self.lock() {
            State::Closed { .. } => Position::Closed,
            State::Open { .. } => Position::Open,
            State::HalfOpen { .. } => Position::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_millis(30));
        assert!(b.allow());
        assert!(!b.failure());
        b.success(); // a success resets the count
        assert!(!b.failure() && !b.failure());
        assert!(b.failure(), "the third consecutive failure opens it");
        assert_eq!(b.position(), Position::Open);
        assert!(!b.allow(), "open: no call");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "after the cool-down one probe goes");
        assert!(!b.allow(), "and only one");
        assert!(b.failure(), "a failed probe opens it again");
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.success();
        assert_eq!(b.position(), Position::Closed);
        assert!(b.allow() && b.allow());
    }
}
