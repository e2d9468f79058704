//! The tern wire protocol, sans-IO.
//!
//! This crate owns everything two tern peers must agree on and nothing else: no sockets, no
//! runtime, time is passed in as [`std::time::Instant`]. The server, the client SDK, the fuzz
//! targets and the property tests all share it.
//!
//! Layout:
//! - [`ids`] — distinct identifier types (`UserId`, `ConvId`, `MsgId`, `DeviceId`, `ConnId`).
//! - [`frame`] — every frame a client or server sends, as serde types, with the stable error
//!   codes and close reasons.
//! - [`codec`] — the two encodings of one set of types (JSON for browsers, MessagePack for
//!   binary) and the length-prefixed stream framing used over raw TCP.
//! - [`ws`] — WebSocket framing (RFC 6455), the server's side: masked client frames in,
//!   unmasked server frames out.
//! - [`conn`] — one server-side connection's whole protocol as a state machine (auth, catch-up,
//!   ACK retries, in-flight cap, rates, heartbeat, rooms), driven by every transport.
//! - [`session`] — the connection's timers: auth deadline and heartbeat.
//! - [`rate`] — a token bucket with time passed in.
//! - [`rest`] — REST shapes both ends name (push targets).
//! - [`inbox`] — the client-side per-conversation ordering and dedup tracker (what a device has
//!   seen, what it must fetch), shared by the SDK and usable by any other client.

pub mod codec;
pub mod conn;
pub mod frame;
pub mod ids;
pub mod inbox;
pub mod rate;
pub mod rest;
pub mod session;
pub mod ws;

pub use codec::{Codec, DecodeError, FrameDecoder, FrameTooLarge};
pub use frame::{
    Body, ClientFrame, CloseReason, ErrorCode, LeaveReason, MAX_DATA_DEPTH, Message, Notice, PROTOCOL_VERSION,
    Priority, Push, PushScope, Role, RoomUser, ServerFrame, data_depth,
};
pub use ids::{ConnId, ConvId, DeviceId, GroupId, MsgId, UserId};
