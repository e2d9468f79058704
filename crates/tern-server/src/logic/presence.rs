//! Presence: who is online, told to their friends — debounced, so a device that reconnects
//! within the debounce window (a network blip, a page reload, a move to another node) causes no
//! offline/online flap.
//!
//! In a cluster a user is online while any node holds a connection of theirs. Each node tells the
//! others when a user's first connection on it comes or its last one goes (a numbered delta,
//! [`Control::PresenceDelta`]) and keeps, per other node, the set of users online there. A node
//! whose numbering shows a gap, or that is new to this one, is asked for a full snapshot
//! ([`Control::PresenceSnapshot`]); its status says how far its numbering has got, so a lost
//! last delta is noticed too. When a node dies (its status stops) its users are dropped; when a
//! node comes back its snapshot adds them again. Those changes are announced by one node only,
//! the live node with the lowest id — and a return also by the node that announced the death
//! (views of who is alive can differ for a moment, and a friend must not be left "offline").
//!
//! Friends are told by the node where the change happens, after the debounce, from its view of
//! the whole cluster: a user whose last device here goes while another node still has one is not
//! announced offline. Presence frames are state, not events: when devices on two nodes change at
//! the same moment both nodes may announce the same state, which clients take as it is.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tern_proto::{Priority, ServerFrame, UserId};

use crate::bus::{Control, Target};
use crate::cluster::NodeStatus;
use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::wire::OutFrame;

/// Tracks connections per user and announces changes to friends.
pub struct Presence {
    users: Mutex<HashMap<UserId, Entry>>,
    debounce: Duration,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    /// The other nodes' users; `None` on a single node.
    cluster: Option<Mutex<Others>>,
    node: u16,
    /// This node's numbering of its deltas starts anew at each start.
    epoch: u64,
}

#[derive(Default)]
struct Entry {
    /// Authenticated connections of the user on this node.
    conns: u32,
    /// What friends were last told by this node.
    announced: bool,
    /// A settle task is waiting out the debounce.
    pending: bool,
}

/// What this node knows of the others.
#[derive(Default)]
struct Others {
    /// Deltas this node has sent.
    seq: u64,
    nodes: HashMap<u16, NodeUsers>,
    /// This node has the lowest id among the live ones: it announces what the others' deaths
    /// and returns change.
    announcer: bool,
    /// Users this node announced offline when their node died, by node: if that node returns
    /// (it was cut off, or this node took it for dead), this node tells their friends they are
    /// back, announcer or not. The last few dead nodes are remembered.
    told_gone: Vec<(u16, HashSet<UserId>)>,
}

/// Dead nodes whose users' offline announcements are remembered.
const TOLD_GONE_NODES: usize = 8;

/// The users online on one other node, as of its delta `seq`.
#[derive(Default)]
struct NodeUsers {
    epoch: u64,
    seq: u64,
    users: HashSet<UserId>,
    /// A delta was missed (only a snapshot can fix that).
    gap: bool,
    /// Status intervals this view has been behind the node.
    behind: u32,
}

impl Others {
    fn online(&self, user: UserId) -> bool {
        self.nodes.values().any(|n| n.users.contains(&user))
    }
}

impl Presence {
    /// A tracker announcing through `dispatcher` after `debounce`; in a cluster (`node` is
    /// `Some`), it also tells the other nodes and keeps what they tell.
    pub fn new(store: Arc<dyn Store>, dispatcher: Arc<Dispatcher>, debounce: Duration, node: Option<u16>) -> Self {
        Self {
            users: Mutex::new(HashMap::new()),
            debounce,
            store,
            dispatcher,
            cluster: node.map(|_| Mutex::new(Others::default())),
            node: node.unwrap_or(0),
            epoch: rand::random::<u64>() | 1,
        }
    }

    /// Whether the user has a connection on this node or, in a cluster, on another live one.
    pub fn is_online(&self, user: UserId) -> bool {
        self.users.lock().get(&user).is_some_and(|e| e.conns > 0) || self.online_elsewhere(user)
    }

    fn online_elsewhere(&self, user: UserId) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.lock().online(user))
    }

    /// A connection of `user` authenticated.
    pub fn connected(self: &Arc<Self>, user: UserId) {
        self.change(user, |e| e.conns += 1);
    }

    /// A connection of `user` closed.
    pub fn disconnected(self: &Arc<Self>, user: UserId) {
        self.change(user, |e| e.conns = e.conns.saturating_sub(1));
    }

    /// This node's delta numbering: `(epoch, seq)`, shared in its status.
    pub fn position(&self) -> (u64, u64) {
        let seq = self.cluster.as_ref().map_or(0, |c| c.lock().seq);
        (self.epoch, seq)
    }

    fn change(self: &Arc<Self>, user: UserId, f: impl FnOnce(&mut Entry)) {
        let mut users = self.users.lock();
        let entry = users.entry(user).or_default();
        let was = entry.conns > 0;
        f(entry);
        let is = entry.conns > 0;
        if was != is
            && let Some(cluster) = &self.cluster
        {
            // Under the users lock: deltas are numbered in the order the changes happened.
            let mut others = cluster.lock();
            others.seq += 1;
            let delta =
                Control::PresenceDelta { node: self.node, epoch: self.epoch, seq: others.seq, user, online: is };
            self.dispatcher.broadcast(delta);
        }
        if entry.pending || (entry.conns > 0) == entry.announced {
            if entry.conns == 0 && !entry.announced && !entry.pending {
                users.remove(&user);
            }
            return;
        }
        entry.pending = true;
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(this.debounce).await;
            this.settle(user).await;
        });
    }

    /// After the debounce: if the user's state over the cluster differs from what friends were
    /// told, tell them. A node without the user's connections leaves them to the nodes that
    /// have them (or, if none has, says offline if it had said online).
    async fn settle(self: Arc<Self>, user: UserId) {
        let online = {
            let mut users = self.users.lock();
            let Some(entry) = users.get_mut(&user) else { return };
            entry.pending = false;
            let here = entry.conns > 0;
            let online = here || self.online_elsewhere(user);
            let changed = online != entry.announced && (here || !online);
            if changed {
                entry.announced = online;
            }
            if !here {
                users.remove(&user);
            }
            if !changed {
                return;
            }
            online
        };
        self.announce(user, online).await;
    }

    async fn announce(&self, user: UserId, online: bool) {
        tracing::debug!(node = self.node, %user, online, "presence announced");
        let friends: Arc<[UserId]> = match self.store.relations_of(user).await {
            Ok(rows) => rows.into_iter().filter(|r| r.mine.friend).map(|r| r.peer).collect(),
            Err(e) => {
                tracing::warn!(error = %e, %user, "presence: cannot load friends");
                return;
            }
        };
        if friends.is_empty() {
            return;
        }
        let frame = OutFrame::new(ServerFrame::Presence { user, online });
        self.dispatcher.publish(Target::Users { users: friends, skip: None }, frame, Priority::Low);
    }

    /// Applies a presence control from another node.
    pub fn apply(self: &Arc<Self>, control: &Control) {
        let Some(cluster) = &self.cluster else { return };
        match control {
            Control::PresenceDelta { node, epoch, seq, user, online } if *node != self.node => {
                let mut others = cluster.lock();
                let n = others.nodes.entry(*node).or_default();
                if n.epoch != *epoch {
                    if *seq != 1 {
                        n.gap = true;
                        return;
                    }
                    // The node's first delta since it started: nothing before it to miss.
                    *n = NodeUsers { epoch: *epoch, ..NodeUsers::default() };
                }
                if n.gap || *seq != n.seq + 1 {
                    // Older: already applied (or in the snapshot to come). Newer: one was missed.
                    n.gap |= *seq > n.seq + 1;
                    return;
                }
                n.seq = *seq;
                if *online {
                    n.users.insert(*user);
                } else {
                    n.users.remove(user);
                }
            }
            Control::PresenceResync { node } if *node == self.node => {
                // Under the users lock, so the snapshot and the numbering agree.
                let users = self.users.lock();
                let seq = cluster.lock().seq;
                let online: Vec<UserId> = users.iter().filter(|(_, e)| e.conns > 0).map(|(u, _)| *u).collect();
                self.dispatcher.broadcast(Control::PresenceSnapshot {
                    node: self.node,
                    epoch: self.epoch,
                    seq,
                    users: online,
                });
            }
            Control::PresenceSnapshot { node, epoch, seq, users } if *node != self.node => {
                let flipped = {
                    let mut others = cluster.lock();
                    if others.nodes.get(node).is_some_and(|n| n.epoch == *epoch && n.seq >= *seq && !n.gap) {
                        return; // already as new
                    }
                    let before: HashSet<UserId> = others.nodes.get(node).map(|n| n.users.clone()).unwrap_or_default();
                    let after: HashSet<UserId> = users.iter().copied().collect();
                    let changed: Vec<UserId> = before.symmetric_difference(&after).copied().collect();
                    let was: Vec<bool> = changed.iter().map(|u| others.online(*u)).collect();
                    others
                        .nodes
                        .insert(*node, NodeUsers { epoch: *epoch, seq: *seq, users: after, ..NodeUsers::default() });
                    let told =
                        others.told_gone.iter().position(|(n, _)| n == node).map(|i| others.told_gone.remove(i).1);
                    let announcer = others.announcer;
                    changed
                        .into_iter()
                        .zip(was)
                        .filter(|(u, was)| others.online(*u) != *was)
                        .filter(|(u, _)| announcer || told.as_ref().is_some_and(|t| t.contains(u)))
                        .map(|(u, was)| (u, !was))
                        .collect::<Vec<_>>()
                };
                self.announce_flips(self.not_here(flipped));
            }
            _ => {}
        }
    }

    /// Called every status interval with the live peers: forgets the dead nodes' users (the
    /// announcer tells their friends), and asks for a snapshot from a node this one is behind.
    pub fn reconcile(self: &Arc<Self>, live: &[NodeStatus]) {
        let Some(cluster) = &self.cluster else { return };
        let mut resync = Vec::new();
        let flipped = {
            let mut others = cluster.lock();
            others.announcer = live.iter().all(|s| s.node > self.node);
            let live_ids: HashSet<u16> = live.iter().map(|s| s.node).collect();
            let dead: Vec<u16> = others.nodes.keys().filter(|n| !live_ids.contains(n)).copied().collect();
            let mut gone = Vec::new();
            for node in dead {
                let Some(n) = others.nodes.remove(&node) else { continue };
                let users: HashSet<UserId> = n.users.into_iter().filter(|u| !others.online(*u)).collect();
                gone.extend(users.iter().map(|u| (*u, false)));
                if others.announcer && !users.is_empty() {
                    others.told_gone.retain(|(n, _)| *n != node);
                    others.told_gone.push((node, users));
                    if others.told_gone.len() > TOLD_GONE_NODES {
                        others.told_gone.remove(0);
                    }
                }
            }
            for s in live {
                let n = others.nodes.entry(s.node).or_default();
                if n.epoch != s.presence_epoch && s.presence_seq == 0 {
                    // Started and has had no user yet.
                    *n = NodeUsers { epoch: s.presence_epoch, ..NodeUsers::default() };
                }
                let lagging = n.epoch != s.presence_epoch || n.seq < s.presence_seq;
                if !n.gap && !lagging {
                    n.behind = 0;
                    continue;
                }
                // A gap is asked about at once; a lag only once it has lasted two intervals
                // (deltas travel apart from statuses and may land just after). Then every third.
                n.behind += 1;
                let first = if n.gap { 1 } else { 2 };
                if n.behind >= first && (n.behind - first) % 3 == 0 {
                    resync.push(s.node);
                }
            }
            if others.announcer { gone } else { Vec::new() }
        };
        for node in resync {
            tracing::debug!(node, "presence: asking for a snapshot");
            self.dispatcher.broadcast(Control::PresenceResync { node });
        }
        self.announce_flips(self.not_here(flipped));
    }

    /// Changes seen on other nodes, less the users connected here (their state has not changed).
    fn not_here(&self, flipped: Vec<(UserId, bool)>) -> Vec<(UserId, bool)> {
        let users = self.users.lock();
        flipped.into_iter().filter(|(u, _)| users.get(u).is_none_or(|e| e.conns == 0)).collect()
    }

    fn announce_flips(self: &Arc<Self>, flipped: Vec<(UserId, bool)>) {
        if flipped.is_empty() {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            for (user, online) in flipped {
                this.announce(user, online).await;
            }
        });
    }
}
