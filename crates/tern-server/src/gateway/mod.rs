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

use crate::bus::Bus;
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
}

impl Gateway {
    /// Builds the gateway.
    pub fn new(
        logic: Arc<Logic>,
        registry: Arc<Registry>,
        bus: Arc<dyn Bus>,
        cfg: GatewayConfig,
        qos1_ttl_ms: u64,
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
        };
        Self {
            conn_cfg,
            logic,
            router: Router::new(registry, bus),
            cfg,
            shutdown,
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            closes: Mutex::new(HashMap::new()),
            qos1_expired: AtomicU64::new(0),
        }
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

    /// How many connections closed for each reason since start.
    pub fn close_counts(&self) -> HashMap<CloseReason, u64> {
        self.closes.lock().clone()
    }

    fn record_close(&self, reason: CloseReason) {
        crate::telemetry::closed(reason);
        {
            let mut c = self.closes.lock();
            *c.entry(reason).or_default() += 1;
        }
    }
}
