//! The service API for business servers: pushes, rooms, online counts, API keys.

use serde::{Deserialize, Serialize};

use crate::frame::Priority;
use crate::ids::{MsgId, UserId};

/// A push's body: whom (for users and devices), what, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Push<T> {
    /// The addressees, for `/v1/push/users` and `/v1/push/devices`.
    #[serde(flatten)]
    pub to: T,
    /// Any JSON, delivered as is (at most the configured push size).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
    /// The delivery lane: `low` may be dropped under pressure, `high` may not.
    #[serde(default)]
    pub priority: Priority,
    /// 0: at most once; 1: at least once (acked, retried while connected).
    #[serde(default)]
    pub qos: u8,
}

/// `/v1/push/users`: the users (every connected device of each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToUsers {
    /// 1–1000 users.
    pub users: Vec<UserId>,
}

/// One device: a user's, or an anonymous one (no `user_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceRef {
    /// The user, for a logged-in device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The device.
    pub device_id: String,
}

/// `/v1/push/devices`: the devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToDevices {
    /// 1–1000 devices.
    pub devices: Vec<DeviceRef>,
}

/// No addressees in the body: rooms, areas and everyone are named by the path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ByPath {}

/// A push accepted for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// The push's id, as its receivers see it.
    pub msg_id: MsgId,
}

/// `PUT /v1/rooms/{room}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoomArea {
    /// The area the room belongs to.
    pub area: String,
}

/// A room's area and how many connections are in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomOnline {
    /// The room.
    pub room: String,
    /// Its area (empty: none).
    pub area: String,
    /// Connections in it, cluster-wide.
    pub online: u64,
}

/// An area's connections and rooms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AreaOnline {
    /// The area.
    pub area: String,
    /// Connections in its rooms.
    pub online: u64,
    /// Rooms with anyone in them.
    pub rooms: u64,
}

/// Everyone connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotalOnline {
    /// Connections.
    pub online: u64,
    /// Rooms with anyone in them.
    pub rooms: u64,
}

/// `POST /v1/admin/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label.
    pub name: String,
    /// What the key may do: `push`, `rooms`, `admin`.
    pub scopes: Vec<String>,
    /// Requests per second (default from the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
    /// Burst size (default from the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// A key as the admin API shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    /// Key id.
    pub key_id: String,
    /// Label.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Requests per second.
    pub rate_per_sec: f64,
    /// Bucket size.
    pub burst: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_at: u64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A key just created: its view and, this once, the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub view: KeyView,
    /// The bearer secret; shown only here.
    pub key: String,
}
