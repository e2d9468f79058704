//! Ending sessions — logout (one device or all), password change, disabling an account — and
//! throttling password guessing.
//!
//! A session ends by a **cutoff**: the user's tokens (of one device, or all) issued at or before
//! that millisecond are refused from then on (`Auth::verify`, so REST and sockets alike). Cutoffs
//! are stored, so they survive a restart, and kept in memory, so checking one costs a map lookup.
//! The live sockets of those sessions are closed by the caller (`api`), which owns the gateway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tern_proto::{DeviceId, ErrorCode, UserId};

use super::Logic;
use super::accounts::validate_password;
use super::bucket::Bucket;
use crate::auth::{Identity, IssuedToken};
use crate::clock::now_ms;
use crate::config::AuthConfig;
use crate::error::Error;
use crate::store::SessionCutoff;

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

/// Failed logins are limited per username and per client address, each a token bucket: a
/// failure takes a token, an empty bucket refuses further attempts with `rate_limited` *before*
/// any password is hashed — so guessing costs the attacker time, not the server CPU. Successful
/// logins take nothing, so a crowd behind one address logging in correctly is never throttled.
pub struct LoginThrottle {
    per_user: Mutex<HashMap<String, Bucket>>,
    per_ip: Mutex<HashMap<IpAddr, Bucket>>,
    user_burst: u32,
    ip_burst: u32,
    rate: f64,
}

impl LoginThrottle {
    /// From `auth.login_failures_*`.
    pub fn new(cfg: &AuthConfig) -> Self {
        Self {
            per_user: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            user_burst: cfg.login_failures_per_user,
            ip_burst: cfg.login_failures_per_ip,
            rate: 1.0 / cfg.login_failure_refill_secs.max(1) as f64,
        }
    }

    /// Refuses (with seconds to wait) when either bucket is empty.
    pub fn check(&self, username: &str, ip: IpAddr) -> Result<(), Error> {
        let user = username.to_ascii_lowercase();
        let wait = |r: Result<(), u64>| r.err();
        let by_user = self.per_user.lock().ok().and_then(|mut m| m.get_mut(&user).and_then(|b| wait(b.check())));
        let by_ip = self.per_ip.lock().ok().and_then(|mut m| m.get_mut(&ip).and_then(|b| wait(b.check())));
        match by_user.max(by_ip) {
            None => Ok(()),
            Some(secs) => Err(Error::new(ErrorCode::RateLimited, format!("too many failed logins; retry in {secs} s"))
                .retry_after(secs)),
        }
    }

    /// Records a failed attempt.
    pub fn failed(&self, username: &str, ip: IpAddr) {
        if let Ok(mut m) = self.per_user.lock() {
            take(&mut m, username.to_ascii_lowercase(), self.rate, self.user_burst);
        }
        if let Ok(mut m) = self.per_ip.lock() {
            take(&mut m, ip, self.rate, self.ip_burst);
        }
    }
}

fn take<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Bucket>, key: K, rate: f64, burst: u32) {
    if map.len() >= THROTTLE_PRUNE_AT {
        map.retain(|_, b| !b.is_full());
    }
    let _ = map.entry(key).or_insert_with(|| Bucket::new(rate, burst)).take();
}
