//! Presence: who is online, told to their friends — debounced, so a device that reconnects
//! within the debounce window (a network blip, a page reload) causes no offline/online flap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_proto::{Priority, ServerFrame, UserId};

use crate::bus::Target;
use crate::dispatch::{Dispatcher, OutFrame};
use crate::store::Store;

/// Tracks connections per user and announces changes to friends.
pub struct Presence {
    users: Mutex<HashMap<UserId, Entry>>,
    debounce: Duration,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
}

#[derive(Default)]
struct Entry {
    /// Authenticated connections of the user on this node.
    conns: u32,
    /// What friends were last told.
    announced: bool,
    /// A settle task is waiting out the debounce.
    pending: bool,
}

impl Presence {
    /// A tracker announcing through `dispatcher` after `debounce`.
    pub fn new(store: Arc<dyn Store>, dispatcher: Arc<Dispatcher>, debounce: Duration) -> Self {
        Self { users: Mutex::new(HashMap::new()), debounce, store, dispatcher }
    }

    /// Whether the user has a connection on this node.
    pub fn is_online(&self, user: UserId) -> bool {
        self.users.lock().is_ok_and(|m| m.get(&user).is_some_and(|e| e.conns > 0))
    }

    /// A connection of `user` authenticated.
    pub fn connected(self: &Arc<Self>, user: UserId) {
        self.change(user, |e| e.conns += 1);
    }

    /// A connection of `user` closed.
    pub fn disconnected(self: &Arc<Self>, user: UserId) {
        self.change(user, |e| e.conns = e.conns.saturating_sub(1));
    }

    fn change(self: &Arc<Self>, user: UserId, f: impl FnOnce(&mut Entry)) {
        let Ok(mut users) = self.users.lock() else { return };
        let entry = users.entry(user).or_default();
        f(entry);
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

    /// After the debounce: if the state still differs from what friends were told, tell them.
    async fn settle(self: Arc<Self>, user: UserId) {
        let online = {
            let Ok(mut users) = self.users.lock() else { return };
            let Some(entry) = users.get_mut(&user) else { return };
            entry.pending = false;
            let online = entry.conns > 0;
            let changed = online != entry.announced;
            entry.announced = online;
            if !online {
                users.remove(&user);
            }
            if !changed {
                return;
            }
            online
        };
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
}
