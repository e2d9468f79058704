//! Ending sessions — logout (one device or all), password change, disabling an account — and
//! throttling password guessing.
//!
//! A session ends by a **cutoff**: the user's tokens (of one device, or all) issued at or before
//! that millisecond are refused from then on (`Auth::verify`, so REST and sockets alike). Cutoffs
//! are stored, so they survive a restart, and kept in memory, so checking one costs a map lookup.
//! The live sockets of those sessions are closed by the caller (`api`), which owns the gateway.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tern_proto::{DeviceId, ErrorCode, UserId};

use super::Logic;
use super::accounts::validate_password;
use crate::auth::{Identity, IssuedToken};
use crate::clock::now_ms;
use crate::config::AuthConfig;
use crate::error::Error;
use crate::store::SessionCutoff;
use tern_proto::rate::Bucket;

/// Entries kept per throttle map before full buckets are forgotten.
const THROTTLE_PRUNE_AT: usize = 10_000;

impl Logic {
    /// Ends the sessions of `user` — on `device`, or on every device — as of now.
    pub async fn end_sessions(&self, user: UserId, device: Option<DeviceId>) -> Result<u64, Error> {
        let at = now_ms();
        self.store.put_session_cutoff(SessionCutoff { user, device: device.clone(), after_ms: at }).await?;
        self.auth.set_cutoff(user, device.clone(), at);
        self.dispatcher.broadcast(crate::bus::Control::SessionCutoff { user, device, after_ms: at });
        Ok(at)
    }

    /// Changes a password after checking the current one; every session of the user ends, and
    /// the caller's device gets a fresh token.
    pub async fn change_password(&self, who: &Identity, current: &str, new: &str) -> Result<IssuedToken, Error> {
        let user = self.store.user_by_id(who.user_id).await?.ok_or_else(|| Error::unauthorized("token invalid"))?;
        validate_password(&user.username, new)?;
        if !self.auth.verify_password(current.to_owned(), user.password_hash).await {
            return Err(Error::unauthorized("the current password is wrong"));
        }
        let hash = self
            .auth
            .hash_password(new.to_owned())
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("password hashing failed: {e}")))?;
        self.store.set_password(who.user_id, hash).await?;
        let at = self.end_sessions(who.user_id, None).await?;
        Ok(self.auth.issue_at(who, at + 1))
    }

    /// Disables (ending every session) or re-enables an account.
    pub async fn set_disabled(&self, user: UserId, disabled: bool) -> Result<(), Error> {
        if !self.store.set_disabled(user, disabled).await? {
            return Err(Error::not_found(format!("user {} does not exist", user.0)));
        }
        if disabled {
            self.end_sessions(user, None).await?;
        }
        Ok(())
    }
}

/// Password guessing is stopped without letting anyone lock an owner out of their account.
///
/// Failures are counted in token buckets (a failure takes a token, one comes back every
/// `auth.login_failure_refill_secs`), at three scopes:
///
/// - **this username from this address** (`auth.login_failures_per_user`, 10): when empty, that
///   address is refused for that username with `rate_limited` *before* any password is hashed.
///   This stops a guesser; the owner, logging in from anywhere else, is not affected.
/// - **this username from any address** (`auth.login_failures_per_user_total`, 50) and **this
///   address for any username** (`auth.login_failures_per_ip`, 100): when empty — many addresses
///   guessing one account, or one address spraying many — attempts are not refused but *slowed*:
///   they are admitted one at a time per username (or address), [`SLOW_SPACING`] apart, and a
///   correct password still logs in. Only when the queue is more than [`SLOW_MAX_WAIT`] long is
///   an attempt refused with `rate_limited` and the wait.
///
/// Successful logins take no tokens.
pub struct LoginThrottle {
    per_pair: Mutex<HashMap<(String, IpAddr), Bucket>>,
    per_user: Mutex<HashMap<String, Bucket>>,
    per_ip: Mutex<HashMap<IpAddr, Bucket>>,
    user_gate: Gate<String>,
    ip_gate: Gate<IpAddr>,
    pair_burst: u32,
    user_burst: u32,
    ip_burst: u32,
    rate: f64,
}

/// How far apart slowed login attempts for one username (or from one address) are admitted.
pub const SLOW_SPACING: Duration = Duration::from_secs(1);

/// The longest a slowed attempt waits for its turn; past it, `rate_limited`.
pub const SLOW_MAX_WAIT: Duration = Duration::from_secs(10);

impl LoginThrottle {
    /// From `auth.login_failures_*`.
    pub fn new(cfg: &AuthConfig) -> Self {
        Self {
            per_pair: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            user_gate: Gate::default(),
            ip_gate: Gate::default(),
            pair_burst: cfg.login_failures_per_user,
            user_burst: cfg.login_failures_per_user_total,
            ip_burst: cfg.login_failures_per_ip,
            rate: 1.0 / cfg.login_failure_refill_secs.max(1) as f64,
        }
    }

    /// Admits an attempt: how long it must wait before its password is checked, or
    /// `rate_limited` with the seconds to wait.
    pub fn admit(&self, username: &str, ip: IpAddr) -> Result<Duration, Error> {
        let user = username.to_ascii_lowercase();
        let empty = |r: Result<(), u64>| r.err();
        let refused = self.per_pair.lock().get_mut(&(user.clone(), ip)).and_then(|b| empty(b.check(Instant::now())));
        if let Some(secs) = refused {
            return Err(limited(secs, "too many failed logins for this username from this address"));
        }
        let user_slow = self.per_user.lock().get_mut(&user).and_then(|b| empty(b.check(Instant::now())));
        let ip_slow = self.per_ip.lock().get_mut(&ip).and_then(|b| empty(b.check(Instant::now())));
        let mut wait = Duration::ZERO;
        if user_slow.is_some() {
            wait = wait.max(self.user_gate.admit(user)?);
        }
        if ip_slow.is_some() {
            wait = wait.max(self.ip_gate.admit(ip)?);
        }
        Ok(wait)
    }

    /// Records a failed attempt.
    pub fn failed(&self, username: &str, ip: IpAddr) {
        let user = username.to_ascii_lowercase();
        {
            let mut m = self.per_pair.lock();
            take(&mut m, (user.clone(), ip), self.rate, self.pair_burst);
        }
        {
            let mut m = self.per_user.lock();
            take(&mut m, user, self.rate, self.user_burst);
        }
        {
            let mut m = self.per_ip.lock();
            take(&mut m, ip, self.rate, self.ip_burst);
        }
    }
}

fn limited(secs: u64, why: &str) -> Error {
    Error::new(ErrorCode::RateLimited, format!("{why}; retry in {secs} s")).retry_after(secs)
}

/// One-at-a-time admission per key: each attempt gets the next free slot, [`SLOW_SPACING`]
/// after the previous one.
struct Gate<K> {
    next: Mutex<HashMap<K, Instant>>,
}

impl<K> Default for Gate<K> {
    fn default() -> Self {
        Self { next: Mutex::new(HashMap::new()) }
    }
}

impl<K: std::hash::Hash + Eq> Gate<K> {
    fn admit(&self, key: K) -> Result<Duration, Error> {
        let now = Instant::now();
        let mut next = self.next.lock();
        if next.len() >= THROTTLE_PRUNE_AT {
            next.retain(|_, slot| *slot > now);
        }
        let slot = next.get(&key).copied().filter(|slot| *slot > now).unwrap_or(now);
        let wait = slot - now;
        if wait > SLOW_MAX_WAIT {
            return Err(limited(wait.as_secs().max(1), "too many failed logins for this account or address"));
        }
        next.insert(key, slot + SLOW_SPACING);
        Ok(wait)
    }
}

fn take<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Bucket>, key: K, rate: f64, burst: u32) {
    if map.len() >= THROTTLE_PRUNE_AT {
        let now = Instant::now();
        map.retain(|_, b| !b.is_full(now));
    }
    let now = Instant::now();
    let _ = map.entry(key).or_insert_with(|| Bucket::new(rate, burst, now)).take(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowed_attempts_queue_one_per_spacing_and_the_queue_is_bounded() {
        let gate = Gate::default();
        let admitted: Vec<Duration> = std::iter::from_fn(|| gate.admit("alice").ok()).take(100).collect();
        // 0, 1, …, 10 s: eleven attempts fit within SLOW_MAX_WAIT, the twelfth is refused.
        assert_eq!(admitted.len() as u64, SLOW_MAX_WAIT.as_secs() / SLOW_SPACING.as_secs() + 1);
        for (i, wait) in admitted.iter().enumerate() {
            let expected = SLOW_SPACING * i as u32;
            assert!(wait.abs_diff(expected) < Duration::from_millis(500), "attempt {i} waits {wait:?}");
        }
        let refused = gate.admit("alice").unwrap_err();
        assert_eq!((refused.code, refused.retry_after_secs.is_some()), (ErrorCode::RateLimited, true));
        assert_eq!(gate.admit("bob"), Ok(Duration::ZERO), "other keys have their own queue");
    }
}
