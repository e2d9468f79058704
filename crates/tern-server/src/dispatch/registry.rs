//! This node's connections and what they listen to: users, anonymous devices, rooms (with
//! their area), and everyone. Sharded maps behind std mutexes, held only for lookups and
//! non-blocking offers to a connection's [`Lanes`] — never across an await.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use tern_proto::{CloseReason, ConnId, DeviceId, Priority, UserId};

use super::lanes::{Lanes, Offer};
use super::recent::{Recent, RecentPosts};
use crate::bus::{Envelope, LocalDelivery, Target};
use crate::clock::now_ms;
use crate::cluster::{Peers, RoomCount};
use crate::wire::OutFrame;

const SHARDS: usize = 32;

/// A map split into independently locked shards.
struct Shards<K, V> {
    shards: Vec<Mutex<HashMap<K, V>>>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Shards<K, V> {
    fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    /// Runs `f` on the shard holding `key` (or anything the key borrows as, hashing the same).
    fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&mut HashMap<K, V>) -> R) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let idx = self.hasher.hash_one(key) as usize % SHARDS;
        f(&mut self.shards[idx].lock())
    }

    fn for_each_shard(&self, mut f: impl FnMut(&mut HashMap<K, V>)) {
        for shard in &self.shards {
            {
                let mut m = shard.lock();
                f(&mut m);
            }
        }
    }
}

/// Who a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A logged-in user.
    User(UserId),
    /// An anonymous device.
    Device,
}

/// How to reach one connection.
///
/// Shared, not copied: the registry keeps a handle in several maps (by connection, by user or
/// device, by room) and the connection keeps its own, so each copy is one pointer and the
/// device id is stored once (per idle connection this saved ~0.3 KB; docs/BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<ConnInfo>);

/// What a [`ConnHandle`] points to.
#[derive(Debug)]
pub struct ConnInfo {
    /// The connection.
    pub conn_id: ConnId,
    /// Its owner.
    pub owner: Owner,
    /// Its device.
    pub device_id: DeviceId,
    /// Its outbound lanes and close signal.
    pub lanes: Arc<Lanes>,
}

/// An anonymous device's connection as the key of the device map: hashed and compared by its
/// device id, which it borrows as, so the id is not copied into the map.
#[derive(Debug, Clone)]
struct DeviceKey(ConnHandle);

impl PartialEq for DeviceKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.device_id == other.0.device_id
    }
}

impl Eq for DeviceKey {}

impl Hash for DeviceKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `DeviceId` hashes, as `Borrow` requires.
        self.0.device_id.hash(state);
    }
}

impl std::borrow::Borrow<DeviceId> for DeviceKey {
    fn borrow(&self) -> &DeviceId {
        &self.0.device_id
    }
}

impl ConnHandle {
    /// A handle to a new connection.
    pub fn new(conn_id: ConnId, owner: Owner, device_id: DeviceId, lanes: Arc<Lanes>) -> Self {
        Self(Arc::new(ConnInfo { conn_id, owner, device_id, lanes }))
    }
}

impl std::ops::Deref for ConnHandle {
    type Target = ConnInfo;

    fn deref(&self) -> &ConnInfo {
        &self.0
    }
}

/// Counters over all connections of this node.
#[derive(Debug, Default)]
pub struct RegistryStats {
    /// Low-priority frames dropped because a connection's low lane was full.
    pub low_dropped: AtomicU64,
    /// Room enters (a connection joining a room it was not in).
    pub room_enters: AtomicU64,
    /// Room leaves (leave, switch, close).
    pub room_leaves: AtomicU64,
}

struct Room {
    area: String,
    members: HashMap<ConnId, ConnHandle>,
}

impl Room {
    /// Its distinct logged-in users, ascending, if at most `max`.
    fn users(&self, max: usize) -> Option<Vec<UserId>> {
        let mut users = std::collections::BTreeSet::new();
        for c in self.members.values() {
            if let Owner::User(u) = c.owner {
                users.insert(u);
                if users.len() > max {
                    return None;
                }
            }
        }
        Some(users.into_iter().collect())
    }
}

/// The local connection registry.
pub struct Registry {
    conns: Shards<ConnId, ConnHandle>,
    users: Shards<UserId, Vec<ConnHandle>>,
    devices: Shards<DeviceKey, ConnHandle>,
    rooms: Shards<String, Room>,
    slow_cutoff_ms: u64,
    stats: RegistryStats,
    /// The other nodes' counts (empty on a single node); the counts below include them.
    peers: Arc<Peers>,
    /// This node is shutting down: logins are sent elsewhere.
    draining: std::sync::atomic::AtomicBool,
    /// Each room's recent pushes, for late joiners.
    recent: Arc<RecentPosts>,
}

impl Registry {
    /// A registry that disconnects a connection whose low lane overflows for longer than
    /// `slow_cutoff_ms`.
    pub fn new(slow_cutoff_ms: u64) -> Self {
        Self {
            conns: Shards::new(),
            users: Shards::new(),
            devices: Shards::new(),
            rooms: Shards::new(),
            slow_cutoff_ms,
            stats: RegistryStats::default(),
            peers: Arc::new(Peers::new(std::time::Duration::from_secs(3))),
            draining: std::sync::atomic::AtomicBool::new(false),
            recent: Arc::new(RecentPosts::new(0, 0)),
        }
    }

    /// A registry that keeps each room's recent pushes in `recent`.
    pub fn with_recent(mut self, recent: Arc<RecentPosts>) -> Self {
        self.recent = recent;
        self
    }

    /// A room's recent pushes after `after` (0: all kept).
    pub fn recent(&self, room: &str, after: u64) -> Recent {
        self.recent.since(room, after)
    }

    /// Counters.
    pub fn stats(&self) -> &RegistryStats {
        &self.stats
    }

    /// Queues a frame for one connection; whether it was queued.
    fn push(&self, c: &ConnHandle, frame: &Arc<OutFrame>, priority: Priority) -> bool {
        match c.lanes.offer(priority, Arc::clone(frame)) {
            Offer::Queued => true,
            Offer::Closed => false,
            Offer::Full if priority == Priority::High => {
                c.lanes.kick(CloseReason::SlowConsumer);
                false
            }
            Offer::Full => {
                self.stats.low_dropped.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::M.low_dropped.increment(1);
                if c.lanes.note_low_drop(now_ms(), self.slow_cutoff_ms) {
                    c.lanes.kick(CloseReason::SlowConsumer);
                }
                false
            }
        }
    }

    /// Adds a connection. For a user, a connection of the same device is replaced (removed and
    /// kicked with `replaced`); likewise for an anonymous device. While the node drains, the new
    /// connection is kicked with `server_shutdown` at once.
    pub fn register(&self, handle: ConnHandle) {
        let replaced = match handle.owner {
            Owner::User(user) => self.users.with(&user, |m| {
                // Most users have one or two devices online: no room for four up front.
                let conns = m.entry(user).or_insert_with(|| Vec::with_capacity(1));
                let old = conns.iter().position(|c| c.device_id == handle.device_id).map(|p| conns.swap_remove(p));
                conns.push(handle.clone());
                old
            }),
            Owner::Device => self.devices.with(&handle.device_id, |m| {
                // Remove first: `insert` over an equal key would keep the old key, and with it
                // the replaced connection's handle.
                let old = m.remove(&handle.device_id);
                m.insert(DeviceKey(handle.clone()), handle.clone());
                old
            }),
        };
        if let Some(old) = replaced {
            old.lanes.kick(CloseReason::Replaced);
        }
        self.conns.with(&handle.conn_id, |m| m.insert(handle.conn_id, handle.clone()));
        // Shutdown reaches connections through their lanes only: [`Registry::kick_all`] visits
        // each shard after `draining` is set, so a connection inserted after that visit (its
        // shard's lock orders the two) sees `draining` here.
        if self.draining() {
            handle.lanes.kick(CloseReason::ServerShutdown);
        }
    }

    /// Removes a connection (and its room membership). A no-op for what was already replaced.
    pub fn deregister(&self, handle: &ConnHandle, room: Option<&str>) {
        if let Some(room) = room {
            self.leave(room, handle.conn_id);
        }
        self.conns.with(&handle.conn_id, |m| m.remove(&handle.conn_id));
        match handle.owner {
            Owner::User(user) => {
                self.users.with(&user, |m| {
                    if let Some(conns) = m.get_mut(&user) {
                        conns.retain(|c| c.conn_id != handle.conn_id);
                        if conns.is_empty() {
                            m.remove(&user);
                        }
                    }
                });
            }
            Owner::Device => {
                self.devices.with(&handle.device_id, |m| {
                    if m.get(&handle.device_id).is_some_and(|c| c.conn_id == handle.conn_id) {
                        m.remove(&handle.device_id);
                    }
                });
            }
        }
    }

    /// Puts a connection in a room (of `area`); returns the room's online count and whether this
    /// was an enter (joining the room one is already in is not a second one).
    pub fn join(&self, room: &str, area: &str, handle: &ConnHandle) -> (u64, bool) {
        self.rooms.with(&room.to_owned(), |m| {
            let r = m.entry(room.to_owned()).or_insert_with(|| Room { area: area.to_owned(), members: HashMap::new() });
            r.area = area.to_owned();
            let entered = r.members.insert(handle.conn_id, handle.clone()).is_none();
            if entered {
                self.stats.room_enters.fetch_add(1, Ordering::Relaxed);
            }
            (r.members.len() as u64, entered)
        })
    }

    /// Whether a connection is in a room.
    pub fn is_in_room(&self, room: &str, conn_id: ConnId) -> bool {
        self.rooms.with(&room.to_owned(), |m| m.get(room).is_some_and(|r| r.members.contains_key(&conn_id)))
    }

    /// Takes a connection out of a room.
    pub fn leave(&self, room: &str, conn_id: ConnId) {
        self.rooms.with(&room.to_owned(), |m| {
            if let Some(r) = m.get_mut(room) {
                if r.members.remove(&conn_id).is_some() {
                    self.stats.room_leaves.fetch_add(1, Ordering::Relaxed);
                }
                if r.members.is_empty() {
                    m.remove(room);
                }
            }
        });
    }

    /// Moves a room to another area (members stay).
    pub fn set_area(&self, room: &str, area: &str) {
        self.rooms.with(&room.to_owned(), |m| {
            if let Some(r) = m.get_mut(room) {
                r.area = area.to_owned();
            }
        });
    }

    /// The other nodes as last heard of.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// A registry whose peers are forgotten after `dead_after` without a status.
    pub fn with_peers(mut self, dead_after: std::time::Duration) -> Self {
        self.peers = Arc::new(Peers::new(dead_after));
        self
    }

    /// Marks this node as shutting down.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether this node is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Connections in a room on this node.
    pub fn local_room_online(&self, room: &str) -> u64 {
        self.rooms.with(&room.to_owned(), |m| m.get(room).map_or(0, |r| r.members.len() as u64))
    }

    /// Connections in a room, on every live node.
    pub fn room_online(&self, room: &str) -> u64 {
        self.local_room_online(room) + self.peers.room_online(room)
    }

    /// Connections in the rooms of an area on every live node, and how many rooms have someone
    /// in them.
    pub fn area_online(&self, area: &str) -> (u64, u64) {
        let (mut online, mut rooms) = self.peers.area_online(area);
        self.rooms.for_each_shard(|m| {
            for (name, r) in m.iter().filter(|(_, r)| r.area == area) {
                online += r.members.len() as u64;
                rooms.insert(name.clone());
            }
        });
        (online, rooms.len() as u64)
    }

    /// This node's rooms with someone in them: area, online count and, where there are at most
    /// `list_users_up_to` (0: never), the logged-in users.
    pub fn local_rooms(&self, list_users_up_to: usize) -> Vec<RoomCount> {
        let mut out = Vec::new();
        self.rooms.for_each_shard(|m| {
            out.extend(m.iter().map(|(k, r)| RoomCount {
                room: k.clone(),
                area: r.area.clone(),
                online: r.members.len() as u64,
                users: (list_users_up_to > 0).then(|| r.users(list_users_up_to)).flatten(),
            }))
        });
        out
    }

    /// The logged-in users in a room on this node, if at most `max`.
    pub fn room_users(&self, room: &str, max: usize) -> Option<Vec<UserId>> {
        self.rooms.with(&room.to_owned(), |m| m.get(room).map_or(Some(Vec::new()), |r| r.users(max)))
    }

    /// Connections on this node.
    pub fn local_total(&self) -> u64 {
        let mut n = 0;
        self.conns.for_each_shard(|m| n += m.len() as u64);
        n
    }

    /// Connections on every live node, and how many rooms have someone in them.
    pub fn total_online(&self) -> (u64, u64) {
        let (online, mut rooms) = self.peers.total();
        self.rooms.for_each_shard(|m| rooms.extend(m.keys().cloned()));
        (online + self.local_total(), rooms.len() as u64)
    }

    /// Connections of a user on this node.
    pub fn connections_of(&self, user: UserId) -> usize {
        self.users.with(&user, |m| m.get(&user).map_or(0, Vec::len))
    }

    /// Kicks a user's connections on this node — of one device, or all; returns how many.
    pub fn kick_user(&self, user: UserId, device: Option<&DeviceId>, reason: CloseReason) -> usize {
        self.users.with(&user, |m| {
            let conns = m.get(&user).into_iter().flatten().filter(|c| device.is_none_or(|d| &c.device_id == d));
            conns.map(|c| c.lanes.kick(reason)).count()
        })
    }

    /// Takes a user's connections on this node out of a room and tells each (`kicked`, high
    /// lane); returns how many. A connection whose high lane is full is closed instead, as any
    /// connection that far behind would be.
    pub fn kick_from_room(&self, room: &str, user: UserId, reason: &str) -> u32 {
        let kicked: Vec<ConnHandle> = self.rooms.with(&room.to_owned(), |m| {
            let Some(r) = m.get_mut(room) else { return Vec::new() };
            let ids: Vec<ConnId> =
                r.members.values().filter(|c| c.owner == Owner::User(user)).map(|c| c.conn_id).collect();
            let out: Vec<ConnHandle> = ids.iter().filter_map(|id| r.members.remove(id)).collect();
            if r.members.is_empty() {
                m.remove(room);
            }
            out
        });
        if kicked.is_empty() {
            return 0;
        }
        self.stats.room_leaves.fetch_add(kicked.len() as u64, Ordering::Relaxed);
        let frame = OutFrame::new(tern_proto::ServerFrame::Kicked { room: room.to_owned(), reason: reason.to_owned() });
        for c in &kicked {
            if c.lanes.offer(Priority::High, Arc::clone(&frame)) == Offer::Full {
                c.lanes.kick(CloseReason::SlowConsumer);
            }
        }
        kicked.len() as u32
    }

    /// Kicks every connection (shutdown).
    pub fn kick_all(&self, reason: CloseReason) {
        self.conns.for_each_shard(|m| m.values().for_each(|c| c.lanes.kick(reason)));
    }
}

impl LocalDelivery for Registry {
    fn deliver(&self, envelope: &Envelope) {
        let (frame, prio) = (&envelope.frame, envelope.priority);
        // Counted here and added once per envelope: no shared counter touched per connection.
        let queued = std::cell::Cell::new(0u64);
        match &envelope.target {
            Target::Users { users, skip } => {
                for user in users.iter() {
                    self.users.with(user, |m| {
                        for c in m.get(user).into_iter().flatten() {
                            if !skip.as_ref().is_some_and(|(u, d)| u == user && *d == c.device_id) {
                                queued.set(queued.get() + u64::from(self.push(c, frame, prio)));
                            }
                        }
                    });
                }
            }
            Target::UserDevices(list) => {
                for (user, device) in list {
                    self.users.with(user, |m| {
                        for c in m.get(user).into_iter().flatten().filter(|c| &c.device_id == device) {
                            queued.set(queued.get() + u64::from(self.push(c, frame, prio)));
                        }
                    });
                }
            }
            Target::Devices(list) => {
                for device in list {
                    self.devices.with(device, |m| {
                        if let Some(c) = m.get(device) {
                            queued.set(queued.get() + u64::from(self.push(c, frame, prio)));
                        }
                    });
                }
            }
            Target::Room(room) => {
                self.recent.record(room, frame);
                self.rooms.with(room, |m| {
                    for c in m.get(room).into_iter().flat_map(|r| r.members.values()) {
                        queued.set(queued.get() + u64::from(self.push(c, frame, prio)));
                    }
                });
            }
            Target::Area(area) => self.rooms.for_each_shard(|m| {
                for r in m.values().filter(|r| &r.area == area) {
                    r.members.values().for_each(|c| queued.set(queued.get() + u64::from(self.push(c, frame, prio))));
                }
            }),
            Target::All => self.conns.for_each_shard(|m| {
                m.values().for_each(|c| queued.set(queued.get() + u64::from(self.push(c, frame, prio))))
            }),
        }
        crate::telemetry::M.deliveries.increment(queued.get());
    }
}

#[cfg(test)]
mod tests {
    use tern_proto::ServerFrame;

    use super::*;

    struct Conn {
        handle: ConnHandle,
    }

    fn conn(id: u64, owner: Owner, device: &str, cap: usize) -> Conn {
        let handle = ConnHandle::new(ConnId(id), owner, DeviceId(device.into()), Arc::new(Lanes::new(cap, cap)));
        Conn { handle }
    }

    fn env(target: Target, priority: Priority) -> Envelope {
        Envelope { target, frame: OutFrame::new(ServerFrame::Pong), priority }
    }

    /// Frames queued for the connection (taken), or `usize::MAX` if it was kicked.
    fn got(c: &Conn) -> usize {
        c.handle.lanes.take(usize::MAX).map_or(usize::MAX, |t| t.frames.len())
    }

    #[test]
    fn a_connection_registered_while_draining_is_told_to_go_at_once() {
        let reg = Registry::new(1000);
        let before = conn(1, Owner::User(UserId(1)), "phone", 4);
        reg.register(before.handle.clone());
        reg.set_draining();
        reg.kick_all(CloseReason::ServerShutdown);
        let late = conn(2, Owner::User(UserId(2)), "phone", 4);
        reg.register(late.handle.clone());
        for c in [&before, &late] {
            assert_eq!(c.handle.lanes.take(8).err(), Some(CloseReason::ServerShutdown));
        }
    }

    #[test]
    fn targets_reach_exactly_their_connections() {
        let reg = Registry::new(1000);
        let a1 = conn(1, Owner::User(UserId(1)), "phone", 8);
        let a2 = conn(2, Owner::User(UserId(1)), "laptop", 8);
        let b = conn(3, Owner::User(UserId(2)), "phone", 8);
        let anon = conn(4, Owner::Device, "d_x", 8);
        for c in [&a1, &a2, &b, &anon] {
            reg.register(c.handle.clone());
        }
        reg.join("r1", "games", &a1.handle);
        reg.join("r1", "games", &anon.handle);
        reg.join("r2", "music", &b.handle);

        let cases: Vec<(Target, [usize; 4])> = vec![
            (Target::Users { users: [UserId(1)].into(), skip: None }, [1, 1, 0, 0]),
            (
                Target::Users { users: [UserId(1)].into(), skip: Some((UserId(1), DeviceId("phone".into()))) },
                [0, 1, 0, 0],
            ),
            (Target::UserDevices(vec![(UserId(1), DeviceId("laptop".into()))]), [0, 1, 0, 0]),
            (Target::Devices(vec![DeviceId("d_x".into()), DeviceId("phone".into())]), [0, 0, 0, 1]),
            (Target::Room("r1".into()), [1, 0, 0, 1]),
            (Target::Area("music".into()), [0, 0, 1, 0]),
            (Target::All, [1, 1, 1, 1]),
        ];
        for (target, expected) in cases {
            reg.deliver(&env(target.clone(), Priority::High));
            let counts = [got(&a1), got(&a2), got(&b), got(&anon)];
            assert_eq!(counts, expected, "{target:?}");
        }
        assert_eq!(reg.room_online("r1"), 2);
        assert_eq!(reg.area_online("games"), (2, 1));
        assert_eq!(reg.total_online().0, 4);
    }

    #[test]
    fn enters_are_idempotent_and_leaves_follow_switch_and_close() {
        let reg = Registry::new(1000);
        let a = conn(1, Owner::Device, "d_a", 8);
        reg.register(a.handle.clone());
        assert_eq!(reg.join("r1", "default", &a.handle).0, 1);
        assert_eq!(reg.join("r1", "default", &a.handle).0, 1);
        assert_eq!(reg.stats().room_enters.load(Ordering::Relaxed), 1);
        reg.leave("r1", a.handle.conn_id);
        reg.join("r2", "default", &a.handle);
        assert_eq!((reg.room_online("r1"), reg.room_online("r2")), (0, 1));
        reg.deregister(&a.handle, Some("r2"));
        assert_eq!(reg.room_online("r2"), 0);
        assert_eq!(reg.stats().room_leaves.load(Ordering::Relaxed), 2);
        assert_eq!(reg.total_online().0, 0);
    }

    #[test]
    fn low_lane_overflow_drops_and_counts_then_cuts_off_high_overflow_kicks_at_once() {
        let reg = Registry::new(0);
        let c = conn(1, Owner::Device, "d_a", 2);
        reg.register(c.handle.clone());
        reg.deliver(&env(Target::All, Priority::Low));
        reg.deliver(&env(Target::All, Priority::Low));
        reg.deliver(&env(Target::All, Priority::Low));
        assert_eq!(c.handle.lanes.kicked(), None, "the first drop starts the clock");
        reg.deliver(&env(Target::All, Priority::Low));
        reg.deliver(&env(Target::All, Priority::Low));
        assert_eq!(c.handle.lanes.dropped(), 3);
        assert_eq!(reg.stats().low_dropped.load(Ordering::Relaxed), 3);
        // The cut-off is 0 ms: overflowing again after the first drop disconnects.
        assert_eq!(c.handle.lanes.kicked(), Some(CloseReason::SlowConsumer));

        let h = conn(2, Owner::Device, "d_b", 2);
        reg.register(h.handle.clone());
        reg.deliver(&env(Target::Devices(vec![DeviceId("d_b".into())]), Priority::High));
        reg.deliver(&env(Target::Devices(vec![DeviceId("d_b".into())]), Priority::High));
        assert_eq!(h.handle.lanes.take(8).map(|t| t.frames.len()).ok(), Some(2));
        reg.deliver(&env(Target::Devices(vec![DeviceId("d_b".into())]), Priority::High));
        reg.deliver(&env(Target::Devices(vec![DeviceId("d_b".into())]), Priority::High));
        assert_eq!(h.handle.lanes.kicked(), None, "taken: room again");
        reg.deliver(&env(Target::Devices(vec![DeviceId("d_b".into())]), Priority::High));
        assert_eq!(h.handle.lanes.kicked(), Some(CloseReason::SlowConsumer), "a full high lane cuts off at once");
    }

    #[test]
    fn same_device_replaces_and_deregister_keeps_the_newer_connection() {
        let reg = Registry::new(1000);
        let old = conn(1, Owner::User(UserId(1)), "phone", 4);
        let new = conn(2, Owner::User(UserId(1)), "phone", 4);
        reg.register(old.handle.clone());
        reg.register(new.handle.clone());
        assert_eq!(old.handle.lanes.kicked(), Some(CloseReason::Replaced));
        reg.deregister(&old.handle, None);
        assert_eq!(reg.connections_of(UserId(1)), 1);
        reg.deregister(&new.handle, None);
        assert_eq!(reg.connections_of(UserId(1)), 0);
    }

    /// The same for an anonymous device, whose map is keyed by the connection's own device id:
    /// the newer connection takes the entry whole (the old handle is not kept as its key), and
    /// the older one leaving removes nothing.
    #[test]
    fn an_anonymous_device_reconnecting_replaces_its_entry() {
        let reg = Registry::new(1000);
        let old = conn(1, Owner::Device, "d_a", 4);
        let new = conn(2, Owner::Device, "d_a", 4);
        reg.register(old.handle.clone());
        reg.register(new.handle.clone());
        assert_eq!(old.handle.lanes.kicked(), Some(CloseReason::Replaced));
        reg.deregister(&old.handle, None);
        assert_eq!(Arc::strong_count(&old.handle.0), 1, "the registry holds the old handle nowhere");
        reg.deliver(&env(Target::Devices(vec![DeviceId("d_a".into())]), Priority::High));
        assert_eq!(new.handle.lanes.take(8).map(|t| t.frames.len()).ok(), Some(1), "the push reaches the newer one");
        reg.deregister(&new.handle, None);
        assert_eq!(Arc::strong_count(&new.handle.0), 1, "nor the newer one once it left");
    }
}
