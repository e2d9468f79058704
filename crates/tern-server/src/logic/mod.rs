//! Logic: what users may do and what it means — accounts, the send path, history, resume.
//!
//! The send path is validate → authorize → queue for the store (which dedups, assigns the seq and
//! makes it durable) → the store's commit listener routes it. Logic never touches connections.

mod accounts;
pub mod conversations;
mod files;
pub mod groups;
pub(crate) mod ids;
pub mod live;
pub mod nodes;
pub mod presence;
pub mod push;
pub mod rules;
pub mod sessions;
pub mod social;
pub mod transfers;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

pub use accounts::{validate_password, validate_username};
use tern_proto::{Body, ConvId, DeviceId, ErrorCode, Message, MsgId, Notice, UserId};

pub use tern_proto::conn::{Missed, SendTo};

use crate::auth::{Auth, Identity, IssuedToken, Principal, TokenError};
use crate::clock::now_ms;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::error::Error;
use crate::store::im::{Effect, Scope, Snapshot};
use crate::store::{AppendTicket, NewMessage, Page, Store, StoreError, encode_body};
pub use ids::MsgIdGen;
use presence::Presence;

/// Largest history page.
pub const MAX_PAGE: u32 = 500;
/// History page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 100;

/// The logic layer. Shared behind an `Arc`.
pub struct Logic {
    store: Arc<dyn Store>,
    auth: Auth,
    ids: Arc<MsgIdGen>,
    max_body_bytes: usize,
    resume_push_limit: u64,
    /// Users known to exist (accounts are never deleted yet), so the send path skips a store
    /// read per message. Bounded: cleared when it grows past `KNOWN_USERS_MAX`.
    known_users: Mutex<HashSet<UserId>>,
    /// Room → area, for rooms that were given one (loaded at start, kept in step with the store).
    room_areas: Mutex<HashMap<String, String>>,
    default_area: String,
    login_throttle: sessions::LoginThrottle,
    max_group_members: u32,
    recall_window_ms: u64,
    dispatcher: Arc<Dispatcher>,
    presence: Arc<Presence>,
    live: Arc<live::Live>,
}

/// Makes notices (server-written messages) with fresh ids; cheap to clone into a transaction.
#[derive(Clone)]
pub struct Notices {
    ids: Arc<MsgIdGen>,
}

impl Notices {
    /// An effect appending `notice` to `conv`, attributed to `actor`.
    pub fn append(&self, conv: ConvId, actor: UserId, notice: Notice) -> Effect {
        let body = Body::Notice { notice };
        let msg_id = self.ids.next();
        Effect::Append(NewMessage {
            msg_id,
            conv_id: conv,
            from: actor,
            // No device has an empty id: every device of every recipient gets it.
            from_device: DeviceId(String::new()),
            client_msg_id: format!("n:{msg_id}"),
            ts: now_ms(),
            body_json: encode_body(&body),
            body,
        })
    }
}

const KNOWN_USERS_MAX: usize = 1 << 20;

impl Logic {
    /// Builds the logic layer; ephemeral frames (presence, typing) go out through `dispatcher`.
    pub fn new(
        store: Arc<dyn Store>,
        auth: Auth,
        cfg: &Config,
        dispatcher: Arc<Dispatcher>,
        recent: Arc<crate::dispatch::RecentPosts>,
    ) -> Self {
        let presence = Arc::new(Presence::new(
            Arc::clone(&store),
            Arc::clone(&dispatcher),
            Duration::from_millis(cfg.messages.presence_debounce_ms),
            (!cfg.cluster.nats_url.is_empty()).then_some(cfg.cluster.node_id),
        ));
        let ids = Arc::new(MsgIdGen::new(cfg.cluster.node_id));
        let live = Arc::new(live::Live::new(
            Arc::clone(&store),
            Arc::clone(&dispatcher),
            Arc::clone(&ids),
            recent,
            &cfg.rooms,
        ));
        Self {
            live,
            max_group_members: cfg.messages.max_group_members,
            recall_window_ms: cfg.messages.recall_window_secs * 1000,
            dispatcher,
            presence,
            store,
            auth,
            ids,
            max_body_bytes: cfg.messages.max_body_bytes,
            resume_push_limit: cfg.gateway.resume_push_limit,
            known_users: Mutex::new(HashSet::new()),
            room_areas: Mutex::new(HashMap::new()),
            default_area: cfg.rooms.default_area.clone(),
            login_throttle: sessions::LoginThrottle::new(&cfg.auth),
        }
    }

    /// Loads what must be in memory before serving (room areas, session cutoffs).
    pub async fn load(&self) -> Result<(), Error> {
        for cut in self.store.session_cutoffs().await? {
            self.auth.set_cutoff(cut.user, cut.device, cut.after_ms);
        }
        self.live.load().await?;
        let areas = self.store.room_areas().await?;
        {
            let mut map = self.room_areas.lock();
            map.extend(areas);
        }
        Ok(())
    }

    /// A consistent snapshot of the store, written beside it; the caller streams and removes it.
    pub async fn backup(&self) -> Result<std::path::PathBuf, Error> {
        Ok(self.store.backup().await?)
    }

    /// Live-room posts and moderation.
    pub fn live(&self) -> &Arc<live::Live> {
        &self.live
    }

    /// Presence tracking (the gateway reports connections).
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    fn notices(&self) -> Notices {
        Notices { ids: Arc::clone(&self.ids) }
    }

    /// Runs an IM operation in one store transaction and returns what its rules decided.
    async fn transact<T: Send + 'static>(
        &self,
        scope: Scope,
        decide: impl FnOnce(&Snapshot) -> Result<(Vec<Effect>, T), Error> + Send + 'static,
    ) -> Result<T, Error> {
        let answer = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&answer);
        self.store
            .transact(
                scope,
                Box::new(move |snap| {
                    let (effects, value) = decide(snap)?;
                    {
                        let mut slot = slot.lock();
                        *slot = Some(value);
                    }
                    Ok(effects)
                }),
            )
            .await?;
        let value = answer.lock().take();
        value.ok_or_else(|| Error::from(StoreError::Backend("transaction finished without an answer".into())))
    }

    /// A fresh message id (stored messages and pushes share the id space).
    pub fn next_msg_id(&self) -> MsgId {
        self.ids.next()
    }

    /// The area of a room.
    pub fn room_area(&self, room: &str) -> String {
        self.room_areas.lock().get(room).cloned().unwrap_or_else(|| self.default_area.clone())
    }

    /// Assigns a room to an area (persisted).
    pub async fn set_room_area(&self, room: &str, area: &str) -> Result<(), Error> {
        if !tern_proto::frame::valid_name(room) || !tern_proto::frame::valid_name(area) {
            return Err(Error::bad_request("room and area names are 1 to 64 characters of [A-Za-z0-9_.:-]"));
        }
        self.store.set_room_area(room, area).await?;
        {
            let mut m = self.room_areas.lock();
            m.insert(room.to_owned(), area.to_owned());
        }
        self.dispatcher.broadcast(crate::bus::Control::RoomArea { room: room.to_owned(), area: area.to_owned() });
        Ok(())
    }

    /// Issues a token for an anonymous device: a new device id, or the same one when `current`
    /// is a valid device token (refresh).
    pub fn device_token(&self, current: Option<&str>) -> Result<(DeviceId, IssuedToken), Error> {
        let device_id = match current {
            None => {
                let raw: [u8; 16] = rand::random();
                DeviceId(format!("d_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>()))
            }
            Some(token) => match self.auth.verify(token) {
                Ok(Principal::Device(d)) => d,
                Ok(Principal::User(_)) => {
                    return Err(Error::bad_request("a user token cannot be refreshed as a device token"));
                }
                Err(_) => return Err(Error::unauthorized("token invalid")),
            },
        };
        let token = self.auth.issue_device(&device_id);
        Ok((device_id, token))
    }

    /// Token handling.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Verifies a token and, for a user token, that the user still exists.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Error> {
        let principal = self.auth.verify(token).map_err(|e| match e {
            TokenError::Expired => Error::unauthorized("token expired; log in again"),
            TokenError::Revoked => Error::unauthorized("session ended; log in again"),
            TokenError::Invalid(why) => {
                tracing::debug!(%why, "token refused");
                Error::unauthorized("token invalid")
            }
        })?;
        if let Principal::User(identity) = &principal
            && !self.user_exists(identity.user_id).await?
        {
            return Err(Error::unauthorized("token invalid"));
        }
        Ok(principal)
    }

    /// Like [`authenticate`](Self::authenticate), for operations that need a logged-in user.
    pub async fn authenticate_user(&self, token: &str) -> Result<Identity, Error> {
        match self.authenticate(token).await? {
            Principal::User(identity) => Ok(identity),
            Principal::Device(_) => {
                Err(Error::new(ErrorCode::Forbidden, "this needs a user login, not a device token"))
            }
        }
    }

    async fn user_exists(&self, user: UserId) -> Result<bool, Error> {
        if self.known_users.lock().contains(&user) {
            return Ok(true);
        }
        let exists = self.store.user_by_id(user).await?.is_some();
        if exists {
            let mut known = self.known_users.lock();
            if known.len() >= KNOWN_USERS_MAX {
                known.clear();
            }
            known.insert(user);
        }
        Ok(exists)
    }

    /// Whether the store's writes are succeeding: since when they have been failing, and why.
    pub fn store_failing(&self) -> Option<(u64, String)> {
        self.store.health().failing()
    }

    /// Validates a message and queues it for the store. Returns once it is queued (so one
    /// connection's sends keep their order); the ticket resolves once it is durable — or with
    /// `blocked`, `not_friends`, `muted` or `not_found` from the checks the store's writer makes
    /// against the committed state.
    pub async fn send(
        &self,
        from: &Identity,
        to: SendTo,
        client_msg_id: String,
        body: Body,
    ) -> Result<AppendTicket, Error> {
        if client_msg_id.is_empty() || client_msg_id.len() > 64 {
            return Err(Error::bad_request("client_msg_id must be 1 to 64 bytes"));
        }
        if client_msg_id.chars().any(char::is_control) {
            return Err(Error::bad_request("client_msg_id must not contain control characters"));
        }
        if client_msg_id.starts_with("n:") {
            return Err(Error::bad_request("client_msg_id must not start with \"n:\" (reserved for notices)"));
        }
        validate_body(&body)?;
        let conv_id = match to {
            SendTo::User(to) => ConvId::direct(from.user_id, to),
            SendTo::Conv(ConvId::User(_)) => {
                return Err(Error::bad_request("event streams are written by the server only"));
            }
            SendTo::Conv(c) => {
                if c.has_participant(from.user_id) == Some(false) {
                    return Err(Error::not_found("conversation not found"));
                }
                c
            }
        };
        let body = self.attach_file(from.user_id, conv_id, &client_msg_id, body).await?;
        let encoded = encode_body(&body);
        if encoded.len() > self.max_body_bytes {
            return Err(Error::new(
                ErrorCode::BodyTooLarge,
                format!("message body is {} bytes, the limit is {}", encoded.len(), self.max_body_bytes),
            ));
        }
        let msg = NewMessage {
            msg_id: self.ids.next(),
            conv_id,
            from: from.user_id,
            from_device: from.device_id.clone(),
            client_msg_id,
            ts: now_ms(),
            body,
            body_json: encoded,
        };
        Ok(self.store.append(msg).await?)
    }

    /// Parses a conversation id the caller names, answering `not_found` both for ids that do
    /// not parse and for conversations the caller is not in — so a probe learns nothing.
    pub async fn conversation_for(&self, user: UserId, conv: &str) -> Result<ConvId, Error> {
        let conv = conv.parse::<ConvId>().map_err(|_| Error::not_found("conversation not found"))?;
        self.readable_from(user, conv).await?;
        Ok(conv)
    }

    /// The first seq `user` may read in `conv`, or `not_found` if they are not in it.
    pub async fn readable_from(&self, user: UserId, conv: ConvId) -> Result<u64, Error> {
        match conv.has_participant(user) {
            Some(true) => Ok(1),
            Some(false) => Err(Error::not_found("conversation not found")),
            None => match self.store.membership(conv, user).await? {
                Some(m) => Ok(m.joined_seq),
                None => Err(Error::not_found("conversation not found")),
            },
        }
    }

    /// A page of history, for participants only. `after` wins over `before`; neither means the
    /// newest page (descending).
    pub async fn history(
        &self,
        user: UserId,
        conv: ConvId,
        after: Option<u64>,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(Vec<Message>, u64, u64), Error> {
        let joined = self.readable_from(user, conv).await?;
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(Error::bad_request(format!("limit must be 1 to {MAX_PAGE}")));
        }
        // A group member reads from the point they joined on.
        let floor = joined.saturating_sub(1);
        let page = match (after, before) {
            (Some(a), _) => Page::After(a.max(floor)),
            (None, Some(b)) => Page::Before(b),
            (None, None) => Page::Before(u64::MAX),
        };
        // Read last_seq first: a message committed in between shows up in the page but not in
        // last_seq, never the other way round.
        let last_seq = self.store.last_seq(conv).await?;
        let mut messages = self.store.messages(conv, page, limit).await?;
        messages.retain(|m| m.seq > floor);
        Ok((messages, last_seq, joined))
    }

    /// What a device that has `have` (last seq per conversation) missed, conversation by
    /// conversation: each conversation is pushed in full or announced as a gap.
    pub async fn resume(&self, user: UserId, have: &BTreeMap<ConvId, u64>) -> Result<Vec<Missed>, Error> {
        let mut items = Vec::new();
        for (conv, last, joined) in self.store.conversations_of(user).await? {
            let held = have.get(&conv).copied().unwrap_or(0).max(joined.saturating_sub(1));
            if last <= held {
                continue;
            }
            if last - held > self.resume_push_limit {
                items.push(Missed::Gap { conv_id: conv, from_seq: held + 1, to_seq: last });
                continue;
            }
            let mut missed = Vec::with_capacity((last - held) as usize);
            let mut after = held;
            while after < last {
                let page = self.store.messages(conv, Page::After(after), MAX_PAGE).await?;
                let Some(tail) = page.last() else { break };
                after = tail.seq;
                missed.extend(page.into_iter().filter(|m| m.seq <= last));
            }
            items.push(Missed::Messages(missed));
        }
        Ok(items)
    }

    /// Registers an account.
    pub async fn register(&self, username: &str, password: &str) -> Result<UserId, Error> {
        validate_username(username)?;
        validate_password(username, password)?;
        let hash = self
            .auth
            .hash_password(password.to_owned())
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("password hashing failed: {e}")))?;
        let id = self.store.create_user(username, &hash).await?;
        Ok(id)
    }

    /// A login attempt from `ip`: refused or slowed after failures (`sessions::LoginThrottle`),
    /// then the password is checked.
    pub async fn login(&self, username: &str, password: &str, ip: std::net::IpAddr) -> Result<UserId, Error> {
        let wait = self.login_throttle.admit(username, ip)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let result = self.check_password(username, password).await;
        if result.as_ref().is_err_and(|e| e.code == ErrorCode::Unauthorized) {
            self.login_throttle.failed(username, ip);
        }
        result
    }

    /// Checks a username and password; the same error for an unknown user and a wrong password.
    pub async fn check_password(&self, username: &str, password: &str) -> Result<UserId, Error> {
        let wrong = || Error::unauthorized("wrong username or password");
        let Some(user) = self.store.user_by_name(username).await? else {
            // Spend the same time as a real check so response timing does not reveal which
            // usernames exist.
            let _ = self.auth.hash_password(password.to_owned()).await;
            return Err(wrong());
        };
        if !self.auth.verify_password(password.to_owned(), user.password_hash).await {
            return Err(wrong());
        }
        // Said only to someone who knows the password.
        if user.disabled {
            return Err(Error::new(ErrorCode::Forbidden, "this account is disabled"));
        }
        Ok(user.id)
    }

    /// Looks a user up by name.
    pub async fn user_by_name(&self, username: &str) -> Result<(UserId, String), Error> {
        let user = self
            .store
            .user_by_name(username)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {username:?} does not exist")))?;
        Ok((user.id, user.username))
    }
}

/// Refuses client-supplied JSON nested deeper than [`tern_proto::MAX_DATA_DEPTH`] — the one
/// depth check for message and push data, whatever codec or transport it came in.
pub(crate) fn check_data_depth(what: &str, data: &serde_json::Value) -> Result<(), Error> {
    let depth = tern_proto::data_depth(data);
    if depth > tern_proto::MAX_DATA_DEPTH {
        return Err(Error::bad_request(format!(
            "{what} nests {depth} levels deep; the limit is {}",
            tern_proto::MAX_DATA_DEPTH
        )));
    }
    Ok(())
}

/// Checks a client's message body: only content kinds, each well-formed.
fn validate_body(body: &Body) -> Result<(), Error> {
    let file_id = |id: &str| {
        if id.is_empty() || id.len() > social::MAX_FILE_ID {
            Err(Error::bad_request(format!("file_id must be 1 to {} bytes", social::MAX_FILE_ID)))
        } else {
            Ok(())
        }
    };
    match body {
        Body::Text { text } if text.is_empty() => Err(Error::bad_request("text must not be empty")),
        Body::Text { .. } => Ok(()),
        Body::Image { file_id: id, .. } | Body::Voice { file_id: id, .. } => file_id(id),
        Body::File { file_id: id, name, .. } => {
            file_id(id)?;
            if name.is_empty() || name.len() > 255 {
                return Err(Error::bad_request("file name must be 1 to 255 bytes"));
            }
            Ok(())
        }
        Body::Sticker { code: Some(code), file_id: None, .. } => {
            let ok = (1..=32).contains(&code.len())
                && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if ok { Ok(()) } else { Err(Error::bad_request("a sticker code is 1 to 32 of [a-z0-9_-]")) }
        }
        Body::Sticker { code: None, file_id: Some(id), .. } => file_id(id),
        Body::Sticker { .. } => Err(Error::bad_request("a sticker has exactly one of code and file_id")),
        Body::Location { latitude, longitude, name } => {
            if !(-90.0..=90.0).contains(latitude) || !(-180.0..=180.0).contains(longitude) {
                return Err(Error::bad_request("latitude must be -90..90 and longitude -180..180"));
            }
            if name.as_ref().is_some_and(|n| n.len() > 255) {
                return Err(Error::bad_request("location name must be at most 255 bytes"));
            }
            Ok(())
        }
        Body::Custom { data } if !data.is_object() => Err(Error::bad_request("custom data must be a JSON object")),
        Body::Custom { data } => check_data_depth("custom data", data),
        Body::Recalled { .. } | Body::Notice { .. } | Body::Unreadable {} => {
            Err(Error::bad_request("clients send text, image, file, voice, sticker, location or custom bodies"))
        }
    }
}
