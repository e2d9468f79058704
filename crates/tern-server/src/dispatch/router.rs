//! Where this node's connections are, changed in one place: the registry's tables (by user,
//! device and room) and the bus interests that bring other nodes' deliveries for them here.
//! The gateway calls it as connections authenticate, switch rooms and end; nothing else
//! touches either side of a membership.

use std::sync::Arc;

use tern_proto::ConnId;

use super::registry::{ConnHandle, Owner, Registry};
use crate::bus::{Bus, Interest};

/// This node's connection table and its interests on the bus, kept in step.
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

    /// Puts a connection in `room` of `area`, leaving the one it was in (`current`, which then
    /// names `room`): one room per connection, so joining another is a switch. Answers the
    /// room's online count across the cluster.
    pub async fn enter_room(&self, handle: &ConnHandle, current: &mut Option<String>, room: String, area: &str) -> u64 {
        let entering = current.as_deref() != Some(room.as_str());
        if let Some(old) = current.take_if(|r| *r != room) {
            self.registry.leave(&old, handle.conn_id);
            self.bus.unsubscribe(Interest::Room(old));
        }
        let online = self.registry.join(&room, area, handle) + self.registry.peers().room_online(&room);
        if entering {
            Arc::clone(&self.bus).subscribe(Interest::Room(room.clone())).await;
        }
        *current = Some(room);
        online
    }

    /// Takes a connection out of its room (`current`, emptied); answers the room it left.
    pub fn leave_room(&self, conn: ConnId, current: &mut Option<String>) -> Option<String> {
        let room = current.take()?;
        self.registry.leave(&room, conn);
        self.bus.unsubscribe(Interest::Room(room.clone()));
        Some(room)
    }
}

/// What a connection makes this node want deliveries of.
fn interest_of(handle: &ConnHandle) -> Interest {
    match handle.owner {
        Owner::User(user) => Interest::User(user),
        Owner::Device => Interest::Device(handle.device_id.clone()),
    }
}
