//! Where this node's connections are, changed in one place: the registry's tables (by user,
//! device and room) and the bus interests that bring other nodes' deliveries for them here.
//! The gateway calls it as connections authenticate, switch rooms and end; nothing else
//! touches either side of a membership.

use std::sync::Arc;

use tern_proto::ConnId;

use super::registry::{ConnHandle, Owner, Registry};
use crate::bus::{Bus, Interest};

/// This node's connection table and its interests on the bus, kept in step. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
}

impl Router {
    /// Routes over `registry` and `bus`.
    pub fn new(registry: Arc<Registry>, bus: Arc<dyn Bus>) -> Self {
        Self { registry, bus }
    }

    /// The connection table.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Adds an authenticated connection, and waits until deliveries for its user (or device)
    /// from other nodes reach this one.
    pub async fn attach(&self, handle: &ConnHandle) {
        self.registry.register(handle.clone());
        Arc::clone(&self.bus).subscribe(interest_of(handle)).await;
    }

    /// Removes a connection that ended, from its room too.
    pub fn detach(&self, handle: &ConnHandle, room: Option<String>) {
        self.registry.deregister(handle, room.as_deref());
        self.bus.unsubscribe(interest_of(handle));
        if let Some(room) = room {
            self.bus.unsubscribe(Interest::Room(room));
        }
    }

    /// Puts a connection in `room` of `area`, out of `leaving` (the connection core decides
    /// which room a connection is in; one at a time, so joining another is a switch). Answers
    /// the room's online count across the cluster.
    pub async fn enter_room(&self, handle: &ConnHandle, leaving: Option<String>, room: &str, area: &str) -> u64 {
        if let Some(old) = leaving {
            self.leave_room(handle.conn_id, old);
        }
        let (online, entered) = self.registry.join(room, area, handle);
        if entered {
            Arc::clone(&self.bus).subscribe(Interest::Room(room.to_owned())).await;
        }
        online + self.registry.peers().room_online(room)
    }

    /// Takes a user's connections on this node out of `room` (a ban), telling each (`kicked`);
    /// returns how many.
    pub fn kick_from_room(&self, room: &str, user: tern_proto::UserId, reason: &str) -> u32 {
        let kicked = self.registry.kick_from_room(room, user, reason);
        for _ in 0..kicked {
            self.bus.unsubscribe(Interest::Room(room.to_owned()));
        }
        kicked
    }

    /// Takes a connection out of `room`.
    pub fn leave_room(&self, conn: ConnId, room: String) {
        self.registry.leave(&room, conn);
        self.bus.unsubscribe(Interest::Room(room));
    }
}

/// What a connection makes this node want deliveries of.
fn interest_of(handle: &ConnHandle) -> Interest {
    match handle.owner {
        Owner::User(user) => Interest::User(user),
        Owner::Device => Interest::Device(handle.device_id.clone()),
    }
}
