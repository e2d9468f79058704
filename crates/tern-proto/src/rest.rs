//! Shapes of the REST API that both ends name, so the server and the SDK cannot drift apart.

use crate::ids::{DeviceId, UserId};

/// Where a business push goes, as the push API addresses it (`/v1/push/…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTarget {
    /// Users (every connected device of each).
    Users(Vec<UserId>),
    /// Devices: `(Some(user), device)` for a user's device, `(None, device)` for an anonymous
    /// one.
    Devices(Vec<(Option<UserId>, DeviceId)>),
    /// Every connection in a room.
    Room(String),
    /// Every connection in a room of an area.
    Area(String),
    /// Every connection.
    All,
}

impl PushTarget {
    /// The push API's path for this target; users and devices are named in the body.
    pub fn path(&self) -> String {
        match self {
            PushTarget::Users(_) => "/v1/push/users".into(),
            PushTarget::Devices(_) => "/v1/push/devices".into(),
            PushTarget::Room(room) => format!("/v1/push/rooms/{room}"),
            PushTarget::Area(area) => format!("/v1/push/areas/{area}"),
            PushTarget::All => "/v1/push/all".into(),
        }
    }
}
