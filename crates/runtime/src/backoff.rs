//! Capped exponential backoff with full jitter, so that many workers retrying against one
//! recovering database do not all knock at once.

use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};

/// Delays of successive retries: doubling from `first` up to `cap`, each drawn uniformly from
/// the upper half of the current step (never zero, never above the cap).
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
    cap: Duration,
}

impl Backoff {
    /// A backoff starting at `first`, never longer than `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self { step: first.min(cap), cap }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.cap);
        let half = step / 2;
        // Seeded from the clock: jitter needs spread between processes, not secrecy.
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ (self as *const Self as u64));
        half + Duration::from_micros(rng.random_range(0..=half.as_micros().max(1) as u64))
    }

    /// Starts over (after a success).
    pub fn reset(&mut self, first: Duration) {
        self.step = first.min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100), "{delays:?}");
        assert!(delays[2] >= Duration::from_millis(200) && delays[2] <= Duration::from_millis(400), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)), "{delays:?}");
        assert!(delays[7] >= Duration::from_millis(500), "capped at 1 s, at least half of it: {delays:?}");
    }
}
