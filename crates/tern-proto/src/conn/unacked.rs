//! Pushes awaiting a device ACK on one connection, with their retry schedule.
//!
//! Each push is resent with exponential backoff (initial, doubling, capped) until it is
//! acknowledged or its TTL passes. A push past its TTL means the device is not processing what it
//! receives: the connection is closed (`ack_timeout`) so the device reconnects and resumes from
//! the store — a push is never silently abandoned.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::time::{Duration, Instant};

use crate::ids::MsgId;

/// Retry timing.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First retry after this long.
    pub initial: Duration,
    /// Longest gap between retries.
    pub max: Duration,
}

/// What happens when a push outlives its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Close the connection (a stored message: the device resumes from the store).
    Close,
    /// Give the push up (a must-arrive push: nothing stored to resume from); it is counted.
    Drop,
}

struct Pending<F> {
    frame: F,
    first_sent: Instant,
    next_at: Instant,
    attempts: u32,
    expiry: Expiry,
    ttl: Duration,
}

/// What the retry timer asks for.
#[derive(Debug)]
pub struct Due<F> {
    /// Resend these.
    pub resend: Vec<F>,
    /// A push with [`Expiry::Close`] outlived its TTL.
    pub expired: bool,
    /// Pushes with [`Expiry::Drop`] given up.
    pub dropped: u64,
}

/// The unacknowledged pushes of one connection. Part of every connection's task, so it keeps no
/// copy of the gateway's [`RetryPolicy`] (passed in instead) and no per-map hash seed: message
/// ids are issued by the server, so there is no attacker-chosen key to seed against.
pub struct Unacked<F> {
    pending: HashMap<MsgId, Pending<F>, BuildHasherDefault<DefaultHasher>>,
    /// Deadlines; entries whose push was acked or rescheduled are skipped when popped.
    schedule: BinaryHeap<Reverse<(Instant, MsgId)>>,
}

impl<F> Default for Unacked<F> {
    fn default() -> Self {
        Self { pending: HashMap::default(), schedule: BinaryHeap::new() }
    }
}

impl<F: Clone> Unacked<F> {
    /// How many pushes await an ACK.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no push awaits an ACK.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A push was sent at `now`; it is retried until `ttl`, then handled per `expiry`. Sending
    /// an id that is already pending keeps the first schedule.
    pub fn sent(&mut self, policy: &RetryPolicy, id: MsgId, frame: F, now: Instant, expiry: Expiry, ttl: Duration) {
        if self.pending.contains_key(&id) {
            return;
        }
        let next_at = now + policy.initial;
        self.pending.insert(id, Pending { frame, first_sent: now, next_at, attempts: 0, expiry, ttl });
        self.schedule.push(Reverse((next_at, id)));
    }

    /// The device acknowledged these.
    pub fn acked(&mut self, ids: &[MsgId]) {
        for id in ids {
            self.pending.remove(id);
        }
        if self.pending.is_empty() {
            self.schedule.clear();
        }
    }

    /// When [`due`](Self::due) must next be called.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.schedule.peek().copied() {
            match self.pending.get(&id) {
                Some(p) if p.next_at == at => return Some(at),
                _ => {
                    self.schedule.pop();
                }
            }
        }
        None
    }

    /// Collects what must be resent at `now`, rescheduling it.
    pub fn due(&mut self, policy: &RetryPolicy, now: Instant) -> Due<F> {
        let mut due = Due { resend: Vec::new(), expired: false, dropped: 0 };
        while let Some(Reverse((at, id))) = self.schedule.peek().copied() {
            if at > now {
                break;
            }
            self.schedule.pop();
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.next_at != at {
                continue;
            }
            if now.duration_since(p.first_sent) >= p.ttl {
                match p.expiry {
                    Expiry::Close => due.expired = true,
                    Expiry::Drop => {
                        due.dropped += 1;
                        self.pending.remove(&id);
                    }
                }
                continue;
            }
            p.attempts += 1;
            let backoff = policy.initial.saturating_mul(1u32 << p.attempts.min(16)).min(policy.max);
            p.next_at = now + backoff;
            self.schedule.push(Reverse((p.next_at, id)));
            due.resend.push(p.frame.clone());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy { initial: Duration::from_secs(1), max: Duration::from_secs(4) };
    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn retries_back_off_stop_on_ack_and_expire_at_ttl() {
        let t0 = Instant::now();
        let mut u: Unacked<&str> = Unacked::default();
        u.sent(&POLICY, MsgId(1), "frame", t0, Expiry::Close, TTL);
        u.sent(&POLICY, MsgId(2), "frame", t0, Expiry::Close, TTL);
        assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(u.due(&POLICY, t0 + Duration::from_millis(999)).resend.is_empty());
        assert_eq!(u.due(&POLICY, t0 + Duration::from_secs(1)).resend.len(), 2);
        u.acked(&[MsgId(2)]);
        // Second retry 2 s after the first, then 4 s (capped).
        assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(u.due(&POLICY, t0 + Duration::from_secs(3)).resend.len(), 1);
        assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(7)));
        assert_eq!(u.due(&POLICY, t0 + Duration::from_secs(7)).resend.len(), 1);
        assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(11)));
        let due = u.due(&POLICY, t0 + Duration::from_secs(11));
        assert!(due.expired && due.resend.is_empty());
    }

    #[test]
    fn dropped_expiry_gives_up_without_closing() {
        let t0 = Instant::now();
        let mut u: Unacked<&str> = Unacked::default();
        u.sent(&POLICY, MsgId(1), "frame", t0, Expiry::Drop, Duration::from_millis(1500));
        assert_eq!(u.due(&POLICY, t0 + Duration::from_secs(1)).resend.len(), 1);
        let due = u.due(&POLICY, t0 + Duration::from_secs(3));
        assert_eq!((due.expired, due.dropped, due.resend.len()), (false, 1, 0));
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn acked_pushes_are_never_resent() {
        let t0 = Instant::now();
        let mut u: Unacked<&str> = Unacked::default();
        u.sent(&POLICY, MsgId(1), "frame", t0, Expiry::Close, TTL);
        u.acked(&[MsgId(1), MsgId(99)]);
        assert_eq!(u.len(), 0);
        assert_eq!(u.next_deadline(), None);
        assert!(u.due(&POLICY, t0 + Duration::from_secs(60)).resend.is_empty());
    }
}
