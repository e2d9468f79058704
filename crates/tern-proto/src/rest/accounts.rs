//! Accounts, sessions and health.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, UserId};

/// `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 3–32 characters: letters, digits, `_`, `-`, `.`.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
}

/// A user by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// The user.
    pub user_id: UserId,
    /// The name, as registered.
    pub username: String,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The account.
    pub username: String,
    /// Its password.
    pub password: String,
    /// This device (`phone`, `laptop-2`, …): 1–64 printable characters.
    pub device_id: String,
}

/// Where to open the socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoints {
    /// WebSocket URL.
    pub ws: String,
    /// `host:port` of the TCP listener.
    pub tcp: String,
    /// The TCP listener speaks TLS (the WebSocket URL says so by its scheme, `wss://`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// The SSE transport's URL (`POST` opens a session there).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sse: String,
    /// The long-poll transport's URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub longpoll: String,
    /// `host:port` of the QUIC listener (UDP, ALPN `tern/1`), when it runs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quic: String,
    /// The transports to try, best first, as the server prefers them for this client:
    /// names from `quic`, `tcp`, `ws`, `sse`, `longpoll`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
}

/// The answer to `POST /v1/sse` or `POST /v1/longpoll`: the session to use on the next requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HttpSessionOpened {
    /// The session id (unguessable; usable only with the owner's token).
    pub session: String,
}

/// One long-poll answer (`GET /v1/longpoll/{session}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Polled {
    /// The event id of the last frame here (the `ack` of the next poll); the poll's own `ack`
    /// when there are none.
    pub last_event_id: u64,
    /// Server frames in JSON, in order (raw: each decodes on its own, so a frame kind newer
    /// than the client is skipped, not the whole answer).
    pub frames: Vec<Box<serde_json::value::RawValue>>,
    /// The session has ended: no more frames will come.
    pub closed: bool,
}

/// A token for a device, and where to connect with it: the answer to a login
/// (`POST /v1/sessions`, with `user_id`) or to an anonymous device (`POST /v1/devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionToken {
    /// The user (absent for an anonymous device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The device.
    pub device_id: DeviceId,
    /// Bearer token for REST and the socket's `auth` frame.
    pub token: String,
    /// When the token expires, ms since the Unix epoch.
    pub expires_at: u64,
    /// The node to connect to (the least loaded).
    pub endpoints: Endpoints,
    /// Other live nodes, least loaded first, to try when that one cannot be reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<Endpoints>,
}

/// `PUT /v1/me/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password now.
    pub current_password: String,
    /// The new one (at least 8 characters).
    pub new_password: String,
}

/// A fresh token for the calling device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewToken {
    /// Bearer token.
    pub token: String,
    /// When it expires, ms since the Unix epoch.
    pub expires_at: u64,
}

/// `PUT /v1/admin/users/{user_id}/disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Disabled {
    /// `true` ends every session and refuses login; `false` enables the account again.
    pub disabled: bool,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` or `failing`.
    pub status: String,
    /// Why it is failing: the store cannot take writes (disk full, database down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreFailure>,
}

/// A failing store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreFailure {
    /// Since when, ms since the Unix epoch.
    pub failing_since_ms: u64,
    /// The last error.
    pub error: String,
}
