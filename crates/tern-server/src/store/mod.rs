//! Storage behind one trait, so logic never knows which engine it talks to.
//!
//! The embedded engine is [`sqlite::SqliteStore`]: SQLite in WAL mode, one writer thread doing
//! group commit, a small pool of read connections. A clustered engine implements the same
//! [`Store`] trait; [`conformance`] is the suite every engine must pass.
//!
//! The store is where a message becomes durable and gets its seq. After each commit it hands the
//! new messages, in commit order, to a [`CommitListener`] (dispatch), *before* the senders are
//! answered: so a live push never overtakes the store, and pushes leave in seq order.

#[cfg(test)]
pub mod conformance;
pub mod im;
pub mod postgres;
#[cfg(test)]
mod seq_property;
mod sql;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use std::sync::Arc;

use im::{ConvSummary, Decide, GroupState, MemberRecord, Profile, ProfileChange, RelationRow, Scope};
use tern_proto::{ConvId, DeviceId, GroupId, Message, MsgId, UserId};
use tokio::sync::oneshot;

/// A boxed future, so the trait stays object-safe (`Arc<dyn Store>`).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What can go wrong in a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A unique value is taken (username, or a client_msg_id reused in another conversation).
    #[error("{0}")]
    Conflict(String),
    /// The engine failed; the operation did not happen.
    #[error("storage failure: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("storage is closed")]
    Closed,
    /// The storage itself cannot take writes (disk full, I/O errors); a retry may succeed once
    /// an operator acts. Marks the store unhealthy (`/healthz`).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The operation's rules refused it (not a member, blocked, muted, …); nothing changed.
    #[error("{0}")]
    Denied(crate::error::Error),
}

/// The send rules the engines apply when they append a client's message — at commit time, where
/// no block, kick or mute can slip in between check and write. The rules are logic's
/// (`logic::rules::ImRules`); the store only asks them.
pub trait SendRules: Send + Sync + 'static {
    /// May a 1:1 message reach a user whose policy is `policy` and who has set `towards_sender`?
    fn direct(&self, policy: im::DmPolicy, towards_sender: &im::Relation) -> Result<(), crate::error::Error>;

    /// May `user` send into `group` at `now` (ms)?
    fn group(&self, group: &im::GroupState, user: UserId, now: u64) -> Result<(), crate::error::Error>;
}

/// How a store failure reads to a client: a refusal by the rules as it was, the engine's
/// troubles as `unavailable` (with a retry hint) or `internal`, logged here once.
impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => crate::error::Error::new(tern_proto::ErrorCode::Conflict, m),
            StoreError::Denied(e) => e,
            StoreError::Closed => {
                crate::error::Error::new(tern_proto::ErrorCode::Unavailable, "the server is shutting down")
            }
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "storage unavailable");
                crate::error::Error::new(
                    tern_proto::ErrorCode::Unavailable,
                    "storage cannot take writes right now (disk full or failing); the request was not applied, retry later",
                )
                .retry_after(5)
            }
            StoreError::Backend(m) => {
                tracing::error!(error = %m, "store failure");
                crate::error::Error::new(
                    tern_proto::ErrorCode::Internal,
                    "storage failure; the request was not applied, retry it",
                )
            }
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Whether the store's last write succeeded, for `/healthz`: a server whose disk is full keeps
/// serving reads but must not look healthy to a load balancer or an operator.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failing: parking_lot::Mutex<Option<(u64, String)>>,
}

impl StoreHealth {
    /// A write committed.
    pub fn ok(&self) {
        let mut f = self.failing.lock();
        if f.is_some() {
            tracing::info!("store writes succeed again");
            *f = None;
        }
    }

    /// A write failed for a reason that is not the request's own (disk, I/O, database gone).
    pub fn failed(&self, why: &str) {
        {
            let mut f = self.failing.lock();
            let since = f.as_ref().map_or_else(crate::clock::now_ms, |(since, _)| *since);
            *f = Some((since, why.to_owned()));
        }
    }

    /// Since when (ms since the Unix epoch) writes have been failing, and the latest error.
    pub fn failing(&self) -> Option<(u64, String)> {
        self.failing.lock().clone()
    }
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its id.
    pub id: UserId,
    /// The name, as registered.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Disabled by an operator: cannot log in.
    pub disabled: bool,
}

/// Tokens of `user` issued at or before `after_ms` are void — on one device, or all (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCutoff {
    /// Whose.
    pub user: UserId,
    /// Which device; `None`: every device.
    pub device: Option<DeviceId>,
    /// The cutoff, ms since the Unix epoch.
    pub after_ms: u64,
}

/// A message to store. The store assigns the seq.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Id chosen by logic (unique per deployment).
    pub msg_id: MsgId,
    /// The conversation.
    pub conv_id: ConvId,
    /// The sender.
    pub from: UserId,
    /// The sender's device; its own push is skipped.
    pub from_device: DeviceId,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// Acceptance time, ms since the Unix epoch.
    pub ts: u64,
    /// The body.
    pub body: tern_proto::Body,
    /// The body, JSON-encoded once by logic (what is stored).
    pub body_json: Bytes,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The stored message: the new one, or the original for a duplicate.
    pub message: Message,
    /// True when the client_msg_id had been stored before; nothing new was written.
    pub duplicate: bool,
}

/// A message that has just become durable, as handed to the [`CommitListener`].
#[derive(Debug, Clone)]
pub struct Committed {
    /// The message.
    pub message: Message,
    /// The device that sent it.
    pub from_device: DeviceId,
    /// Who must get it: the conversation's members when it was appended (shared, because a
    /// group's list is the same for every message until it changes).
    pub recipients: Arc<[UserId]>,
}

/// Receives every newly committed message, in commit order, before senders are answered.
/// Called on the store's writer; must not block.
pub trait CommitListener: Send + Sync + 'static {
    /// These messages are durable.
    fn committed(&self, batch: &[Committed]);
}

/// Encodes a body once, for [`NewMessage::body`].
pub fn encode_body(body: &tern_proto::Body) -> Bytes {
    // A `Body` always serializes (string keys, no custom impls).
    Bytes::from(serde_json::to_vec(body).unwrap_or_default())
}

/// Reads a stored body back. A row that does not parse — written before today's limits (data
/// nested past what the reader accepts), or damaged — is logged and read as
/// [`Body::Unreadable`](tern_proto::Body::Unreadable): one bad row must never fail a page of
/// history, a conversation list or a resume, nor shift the seqs around it.
pub fn decode_body(bytes: &[u8], conv: ConvId, seq: u64) -> tern_proto::Body {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        tracing::warn!(%conv, seq, error = %e, "stored message body cannot be read; served as unreadable");
        tern_proto::Body::Unreadable {}
    })
}

/// A page request over one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Seq greater than this, ascending.
    After(u64),
    /// Seq lower than this, descending.
    Before(u64),
}

/// A conversation a user is in: `(conversation, its last seq, the first seq the user may read)`.
pub type ConvPosition = (ConvId, u64, u64);

/// An append that has been queued; await it for the durable result.
pub type AppendTicket = oneshot::Receiver<Result<Appended, StoreError>>;

pub use tern_proto::rest::{RoomPolicy, RoomSanction, SanctionKind};

/// A room's settings as stored (and told to the other nodes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRoomSettings {
    /// The room.
    pub room: String,
    /// Slow mode seconds, if set for this room (else the configured default).
    pub slow_mode_secs: Option<u32>,
    /// Who may enter.
    pub policy: RoomPolicy,
    /// Join tokens issued at or before this (ms since the Unix epoch) are void.
    pub tokens_after_ms: u64,
    /// Recent pushes kept, if set for this room (else the configured default).
    #[serde(default)]
    pub history_size: Option<u32>,
    /// Device-token viewers may post.
    #[serde(default)]
    pub anonymous_posts: bool,
}

/// A file: an upload in progress (`sha256` empty) or complete. Its bytes live in the file
/// storage (`crate::files`), by content; this is its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The file's id (what messages and URLs name).
    pub id: String,
    /// Who uploaded it.
    pub owner: UserId,
    /// The name the uploader gave (tus metadata `filename`), or empty.
    pub name: String,
    /// Its length in bytes, as announced.
    pub length: u64,
    /// Bytes received and durable.
    pub offset: u64,
    /// SHA-256 of the content, lowercase hex; empty while the upload is incomplete.
    pub sha256: String,
    /// Bytes stored once complete (less than `length` when metadata was stripped from an image).
    pub size: u64,
    /// The content type found by looking at the bytes (never the client's word).
    pub mime: String,
    /// SHA-256 of its thumbnail's content (a JPEG), for images; empty when there is none.
    pub thumbnail: String,
    /// Pixels, for images.
    pub width: Option<u32>,
    /// Pixels, for images.
    pub height: Option<u32>,
    /// Anyone may download it (avatars, stickers).
    pub public: bool,
    /// Creation, ms since the Unix epoch.
    pub created_at: u64,
    /// An incomplete upload expires then (ms since the Unix epoch); 0 once complete.
    pub expires_at: u64,
    /// The client's `Upload-Metadata` header, echoed back on `HEAD` as tus asks.
    pub metadata: String,
}

impl FileRecord {
    /// Every byte arrived and the content was checked.
    pub fn complete(&self) -> bool {
        !self.sha256.is_empty()
    }
}

/// A message that names a file: its conversation's members may download the file once the
/// message is stored (and while it is not recalled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The file.
    pub file_id: String,
    /// Where the message goes.
    pub conv_id: ConvId,
    /// Its sender.
    pub sender: UserId,
    /// Its client id (with the sender, the key of a stored message).
    pub client_msg_id: String,
}

/// A custom sticker in a user's collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticker {
    /// Its image file.
    pub file_id: String,
    /// When it was added, ms since the Unix epoch.
    pub added_at: u64,
    /// Pixels.
    pub width: Option<u32>,
    /// Pixels.
    pub height: Option<u32>,
}

/// A push API key as stored (the secret itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    /// Public id, part of the key string.
    pub id: String,
    /// Human label.
    pub name: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Allowed requests per second (token bucket refill).
    pub rate_per_sec: f64,
    /// Token bucket size.
    pub burst: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_at: u64,
    /// Revoked keys are refused.
    pub revoked: bool,
}

/// API key scopes as stored: comma-separated.
pub fn parse_scopes(stored: &str) -> Vec<String> {
    stored.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The storage engine.
pub trait Store: Send + Sync + 'static {
    /// Creates an account; `Conflict` if the name is taken (case-insensitively).
    fn create_user<'a>(&'a self, username: &'a str, password_hash: &'a str) -> BoxFut<'a, Result<UserId, StoreError>>;

    /// Finds an account by name, case-insensitively.
    fn user_by_name<'a>(&'a self, username: &'a str) -> BoxFut<'a, Result<Option<UserRecord>, StoreError>>;

    /// Finds an account by id.
    fn user_by_id(&self, id: UserId) -> BoxFut<'_, Result<Option<UserRecord>, StoreError>>;

    /// Queues a message for the writer. The returned future finishes once the message is
    /// *queued*; its ticket resolves once it is durable. Appends queued in call order are
    /// sequenced in call order, so one sender's messages keep their order.
    ///
    /// A `client_msg_id` already stored for this sender in the same conversation resolves to
    /// the original (`duplicate: true`); in another conversation, to `Conflict`.
    fn append(&self, msg: NewMessage) -> BoxFut<'_, Result<AppendTicket, StoreError>>;

    /// A page of a conversation, at most `limit` messages.
    fn messages(&self, conv: ConvId, page: Page, limit: u32) -> BoxFut<'_, Result<Vec<Message>, StoreError>>;

    /// The last seq of a conversation (0 if it has none).
    fn last_seq(&self, conv: ConvId) -> BoxFut<'_, Result<u64, StoreError>>;

    /// Every conversation the user takes part in (its event stream included), with its last seq
    /// and the first seq the user may read.
    fn conversations_of(&self, user: UserId) -> BoxFut<'_, Result<Vec<ConvPosition>, StoreError>>;

    /// Runs one IM operation atomically: loads `scope`, calls `decide`, applies its effects (see
    /// [`im`]). A refusal from `decide` comes back as [`StoreError::Denied`] with nothing changed.
    fn transact(&self, scope: Scope, decide: Decide) -> BoxFut<'_, Result<(), StoreError>>;

    /// Public profiles of these users (unknown ids are left out).
    fn profiles(&self, users: Vec<UserId>) -> BoxFut<'_, Result<Vec<Profile>, StoreError>>;

    /// Users whose name starts with `prefix` (case-insensitively), by name.
    fn search_users(&self, prefix: String, limit: u32) -> BoxFut<'_, Result<Vec<Profile>, StoreError>>;

    /// Changes a user's own profile.
    fn update_profile(&self, user: UserId, update: ProfileChange) -> BoxFut<'_, Result<(), StoreError>>;

    /// Everyone the user has a relation with (friend, request either way, block either way).
    fn relations_of(&self, user: UserId) -> BoxFut<'_, Result<Vec<RelationRow>, StoreError>>;

    /// A group with its members and requests.
    fn group(&self, group: GroupId) -> BoxFut<'_, Result<Option<GroupState>, StoreError>>;

    /// The user's conversations (chats and groups, not the event stream), newest first.
    fn conversation_list(&self, user: UserId) -> BoxFut<'_, Result<Vec<ConvSummary>, StoreError>>;

    /// The user's membership of a conversation.
    fn membership(&self, conv: ConvId, user: UserId) -> BoxFut<'_, Result<Option<MemberRecord>, StoreError>>;

    /// Whether writes are succeeding (for `/healthz`).
    fn health(&self) -> &StoreHealth;

    /// How many members other than `except`, in `conv` by `seq` (joined at or before it), have
    /// read it up to at least `seq`.
    fn read_count(&self, conv: ConvId, seq: u64, except: UserId) -> BoxFut<'_, Result<u64, StoreError>>;

    /// Stores a new API key; `Conflict` if the id exists.
    fn create_api_key(&self, key: ApiKeyRecord) -> BoxFut<'_, Result<(), StoreError>>;

    /// Replaces a user's password hash; `false` if there is no such user.
    fn set_password(&self, user: UserId, password_hash: String) -> BoxFut<'_, Result<bool, StoreError>>;

    /// Disables or re-enables a user; `false` if there is no such user.
    fn set_disabled(&self, user: UserId, disabled: bool) -> BoxFut<'_, Result<bool, StoreError>>;

    /// Records a session cutoff (kept if an existing one is later).
    fn put_session_cutoff(&self, cutoff: SessionCutoff) -> BoxFut<'_, Result<(), StoreError>>;

    /// Every session cutoff, to load at start.
    fn session_cutoffs(&self) -> BoxFut<'_, Result<Vec<SessionCutoff>, StoreError>>;

    /// Every API key, revoked ones included.
    fn api_keys(&self) -> BoxFut<'_, Result<Vec<ApiKeyRecord>, StoreError>>;

    /// Revokes a key; false if there is no such key.
    fn revoke_api_key<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<bool, StoreError>>;

    /// Assigns a room to an area.
    fn set_room_area<'a>(&'a self, room: &'a str, area: &'a str) -> BoxFut<'a, Result<(), StoreError>>;

    /// Every room with an assigned area.
    fn room_areas(&self) -> BoxFut<'_, Result<Vec<(String, String)>, StoreError>>;

    /// Bans or mutes a user in a room (replacing one of the same kind).
    fn put_room_sanction(&self, sanction: RoomSanction) -> BoxFut<'_, Result<(), StoreError>>;

    /// Lifts a user's ban or mute in a room; false if there was none.
    fn lift_room_sanction<'a>(
        &'a self,
        room: &'a str,
        user: UserId,
        kind: SanctionKind,
    ) -> BoxFut<'a, Result<bool, StoreError>>;

    /// Every room ban and mute (expired ones too), to load at start.
    fn room_sanctions(&self) -> BoxFut<'_, Result<Vec<RoomSanction>, StoreError>>;

    /// Writes a consistent snapshot of the whole store to a new file beside it and returns its
    /// path (the caller removes it), without stopping writes. `Denied` where the engine has its
    /// own tools (PostgreSQL: `pg_dump`).
    fn backup(&self) -> BoxFut<'_, Result<std::path::PathBuf, StoreError>>;

    /// Stores a room's settings (replacing them).
    fn put_room_settings(&self, settings: StoredRoomSettings) -> BoxFut<'_, Result<(), StoreError>>;

    /// Every room's stored settings, to load at start.
    fn room_settings(&self) -> BoxFut<'_, Result<Vec<StoredRoomSettings>, StoreError>>;

    /// Creates or replaces a file's record.
    fn put_file(&self, file: FileRecord) -> BoxFut<'_, Result<(), StoreError>>;

    /// A file's record.
    fn file<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<Option<FileRecord>, StoreError>>;

    /// Removes a file's record and the messages' references to it; false if there was none.
    fn delete_file<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<bool, StoreError>>;

    /// Bytes a user's files take (announced lengths, incomplete uploads included).
    fn files_usage(&self, owner: UserId) -> BoxFut<'_, Result<u64, StoreError>>;

    /// Incomplete uploads that expired before `now_ms`, at most `limit`.
    fn expired_uploads(&self, now_ms: u64, limit: u32) -> BoxFut<'_, Result<Vec<FileRecord>, StoreError>>;

    /// Whether any file record names this content.
    fn content_used<'a>(&'a self, sha256: &'a str) -> BoxFut<'a, Result<bool, StoreError>>;

    /// Records that a message about to be appended names a file.
    fn add_file_ref(&self, file_ref: FileRef) -> BoxFut<'_, Result<(), StoreError>>;

    /// The stored, unrecalled messages that name a file: `(conversation, seq)`.
    fn file_messages<'a>(&'a self, file_id: &'a str) -> BoxFut<'a, Result<Vec<(ConvId, u64)>, StoreError>>;

    /// Adds a file to a user's stickers; false if it was there.
    fn add_sticker<'a>(&'a self, user: UserId, file_id: &'a str, at: u64) -> BoxFut<'a, Result<bool, StoreError>>;

    /// Removes a file from a user's stickers; false if it was not there.
    fn remove_sticker<'a>(&'a self, user: UserId, file_id: &'a str) -> BoxFut<'a, Result<bool, StoreError>>;

    /// A user's stickers whose files exist, oldest first.
    fn stickers(&self, user: UserId) -> BoxFut<'_, Result<Vec<Sticker>, StoreError>>;
}
