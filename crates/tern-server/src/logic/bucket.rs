//! Token buckets (API key rates, login throttling).

use std::time::Instant;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// Whether the bucket is full again (its entry can be forgotten).
    pub(crate) fn is_full(&self) -> bool {
        self.tokens + Instant::now().duration_since(self.at).as_secs_f64() * self.rate >= self.burst
    }

    /// Whether a token is available, without taking it.
    pub(crate) fn check(&mut self) -> Result<(), u64> {
        self.take().map(|()| self.tokens += 1.0)
    }

    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        Self { tokens: f64::from(burst), at: Instant::now(), rate, burst: f64::from(burst) }
    }

    /// Takes one token, or says how many seconds until one is available.
    pub(crate) fn take(&mut self) -> Result<(), u64> {
        self.take_n(1.0)
    }

    /// Takes `n` tokens (at most the burst), or says how many seconds until they are there.
    pub(crate) fn take_n(&mut self, n: f64) -> Result<(), u64> {
        let n = n.min(self.burst);
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
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
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let mut b = Bucket::new(10.0, 3);
        assert!(b.take().is_ok() && b.take().is_ok() && b.take().is_ok());
        assert_eq!(b.take(), Err(1));
        assert_eq!(b.check(), Err(1));
        b.at -= std::time::Duration::from_millis(250); // 2.5 tokens worth of time
        assert!(b.check().is_ok() && b.check().is_ok(), "check takes nothing");
        assert!(b.take().is_ok() && b.take().is_ok());
        assert!(b.take().is_err());
        assert!(!b.is_full());
        b.at -= std::time::Duration::from_secs(1);
        assert!(b.is_full());
    }
}
