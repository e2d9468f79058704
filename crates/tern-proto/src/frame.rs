//! Frames: the messages of the socket protocol, one Rust type per direction.
//!
//! Both directions are internally tagged by `op`, so a JSON frame reads
//! `{"op":"send","id":1,...}`. The same types are encoded as MessagePack maps with named fields
//! for binary transports (see [`crate::codec`]). New optional fields can be added without a
//! version bump; receivers ignore fields they do not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ConnId, ConvId, DeviceId, GroupId, MsgId, UserId};

/// The protocol version this crate speaks. A client names it in `auth`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The content of a message.
///
/// Clients send the content kinds (`text`, `image`, `file`, `voice`, `sticker`, `location`, `custom`); the
/// server writes `recalled` (the tombstone left where a recalled message was) and `notice`
/// (system events: friend requests, member changes, read positions, recalls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// Plain text.
    Text {
        /// The text, UTF-8.
        text: String,
    },
    /// An image stored as a file.
    Image {
        /// The file id.
        file_id: String,
        /// Width in pixels, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        /// Height in pixels, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
    },
    /// Any file.
    File {
        /// The file id.
        file_id: String,
        /// The file name to show.
        name: String,
        /// Size in bytes.
        size: u64,
    },
    /// A voice clip stored as a file.
    Voice {
        /// The file id.
        file_id: String,
        /// Length in milliseconds.
        duration_ms: u32,
    },
    /// A sticker: a built-in emoticon the clients draw from its `code`, or a custom sticker (an
    /// uploaded image, `file_id`). Exactly one of the two.
    Sticker {
        /// A built-in emoticon's code (`smile`, `thumbs_up`, …): 1–32 of `[a-z0-9_-]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// A custom sticker: an image file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        /// Pixels of a custom sticker (written by the server).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        /// Pixels of a custom sticker (written by the server).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
    },
    /// A place.
    Location {
        /// Degrees, −90..=90.
        latitude: f64,
        /// Degrees, −180..=180.
        longitude: f64,
        /// A label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Application-defined JSON (an object).
    Custom {
        /// The payload.
        data: serde_json::Value,
    },
    /// A recalled message: its content is gone from the server.
    Recalled {
        /// Who recalled it.
        by: UserId,
        /// When, ms since the Unix epoch.
        at: u64,
    },
    /// A system event (written by the server, never by a client).
    Notice {
        /// What happened.
        notice: Notice,
    },
    /// A stored message whose content the server can no longer read (written by an older
    /// version without today's limits, or damaged on disk). It keeps its seq so a
    /// conversation stays gap-free; the server logs which one it was.
    Unreadable {},
}

impl Body {
    /// True for what people say (counted as unread), false for tombstones and notices.
    pub fn is_content(&self) -> bool {
        !matches!(self, Body::Recalled { .. } | Body::Notice { .. } | Body::Unreadable {})
    }
}

/// How deeply client-supplied JSON (`custom` message data, push data) may nest: an object or
/// array inside another counts one level, a scalar none. The limit is the same whatever the
/// codec the data arrived in, and far below what any JSON reader refuses (serde_json stops at
/// 128, browsers' `JSON.parse` much deeper), so whatever the server accepts it can also read
/// back and every client can parse.
pub const MAX_DATA_DEPTH: usize = 32;

/// The nesting depth of a JSON value (see [`MAX_DATA_DEPTH`]). Iterative, so a hostile value
/// cannot exhaust the stack here.
pub fn data_depth(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|c| (c, depth + 1))),
            _ => continue,
        }
        deepest = deepest.max(depth + 1);
    }
    deepest
}

/// A member's role in a group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An ordinary member.
    Member,
    /// May kick and mute members, approve join requests, recall members' messages.
    Admin,
    /// One per group: everything an admin may, plus roles, transfer and dissolve.
    Owner,
}

/// Why someone is no longer in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They left.
    Left,
    /// An admin or the owner removed them.
    Kicked,
    /// The owner dissolved the group.
    Dissolved,
}

/// A system event, carried as a [`Body::Notice`] in the conversation it concerns (`g:` notices
/// for members) or in a user's event stream (`u:`), so it is delivered and resumed like any
/// message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// `from` asked `to` to be friends (in both users' streams).
    FriendRequest {
        /// Who asks.
        from: UserId,
        /// Who is asked.
        to: UserId,
        /// The requester's note.
        message: String,
    },
    /// `from`'s request was declined by `to` (in both streams).
    FriendDeclined {
        /// Who asked.
        from: UserId,
        /// Who declined.
        to: UserId,
    },
    /// The stream's owner and `user` are now friends (in both streams).
    FriendAdded {
        /// The new friend.
        user: UserId,
    },
    /// The stream's owner and `user` are no longer friends (in both streams).
    FriendRemoved {
        /// The former friend.
        user: UserId,
    },
    /// The stream's owner blocked `user` (only in the blocker's stream).
    Blocked {
        /// Who was blocked.
        user: UserId,
    },
    /// The stream's owner unblocked `user`.
    Unblocked {
        /// Who was unblocked.
        user: UserId,
    },
    /// The stream's owner is now a member of `group` and may read it from `from_seq`.
    GroupJoined {
        /// The group.
        group: GroupId,
        /// Its name.
        name: String,
        /// The first seq the member may read.
        from_seq: u64,
    },
    /// The stream's owner is no longer in `group`.
    GroupLeft {
        /// The group.
        group: GroupId,
        /// Why.
        reason: LeaveReason,
    },
    /// `user` asks to join `group` (in the streams of its owner and admins, and the asker's).
    JoinRequested {
        /// The group.
        group: GroupId,
        /// Who asks.
        user: UserId,
        /// Their note.
        message: String,
    },
    /// A join request was declined (in the asker's stream).
    JoinDeclined {
        /// The group.
        group: GroupId,
    },
    /// One of the stream owner's devices read `conv_id` up to `seq` (in the owner's stream).
    Read {
        /// The conversation.
        conv_id: ConvId,
        /// Read position.
        seq: u64,
    },
    /// The peer of a 1:1 conversation read it up to `seq` (in the other participant's stream).
    PeerRead {
        /// The conversation.
        conv_id: ConvId,
        /// The reader.
        user: UserId,
        /// Read position.
        seq: u64,
    },
    /// The group was created (first message of a group).
    GroupCreated {
        /// Its name.
        name: String,
        /// Its owner.
        owner: UserId,
    },
    /// `user` joined (`by` is the inviter or approver, absent when they joined an open group).
    MemberJoined {
        /// The new member.
        user: UserId,
        /// Who let them in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<UserId>,
    },
    /// `user` left.
    MemberLeft {
        /// Who.
        user: UserId,
    },
    /// `user` was removed by `by`.
    MemberKicked {
        /// Who.
        user: UserId,
        /// By whom.
        by: UserId,
    },
    /// `user` now has `role`.
    RoleChanged {
        /// Who.
        user: UserId,
        /// The new role.
        role: Role,
    },
    /// Ownership moved from `from` to `to` (`from` becomes an admin).
    OwnerChanged {
        /// The previous owner.
        from: UserId,
        /// The new owner.
        to: UserId,
    },
    /// `user` may not send until `until` (ms since the Unix epoch; 0 = unmuted).
    MemberMuted {
        /// Who.
        user: UserId,
        /// Until when.
        until: u64,
        /// By whom.
        by: UserId,
    },
    /// Only the owner and admins may send while `muted` is true.
    GroupMuted {
        /// On or off.
        muted: bool,
        /// By whom.
        by: UserId,
    },
    /// The message at `seq` was recalled; show a tombstone instead of it.
    Recall {
        /// The recalled message's seq.
        seq: u64,
        /// Its id.
        msg_id: MsgId,
        /// Who recalled it.
        by: UserId,
    },
}

/// A stored message as every device sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Server-assigned id, unique across the deployment.
    pub msg_id: MsgId,
    /// The conversation the message belongs to.
    pub conv_id: ConvId,
    /// Position in the conversation: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// Who sent it.
    pub from: UserId,
    /// The sender's idempotency key for this message.
    pub client_msg_id: String,
    /// Server time of acceptance, milliseconds since the Unix epoch.
    pub ts: u64,
    /// What was said.
    pub body: Body,
}

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must be the first frame of a connection.
    Auth {
        /// The token from `POST /v1/sessions`.
        token: String,
        /// Protocol version the client speaks; absent means 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proto: Option<u32>,
        /// What this device already has: the last seq it holds per conversation. Present (even
        /// empty) asks the server to send everything missed, conversation by conversation;
        /// conversations not listed count as seq 0. Absent: no catch-up on this connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<BTreeMap<ConvId, u64>>,
        /// Compressions this client can decode (`"br"` = brotli). Large room batches are sent
        /// compressed to clients that list one; others get them plain.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        accept_compression: Vec<String>,
    },
    /// Send a message to a user (`to`) or into a conversation (`conv_id`, e.g. a group).
    /// Answered by `sent` or `error` with the same `id`.
    Send {
        /// Request id chosen by the client, echoed in the answer.
        id: u64,
        /// The recipient of a 1:1 message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<UserId>,
        /// The conversation (a group, or a 1:1 conversation the sender is in). Exactly one of
        /// `to` and `conv_id` is given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conv_id: Option<ConvId>,
        /// The sender's idempotency key (1–64 bytes). Resending the same key returns the original
        /// message's `msg_id` and `seq` and stores nothing new.
        client_msg_id: String,
        /// The content.
        body: Body,
    },
    /// Acknowledge pushed messages (`msg` frames), so the server stops retrying them.
    Ack {
        /// The acknowledged messages.
        msg_ids: Vec<MsgId>,
    },
    /// Page a conversation's history. Answered by `history` or `error` with the same `id`.
    History {
        /// Request id.
        id: u64,
        /// The conversation; the caller must take part in it.
        conv_id: ConvId,
        /// Return messages with seq greater than this, oldest first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_seq: Option<u64>,
        /// Return messages with seq lower than this, newest first. Ignored if `after_seq` is set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<u64>,
        /// At most this many (1–500, default 100).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Liveness probe; the server answers `pong`. Any frame counts as liveness.
    Ping,
    /// This device has read `conv_id` up to `seq`. Answered by `ok` or `error`. The position only
    /// moves forward; the user's other devices get a `read` notice, a 1:1 peer a `peer_read`.
    Read {
        /// Request id.
        id: u64,
        /// The conversation.
        conv_id: ConvId,
        /// The last seq read.
        seq: u64,
    },
    /// Recall a message (the sender, or a group's owner/admin, within the recall window).
    /// Answered by `ok` or `error`.
    Recall {
        /// Request id.
        id: u64,
        /// The conversation.
        conv_id: ConvId,
        /// The message's seq.
        seq: u64,
    },
    /// The user is typing in a 1:1 conversation. Relayed to the peer, never stored, not answered.
    Typing {
        /// The conversation.
        conv_id: ConvId,
    },
    /// Enter a live room, leaving the current one if any (one room per connection). Answered by
    /// `joined` or `error`. Joining the room the connection is already in changes nothing.
    Join {
        /// Request id.
        id: u64,
        /// The room: 1–64 characters of `[A-Za-z0-9_.:-]`.
        room: String,
        /// A join token for a private room (`POST /v1/rooms/{room}/tokens`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// Also send the room's recent pushes (`room_history`): `0` all the server keeps, or
        /// the `msg_id` of the last one this client saw (back from a short disconnect).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recent: Option<u64>,
    },
    /// Leave the current room. Answered by `left`.
    Leave {
        /// Request id.
        id: u64,
    },
    /// Post into the room this connection is in (danmaku, likes, gifts): the room's members get
    /// it as a `push` (or in a `batch`) with `from` set by the server, the poster too, once.
    /// Answered by `ok` or `error`. Only a logged-in user may post.
    Publish {
        /// Request id.
        id: u64,
        /// The room; must be the one this connection joined.
        room: String,
        /// Any JSON value, up to `rooms.max_publish_bytes` encoded.
        data: serde_json::Value,
        /// Lane; low (aggregated, droppable) unless given.
        #[serde(default)]
        priority: Priority,
    },
    /// Offer a file to another user, to be sent directly between the two clients (or through
    /// tern's relay when they cannot reach each other). Answered by `file_offered` or `error`;
    /// the recipient's devices get `file_offer`.
    FileOffer {
        /// Request id.
        id: u64,
        /// The recipient.
        to: UserId,
        /// The file's name (1–255 bytes, no `/`, `\` or control characters).
        name: String,
        /// Its size in bytes.
        size: u64,
        /// SHA-256 of its bytes, lowercase hex: the receiver checks what it got against it.
        sha256: String,
        /// Where the sender listens for the receiver, `ip:port` (at most 8); empty to use the
        /// relay only.
        #[serde(default)]
        candidates: Vec<String>,
    },
    /// Accept or decline a `file_offer`. Answered by `ok` or `error`; the sender's devices get
    /// `file_answer`.
    FileAnswer {
        /// Request id.
        id: u64,
        /// The offer's ticket.
        ticket: String,
        /// Accepted.
        accept: bool,
    },
}

/// Delivery lane of a push.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Never dropped, bypasses aggregation (gifts, invites, system notices).
    High,
    /// Aggregated into room batches, dropped first when a connection falls behind (danmaku).
    #[default]
    Low,
}

/// What a push was addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PushScope {
    /// Some users (all their devices).
    User,
    /// Some devices.
    Device,
    /// One room.
    Room {
        /// The room.
        room: String,
    },
    /// Every room of an area.
    Area {
        /// The area.
        area: String,
    },
    /// Every connection.
    All,
}

/// A push from a business server (not a stored chat message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// Unique id; clients drop a second copy of the same id.
    pub msg_id: MsgId,
    /// Lane.
    pub priority: Priority,
    /// 0 = best effort; 1 = must arrive: acknowledge it with `ack`, the server retries until it is.
    pub qos: u8,
    /// What it was addressed to.
    pub scope: PushScope,
    /// Server acceptance time, ms since the Unix epoch.
    pub ts: u64,
    /// The business payload, any JSON value.
    pub data: serde_json::Value,
    /// Who posted it, for a viewer's `publish` (set by the server, never by the poster); absent
    /// for a business server's push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<RoomUser>,
}

/// A user as a live room shows them: the author of a post, someone who entered or left.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomUser {
    /// The user.
    pub user_id: UserId,
    /// Their nickname (their username when they have none).
    pub nickname: String,
}

/// Stable error codes, the same on the socket and in REST bodies.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The other user has blocked the caller (messages, friend requests, group invites).
    Blocked,
    /// The other user accepts messages from friends only.
    NotFriends,
    /// The caller is muted in this group, or the group is muted.
    Muted,
    /// The message is older than the recall window.
    RecallExpired,
    /// The group has reached its member limit.
    GroupFull,
    /// The frame or request body could not be parsed, or a field is invalid.
    BadRequest,
    /// The frame's `op` is not one this server knows.
    UnknownOp,
    /// The frame is larger than the advertised maximum.
    FrameTooLarge,
    /// The message body is larger than allowed.
    BodyTooLarge,
    /// Missing, malformed, expired or tampered credentials.
    Unauthorized,
    /// The credentials are valid but do not allow this.
    Forbidden,
    /// The thing does not exist, or the caller may not know it exists.
    NotFound,
    /// A unique name or key is already taken.
    Conflict,
    /// The password does not meet the rules.
    WeakPassword,
    /// Too many requests; retry later.
    RateLimited,
    /// The server failed; the request may be retried.
    Internal,
    /// The server is shutting down or over capacity; retry elsewhere or later.
    Unavailable,
    /// An upload's bytes do not match the checksum sent with them (tus `Upload-Checksum`);
    /// nothing of them was kept.
    ChecksumMismatch,
    /// Another request is writing to the same upload; retry once it has finished.
    Locked,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Blocked => "blocked",
            ErrorCode::NotFriends => "not_friends",
            ErrorCode::Muted => "muted",
            ErrorCode::RecallExpired => "recall_expired",
            ErrorCode::GroupFull => "group_full",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::WeakPassword => "weak_password",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::Locked => "locked",
        }
    }
}

/// Why a connection was closed. Sent in the last `close` frame and recorded by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// No valid `auth` frame arrived within the auth timeout.
    AuthTimeout,
    /// The `auth` frame's token was missing, malformed, expired, tampered or for a deleted user.
    AuthFailed,
    /// A frame other than `auth` arrived before authentication.
    AuthRequired,
    /// The client asked for a protocol version this server does not speak.
    UnsupportedVersion,
    /// Nothing arrived for the advertised number of heartbeat intervals.
    HeartbeatTimeout,
    /// A frame exceeded the maximum size; nothing of it was buffered.
    FrameTooLarge,
    /// The byte stream could not be framed (e.g. it ended inside a frame).
    ProtocolError,
    /// The client did not keep up: its outbound queue or unacked window overflowed.
    SlowConsumer,
    /// Pushed messages stayed unacknowledged past their retry TTL; reconnect and resume.
    AckTimeout,
    /// Another connection authenticated as the same user and device.
    Replaced,
    /// The server is shutting down; reconnect (after `retry_after_ms`).
    ServerShutdown,
    /// The client closed the connection.
    ClientClosed,
    /// The transport failed (reset, write error).
    TransportError,
    /// The server failed while serving the connection (e.g. storage); reconnect later.
    InternalError,
    /// The node is at its connection limit (in all, or for the client's address); reconnect
    /// after `retry_after_ms`, possibly to another node.
    OverCapacity,
}

impl CloseReason {
    /// The reason as it appears on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::AuthRequired => "auth_required",
            CloseReason::UnsupportedVersion => "unsupported_version",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::AckTimeout => "ack_timeout",
            CloseReason::Replaced => "replaced",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::ClientClosed => "client_closed",
            CloseReason::TransportError => "transport_error",
            CloseReason::InternalError => "internal_error",
            CloseReason::OverCapacity => "over_capacity",
        }
    }

    /// The WebSocket close code that goes with this reason (4000–4999 is the application range).
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::ClientClosed => 1000,
            CloseReason::ServerShutdown => 1001,
            CloseReason::AuthTimeout => 4001,
            CloseReason::AuthFailed => 4002,
            CloseReason::AuthRequired => 4003,
            CloseReason::UnsupportedVersion => 4004,
            CloseReason::HeartbeatTimeout => 4005,
            // RFC 6455's own code for it (7.4.1): a message too big to process.
            CloseReason::FrameTooLarge => 1009,
            CloseReason::ProtocolError => 4007,
            CloseReason::SlowConsumer => 4008,
            CloseReason::AckTimeout => 4009,
            CloseReason::Replaced => 4010,
            CloseReason::TransportError => 4011,
            CloseReason::InternalError => 1011,
            CloseReason::OverCapacity => 1013,
        }
    }

    /// Whether a client should reconnect after this close. Reconnecting after `auth_failed` or
    /// `replaced` would only fail again or fight the other connection.
    pub fn should_reconnect(self) -> bool {
        !matches!(self, CloseReason::AuthFailed | CloseReason::Replaced | CloseReason::UnsupportedVersion)
    }
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Authentication succeeded. Advertises the heartbeat the client must keep.
    AuthOk {
        /// Protocol version in use.
        proto: u32,
        /// The authenticated user (absent for a device token).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<UserId>,
        /// The device named in the token.
        device_id: DeviceId,
        /// This connection's id on the node (for logs and support).
        conn_id: ConnId,
        /// Send something (at least a `ping`) at least this often, in milliseconds.
        heartbeat_ms: u64,
        /// The server closes the connection after this many silent heartbeat intervals.
        max_missed_heartbeats: u32,
        /// Largest frame the server accepts, in bytes.
        max_frame_bytes: u32,
    },
    /// A message pushed to this device: live, or as part of a resume. Acknowledge with `ack`.
    Msg(Message),
    /// The answer to `send`: the message is durable.
    Sent {
        /// The `id` of the `send` request.
        id: u64,
        /// The message id.
        msg_id: MsgId,
        /// The conversation.
        conv_id: ConvId,
        /// The message's seq in the conversation.
        seq: u64,
        /// Server acceptance time, ms since the Unix epoch.
        ts: u64,
        /// True when this `client_msg_id` had been stored before; nothing new was stored.
        duplicate: bool,
    },
    /// The answer to `history`.
    History {
        /// The `id` of the `history` request.
        id: u64,
        /// The conversation.
        conv_id: ConvId,
        /// The page, ordered as asked (ascending for `after_seq`, descending for `before_seq`).
        messages: Vec<Message>,
        /// The conversation's last seq when the page was read.
        last_seq: u64,
        /// The first seq the caller may read, when it is not 1 (a group joined later): seqs
        /// below it will never be delivered to this user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_seq: Option<u64>,
    },
    /// During resume: this device misses `from_seq..=to_seq` of a conversation, too many to push;
    /// page them with `history`. Never sent for a range that is pushed.
    Gap {
        /// The conversation.
        conv_id: ConvId,
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
    },
    /// The resume catch-up is complete: every missed message was pushed or announced by `gap`.
    Synced {
        /// How many conversations had something missed.
        conversations: u32,
    },
    /// Answer to `ping`.
    Pong,
    /// A request without a payload to return (`read`, `recall`) succeeded.
    Ok {
        /// The request id.
        id: u64,
    },
    /// `user` is typing in `conv_id` (ephemeral; show it for a few seconds).
    Typing {
        /// The conversation.
        conv_id: ConvId,
        /// Who types.
        user: UserId,
    },
    /// A friend came online or went offline (debounced, so a quick reconnect is not reported).
    Presence {
        /// The friend.
        user: UserId,
        /// Whether any of their devices is connected.
        online: bool,
    },
    /// A request or frame failed. The connection stays open.
    Error {
        /// The request id, when the failed frame carried one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable machine-readable code.
        code: ErrorCode,
        /// A sentence for humans.
        message: String,
    },
    /// The answer to `join`.
    Joined {
        /// The `id` of the `join` request.
        id: u64,
        /// The room now joined.
        room: String,
        /// The room's area.
        area: String,
        /// Connections in the room right now (this node's view in a cluster: see docs).
        online: u64,
    },
    /// The answer to `leave`.
    Left {
        /// The `id` of the `leave` request.
        id: u64,
        /// The room left, if the connection was in one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// The room's recent pushes, after `joined`, for a `join` that asked (`recent`). `gap`: the
    /// push it asked to start after is no longer kept, so some may have been missed.
    RoomHistory {
        /// The room.
        room: String,
        /// Oldest first; deduplicate by `msg_id` with live pushes.
        pushes: Vec<Push>,
        /// Older pushes may have been missed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        gap: bool,
    },
    /// Who entered and left `room` over the last window (low lane): each user once per session
    /// (a reconnect within the grace period is neither). Past the names listed, only counted.
    RoomEvents {
        /// The room.
        room: String,
        /// Who entered, oldest first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        entered: Vec<RoomUser>,
        /// Who left, oldest first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        left: Vec<RoomUser>,
        /// Others who entered, not named.
        #[serde(default, skip_serializing_if = "is_zero")]
        more_entered: u64,
        /// Others who left, not named.
        #[serde(default, skip_serializing_if = "is_zero")]
        more_left: u64,
    },
    /// The connection was taken out of `room` by its moderators (a ban); it is in no room now,
    /// and joining it again is refused while the ban lasts.
    Kicked {
        /// The room.
        room: String,
        /// Why, as the moderator gave it (may be empty).
        reason: String,
    },
    /// Answer to `file_offer`: the transfer's id and ticket (the receiver gets the same
    /// ticket; it authenticates a direct connection and opens the relay).
    FileOffered {
        /// Request id.
        id: u64,
        /// The transfer.
        transfer_id: String,
        /// The ticket.
        ticket: String,
        /// The sender's address as tern sees it (its public address behind a NAT).
        observed: String,
        /// When the offer expires, seconds since the Unix epoch.
        expires_at: u64,
    },
    /// Someone offers this user a file (to each of their connected devices).
    FileOffer {
        /// The transfer.
        transfer_id: String,
        /// The sender.
        from: UserId,
        /// The file's name.
        name: String,
        /// Bytes.
        size: u64,
        /// SHA-256 of the bytes, lowercase hex.
        sha256: String,
        /// Where to reach the sender directly: its own addresses, then as tern observed them.
        candidates: Vec<String>,
        /// The transfer's ticket: sent first on a direct connection, and opens the relay.
        ticket: String,
        /// When the offer expires, seconds since the Unix epoch.
        expires_at: u64,
    },
    /// The recipient accepted or declined a file offer (to each of the sender's devices).
    FileAnswer {
        /// The transfer.
        transfer_id: String,
        /// Accepted.
        accept: bool,
    },
    /// One push.
    Push(Push),
    /// Several low-priority, best-effort pushes aggregated over a window, in order.
    Batch {
        /// What they were addressed to (the same for all of them).
        scope: PushScope,
        /// The pushes, oldest first.
        pushes: Vec<Push>,
    },
    /// The online count of the room this connection is in, sent periodically.
    Online {
        /// The room.
        room: String,
        /// Connections in it.
        count: u64,
    },
    /// The last frame before the server closes the connection.
    Close {
        /// Why.
        reason: CloseReason,
        /// A sentence for humans.
        message: String,
        /// When set, wait this long before reconnecting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerFrame {
    /// An `error` frame.
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error { id, code, message: message.into() }
    }
}

/// Every `op` a client may send; used to tell an unknown op from a malformed frame.
pub const CLIENT_OPS: &[&str] =
    &["auth", "send", "ack", "history", "ping", "read", "recall", "typing", "join", "leave", "publish"];

/// Checks a room or area name: 1–64 characters of `[A-Za-z0-9_.:-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero(n: &u64) -> bool {
    *n == 0
}
