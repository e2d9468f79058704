//! A token bucket, with time passed in (so it is tested in virtual time and serves every rate
//! in the server: per-connection sends and history, API keys, login throttling).

use std::time::Instant;

/// `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        Self { tokens: f64::from(burst), at: now, rate, burst: f64::from(burst) }
    }

    /// Whether the bucket is full again at `now` (its entry can be forgotten).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate >= self.burst
    }

    /// Whether a token is available at `now`, without taking it; else the seconds to wait.
    pub fn check(&mut self, now: Instant) -> Result<(), u64> {
        self.take(now).map(|()| self.tokens += 1.0)
    }

    /// Takes one token, or says how many seconds until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        self.take_n(now, 1.0)
    }

    /// Takes `n` tokens (at most the burst), or says how many seconds until they are there.
    pub fn take_n(&mut self, now: Instant, n: f64) -> Result<(), u64> {
        let n = n.min(self.burst);
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = self.at.max(now);
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(((n - self.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 3, t0);
        assert!(b.take(t0).is_ok() && b.take(t0).is_ok() && b.take(t0).is_ok());
        assert_eq!(b.take(t0), Err(1));
        assert_eq!(b.check(t0), Err(1));
        let t1 = t0 + Duration::from_millis(250); // 2.5 tokens worth of time
        assert!(b.check(t1).is_ok() && b.check(t1).is_ok(), "check takes nothing");
        assert!(b.take(t1).is_ok() && b.take(t1).is_ok());
        assert!(b.take(t1).is_err());
        assert!(!b.is_full(t1));
        assert!(b.is_full(t1 + Duration::from_secs(1)));
    }

    #[test]
    fn taking_many_waits_for_all_of_them() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100.0, 500, t0);
        assert!(b.take_n(t0, 500.0).is_ok());
        assert_eq!(b.take_n(t0, 250.0), Err(3), "250 tokens at 100/s: 2.5 s, rounded up");
        assert!(b.take_n(t0 + Duration::from_millis(2500), 250.0).is_ok());
    }
}
