//! The viewer side of live rooms: posts (`publish`) and their moderation — bans and mutes, slow
//! mode, the per-room rate and the word filter.
//!
//! A post becomes a room push with `from` set here, so it takes the business push's way out:
//! aggregation windows, lanes, one encode and one compression per window for every member. The
//! connection core has already checked the poster, the room, the size and the connection's rate.
//!
//! Bans and mutes are stored, cached here, and told to the other nodes (a [`Control`]); slow mode
//! and the room rate are kept per node.
//!
//! Enter and leave events: the gateway reports each user connection entering and leaving a room;
//! a user's first connection in a room is an enter, their last one going is a leave once
//! `rooms.leave_grace_ms` has passed without their coming back (a reconnect is neither). Events
//! are gathered per room and sent by [`announce_room_events`] once per window, naming up to
//! `rooms.events_names` users each way and counting the rest, so a hot room gets one small
//! frame a window however many come and go. Anonymous devices make no events. Each node reports
//! its own connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use parking_lot::Mutex;
use tern_proto::rate::Bucket;
use tern_proto::rest::{JoinToken, NewSanction, RoomPolicy, RoomSanction, RoomSettings, SanctionKind};
use tern_proto::{DeviceId, ErrorCode, Priority, Push, PushScope, RoomUser, ServerFrame, UserId};

use super::ids::MsgIdGen;
use crate::auth::{Auth, TokenError};
use crate::bus::{Control, Target};
use crate::clock::now_ms;
use crate::config::{FilterAction, RoomsConfig};
use crate::dispatch::{Dispatcher, RecentPosts};
use crate::error::Error;
use crate::store::{Store, StoredRoomSettings};
use crate::wire::OutFrame;

/// Rooms whose post state (rate, slow mode) is kept before idle ones are forgotten.
const ROOMS_KEPT: usize = 65_536;
/// Nicknames cached before the cache is cleared; and how long one is believed.
const NICKNAMES_KEPT: usize = 1 << 16;
const NICKNAME_TTL_MS: u64 = 60_000;
/// Longest slow mode, and longest reason.
const MAX_SLOW_MODE_SECS: u32 = 3600;
const MAX_REASON_CHARS: usize = 200;
/// Largest recent-push ring a room may be given.
const MAX_HISTORY_SIZE: u32 = 1000;
/// Longest a join token may be valid: 30 days.
const MAX_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

/// Who posts: a logged-in user, or an anonymous device where the room allows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Poster {
    /// A user's connection.
    User(UserId),
    /// A device-token connection.
    Device(DeviceId),
}

/// An anonymous poster's name: "guest-" and the start of its device id (stable per device, so
/// readers can tell guests apart; user id 0 marks it as no account).
fn guest_name(device: &DeviceId) -> String {
    let id = device.0.strip_prefix("d_").unwrap_or(&device.0);
    format!("guest-{}", id.chars().take(6).collect::<String>())
}

/// One room's post state on this node.
struct RoomPosts {
    /// `rooms.publish_per_sec_per_room`.
    rate: Option<Bucket>,
    /// When each user last posted (for slow mode).
    last_post: HashMap<Poster, Instant>,
}

/// Posts into rooms and their moderation.
pub struct Live {
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    ids: Arc<MsgIdGen>,
    per_room: u32,
    default_slow_secs: u32,
    filter: Option<(AhoCorasick, FilterAction)>,
    rooms: Mutex<HashMap<String, RoomPosts>>,
    sanctions: Mutex<HashMap<(String, UserId, SanctionKind), RoomSanction>>,
    nicknames: Mutex<HashMap<UserId, (String, u64)>>,
    presence: Mutex<RoomPresence>,
    /// Rooms whose settings were set (loaded at start, kept in step with the store).
    room_settings: Mutex<HashMap<String, StoredRoomSettings>>,
    events_names: usize,
    leave_grace: std::time::Duration,
    members_list_max: usize,
    recent: Arc<RecentPosts>,
    default_history_size: usize,
}

/// Who is in which room on this node, and the events not yet sent.
#[derive(Default)]
struct RoomPresence {
    /// (room, user) → the user's connections in it.
    here: HashMap<(String, UserId), u32>,
    /// (room, user) → when their leave becomes an event, unless they come back first.
    leaving: HashMap<(String, UserId), Instant>,
    /// Per room, the events of this window.
    pending: HashMap<String, PendingEvents>,
}

#[derive(Default)]
struct PendingEvents {
    entered: Vec<UserId>,
    left: Vec<UserId>,
    more_entered: u64,
    more_left: u64,
}

impl Live {
    /// The live-room service; `cfg` gives the limits and the word list.
    pub fn new(
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
        ids: Arc<MsgIdGen>,
        recent: Arc<RecentPosts>,
        cfg: &RoomsConfig,
    ) -> Self {
        let filter = (!cfg.word_filter.is_empty())
            .then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(cfg.word_filter.iter().map(|w| w.trim()))
                    .ok()
            })
            .flatten()
            .map(|ac| (ac, cfg.word_filter_action));
        Self {
            store,
            dispatcher,
            ids,
            per_room: cfg.publish_per_sec_per_room,
            default_slow_secs: cfg.slow_mode_secs,
            filter,
            rooms: Mutex::new(HashMap::new()),
            sanctions: Mutex::new(HashMap::new()),
            nicknames: Mutex::new(HashMap::new()),
            presence: Mutex::new(RoomPresence::default()),
            room_settings: Mutex::new(HashMap::new()),
            events_names: cfg.events_names,
            leave_grace: std::time::Duration::from_millis(cfg.leave_grace_ms),
            members_list_max: cfg.members_list_max,
            recent,
            default_history_size: cfg.history_size,
        }
    }

    /// A user's connection entered `room` (on this node).
    pub fn entered(&self, room: &str, user: UserId) {
        let mut p = self.presence.lock();
        let key = (room.to_owned(), user);
        let n = p.here.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n > 1 || p.leaving.remove(&key).is_some() {
            return; // another connection of theirs is here, or they are back within the grace
        }
        let names = self.events_names;
        let events = p.pending.entry(key.0).or_default();
        // Entered and left within one window (and its grace): nothing to say about them.
        if let Some(i) = events.left.iter().position(|u| *u == user) {
            events.left.remove(i);
        } else if events.entered.len() < names {
            events.entered.push(user);
        } else {
            events.more_entered += 1;
        }
    }

    /// `n` of a user's connections left `room` (on this node).
    pub fn left(&self, room: &str, user: UserId, n: u32) {
        let mut p = self.presence.lock();
        let key = (room.to_owned(), user);
        let Some(here) = p.here.get_mut(&key) else { return };
        *here = here.saturating_sub(n);
        if *here == 0 {
            p.here.remove(&key);
            p.leaving.insert(key, Instant::now() + self.leave_grace);
        }
    }

    /// Takes this window's events: the leaves whose grace has passed join them.
    fn take_events(&self, now: Instant) -> Vec<(String, PendingEvents)> {
        let mut p = self.presence.lock();
        let p = &mut *p;
        let names = self.events_names;
        p.leaving.retain(|(room, user), at| {
            if *at > now {
                return true;
            }
            let events = p.pending.entry(room.clone()).or_default();
            if events.left.len() < names {
                events.left.push(*user);
            } else {
                events.more_left += 1;
            }
            false
        });
        p.pending
            .drain()
            .filter(|(_, e)| !e.entered.is_empty() || !e.left.is_empty() || e.more_entered + e.more_left > 0)
            .collect()
    }

    /// Sends this window's enter and leave events, one frame per room.
    async fn send_events(&self, now: Instant) {
        for (room, events) in self.take_events(now) {
            let named = |users: Vec<UserId>| async move {
                let mut out = Vec::with_capacity(users.len());
                for user_id in users {
                    let nickname = self.nickname(user_id).await.unwrap_or_default();
                    out.push(RoomUser { user_id, nickname });
                }
                out
            };
            let entered = named(events.entered).await;
            let left = named(events.left).await;
            let frame = ServerFrame::RoomEvents {
                room: room.clone(),
                entered,
                left,
                more_entered: events.more_entered,
                more_left: events.more_left,
            };
            self.dispatcher.publish(Target::Room(room), OutFrame::new(frame), Priority::Low);
        }
    }

    /// Loads the stored bans and mutes.
    pub async fn load(&self) -> Result<(), Error> {
        let stored = self.store.room_sanctions().await?;
        {
            let mut map = self.sanctions.lock();
            for s in stored {
                map.insert((s.room.clone(), s.user_id, s.kind), s);
            }
        }
        for settings in self.store.room_settings().await? {
            self.apply_settings(settings);
        }
        Ok(())
    }

    /// The sanction of `kind` on `user` in `room`, if one is in force.
    fn in_force(&self, room: &str, user: UserId, kind: SanctionKind) -> Option<RoomSanction> {
        let mut map = self.sanctions.lock();
        let key = (room.to_owned(), user, kind);
        let s = map.get(&key)?;
        if s.until_ms != 0 && s.until_ms <= now_ms() {
            map.remove(&key);
            return None;
        }
        Some(s.clone())
    }

    /// Refuses `forbidden` unless the connection may enter `room`: not banned, and for a private
    /// room a logged-in user with a valid join token.
    pub fn may_enter(&self, auth: &Auth, room: &str, user: Option<UserId>, token: Option<&str>) -> Result<(), Error> {
        if let Some(user) = user {
            self.not_banned(room, user)?;
        }
        let stored = self.stored_settings(room);
        if stored.policy == RoomPolicy::Public {
            return Ok(());
        }
        let private = |why: &str| Error::forbidden(format!("room {room:?} is private: {why}"));
        let user = user.ok_or_else(|| private("log in and join with a join token"))?;
        let token = token.ok_or_else(|| private("join with a join token from the room's owner"))?;
        match auth.verify_room(token, user, room) {
            Ok(issued) if issued > stored.tokens_after_ms => Ok(()),
            Ok(_) => Err(private("this join token was revoked")),
            Err(TokenError::Expired) => Err(private("this join token has expired")),
            Err(_) => Err(private("this join token is not valid for you and this room")),
        }
    }

    fn not_banned(&self, room: &str, user: UserId) -> Result<(), Error> {
        match self.in_force(room, user, SanctionKind::Ban) {
            Some(ban) => Err(Error::forbidden(sentence("you are banned from room", room, &ban))),
            None => Ok(()),
        }
    }

    /// A viewer's post: moderation, then a room push with `from` set.
    pub async fn publish(
        &self,
        poster: Poster,
        room: String,
        mut data: serde_json::Value,
        priority: Priority,
    ) -> Result<(), Error> {
        match &poster {
            Poster::User(user) => {
                self.not_banned(&room, *user)?;
                if let Some(mute) = self.in_force(&room, *user, SanctionKind::Mute) {
                    return Err(Error::new(ErrorCode::Muted, sentence("you are muted in room", &room, &mute)));
                }
            }
            Poster::Device(_) if !self.with_settings(&room, |s| s.is_some_and(|s| s.anonymous_posts)) => {
                return Err(Error::forbidden(format!(
                    "room {room:?} takes posts from logged-in users only (this connection uses a device token)"
                )));
            }
            Poster::Device(_) => {}
        }
        if let Some((filter, action)) = &self.filter {
            let found = filter_strings(&mut data, filter, *action == FilterAction::Mask);
            if found && *action == FilterAction::Refuse {
                return Err(Error::forbidden("the post contains a word this server does not allow"));
            }
        }
        self.admit(&room, &poster)?;
        let from = match &poster {
            Poster::User(user) => RoomUser { user_id: *user, nickname: self.nickname(*user).await? },
            Poster::Device(device) => RoomUser { user_id: UserId(0), nickname: guest_name(device) },
        };
        let push = Push {
            msg_id: self.ids.next(),
            priority,
            qos: 0,
            scope: PushScope::Room { room: room.clone() },
            ts: now_ms(),
            data,
            from: Some(from),
        };
        self.dispatcher
            .push(Target::Room(room), push)
            .await
            .map_err(|_| Error::new(ErrorCode::Unavailable, "the room's queue is full; retry shortly").retry_after(1))
    }

    /// Slow mode and the room's rate: records the post if both allow it.
    fn admit(&self, room: &str, poster: &Poster) -> Result<(), Error> {
        let now = Instant::now();
        // Read in place (this runs for every post), and before the rooms' lock: one lock at a time.
        let slow = self.with_settings(room, |s| s.and_then(|s| s.slow_mode_secs)).unwrap_or(self.default_slow_secs);
        let mut rooms = self.rooms.lock();
        if rooms.len() >= ROOMS_KEPT && !rooms.contains_key(room) {
            rooms.clear();
        }
        let per_room = self.per_room;
        let posts = rooms.entry(room.to_owned()).or_insert_with(|| RoomPosts {
            rate: (per_room > 0).then(|| Bucket::new(f64::from(per_room), per_room, now)),
            last_post: HashMap::new(),
        });
        if slow > 0
            && let Some(last) = posts.last_post.get(poster)
        {
            let wait = std::time::Duration::from_secs(u64::from(slow)).saturating_sub(now.duration_since(*last));
            if !wait.is_zero() {
                let secs = wait.as_secs_f64().ceil() as u64;
                return Err(Error::new(
                    ErrorCode::RateLimited,
                    format!("slow mode: one post per {slow} s in room {room:?}; retry in {secs} s"),
                )
                .retry_after(secs));
            }
        }
        if let Some(Err(secs)) = posts.rate.as_mut().map(|b| b.take(now)) {
            return Err(Error::new(
                ErrorCode::RateLimited,
                format!("room {room:?} is taking more posts than it can show ({per_room} a second); retry in {secs} s"),
            )
            .retry_after(secs));
        }
        if slow > 0 {
            let window = std::time::Duration::from_secs(u64::from(slow));
            if posts.last_post.len() >= 1024 {
                posts.last_post.retain(|_, at| now.duration_since(*at) < window);
            }
            posts.last_post.insert(poster.clone(), now);
        }
        Ok(())
    }

    /// The poster's name: their nickname, else their username (cached for a minute).
    async fn nickname(&self, user: UserId) -> Result<String, Error> {
        Ok(self.room_users(&[user]).await?.pop().map(|u| u.nickname).unwrap_or_default())
    }

    /// Users as a room shows them (nickname, else username), in the order given; one store read
    /// for those not cached.
    pub async fn room_users(&self, users: &[UserId]) -> Result<Vec<RoomUser>, Error> {
        let now = now_ms();
        let mut known: HashMap<UserId, String> = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.nicknames.lock();
            for u in users {
                match cache.get(u) {
                    Some((name, at)) if now.saturating_sub(*at) < NICKNAME_TTL_MS => {
                        known.insert(*u, name.clone());
                    }
                    _ => missing.push(*u),
                }
            }
        }
        if !missing.is_empty() {
            let profiles = self.store.profiles(missing).await?;
            let mut cache = self.nicknames.lock();
            if cache.len() >= NICKNAMES_KEPT {
                cache.clear();
            }
            for p in profiles {
                let name = if p.nickname.is_empty() { p.username } else { p.nickname };
                cache.insert(p.user_id, (name.clone(), now));
                known.insert(p.user_id, name);
            }
        }
        Ok(users
            .iter()
            .map(|u| RoomUser { user_id: *u, nickname: known.get(u).cloned().unwrap_or_default() })
            .collect())
    }

    /// `rooms.members_list_max`.
    pub fn members_list_max(&self) -> usize {
        self.members_list_max
    }

    /// A user changed their profile: their next post shows the new name.
    pub fn forget_nickname(&self, user: UserId) {
        self.nicknames.lock().remove(&user);
    }

    /// Bans or mutes a user in a room: stored, in force here at once and told to the other nodes.
    /// The caller takes a banned user's connections out of the room.
    pub async fn sanction(&self, room: &str, kind: SanctionKind, new: NewSanction) -> Result<RoomSanction, Error> {
        if !tern_proto::frame::valid_name(room) {
            return Err(Error::bad_request("room names are 1 to 64 characters of [A-Za-z0-9_.:-]"));
        }
        if new.reason.chars().count() > MAX_REASON_CHARS || new.reason.chars().any(char::is_control) {
            return Err(Error::bad_request(format!(
                "reason must be at most {MAX_REASON_CHARS} characters, without control characters"
            )));
        }
        let now = now_ms();
        let until_ms = match new.duration_secs {
            None => 0,
            Some(0) => return Err(Error::bad_request("duration_secs must be at least 1 (omit it for until lifted)")),
            Some(secs) => secs
                .checked_mul(1000)
                .and_then(|ms| now.checked_add(ms))
                .ok_or_else(|| Error::bad_request("duration_secs is too large (omit it for until lifted)"))?,
        };
        let sanction = RoomSanction {
            room: room.to_owned(),
            user_id: new.user_id,
            kind,
            until_ms,
            reason: new.reason,
            created_at: now,
        };
        self.store.put_room_sanction(sanction.clone()).await?;
        self.apply(&sanction, false);
        self.dispatcher.broadcast(Control::RoomSanction { sanction: sanction.clone(), lifted: false });
        Ok(sanction)
    }

    /// Lifts a ban or mute; `not_found` if there was none.
    pub async fn lift(&self, room: &str, user: UserId, kind: SanctionKind) -> Result<(), Error> {
        let existed = self.store.lift_room_sanction(room, user, kind).await?;
        let sanction = RoomSanction {
            room: room.to_owned(),
            user_id: user,
            kind,
            until_ms: 0,
            reason: String::new(),
            created_at: 0,
        };
        self.apply(&sanction, true);
        self.dispatcher.broadcast(Control::RoomSanction { sanction, lifted: true });
        if existed {
            Ok(())
        } else {
            Err(Error::not_found(format!("user {user} has no {} in room {room:?}", kind.as_str())))
        }
    }

    /// A sanction imposed or lifted (here or on another node).
    pub fn apply(&self, sanction: &RoomSanction, lifted: bool) {
        let key = (sanction.room.clone(), sanction.user_id, sanction.kind);
        let mut map = self.sanctions.lock();
        if lifted {
            map.remove(&key);
        } else {
            map.insert(key, sanction.clone());
        }
    }

    /// The bans (or mutes) in force in a room, oldest first.
    pub fn sanctions(&self, room: &str, kind: SanctionKind) -> Vec<RoomSanction> {
        let now = now_ms();
        let map = self.sanctions.lock();
        let mut list: Vec<RoomSanction> = map
            .values()
            .filter(|s| s.room == room && s.kind == kind && (s.until_ms == 0 || s.until_ms > now))
            .cloned()
            .collect();
        list.sort_by_key(|s| (s.created_at, s.user_id));
        list
    }

    /// Changes a room's settings (the fields given): stored, in force here at once and told to
    /// the other nodes. Answers the settings now in force.
    pub async fn set_settings(&self, room: &str, change: RoomSettings) -> Result<RoomSettings, Error> {
        if change.slow_mode_secs.is_some_and(|s| s > MAX_SLOW_MODE_SECS) {
            return Err(Error::bad_request(format!("slow_mode_secs must be 0 to {MAX_SLOW_MODE_SECS}")));
        }
        if change.history_size.is_some_and(|n| n > MAX_HISTORY_SIZE) {
            return Err(Error::bad_request(format!("history_size must be 0 to {MAX_HISTORY_SIZE}")));
        }
        let mut stored = self.stored_settings(room);
        if let Some(slow) = change.slow_mode_secs {
            stored.slow_mode_secs = Some(slow);
        }
        if let Some(policy) = change.policy {
            stored.policy = policy;
        }
        if let Some(n) = change.history_size {
            stored.history_size = Some(n);
        }
        if let Some(anonymous) = change.anonymous_posts {
            stored.anonymous_posts = anonymous;
        }
        self.save_settings(stored).await?;
        Ok(self.settings(room))
    }

    /// Voids every join token of `room` issued until now.
    pub async fn void_tokens(&self, room: &str) -> Result<(), Error> {
        let mut stored = self.stored_settings(room);
        stored.tokens_after_ms = now_ms();
        self.save_settings(stored).await
    }

    async fn save_settings(&self, stored: StoredRoomSettings) -> Result<(), Error> {
        self.store.put_room_settings(stored.clone()).await?;
        self.apply_settings(stored.clone());
        self.dispatcher.broadcast(Control::RoomSettings { settings: stored });
        Ok(())
    }

    /// A room's settings changed (here or on another node).
    pub fn apply_settings(&self, stored: StoredRoomSettings) {
        self.recent.set_size(&stored.room, stored.history_size.map(|n| n as usize));
        self.room_settings.lock().insert(stored.room.clone(), stored);
    }

    /// Reads a room's stored settings (`None`: never set) without copying them.
    fn with_settings<T>(&self, room: &str, read: impl FnOnce(Option<&StoredRoomSettings>) -> T) -> T {
        read(self.room_settings.lock().get(room))
    }

    fn stored_settings(&self, room: &str) -> StoredRoomSettings {
        self.room_settings.lock().get(room).cloned().unwrap_or_else(|| StoredRoomSettings {
            room: room.to_owned(),
            slow_mode_secs: None,
            policy: RoomPolicy::Public,
            tokens_after_ms: 0,
            history_size: None,
            anonymous_posts: false,
        })
    }

    /// A room's settings in force.
    pub fn settings(&self, room: &str) -> RoomSettings {
        let stored = self.stored_settings(room);
        RoomSettings {
            slow_mode_secs: Some(stored.slow_mode_secs.unwrap_or(self.default_slow_secs)),
            policy: Some(stored.policy),
            history_size: Some(stored.history_size.unwrap_or(self.default_history_size as u32)),
            anonymous_posts: Some(stored.anonymous_posts),
        }
    }

    /// A join token for `user` in `room`.
    pub fn join_token(&self, auth: &Auth, room: &str, user: UserId, ttl_secs: Option<u64>) -> Result<JoinToken, Error> {
        let ttl = ttl_secs.unwrap_or(3600);
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl) {
            return Err(Error::bad_request(format!("ttl_secs must be 1 to {MAX_TOKEN_TTL_SECS}")));
        }
        let issued = auth.issue_room(user, room, ttl);
        Ok(JoinToken { token: issued.token, expires_at: issued.expires_at })
    }
}

/// Sends the rooms' enter and leave events every `window` until `stop`.
pub async fn announce_room_events(
    live: Arc<Live>,
    window: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(window);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => live.send_events(Instant::now()).await,
        }
    }
}

/// "you are banned from room "r" until …: reason".
fn sentence(what: &str, room: &str, s: &RoomSanction) -> String {
    let until = if s.until_ms == 0 {
        String::new()
    } else {
        format!(" for {} more s", s.until_ms.saturating_sub(now_ms()).div_ceil(1000))
    };
    let reason = if s.reason.is_empty() { String::new() } else { format!(": {}", s.reason) };
    format!("{what} {room:?}{until}{reason}")
}

/// Whether any string in `value` (keys aside) contains a listed word; with `mask`, each one found
/// is replaced by as many `*` as it has characters. Iterative: the depth is bounded by the core,
/// but a wide value should not recurse either.
fn filter_strings(value: &mut serde_json::Value, filter: &AhoCorasick, mask: bool) -> bool {
    use serde_json::Value;
    let mut found = false;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => {
                if !filter.is_match(s.as_str()) {
                    continue;
                }
                found = true;
                if mask {
                    let mut out = String::with_capacity(s.len());
                    let mut at = 0;
                    for m in filter.find_iter(s.as_str()) {
                        out.push_str(&s[at..m.start()]);
                        out.extend(std::iter::repeat_n('*', s[m.start()..m.end()].chars().count()));
                        at = m.end();
                    }
                    out.push_str(&s[at..]);
                    *s = out;
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(words: &[&str]) -> AhoCorasick {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(words)
            .unwrap()
    }

    #[test]
    fn the_word_filter_masks_every_string_by_characters_and_leaves_keys_alone() {
        let f = filter(&["spam", "坏词"]);
        let mut v = serde_json::json!({"spam": "buy SPAM now", "n": [1, {"t": "这是坏词啊"}], "ok": "fine"});
        assert!(filter_strings(&mut v, &f, true));
        assert_eq!(v, serde_json::json!({"spam": "buy **** now", "n": [1, {"t": "这是**啊"}], "ok": "fine"}));
        let mut clean = serde_json::json!({"text": "hello"});
        assert!(!filter_strings(&mut clean, &f, true));
        let mut refused = serde_json::json!("spam");
        assert!(filter_strings(&mut refused, &f, false));
        assert_eq!(refused, "spam", "without mask the value is left as it was");
    }
}
