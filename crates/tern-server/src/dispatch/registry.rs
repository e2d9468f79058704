//! This node's connected devices, sharded so deliveries to different users rarely contend.
//! Locks are std mutexes held only for a map lookup and non-blocking `try_send`s — never across
//! an await.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use tern_proto::{CloseReason, ConnId, DeviceId, UserId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::OutFrame;
use crate::bus::{Envelope, LocalDelivery, Target};

const SHARDS: usize = 32;

/// Tells a connection task to close, with the first reason given.
#[derive(Debug, Default)]
pub struct Kick {
    token: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

impl Kick {
    /// Asks the connection to close for `reason` (the first reason wins).
    pub fn kick(&self, reason: CloseReason) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.token.cancel();
    }

    /// Resolves once kicked.
    pub async fn kicked(&self) -> CloseReason {
        self.token.cancelled().await;
        self.reason
            .lock()
            .ok()
            .and_then(|r| *r)
            .unwrap_or(CloseReason::ServerShutdown)
    }
}

/// How to reach one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// The connection.
    pub conn_id: ConnId,
    /// Its device.
    pub device_id: DeviceId,
    /// Its bounded outbound queue.
    pub tx: mpsc::Sender<Arc<OutFrame>>,
    /// Its close signal.
    pub kick: Arc<Kick>,
}

impl ConnHandle {
    fn push(&self, frame: &Arc<OutFrame>) {
        match self.tx.try_send(Arc::clone(frame)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.kick.kick(CloseReason::SlowConsumer),
            // The connection is closing; it resumes from the store when it comes back.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The local connection registry.
pub struct Registry {
    shards: Vec<Mutex<HashMap<UserId, Vec<ConnHandle>>>>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Registry {
    fn shard(&self, user: UserId) -> &Mutex<HashMap<UserId, Vec<ConnHandle>>> {
        &self.shards[self.hasher.hash_one(user) as usize % SHARDS]
    }

    /// Adds a connection. A connection of the same user and device is replaced: it is removed
    /// and kicked with `replaced`.
    pub fn register(&self, user: UserId, handle: ConnHandle) {
        let Ok(mut shard) = self.shard(user).lock() else {
            return;
        };
        let conns = shard.entry(user).or_default();
        if let Some(pos) = conns.iter().position(|c| c.device_id == handle.device_id) {
            let old = conns.swap_remove(pos);
            old.kick.kick(CloseReason::Replaced);
        }
        conns.push(handle);
    }

    /// Removes a connection (no-op if it was already replaced).
    pub fn deregister(&self, user: UserId, conn_id: ConnId) {
        let Ok(mut shard) = self.shard(user).lock() else {
            return;
        };
        if let Some(conns) = shard.get_mut(&user) {
            conns.retain(|c| c.conn_id != conn_id);
            if conns.is_empty() {
                shard.remove(&user);
            }
        }
    }

    /// Connections of a user on this node.
    pub fn connections_of(&self, user: UserId) -> usize {
        self.shard(user)
            .lock()
            .map_or(0, |s| s.get(&user).map_or(0, Vec::len))
    }

    /// Kicks every connection (shutdown).
    pub fn kick_all(&self, reason: CloseReason) {
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                shard.values().flatten().for_each(|c| c.kick.kick(reason));
            }
        }
    }
}

impl LocalDelivery for Registry {
    fn deliver(&self, envelope: &Envelope) {
        match &envelope.target {
            Target::Users { users, skip } => {
                for user in users {
                    let Ok(shard) = self.shard(*user).lock() else {
                        continue;
                    };
                    let Some(conns) = shard.get(user) else {
                        continue;
                    };
                    for c in conns {
                        let skipped = skip
                            .as_ref()
                            .is_some_and(|(u, d)| u == user && *d == c.device_id);
                        if !skipped {
                            c.push(&envelope.frame);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tern_proto::ServerFrame;

    use super::*;

    fn handle(id: u64, device: &str, cap: usize) -> (ConnHandle, mpsc::Receiver<Arc<OutFrame>>) {
        let (tx, rx) = mpsc::channel(cap);
        (
            ConnHandle {
                conn_id: ConnId(id),
                device_id: DeviceId(device.into()),
                tx,
                kick: Arc::default(),
            },
            rx,
        )
    }

    #[test]
    fn delivers_to_every_device_but_the_skipped_one_and_kicks_slow_ones() {
        let reg = Registry::default();
        let (a1, mut ra1) = handle(1, "phone", 1);
        let (a2, mut ra2) = handle(2, "laptop", 4);
        let (b1, mut rb1) = handle(3, "phone", 4);
        let slow_kick = Arc::clone(&a1.kick);
        reg.register(UserId(1), a1);
        reg.register(UserId(1), a2);
        reg.register(UserId(2), b1);
        let env = |skip| Envelope {
            target: Target::Users {
                users: vec![UserId(1), UserId(2)],
                skip,
            },
            frame: OutFrame::new(ServerFrame::Pong),
        };
        reg.deliver(&env(Some((UserId(2), DeviceId("phone".into())))));
        assert!(ra1.try_recv().is_ok() && ra2.try_recv().is_ok());
        assert!(rb1.try_recv().is_err(), "the sending device is skipped");

        reg.deliver(&env(None));
        reg.deliver(&env(None)); // phone's queue (capacity 1) overflows
        assert!(slow_kick.token.is_cancelled());
        assert_eq!(
            *slow_kick.reason.lock().unwrap(),
            Some(CloseReason::SlowConsumer)
        );
        assert_eq!(
            ra2.try_recv().map(|f| f.frame().clone()).ok(),
            Some(ServerFrame::Pong)
        );
        assert!(rb1.try_recv().is_ok());
    }

    #[test]
    fn same_device_replaces_and_deregister_keeps_the_newer_connection() {
        let reg = Registry::default();
        let (old, _r1) = handle(1, "phone", 4);
        let old_kick = Arc::clone(&old.kick);
        let (new, _r2) = handle(2, "phone", 4);
        reg.register(UserId(1), old);
        reg.register(UserId(1), new);
        assert_eq!(
            *old_kick.reason.lock().unwrap(),
            Some(CloseReason::Replaced)
        );
        reg.deregister(UserId(1), ConnId(1));
        assert_eq!(reg.connections_of(UserId(1)), 1);
        reg.deregister(UserId(1), ConnId(2));
        assert_eq!(reg.connections_of(UserId(1)), 0);
    }
}
