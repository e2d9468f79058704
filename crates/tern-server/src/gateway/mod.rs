//! The access layer: connections from accept to close.
//!
//! Each transport under [`transport`] turns its socket into a [`transport::FrameIo`]; from there
//! every connection runs the same task ([`conn`]), which drives the connection's protocol core
//! (`tern_proto::conn::Connection`): authenticate under a deadline → register with the router →
//! resume what the device missed → serve requests, pushes, ACK retries and heartbeats → always
//! deregister and record why it closed.

mod admission;
mod conn;
pub mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

pub use admission::{Admitted, Refusal};
use tern_proto::conn::{ConnConfig, RetryPolicy};
use tern_proto::session::SessionConfig;
use tern_proto::{CloseReason, ConnId};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::dispatch::{Registry, Router};
use crate::logic::Logic;

/// Shared state of all connections on this node.
pub struct Gateway {
    logic: Arc<Logic>,
    /// Where connections are: the registry and the bus interests, changed together.
    router: Router,
    cfg: GatewayConfig,
    shutdown: CancellationToken,
    next_conn: AtomicU64,
    /// Connections holding a slot (see `admission`).
    open: AtomicUsize,
    /// Slots per client address.
    per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    closes: Mutex<HashMap<CloseReason, u64>>,
    /// Must-arrive pushes given up after their TTL without an ACK.
    pub(crate) qos1_expired: AtomicU64,
    /// The connection core's settings, from `cfg`: one copy for every connection.
    conn_cfg: ConnConfig,
    /// Sessions of the HTTP transports (SSE, long-poll).
    http_sessions: Arc<transport::http::Sessions>,
}

impl Gateway {
    /// Builds the gateway.
    pub fn new(
        logic: Arc<Logic>,
        router: Router,
        cfg: GatewayConfig,
        qos1_ttl_ms: u64,
        rooms: &crate::config::RoomsConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let conn_cfg = ConnConfig {
            session: SessionConfig {
                auth_timeout: Duration::from_millis(cfg.auth_timeout_ms),
                heartbeat: Duration::from_millis(cfg.heartbeat_ms),
                max_missed_heartbeats: cfg.max_missed_heartbeats,
            },
            retry: RetryPolicy {
                initial: Duration::from_millis(cfg.retry_initial_ms),
                max: Duration::from_millis(cfg.retry_max_ms),
            },
            max_unacked: cfg.max_unacked,
            push_ttl: Duration::from_millis(cfg.push_ttl_ms),
            qos1_ttl: Duration::from_millis(qos1_ttl_ms),
            max_inflight: cfg.max_inflight_requests,
            max_sends_per_sec: cfg.max_sends_per_sec,
            max_history_per_sec: cfg.max_history_per_sec,
            default_history_page: crate::logic::DEFAULT_PAGE,
            max_frame_bytes: u32::try_from(cfg.max_frame_bytes).unwrap_or(u32::MAX),
            max_publishes_per_sec: rooms.publish_per_sec_per_conn,
            max_publish_bytes: rooms.max_publish_bytes,
        };
        Self {
            conn_cfg,
            logic,
            router,
            cfg,
            shutdown,
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            closes: Mutex::new(HashMap::new()),
            qos1_expired: AtomicU64::new(0),
            http_sessions: Arc::default(),
        }
    }

    /// A new HTTP-transport session whose first inbound frame is `auth`, and the connection's
    /// I/O for it (to be served like any admitted connection).
    pub fn open_http_session(
        &self,
        owner: transport::http::SessionOwner,
        mode: transport::http::Mode,
        auth: bytes::Bytes,
    ) -> (Arc<transport::http::Session>, transport::http::HttpIo) {
        // A session without a downstream request lives as long as a silent connection.
        self.http_sessions.open(owner, mode, auth, self.cfg.http_buffer_bytes, self.silent_limit())
    }

    /// An HTTP-transport session by id (live, or ended recently).
    pub fn http_session(&self, id: &str) -> Option<Arc<transport::http::Session>> {
        self.http_sessions.get(id)
    }

    /// How long a new connection has to authenticate.
    pub fn auth_deadline(&self) -> Duration {
        Duration::from_millis(self.cfg.auth_timeout_ms)
    }

    /// How long a connection may be silent (QUIC's idle timeout).
    pub fn silent_limit(&self) -> Duration {
        Duration::from_millis(self.cfg.heartbeat_ms * u64::from(self.cfg.max_missed_heartbeats))
    }

    /// Downstream bytes an HTTP session keeps unacknowledged at most.
    pub fn http_buffer_bytes(&self) -> usize {
        self.cfg.http_buffer_bytes
    }

    /// How long a long-poll is held open with nothing to answer (the heartbeat interval: the
    /// client's next poll comes well within a silent connection's limit).
    pub fn http_hold(&self) -> Duration {
        Duration::from_millis(self.cfg.heartbeat_ms)
    }

    /// One admitted connection's task (see [`Gateway::admit`]); `slot` is released at its end.
    fn serve<T: transport::FrameIo>(
        self: Arc<Self>,
        io: T,
        peer: SocketAddr,
        slot: admission::Admitted,
    ) -> impl Future<Output = ()> + Send + use<T> {
        let conn_id = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        conn::run(self, io, conn_id, peer, slot)
    }

    /// Connections currently open on this node.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Must-arrive pushes given up (unacknowledged past `push.qos1_ttl_ms`) since start.
    pub fn qos1_expired(&self) -> u64 {
        self.qos1_expired.load(Ordering::Relaxed)
    }

    /// The connection registry.
    pub fn registry(&self) -> &Arc<Registry> {
        self.router.registry()
    }

    /// The connection table and bus interests.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// How many connections closed for each reason since start.
    pub fn close_counts(&self) -> HashMap<CloseReason, u64> {
        self.closes.lock().clone()
    }

    fn record_close(&self, transport: &'static str, reason: CloseReason) {
        crate::telemetry::closed(transport, reason);
        {
            let mut c = self.closes.lock();
            *c.entry(reason).or_default() += 1;
        }
    }
}
