//! The REST API's request and response bodies, named once for both ends: the server serializes
//! and parses these, its `/openapi.json` is derived from them (feature `openapi`), and the Rust
//! SDK sends and reads them. A field changed here changes all three.

mod accounts;
mod files;
mod im;
mod push;
mod rooms;

pub use accounts::*;
pub use files::*;
pub use im::*;
pub use push::*;
pub use rooms::*;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;
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

/// Every failed call's body: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What failed.
    pub error: ErrorDetail,
}

/// A stable code and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable (see PROTOCOL.md).
    pub code: ErrorCode,
    /// For humans.
    pub message: String,
}

/// `{"status": …}`: the outcome of a call that can end more than one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status<T> {
    /// The outcome.
    pub status: T,
}

#[cfg(feature = "openapi")]
mod schemas {
    //! The ids' schemas: the integer ids are unsigned 64-bit numbers, the others strings.

    use utoipa::openapi::schema::{Object, SchemaFormat, Type};
    use utoipa::openapi::{KnownFormat, RefOr, Schema};
    use utoipa::{PartialSchema, ToSchema};

    use crate::ids::{ConvId, DeviceId, GroupId, MsgId, UserId};

    fn integer(description: &str) -> RefOr<Schema> {
        Object::builder()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .description(Some(description))
            .into()
    }

    fn string(description: &str) -> RefOr<Schema> {
        Object::builder().schema_type(Type::String).description(Some(description)).into()
    }

    macro_rules! schema {
        ($t:ty, $f:ident, $d:literal) => {
            impl PartialSchema for $t {
                fn schema() -> RefOr<Schema> {
                    $f($d)
                }
            }
            impl ToSchema for $t {}
        };
    }

    schema!(UserId, integer, "A user id (64-bit: read it without rounding)");
    schema!(GroupId, integer, "A group id (64-bit)");
    schema!(MsgId, integer, "A message id (64-bit)");
    schema!(ConvId, string, "A conversation: `d:<a>:<b>`, `g:<group>` or `u:<user>`");
    schema!(DeviceId, string, "A device id chosen by the client");
}
