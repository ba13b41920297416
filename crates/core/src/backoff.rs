//! One backoff rule for every retry loop (the broker connection, job retries, migrations at start,
//! the Qdrant server check, the import client): the delay doubles from `first` up to `max`, and each
//! delay is jittered by ±20% so that many processes retrying the same thing do not arrive together.

use std::time::Duration;

use rand::Rng;

/// The delays of one retry loop. `next_delay` answers the wait before the next try; `reset` starts
/// over after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    tries: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            tries: 0,
        }
    }

    /// The wait before the next try: `first`, then twice that, and so on up to `max`, jittered.
    pub fn next_delay(&mut self) -> Duration {
        self.tries = self.tries.saturating_add(1);
        Self::nth(self.first, self.max, self.tries)
    }

    /// Back to `first`, after a success.
    pub fn reset(&mut self) {
        self.tries = 0;
    }

    /// The wait before retry number `attempt` (from 1): `first * 2^(attempt-1)`, capped at `max`,
    /// jittered. For loops whose count lives elsewhere (a job's attempts are in the database).
    pub fn nth(first: Duration, max: Duration, attempt: u32) -> Duration {
        let nominal = first
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(max);
        jitter(nominal)
    }
}

/// `d` ± 20%.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(d: Duration, nominal_ms: f64) -> bool {
        let ms = d.as_secs_f64() * 1000.0;
        ms >= nominal_ms * 0.8 - 1.0 && ms <= nominal_ms * 1.2 + 1.0
    }

    #[test]
    fn the_nth_delay_doubles_and_is_capped_with_jitter() {
        let (first, max) = (Duration::from_millis(1000), Duration::from_millis(8000));
        for (attempt, nominal) in [
            (1, 1000.0),
            (2, 2000.0),
            (3, 4000.0),
            (4, 8000.0),
            (9, 8000.0),
        ] {
            let d = Backoff::nth(first, max, attempt);
            assert!(within(d, nominal), "attempt {attempt}: {d:?}");
        }
        // No overflow however long a loop runs.
        assert!(within(Backoff::nth(first, max, u32::MAX), 8000.0));
    }

    #[test]
    fn a_loop_doubles_until_the_cap_and_starts_over_after_reset() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_millis(1000));
        for nominal in [200.0, 400.0, 800.0, 1000.0, 1000.0] {
            let d = b.next_delay();
            assert!(within(d, nominal), "{d:?} for {nominal}");
        }
        b.reset();
        assert!(within(b.next_delay(), 200.0));
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let d: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| jitter(Duration::from_millis(1000)).as_micros())
            .collect();
        assert!(d.len() > 10, "{d:?}");
    }
}
