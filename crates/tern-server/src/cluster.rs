//! The other nodes of a cluster, as this node last heard of them.
//!
//! Every node publishes a [`NodeStatus`] each `cluster.status_interval_ms` on the bus: where
//! clients reach it, how many connections it holds, its rooms with their online counts, and
//! whether it is draining. [`Peers`] keeps the latest status of each other node and forgets a
//! node not heard from for three intervals — a dead node's connections and room members stop
//! counting within that time. Online counts are this node's registry plus the live peers; a login
//! is pointed at the least-loaded live node that is not draining.
//!
//! A status rather than a shared key-value store: the numbers are soft state that is rebuilt
//! every interval, a dead node's entries expire by themselves, and no node has to read anything
//! on a request path.

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tern_proto::UserId;

/// What a node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its `cluster.node_id`.
    pub node: u16,
    /// WebSocket URL clients use.
    pub ws: String,
    /// TCP `host:port` clients use.
    pub tcp: String,
    /// QUIC `host:port` clients use; empty when QUIC does not run there.
    #[serde(default)]
    pub quic: String,
    /// Connections it holds.
    pub connections: u64,
    /// Shutting down: not to be handed out.
    pub draining: bool,
    /// Its rooms with members, with their area and local online count.
    pub rooms: Vec<RoomCount>,
    /// Its presence numbering: its start, and how many deltas it has sent since.
    #[serde(default)]
    pub presence_epoch: u64,
    /// See `presence_epoch`.
    #[serde(default)]
    pub presence_seq: u64,
}

/// One room on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCount {
    /// The room.
    pub room: String,
    /// Its area.
    pub area: String,
    /// Connections in it on that node.
    pub online: u64,
    /// The logged-in users in it on that node, ascending, when there are at most
    /// `rooms.members_list_max`; absent past that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserId>>,
}

/// The other nodes' latest statuses.
pub struct Peers {
    heard: Mutex<HashMap<u16, (NodeStatus, Instant)>>,
    dead_after: Duration,
}

impl Peers {
    /// A node not heard from for `dead_after` is dead.
    pub fn new(dead_after: Duration) -> Self {
        Self { heard: Mutex::new(HashMap::new()), dead_after }
    }

    /// A status arrived.
    pub fn heard(&self, status: NodeStatus) {
        {
            let mut m = self.heard.lock();
            m.insert(status.node, (status, Instant::now()));
        }
    }

    /// Runs `f` over the live peers, forgetting the dead ones first.
    fn with_live<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &NodeStatus>) -> R) -> R {
        let mut m = self.heard.lock();
        let dead_after = self.dead_after;
        m.retain(|node, (_, at)| {
            let alive = at.elapsed() < dead_after;
            if !alive {
                tracing::warn!(node, "node not heard from; considered dead");
            }
            alive
        });
        f(&mut m.values().map(|(s, _)| s))
    }

    /// The live peers.
    pub fn live(&self) -> Vec<NodeStatus> {
        self.with_live(|it| it.cloned().collect())
    }

    /// Connections in a room on the live peers.
    pub fn room_online(&self, room: &str) -> u64 {
        self.with_live(|it| it.flat_map(|s| &s.rooms).filter(|r| r.room == room).map(|r| r.online).sum())
    }

    /// The logged-in users in a room on the live peers, as of their last status; `None` if a
    /// peer has too many there to list.
    pub fn room_users(&self, room: &str) -> Option<BTreeSet<UserId>> {
        self.with_live(|it| {
            let mut users = BTreeSet::new();
            for r in it.flat_map(|s| &s.rooms).filter(|r| r.room == room) {
                users.extend(r.users.as_ref()?);
            }
            Some(users)
        })
    }

    /// Connections in an area's rooms on the live peers, and those rooms' names.
    pub fn area_online(&self, area: &str) -> (u64, BTreeSet<String>) {
        self.with_live(|it| {
            let mut online = 0;
            let mut rooms = BTreeSet::new();
            for r in it.flat_map(|s| &s.rooms).filter(|r| r.area == area) {
                online += r.online;
                rooms.insert(r.room.clone());
            }
            (online, rooms)
        })
    }

    /// Connections on the live peers, and the names of their rooms.
    pub fn total(&self) -> (u64, BTreeSet<String>) {
        self.with_live(|it| {
            let mut online = 0;
            let mut rooms = BTreeSet::new();
            for s in it {
                online += s.connections;
                rooms.extend(s.rooms.iter().map(|r| r.room.clone()));
            }
            (online, rooms)
        })
    }

    /// The live peers that are not draining, least loaded first (lowest id on a tie).
    pub fn available(&self) -> Vec<NodeStatus> {
        let mut out: Vec<NodeStatus> = self.with_live(|it| it.filter(|s| !s.draining).cloned().collect());
        out.sort_by_key(|s| (s.connections, s.node));
        out
    }

    /// The least-loaded live peer that is not draining, if it holds fewer connections than
    /// `mine` (this node keeps its own clients on a tie; among peers the lowest id wins).
    pub fn less_loaded_than(&self, mine: u64) -> Option<NodeStatus> {
        self.with_live(|it| {
            it.filter(|s| !s.draining && s.connections < mine).min_by_key(|s| (s.connections, s.node)).cloned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: u16, connections: u64, draining: bool, rooms: &[(&str, &str, u64)]) -> NodeStatus {
        NodeStatus {
            node,
            ws: format!("ws://n{node}/v1/ws"),
            tcp: format!("n{node}:7071"),
            quic: String::new(),
            connections,
            draining,
            rooms: rooms
                .iter()
                .map(|(r, a, n)| RoomCount { room: (*r).into(), area: (*a).into(), online: *n, users: None })
                .collect(),
            presence_epoch: 0,
            presence_seq: 0,
        }
    }

    #[test]
    fn counts_sum_the_live_peers_and_forget_a_silent_one() {
        let peers = Peers::new(Duration::from_millis(100));
        peers.heard(status(2, 5, false, &[("r", "games", 3), ("s", "music", 2)]));
        peers.heard(status(3, 4, false, &[("r", "games", 4)]));
        assert_eq!(peers.room_online("r"), 7);
        assert_eq!(peers.area_online("games"), (7, BTreeSet::from(["r".to_owned()])));
        assert_eq!(peers.total().0, 9);
        std::thread::sleep(Duration::from_millis(60));
        peers.heard(status(3, 4, false, &[("r", "games", 4)]));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(peers.room_online("r"), 4, "node 2 went silent: its members no longer count");
        assert_eq!(peers.live().iter().map(|s| s.node).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn logins_go_to_the_least_loaded_node_that_is_not_draining() {
        let peers = Peers::new(Duration::from_secs(60));
        peers.heard(status(2, 1, true, &[]));
        peers.heard(status(3, 4, false, &[]));
        peers.heard(status(4, 4, false, &[]));
        assert_eq!(
            peers.less_loaded_than(10).map(|s| s.node),
            Some(3),
            "draining node 2 is skipped; lowest id on a tie"
        );
        assert_eq!(peers.less_loaded_than(4), None, "this node keeps its clients on a tie");
    }
}
