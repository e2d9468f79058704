//! The tern server library: everything `tern serve` runs, as layers with one-way data flow.
//!
//! ```text
//! transport → gateway → logic → store → dispatch → bus → gateway → transport
//! ```
//!
//! - [`gateway`] — connections: transports (`ws`, `tcp`) below, the per-connection task above,
//!   which drives the protocol core `tern_proto::conn` (auth, heartbeat, ACK retry, resume).
//! - [`logic`] — accounts, the send path, history, resume plans. Knows nothing of sockets.
//! - [`store`] — the [`store::Store`] trait, the embedded SQLite and the PostgreSQL engines, the
//!   conformance suite.
//! - [`dispatch`] — from "durable" to "queued on every matching connection", encode once; the
//!   connection table and room membership (`Router`).
//! - [`bus`] — node-to-node delivery; in-process in embedded mode, NATS in a cluster.
//! - [`cluster`] — the other nodes as last heard of: their counts, who is live, who is draining.
//! - [`api`] — REST (control, history) and the WebSocket upgrade.
//! - [`auth`], [`config`], [`error`], [`wire`], [`server`] — credentials, settings, the
//!   request error, the encode-once outbound frame, and the wiring.

pub mod api;
pub mod auth;
pub mod bus;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod datadir;
pub mod dispatch;
pub mod error;
pub mod files;
pub mod gateway;
pub mod logic;
pub mod net;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod wire;

pub use config::Config;
pub use server::{Server, StartError};
