//! Byte pacing for uploads and the relay: token buckets allowed to go into debt, so a writer
//! that took more than was there waits the debt off instead of being refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tern_proto::UserId;

/// Bytes allowed now, refilled at a rate, holding at most one second's worth.
#[derive(Debug)]
pub struct ByteBucket {
    tokens: f64,
    at: Instant,
}

impl ByteBucket {
    /// A full bucket for `rate` bytes a second.
    pub fn new(rate: f64) -> Self {
        Self { tokens: rate, at: Instant::now() }
    }

    /// How long to wait before `n` more bytes may pass at `rate` bytes a second (zero for a
    /// rate of 0: no limit).
    pub fn take(&mut self, rate: f64, n: usize) -> Duration {
        if rate <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        self.tokens -= n as f64;
        if self.tokens < 0.0 { Duration::from_secs_f64(-self.tokens / rate) } else { Duration::ZERO }
    }
}

/// One bucket per user, at one rate (bytes a second; 0: no limit).
pub struct PerUser {
    rate: f64,
    buckets: Mutex<HashMap<UserId, ByteBucket>>,
}

impl PerUser {
    /// Buckets at `rate` bytes a second.
    pub fn new(rate: u64) -> Self {
        Self { rate: rate as f64, buckets: Mutex::new(HashMap::new()) }
    }

    /// How long `user` waits before `n` more bytes.
    pub fn take(&self, user: UserId, n: usize) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let mut buckets = self.buckets.lock();
        buckets.entry(user).or_insert_with(|| ByteBucket::new(self.rate)).take(self.rate, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_second_through_then_owes() {
        let mut b = ByteBucket::new(1000.0);
        assert_eq!(b.take(1000.0, 1000), Duration::ZERO);
        let owed = b.take(1000.0, 500);
        assert!(owed > Duration::from_millis(490) && owed <= Duration::from_millis(500), "{owed:?}");
        assert_eq!(ByteBucket::new(0.0).take(0.0, 1 << 30), Duration::ZERO, "0 is no limit");
    }
}
