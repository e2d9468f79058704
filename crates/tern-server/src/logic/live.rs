//! The viewer side of live rooms: posts (`publish`) and their moderation — bans and mutes, slow
//! mode, the per-room rate and the word filter.
//!
//! A post becomes a room push with `from` set here, so it takes the business push's way out:
//! aggregation windows, lanes, one encode and one compression per window for every member. The
//! connection core has already checked the poster, the room, the size and the connection's rate.
//!
//! Bans and mutes are stored, cached here, and told to the other nodes (a [`Control`]); slow mode
//! and the room rate are kept per node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use parking_lot::Mutex;
use tern_proto::rate::Bucket;
use tern_proto::rest::{NewSanction, RoomSanction, RoomSettings, SanctionKind};
use tern_proto::{ErrorCode, Poster, Priority, Push, PushScope, UserId};

use super::ids::MsgIdGen;
use crate::bus::{Control, Target};
use crate::clock::now_ms;
use crate::config::{FilterAction, RoomsConfig};
use crate::dispatch::Dispatcher;
use crate::error::Error;
use crate::store::Store;

/// Rooms whose post state (rate, slow mode) is kept before idle ones are forgotten.
const ROOMS_KEPT: usize = 65_536;
/// Nicknames cached before the cache is cleared; and how long one is believed.
const NICKNAMES_KEPT: usize = 1 << 16;
const NICKNAME_TTL_MS: u64 = 60_000;
/// Longest slow mode, and longest reason.
const MAX_SLOW_MODE_SECS: u32 = 3600;
const MAX_REASON_CHARS: usize = 200;

/// One room's post state on this node.
struct RoomPosts {
    /// `rooms.publish_per_sec_per_room`.
    rate: Option<Bucket>,
    /// Set by the business server; `None`: the configured default.
    slow_mode_secs: Option<u32>,
    /// When each user last posted (for slow mode).
    last_post: HashMap<UserId, Instant>,
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
}

impl Live {
    /// The live-room service; `cfg` gives the limits and the word list.
    pub fn new(store: Arc<dyn Store>, dispatcher: Arc<Dispatcher>, ids: Arc<MsgIdGen>, cfg: &RoomsConfig) -> Self {
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
        }
    }

    /// Loads the stored bans and mutes.
    pub async fn load(&self) -> Result<(), Error> {
        let stored = self.store.room_sanctions().await?;
        let mut map = self.sanctions.lock();
        for s in stored {
            map.insert((s.room.clone(), s.user_id, s.kind), s);
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

    /// Refuses `forbidden` if `user` is banned from `room`.
    pub fn may_enter(&self, room: &str, user: UserId) -> Result<(), Error> {
        match self.in_force(room, user, SanctionKind::Ban) {
            Some(ban) => Err(Error::forbidden(sentence("you are banned from room", room, &ban))),
            None => Ok(()),
        }
    }

    /// A viewer's post: moderation, then a room push with `from` set.
    pub async fn publish(
        &self,
        user: UserId,
        room: String,
        mut data: serde_json::Value,
        priority: Priority,
    ) -> Result<(), Error> {
        self.may_enter(&room, user)?;
        if let Some(mute) = self.in_force(&room, user, SanctionKind::Mute) {
            return Err(Error::new(ErrorCode::Muted, sentence("you are muted in room", &room, &mute)));
        }
        if let Some((filter, action)) = &self.filter {
            let found = filter_strings(&mut data, filter, *action == FilterAction::Mask);
            if found && *action == FilterAction::Refuse {
                return Err(Error::forbidden("the post contains a word this server does not allow"));
            }
        }
        self.admit(&room, user)?;
        let nickname = self.nickname(user).await?;
        let push = Push {
            msg_id: self.ids.next(),
            priority,
            qos: 0,
            scope: PushScope::Room { room: room.clone() },
            ts: now_ms(),
            data,
            from: Some(Poster { user_id: user, nickname }),
        };
        self.dispatcher
            .push(Target::Room(room), push)
            .await
            .map_err(|_| Error::new(ErrorCode::Unavailable, "the room's queue is full; retry shortly").retry_after(1))
    }

    /// Slow mode and the room's rate: records the post if both allow it.
    fn admit(&self, room: &str, user: UserId) -> Result<(), Error> {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        if rooms.len() >= ROOMS_KEPT && !rooms.contains_key(room) {
            rooms.retain(|_, r| r.slow_mode_secs.is_some());
        }
        let per_room = self.per_room;
        let posts = rooms.entry(room.to_owned()).or_insert_with(|| RoomPosts {
            rate: (per_room > 0).then(|| Bucket::new(f64::from(per_room), per_room, now)),
            slow_mode_secs: None,
            last_post: HashMap::new(),
        });
        let slow = posts.slow_mode_secs.unwrap_or(self.default_slow_secs);
        if slow > 0
            && let Some(last) = posts.last_post.get(&user)
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
            posts.last_post.insert(user, now);
        }
        Ok(())
    }

    /// The poster's name: their nickname, else their username (cached for a minute).
    async fn nickname(&self, user: UserId) -> Result<String, Error> {
        let now = now_ms();
        if let Some((name, at)) = self.nicknames.lock().get(&user)
            && now.saturating_sub(*at) < NICKNAME_TTL_MS
        {
            return Ok(name.clone());
        }
        let profile = self.store.profiles(vec![user]).await?.into_iter().next();
        let name = profile.map(|p| if p.nickname.is_empty() { p.username } else { p.nickname }).unwrap_or_default();
        let mut cache = self.nicknames.lock();
        if cache.len() >= NICKNAMES_KEPT {
            cache.clear();
        }
        cache.insert(user, (name.clone(), now));
        Ok(name)
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

    /// Sets a room's slow mode on this node and tells the others.
    pub fn set_settings(&self, room: &str, settings: &RoomSettings) -> Result<(), Error> {
        if !tern_proto::frame::valid_name(room) {
            return Err(Error::bad_request("room names are 1 to 64 characters of [A-Za-z0-9_.:-]"));
        }
        if settings.slow_mode_secs > MAX_SLOW_MODE_SECS {
            return Err(Error::bad_request(format!("slow_mode_secs must be 0 to {MAX_SLOW_MODE_SECS}")));
        }
        self.apply_settings(room, settings.slow_mode_secs);
        self.dispatcher
            .broadcast(Control::RoomSettings { room: room.to_owned(), slow_mode_secs: settings.slow_mode_secs });
        Ok(())
    }

    /// A room's slow mode set (here or on another node).
    pub fn apply_settings(&self, room: &str, slow_mode_secs: u32) {
        let now = Instant::now();
        let per_room = self.per_room;
        let mut rooms = self.rooms.lock();
        let posts = rooms.entry(room.to_owned()).or_insert_with(|| RoomPosts {
            rate: (per_room > 0).then(|| Bucket::new(f64::from(per_room), per_room, now)),
            slow_mode_secs: None,
            last_post: HashMap::new(),
        });
        posts.slow_mode_secs = Some(slow_mode_secs);
    }

    /// A room's settings as in force on this node.
    pub fn settings(&self, room: &str) -> RoomSettings {
        let slow = self.rooms.lock().get(room).and_then(|r| r.slow_mode_secs).unwrap_or(self.default_slow_secs);
        RoomSettings { slow_mode_secs: slow }
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
