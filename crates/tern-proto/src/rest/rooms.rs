//! Live-room moderation for business servers: bans, mutes and room settings.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// What a sanction stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SanctionKind {
    /// Out of the room: taken out at once (`kicked`), refused on `join`.
    Ban,
    /// In the room but silent: `publish` is refused.
    Mute,
}

impl SanctionKind {
    /// The name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SanctionKind::Ban => "ban",
            SanctionKind::Mute => "mute",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ban" => Some(SanctionKind::Ban),
            "mute" => Some(SanctionKind::Mute),
            _ => None,
        }
    }
}

/// A user's ban or mute in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomSanction {
    /// The room.
    pub room: String,
    /// The user.
    pub user_id: UserId,
    /// Ban or mute.
    pub kind: SanctionKind,
    /// When it ends, ms since the Unix epoch; 0: when lifted.
    pub until_ms: u64,
    /// Why (shown to the user).
    pub reason: String,
    /// When it was imposed, ms since the Unix epoch.
    pub created_at: u64,
}

/// `POST /v1/rooms/{room}/bans` and `/mutes`: whom, for how long, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewSanction {
    /// The user.
    pub user_id: UserId,
    /// Seconds until it ends by itself; absent: until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// Why, up to 200 characters (shown to the user).
    #[serde(default)]
    pub reason: String,
}

/// The bans (or mutes) in force in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sanctions {
    /// In force now, oldest first.
    pub sanctions: Vec<RoomSanction>,
}

/// `PUT /v1/rooms/{room}/settings`: who may enter a room and how it takes posts. Fields left
/// out keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    /// Slow mode: one post per user per this many seconds (0: off; at most 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_mode_secs: Option<u32>,
    /// Who may enter: `public` (anyone) or `token` (a logged-in user with a join token of this
    /// room, `POST /v1/rooms/{room}/tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RoomPolicy>,
    /// Recent pushes kept for late joiners (0–1000; 0: none; default `rooms.history_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_size: Option<u32>,
    /// Anonymous (device-token) viewers may post too, as "guest-…" (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_posts: Option<bool>,
}

/// Who may enter a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoomPolicy {
    /// Anyone connected.
    #[default]
    Public,
    /// A logged-in user with a valid join token for the room.
    Token,
}

impl RoomPolicy {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomPolicy::Public => "public",
            RoomPolicy::Token => "token",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(RoomPolicy::Public),
            "token" => Some(RoomPolicy::Token),
            _ => None,
        }
    }
}

/// `GET /v1/rooms/{room}/members`: a page of the logged-in users in a room, by user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomMembers {
    /// The room.
    pub room: String,
    /// Connections in it across the cluster (anonymous viewers and every device counted).
    pub online: u64,
    /// Logged-in users in it across the cluster.
    pub users: u64,
    /// This page, by ascending user id.
    pub members: Vec<crate::frame::RoomUser>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<UserId>,
}

/// `POST /v1/rooms/{room}/tokens`: a join token for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewJoinToken {
    /// The user who may enter.
    pub user_id: UserId,
    /// Seconds it is valid (default 3600, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// A join token: the user passes it in `join` (`token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinToken {
    /// The token.
    pub token: String,
    /// When it expires, seconds since the Unix epoch.
    pub expires_at: u64,
}
