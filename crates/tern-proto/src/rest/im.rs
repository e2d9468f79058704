//! Profiles, friends, groups and conversations.

use serde::{Deserialize, Serialize};

use crate::frame::{Message, Role};
use crate::ids::{ConvId, GroupId, UserId};

/// Who may send a user 1:1 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DmPolicy {
    /// Anyone who is not blocked.
    #[default]
    Anyone,
    /// Friends only.
    Friends,
}

impl DmPolicy {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Anyone => "anyone",
            DmPolicy::Friends => "friends",
        }
    }

    /// From storage; unknown values read as the default.
    pub fn parse(s: &str) -> Self {
        if s == "friends" { DmPolicy::Friends } else { DmPolicy::Anyone }
    }
}

/// How outsiders get into a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JoinPolicy {
    /// Anyone may join; any member may invite.
    #[default]
    Open,
    /// Joining needs an owner's or admin's approval; only they may invite.
    Approval,
}

impl JoinPolicy {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinPolicy::Open => "open",
            JoinPolicy::Approval => "approval",
        }
    }

    /// From storage.
    pub fn parse(s: &str) -> Self {
        if s == "approval" { JoinPolicy::Approval } else { JoinPolicy::Open }
    }
}

/// A user's profile as its owner sees it (`GET /v1/me`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Profile {
    /// The user.
    pub user_id: UserId,
    /// The login name.
    pub username: String,
    /// Display name (empty: show the username).
    pub nickname: String,
    /// A file id.
    pub avatar: Option<String>,
    /// A short self-description.
    pub signature: String,
    /// Who may message this user.
    pub dm_policy: DmPolicy,
}

/// What anyone may see of a profile: everything but its settings (`dm_policy` is its owner's
/// business; a stranger learns whether they may write by trying).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicProfile {
    /// The user.
    pub user_id: UserId,
    /// The login name.
    pub username: String,
    /// Display name (empty: show the username).
    pub nickname: String,
    /// A file id.
    pub avatar: Option<String>,
    /// A short self-description.
    pub signature: String,
}

impl From<Profile> for PublicProfile {
    fn from(p: Profile) -> Self {
        Self {
            user_id: p.user_id,
            username: p.username,
            nickname: p.nickname,
            avatar: p.avatar,
            signature: p.signature,
        }
    }
}

/// `PATCH /v1/me`: a change to one's profile; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProfileChange {
    /// New nickname (at most 64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// New avatar file id; an empty string clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// New signature (at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// New message policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dm_policy: Option<DmPolicy>,
}

/// A pending friend or join request as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingRequest {
    /// The other user.
    pub user_id: UserId,
    /// The note.
    pub message: String,
    /// When, ms since the Unix epoch.
    pub ts: u64,
}

/// A friend as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Friend {
    /// Their profile.
    #[serde(flatten)]
    pub profile: Profile,
    /// Whether any of their devices is connected.
    pub online: bool,
}

/// `GET /v1/friends`: everything a user has with others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Relations {
    /// Friends.
    pub friends: Vec<Friend>,
    /// Requests to this user, waiting for an answer.
    pub incoming: Vec<PendingRequest>,
    /// Requests by this user, waiting for an answer.
    pub outgoing: Vec<PendingRequest>,
    /// Users this user blocked.
    pub blocked: Vec<UserId>,
}

/// `POST /v1/friends/requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FriendRequest {
    /// Whom to ask.
    pub user_id: UserId,
    /// A note (at most 256 characters).
    #[serde(default)]
    pub message: String,
}

/// The outcome of a friend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    /// Waiting for the other user.
    Requested,
    /// The other user had asked too: now friends.
    Friends,
}

/// `POST /v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Display name (1–64 characters).
    pub name: String,
    /// How outsiders get in.
    #[serde(default)]
    pub join_policy: JoinPolicy,
}

/// A group as a member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupView {
    /// The id (its conversation is `g:<id>`).
    pub group_id: GroupId,
    /// The conversation id.
    pub conv_id: ConvId,
    /// Display name.
    pub name: String,
    /// The owner.
    pub owner: UserId,
    /// How outsiders get in.
    pub join_policy: JoinPolicy,
    /// Only the owner and admins may send.
    pub muted_all: bool,
    /// Member limit.
    pub max_members: u32,
    /// Members, by user id.
    pub members: Vec<MemberView>,
    /// Pending join requests (shown to the owner and admins only).
    pub requests: Vec<PendingRequest>,
}

/// A member as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberView {
    /// The user.
    pub user_id: UserId,
    /// Role.
    pub role: Role,
    /// Muted until (ms since the Unix epoch), if muted now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<u64>,
}

/// A user to act on (invite, transfer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserRef {
    /// The user.
    pub user_id: UserId,
}

/// `POST /v1/groups/{group_id}/join`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JoinGroup {
    /// A note for the approvers (at most 256 characters).
    #[serde(default)]
    pub message: String,
}

/// The outcome of asking to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JoinOutcome {
    /// Now a member.
    Joined,
    /// Waiting for an owner's or admin's approval.
    Requested,
}

/// `PUT /v1/groups/{group_id}/members/{user_id}/role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    /// `admin` or `member` (ownership moves by transfer).
    pub role: Role,
}

/// `PUT /v1/groups/{group_id}/members/{user_id}/mute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MemberMute {
    /// How long; 0 unmutes.
    pub duration_secs: u64,
}

/// `PUT /v1/groups/{group_id}/mute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GroupMute {
    /// Only the owner and admins may send while set.
    pub muted: bool,
}

/// One entry of a user's conversation list (`GET /v1/conversations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConvSummary {
    /// The conversation.
    pub conv_id: ConvId,
    /// Its last seq.
    pub last_seq: u64,
    /// Time of its last message, ms since the Unix epoch (the list's order, newest first).
    pub last_ts: u64,
    /// The last message (a tombstone if recalled), as in PROTOCOL.md.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub last_message: Option<Message>,
    /// The user's read position.
    pub read_seq: u64,
    /// Messages from others after the read position (capped at 999).
    pub unread: u64,
    /// For a 1:1 conversation, the peer's read position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_read_seq: Option<u64>,
    /// For a group, its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/conversations/{conv_id}/read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadUpTo {
    /// Everything up to this seq has been read.
    pub seq: u64,
}

/// Who has read one message (`GET …/messages/{seq}/reads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadReceipt {
    /// Members other than the sender whose read position is at or past the message.
    pub read: u64,
    /// Members other than the sender who have not read it yet.
    pub unread: u64,
}

/// A page of history (`GET /v1/conversations/{conv_id}/messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    /// The conversation.
    pub conv_id: ConvId,
    /// Messages, in the order asked for (ascending after a seq, descending before one).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub messages: Vec<Message>,
    /// The conversation's last seq.
    pub last_seq: u64,
    /// The first seq this user may read, when that is not 1 (joined later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<u64>,
}

/// `GET /v1/me/export`: everything the server holds for a user that the user may take away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserExport {
    /// When it was made, ms since the Unix epoch.
    pub exported_at: u64,
    /// The user's profile.
    pub profile: Profile,
    /// Friends, requests and blocks.
    pub relations: Relations,
    /// Every conversation the user is in, newest first, with the messages the user can read.
    pub conversations: Vec<ExportedConversation>,
    /// Some messages were left out: more than the server's export limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One conversation of a [`UserExport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportedConversation {
    /// The conversation as the list shows it.
    pub summary: ConvSummary,
    /// Its messages the user can read, oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub messages: Vec<Message>,
}
