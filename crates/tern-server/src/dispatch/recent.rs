//! The recent posts of each room on this node, for late joiners: the last `rooms.history_size`
//! pushes delivered to the room (business pushes and viewers' posts), none older than
//! `rooms.history_secs`. A `join` asking for them gets them after `joined`; a client back from a
//! short disconnect asks for those after the last it saw, and learns of a gap when that one has
//! already left the ring.
//!
//! Kept per node, from what this node delivers: in a cluster a node starts a room's ring when it
//! first has a member there (rooms are routed to the nodes with members).

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use tern_proto::{MsgId, Push, ServerFrame};

use crate::clock::now_ms;
use crate::wire::OutFrame;

/// Rooms whose rings are kept; past it the rings are dropped and start again (bounded memory).
const ROOMS_KEPT: usize = 16_384;

/// The rings.
pub struct RecentPosts {
    size: usize,
    max_age_ms: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rings: HashMap<String, VecDeque<Push>>,
    /// Rooms whose ring size a business server set (`PUT /v1/rooms/{room}/settings`).
    sizes: HashMap<String, usize>,
}

/// What a joiner gets.
#[derive(Debug, Default, PartialEq)]
pub struct Recent {
    /// Oldest first.
    pub pushes: Vec<Push>,
    /// The push asked to start after is no longer (or never was) in the ring: older ones may
    /// have been missed.
    pub gap: bool,
}

impl RecentPosts {
    /// Rings of `size` pushes (0: none, unless set for a room), none older than `max_age_ms`.
    pub fn new(size: usize, max_age_ms: u64) -> Self {
        Self { size, max_age_ms, inner: Mutex::new(Inner::default()) }
    }

    /// Sets a room's ring size (`None`: the default; 0: keep none).
    pub fn set_size(&self, room: &str, size: Option<usize>) {
        let mut inner = self.inner.lock();
        match size {
            Some(n) => inner.sizes.insert(room.to_owned(), n),
            None => inner.sizes.remove(room),
        };
        let n = inner.sizes.get(room).copied().unwrap_or(self.size);
        if let Some(ring) = inner.rings.get_mut(room) {
            while ring.len() > n {
                ring.pop_front();
            }
        }
    }

    /// Records what a room frame carries (a push or a batch of them; other frames are not posts).
    pub fn record(&self, room: &str, frame: &OutFrame) {
        let pushes: &[Push] = match frame.frame() {
            ServerFrame::Push(p) => std::slice::from_ref(p),
            ServerFrame::Batch { pushes, .. } => pushes,
            _ => return,
        };
        let mut inner = self.inner.lock();
        let size = inner.sizes.get(room).copied().unwrap_or(self.size);
        if size == 0 {
            return;
        }
        if inner.rings.len() >= ROOMS_KEPT && !inner.rings.contains_key(room) {
            inner.rings.clear();
        }
        let ring = inner.rings.entry(room.to_owned()).or_insert_with(|| VecDeque::with_capacity(size.min(64)));
        for p in pushes {
            while ring.len() >= size {
                ring.pop_front();
            }
            ring.push_back(p.clone());
        }
    }

    /// The room's recent pushes after `after` (0: all of them), oldest first.
    pub fn since(&self, room: &str, after: u64) -> Recent {
        let oldest = now_ms().saturating_sub(self.max_age_ms);
        let inner = self.inner.lock();
        let ring = inner.rings.get(room);
        let fresh = ring.into_iter().flatten().filter(|p| p.ts >= oldest);
        if after == 0 {
            return Recent { pushes: fresh.cloned().collect(), gap: false };
        }
        let mut fresh: Vec<&Push> = fresh.collect();
        match fresh.iter().position(|p| p.msg_id == MsgId(after)) {
            Some(i) => Recent { pushes: fresh.split_off(i + 1).into_iter().cloned().collect(), gap: false },
            None => Recent { pushes: fresh.into_iter().cloned().collect(), gap: true },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::{Priority, PushScope};

    fn push(id: u64) -> Push {
        Push {
            msg_id: MsgId(id),
            priority: Priority::Low,
            qos: 0,
            scope: PushScope::Room { room: "r".into() },
            ts: now_ms(),
            data: serde_json::json!(id),
            from: None,
        }
    }

    #[test]
    fn a_ring_keeps_the_last_n_and_says_when_the_asked_one_is_gone() {
        let recent = RecentPosts::new(3, 60_000);
        recent.record("r", &OutFrame::new(ServerFrame::Push(push(1))));
        let batch =
            ServerFrame::Batch { scope: PushScope::Room { room: "r".into() }, pushes: vec![push(2), push(3), push(4)] };
        recent.record("r", &OutFrame::new(batch));
        recent.record("r", &OutFrame::new(ServerFrame::Online { room: "r".into(), count: 3 }));
        let ids = |r: Recent| (r.pushes.iter().map(|p| p.msg_id.0).collect::<Vec<_>>(), r.gap);
        assert_eq!(ids(recent.since("r", 0)), (vec![2, 3, 4], false));
        assert_eq!(ids(recent.since("r", 3)), (vec![4], false));
        assert_eq!(ids(recent.since("r", 4)), (vec![], false));
        assert_eq!(ids(recent.since("r", 1)), (vec![2, 3, 4], true), "1 has left the ring");
        assert_eq!(ids(recent.since("other", 0)), (vec![], false));
        // A room of its own size: smaller at once; 0 keeps nothing more.
        recent.set_size("r", Some(1));
        assert_eq!(ids(recent.since("r", 0)), (vec![4], false));
        recent.set_size("r", Some(0));
        recent.record("r", &OutFrame::new(ServerFrame::Push(push(5))));
        assert_eq!(ids(recent.since("r", 0)), (vec![], false));
        recent.set_size("r", None);
        recent.record("r", &OutFrame::new(ServerFrame::Push(push(6))));
        assert_eq!(ids(recent.since("r", 0)), (vec![6], false), "back to the default");
    }

    #[test]
    fn old_posts_are_not_replayed() {
        let recent = RecentPosts::new(10, 1_000);
        let mut old = push(1);
        old.ts = now_ms() - 5_000;
        recent.record("r", &OutFrame::new(ServerFrame::Push(old)));
        recent.record("r", &OutFrame::new(ServerFrame::Push(push(2))));
        assert_eq!(recent.since("r", 0).pushes.len(), 1);
    }
}
