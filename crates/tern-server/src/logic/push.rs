//! The push service: business servers push to users, devices, rooms, areas or everyone, with
//! API keys that carry scopes and a token-bucket rate limit each.
//!
//! Keys look like `tk_<id>_<secret>`; only a SHA-256 of the secret is stored, and all keys are
//! cached in memory (revocation updates the cache at once). A bootstrap key from the config
//! (`tern serve --push-key`) has every scope and lives only in memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tern_proto::rate::Bucket;

use parking_lot::Mutex;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tern_proto::{ErrorCode, MsgId, Priority, Push, PushScope};

use super::Logic;
use crate::bus::Target;
use crate::clock::now_ms;
use crate::config::PushConfig;
use crate::dispatch::Dispatcher;
use crate::error::Error;
use crate::store::{ApiKeyRecord, Store};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Push to users.
    Users,
    /// Push to devices.
    Devices,
    /// Push to rooms, and assign rooms to areas.
    Rooms,
    /// Push to areas.
    Areas,
    /// Push to everyone.
    All,
    /// Manage keys.
    Admin,
    /// Read `/metrics` (a Prometheus scraper's key: nothing else).
    Metrics,
}

impl Scope {
    /// Every scope.
    pub const EVERY: [Scope; 7] =
        [Scope::Users, Scope::Devices, Scope::Rooms, Scope::Areas, Scope::All, Scope::Admin, Scope::Metrics];

    /// The name used in key records and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Users => "users",
            Scope::Devices => "devices",
            Scope::Rooms => "rooms",
            Scope::Areas => "areas",
            Scope::All => "all",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Scope::EVERY.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            Error::bad_request(format!(
                "unknown scope {s:?}; scopes are users, devices, rooms, areas, all, admin, metrics"
            ))
        })
    }
}

struct KeyState {
    record: ApiKeyRecord,
    scopes: Vec<Scope>,
    bucket: Bucket,
}

/// An authenticated key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id (`bootstrap` for the configured key).
    pub key_id: String,
    scopes: Vec<Scope>,
}

impl Caller {
    /// Refuses with `forbidden` unless the key has one of `scopes`.
    pub fn require_any(&self, scopes: &[Scope]) -> Result<(), Error> {
        if scopes.iter().any(|s| self.scopes.contains(s)) {
            return Ok(());
        }
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        Err(Error::new(ErrorCode::Forbidden, format!("this API key has none of the scopes {}", names.join(", "))))
    }

    /// Refuses with `forbidden` unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Error> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Error::new(ErrorCode::Forbidden, format!("this API key lacks the {:?} scope", scope.as_str())))
        }
    }
}

impl From<&ApiKeyRecord> for KeyView {
    fn from(r: &ApiKeyRecord) -> Self {
        Self {
            key_id: r.id.clone(),
            name: r.name.clone(),
            scopes: r.scopes.clone(),
            rate_per_sec: r.rate_per_sec,
            burst: r.burst,
            created_at: r.created_at,
            revoked: r.revoked,
        }
    }
}

pub use tern_proto::rest::{KeyView, PushTarget};

const MAX_TARGETS: usize = 1000;

/// The push service.
pub struct PushService {
    logic: Arc<Logic>,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    cfg: PushConfig,
    keys: Mutex<HashMap<String, KeyState>>,
    bootstrap: Option<Mutex<Bucket>>,
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Constant-time comparison, so a key cannot be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PushService {
    /// Builds the service and loads the stored keys.
    pub async fn new(
        logic: Arc<Logic>,
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
        cfg: PushConfig,
    ) -> Result<Self, Error> {
        let mut keys = HashMap::new();
        for record in store.api_keys().await? {
            let scopes = record.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect();
            let bucket = Bucket::new(record.rate_per_sec, record.burst, Instant::now());
            keys.insert(record.id.clone(), KeyState { record, scopes, bucket });
        }
        let bootstrap = (!cfg.bootstrap_key.is_empty()).then(|| {
            let rate = cfg.bootstrap_rate_per_sec;
            Mutex::new(Bucket::new(rate, rate.ceil().min(f64::from(u32::MAX)) as u32, Instant::now()))
        });
        Ok(Self { logic, store, dispatcher, cfg, keys: Mutex::new(keys), bootstrap })
    }

    /// Checks a key and charges one request to its rate limit.
    pub fn authenticate(&self, key: &str) -> Result<Caller, Error> {
        let invalid = || Error::unauthorized("unknown or revoked API key");
        let limited = |secs: u64| {
            Error::new(ErrorCode::RateLimited, format!("rate limit exceeded; retry in {secs} s")).retry_after(secs)
        };
        if let Some(bucket) = &self.bootstrap
            && same(key.as_bytes(), self.cfg.bootstrap_key.as_bytes())
        {
            let mut bucket = bucket.lock();
            bucket.take(Instant::now()).map_err(limited)?;
            return Ok(Caller { key_id: "bootstrap".into(), scopes: Scope::EVERY.to_vec() });
        }
        let mut parts = key.splitn(3, '_');
        let (Some("tk"), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let mut keys = self.keys.lock();
        let state = keys.get_mut(id).ok_or_else(invalid)?;
        if state.record.revoked || !same(&sha256(secret.as_bytes()), &state.record.secret_hash) {
            return Err(invalid());
        }
        state.bucket.take(Instant::now()).map_err(limited)?;
        Ok(Caller { key_id: id.to_owned(), scopes: state.scopes.clone() })
    }

    /// Validates and delivers a push; returns its id. In a cluster, a must-arrive push is
    /// accepted once the durable queue has stored it.
    pub async fn push(
        &self,
        caller: &Caller,
        target: PushTarget,
        priority: Priority,
        qos: u8,
        data: serde_json::Value,
    ) -> Result<MsgId, Error> {
        if qos > 1 {
            return Err(Error::bad_request("qos must be 0 (best effort) or 1 (must arrive)"));
        }
        super::check_data_depth("push data", &data)?;
        let size = serde_json::to_vec(&data).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > self.cfg.max_payload_bytes {
            return Err(Error::new(
                ErrorCode::BodyTooLarge,
                format!("push data is {size} bytes, the limit is {}", self.cfg.max_payload_bytes),
            ));
        }
        let name_ok = |n: &str| {
            if tern_proto::frame::valid_name(n) {
                Ok(())
            } else {
                Err(Error::bad_request("room and area names are 1 to 64 characters of [A-Za-z0-9_.:-]"))
            }
        };
        let count_ok = |n: usize| {
            if (1..=MAX_TARGETS).contains(&n) {
                Ok(())
            } else {
                Err(Error::bad_request(format!("name 1 to {MAX_TARGETS} targets")))
            }
        };
        let (scope, target) = match target {
            PushTarget::Users(users) => {
                caller.require(Scope::Users)?;
                count_ok(users.len())?;
                (PushScope::User, Target::Users { users: users.into(), skip: None })
            }
            PushTarget::Devices(devices) => {
                caller.require(Scope::Devices)?;
                count_ok(devices.len())?;
                let (mut of_users, mut anonymous) = (Vec::new(), Vec::new());
                for (user, device) in devices {
                    match user {
                        Some(u) => of_users.push((u, device)),
                        None => anonymous.push(device),
                    }
                }
                // Two deliveries when both kinds are named; each connection matches one of them.
                if !of_users.is_empty() && !anonymous.is_empty() {
                    let push = self.make(PushScope::Device, priority, qos, data.clone());
                    let id = push.msg_id;
                    self.dispatcher.push(Target::UserDevices(of_users), push).await.map_err(refused)?;
                    let mut second = self.make(PushScope::Device, priority, qos, data);
                    second.msg_id = id;
                    self.dispatcher.push(Target::Devices(anonymous), second).await.map_err(refused)?;
                    return Ok(id);
                }
                let target =
                    if anonymous.is_empty() { Target::UserDevices(of_users) } else { Target::Devices(anonymous) };
                (PushScope::Device, target)
            }
            PushTarget::Room(room) => {
                caller.require(Scope::Rooms)?;
                name_ok(&room)?;
                (PushScope::Room { room: room.clone() }, Target::Room(room))
            }
            PushTarget::Area(area) => {
                caller.require(Scope::Areas)?;
                name_ok(&area)?;
                (PushScope::Area { area: area.clone() }, Target::Area(area))
            }
            PushTarget::All => {
                caller.require(Scope::All)?;
                (PushScope::All, Target::All)
            }
        };
        let push = self.make(scope, priority, qos, data);
        let id = push.msg_id;
        self.dispatcher.push(target, push).await.map_err(refused)?;
        Ok(id)
    }

    fn make(&self, scope: PushScope, priority: Priority, qos: u8, data: serde_json::Value) -> Push {
        Push { msg_id: self.logic.next_msg_id(), priority, qos, scope, ts: now_ms(), data, from: None }
    }

    /// Creates a key; returns its view and the key string (shown once).
    pub async fn create_key(
        &self,
        caller: &Caller,
        name: String,
        scopes: Vec<String>,
        rate_per_sec: Option<f64>,
        burst: Option<u32>,
    ) -> Result<(KeyView, String), Error> {
        caller.require(Scope::Admin)?;
        if name.is_empty() || name.len() > 100 {
            return Err(Error::bad_request("name must be 1 to 100 characters"));
        }
        if scopes.is_empty() {
            return Err(Error::bad_request("name at least one scope"));
        }
        let parsed = scopes.iter().map(|s| Scope::parse(s)).collect::<Result<Vec<_>, _>>()?;
        let rate = rate_per_sec.unwrap_or(self.cfg.default_rate_per_sec);
        let burst = burst.unwrap_or(self.cfg.default_burst);
        if !(rate > 0.0 && rate <= 1_000_000.0) || burst == 0 {
            return Err(Error::bad_request("rate_per_sec must be in (0, 1000000] and burst >= 1"));
        }
        let id = hex(&rand::random::<[u8; 6]>());
        let secret = hex(&rand::random::<[u8; 16]>());
        let record = ApiKeyRecord {
            id: id.clone(),
            name,
            secret_hash: sha256(secret.as_bytes()),
            scopes: parsed.iter().map(|s| s.as_str().to_owned()).collect(),
            rate_per_sec: rate,
            burst,
            created_at: now_ms(),
            revoked: false,
        };
        self.store.create_api_key(record.clone()).await?;
        let view = KeyView::from(&record);
        {
            let mut keys = self.keys.lock();
            keys.insert(
                id.clone(),
                KeyState { record, scopes: parsed, bucket: Bucket::new(rate, burst, Instant::now()) },
            );
        }
        Ok((view, format!("tk_{id}_{secret}")))
    }

    /// Every key (without secrets).
    pub fn list_keys(&self, caller: &Caller) -> Result<Vec<KeyView>, Error> {
        caller.require(Scope::Admin)?;
        let keys = self.keys.lock();
        let mut views: Vec<KeyView> = keys.values().map(|k| KeyView::from(&k.record)).collect();
        views.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.key_id.cmp(&b.key_id)));
        Ok(views)
    }

    /// Revokes a key; it is refused from now on.
    pub async fn revoke_key(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        caller.require(Scope::Admin)?;
        if !self.store.revoke_api_key(id).await? {
            return Err(Error::not_found(format!("no API key {id:?}")));
        }
        if let Some(k) = self.keys.lock().get_mut(id) {
            k.record.revoked = true;
        }
        Ok(())
    }

    /// Assigns a room to an area.
    pub async fn set_room_area(&self, caller: &Caller, room: &str, area: &str) -> Result<(), Error> {
        caller.require(Scope::Rooms)?;
        self.logic.set_room_area(room, area).await
    }
}

fn refused(why: crate::dispatch::Refused) -> Error {
    match why {
        crate::dispatch::Refused::Busy => Error::new(ErrorCode::Unavailable, "push queue is full; retry shortly"),
        crate::dispatch::Refused::Unconfirmed(e) => {
            tracing::warn!(error = %e, "must-arrive push not confirmed by the durable queue");
            Error::new(
                ErrorCode::Unavailable,
                "the cluster's durable queue did not confirm this must-arrive push in time (it may still be delivered); retry shortly",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_unknown_ones_are_named() {
        assert_eq!(Scope::parse("rooms").unwrap(), Scope::Rooms);
        assert!(Scope::parse("root").unwrap_err().message.contains("root"));
    }
}
