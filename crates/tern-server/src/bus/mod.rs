//! How a delivery reaches the node(s) holding its recipients' connections.
//!
//! Dispatch publishes an [`Envelope`] on the [`Bus`]; each node's bus hands envelopes for it to
//! that node's [`LocalDelivery`] (the connection registry). In embedded mode [`LocalBus`] does
//! that in-process with no copy; [`nats::NatsBus`] carries them between the nodes of a cluster,
//! so dispatch and logic never change.

pub mod nats;

use std::sync::Arc;

use tern_proto::{DeviceId, Priority, UserId};

use crate::store::BoxFut;
use crate::wire::OutFrame;

/// A change every node must apply, not a delivery: each node holds these in memory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// Tokens of `user` (on `device`, or all) issued at or before `after_ms` are void, and the
    /// sockets of those sessions are closed.
    SessionCutoff {
        /// Whose.
        user: UserId,
        /// Which device; `None`: every device.
        device: Option<DeviceId>,
        /// The cutoff, ms since the Unix epoch.
        after_ms: u64,
    },
    /// A user was banned or muted in a room (`lifted`: no longer).
    RoomSanction {
        /// The ban or mute.
        sanction: tern_proto::rest::RoomSanction,
        /// Lifted rather than imposed.
        lifted: bool,
    },
    /// A room's settings changed.
    RoomSettings {
        /// The settings now.
        settings: crate::store::StoredRoomSettings,
    },
    /// A room now belongs to an area.
    RoomArea {
        /// The room.
        room: String,
        /// Its area.
        area: String,
    },
    /// A user's first connection on `node` came (`online`) or its last one went.
    PresenceDelta {
        /// Where.
        node: u16,
        /// The node's start (its numbering begins anew).
        epoch: u64,
        /// The node's count of deltas, this one included.
        seq: u64,
        /// Whose.
        user: UserId,
        /// Came or went.
        online: bool,
    },
    /// A node asks `node` for a [`Control::PresenceSnapshot`].
    PresenceResync {
        /// Who is asked.
        node: u16,
    },
    /// The users with a connection on `node`, as of its delta `seq`.
    PresenceSnapshot {
        /// Where.
        node: u16,
        /// The node's start.
        epoch: u64,
        /// Its count of deltas when taken.
        seq: u64,
        /// Who.
        users: Vec<UserId>,
    },
}

/// Applies [`Control`]s from other nodes.
pub type ControlHandler = Arc<dyn Fn(Control) + Send + Sync>;

/// What a node holds connections for, and so wants deliveries of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interest {
    /// A signed-in user (any of their devices).
    User(UserId),
    /// An anonymous device.
    Device(DeviceId),
    /// A live room.
    Room(String),
}

/// Who a delivery is for.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every connected device of these users, except one device (the sender's own).
    Users {
        /// Recipients (shared: a group's member list is the same for many messages).
        users: Arc<[UserId]>,
        /// The device that must not get it (it already has it: it sent it).
        skip: Option<(UserId, DeviceId)>,
    },
    /// Specific devices of users.
    UserDevices(Vec<(UserId, DeviceId)>),
    /// Anonymous devices (connected with a device token).
    Devices(Vec<DeviceId>),
    /// Every connection in a room.
    Room(String),
    /// Every connection in a room of an area.
    Area(String),
    /// Every connection.
    All,
}

/// One delivery: a target and the frame, encoded at most once per codec however many
/// connections it reaches.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Who.
    pub target: Target,
    /// What.
    pub frame: Arc<OutFrame>,
    /// Which lane of each connection it goes into.
    pub priority: Priority,
}

/// A node's fan-out to its own connections.
pub trait LocalDelivery: Send + Sync + 'static {
    /// Delivers to the matching local connections. Must not block.
    fn deliver(&self, envelope: &Envelope);
}

/// Carries envelopes between nodes.
pub trait Bus: Send + Sync + 'static {
    /// Publishes an envelope. Must not block: called on the store's commit path.
    fn publish(&self, envelope: Envelope);

    /// This node has one more connection for `key`. The future completes once deliveries for
    /// `key` from every node reach this one — a connection waits for it before reading what it
    /// missed, so nothing falls between the two. Calls are counted: as many
    /// [`Bus::unsubscribe`]s end the interest.
    fn subscribe(self: Arc<Self>, key: Interest) -> BoxFut<'static, ()> {
        let _ = key;
        Box::pin(std::future::ready(()))
    }

    /// This node has one connection fewer for `key`.
    fn unsubscribe(&self, key: Interest) {
        let _ = key;
    }

    /// Whether must-arrive pushes go through [`Bus::publish_durable`] (a durable queue shared by
    /// the nodes) rather than [`Bus::publish`].
    fn durable(&self) -> bool {
        false
    }

    /// Puts a must-arrive envelope in the durable queue; completes once the queue has stored it
    /// (each node then delivers it to its own connections and only then acknowledges it to the
    /// queue), or fails if that cannot be confirmed in time. Only called when
    /// [`Bus::durable`] says so.
    fn publish_durable(self: Arc<Self>, envelope: Envelope) -> BoxFut<'static, Result<(), String>> {
        self.publish(envelope);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Tells the other nodes (this one has applied it already).
    fn broadcast(&self, control: Control) {
        let _ = control;
    }

    /// Tells the other nodes this node's status (see [`crate::cluster`]).
    fn share_status(&self, status: &crate::cluster::NodeStatus) {
        let _ = status;
    }

    /// Where controls from other nodes go; set once at start.
    fn on_control(&self, handler: ControlHandler) {
        let _ = handler;
    }
}

/// The embedded bus: one node, delivery is a function call.
pub struct LocalBus {
    local: Arc<dyn LocalDelivery>,
}

impl LocalBus {
    /// A bus delivering straight to `local`.
    pub fn new(local: Arc<dyn LocalDelivery>) -> Self {
        Self { local }
    }
}

impl Bus for LocalBus {
    fn publish(&self, envelope: Envelope) {
        self.local.deliver(&envelope);
    }
}
