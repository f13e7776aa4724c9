//! Back-off schedules for the two kinds of failure.
//!
//! A *record* failure that may pass (a lookup timed out) is retried on a fixed,
//! configured schedule (1 s, 5 s, 15 s by default) and then dead-lettered. An
//! *outage* (broker, registry or database unreachable) is never given up on:
//! the service waits with capped exponential back-off plus jitter, so a fleet of
//! consumers does not hammer a recovering dependency in lock-step.

use std::time::Duration;

use rand::Rng;

/// Capped exponential back-off with full jitter in the upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling of the next wait, without jitter.
    pub fn peek(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next wait: between half and all of the current ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.peek();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter_ms = half.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_ms)
        };
        half + Duration::from_millis(extra)
    }

    /// Number of waits handed out so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.peek(), Duration::from_millis(100));
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        assert_eq!(b.peek(), Duration::from_millis(200));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1));
        }
        assert_eq!(b.peek(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(100));
    }
}
