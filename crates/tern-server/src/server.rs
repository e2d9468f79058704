//! Wiring: builds every layer for embedded mode and runs the listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_proto::CloseReason;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::auth::Auth;
use crate::bus::nats::{NatsBus, NatsOptions};
use crate::bus::{Bus, LocalBus};
use crate::config::{Config, ConfigError};
use crate::dispatch::{AggregateConfig, Dispatcher, Registry};
use crate::gateway::Gateway;
use crate::gateway::transport::stream::Stream;
use crate::gateway::transport::tcp::TcpIo;
use crate::logic::Logic;
use crate::logic::push::PushService;
use crate::logic::rules::ImRules;
use crate::store::Store;
use crate::store::postgres::{PgOptions, PostgresStore};
use crate::store::sqlite::SqliteStore;
use crate::tls::Tls;

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind. The io error is part of the one line, not a `source`: a
    /// reporter that prints the chain would print it twice.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: std::io::Error,
    },
    /// The data directory or store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(String),
    /// Another server uses the data directory.
    #[error(transparent)]
    DataDir(#[from] crate::datadir::LockError),
    /// The TLS certificate or key cannot be used.
    #[error("{0}")]
    Tls(String),
    /// The QUIC listener could not start.
    #[error("{0}")]
    Quic(String),
}

/// A running tern node.
pub struct Server {
    http_addr: SocketAddr,
    tcp_addr: SocketAddr,
    quic_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    gateway: Arc<Gateway>,
    registry: Arc<Registry>,
    files: Arc<crate::files::Files>,
    tasks: Vec<JoinHandle<()>>,
    /// Held while the server runs (see [`crate::datadir`]).
    _data_dir: crate::datadir::DataDirLock,
}

impl Server {
    /// Validates the config, opens the store and starts listening.
    pub async fn start(cfg: Config) -> Result<Self, StartError> {
        cfg.validate()?;
        let tls = match cfg.server.tls_cert.is_empty() {
            true => None,
            false => Some(Arc::new(
                Tls::load(cfg.server.tls_cert.as_ref(), cfg.server.tls_key.as_ref()).map_err(StartError::Tls)?,
            )),
        };
        let data_dir = crate::datadir::lock(&cfg.server.data_dir)?;
        let http = listen(cfg.server.http).map_err(|reason| StartError::Bind { addr: cfg.server.http, reason })?;
        let tcp = listen(cfg.server.tcp).map_err(|reason| StartError::Bind { addr: cfg.server.tcp, reason })?;
        let http_addr = http.local_addr().map_err(|reason| StartError::Bind { addr: cfg.server.http, reason })?;
        let tcp_addr = tcp.local_addr().map_err(|reason| StartError::Bind { addr: cfg.server.tcp, reason })?;
        let quic = match (&tls, cfg.server.quic.as_str()) {
            (_, "off") | (None, "") => None,
            (None, _) => {
                return Err(StartError::Quic(
                    "server.quic needs TLS (--tls-cert and --tls-key): QUIC always encrypts".into(),
                ));
            }
            (Some(tls), addr) => {
                // Validated: empty or an address.
                let addr = addr.parse().unwrap_or(tcp_addr);
                let idle =
                    Duration::from_millis(cfg.gateway.heartbeat_ms * u64::from(cfg.gateway.max_missed_heartbeats));
                Some(crate::gateway::transport::quic::endpoint(tls, addr, idle).map_err(StartError::Quic)?)
            }
        };
        let quic_addr = quic.as_ref().and_then(|q| q.local_addr().ok());

        // Build bottom-up along the data flow: connections registry ← bus ← dispatch ← store ← logic.
        // A node whose status has not arrived for three intervals is dead.
        let recent = Arc::new(crate::dispatch::RecentPosts::new(
            cfg.rooms.history_size,
            cfg.rooms.history_secs.saturating_mul(1000),
        ));
        let registry = Arc::new(
            Registry::new(cfg.gateway.slow_consumer_ms)
                .with_peers(Duration::from_millis(cfg.cluster.status_interval_ms.saturating_mul(3)))
                .with_recent(Arc::clone(&recent)),
        );
        let bus: Arc<dyn Bus> = if cfg.cluster.nats_url.is_empty() {
            Arc::new(LocalBus::new(registry.clone()))
        } else {
            let opts = NatsOptions {
                url: cfg.cluster.nats_url.clone(),
                cluster: cfg.cluster.name.clone(),
                node: cfg.cluster.node_id,
                durable_ttl: Duration::from_millis(cfg.push.qos1_ttl_ms),
            };
            NatsBus::connect(opts, registry.clone(), Arc::clone(registry.peers())).await.map_err(StartError::Store)?
        };
        let aggregate = AggregateConfig {
            enabled: cfg.push.aggregate,
            window: Duration::from_millis(cfg.push.aggregate_window_ms),
            max_count: cfg.push.aggregate_max,
            compress_over: cfg.push.compress_over_bytes,
            queue: cfg.push.queue,
        };
        let dispatcher = Arc::new(Dispatcher::new(bus.clone(), aggregate));
        let store: Arc<dyn Store> = if cfg.store.postgres_url.is_empty() {
            Arc::new(
                SqliteStore::open(&cfg.server.data_dir, &cfg.store, dispatcher.clone(), ImRules::shared())
                    .map_err(|e| StartError::Store(e.to_string()))?,
            )
        } else {
            let opts = PgOptions {
                url: cfg.store.postgres_url.clone(),
                pool_size: cfg.store.postgres_pool,
                max_batch: cfg.store.max_batch,
                schema: Some(cfg.store.postgres_schema.clone()).filter(|s| !s.is_empty()),
            };
            Arc::new(
                PostgresStore::open(&opts, dispatcher.clone(), ImRules::shared())
                    .await
                    .map_err(|e| StartError::Store(e.to_string()))?,
            )
        };
        let files = Arc::new(crate::files::Files::new(
            store.clone(),
            crate::files::open_blobs(&cfg).await.map_err(StartError::Store)?,
            cfg.files.clone(),
        ));
        let secret = Auth::load_secret(&cfg.auth.token_secret, &cfg.server.data_dir)
            .map_err(|e| StartError::Store(format!("token secret: {e}")))?;
        let auth = Auth::new(&secret, cfg.auth.token_ttl_secs, cfg.auth.max_concurrent_hashes);
        let logic = Arc::new(Logic::new(store.clone(), auth, &cfg, dispatcher.clone(), recent));
        logic.load().await.map_err(|e| StartError::Store(e.message))?;
        let router = crate::dispatch::Router::new(registry.clone(), bus.clone());
        {
            let (logic, router) = (Arc::clone(&logic), router.clone());
            bus.on_control(Arc::new(move |control| logic.apply_control(&control, &router)));
        }
        let push = Arc::new(
            PushService::new(logic.clone(), store, dispatcher.clone(), cfg.push.clone())
                .await
                .map_err(|e| StartError::Store(e.message))?,
        );
        let shutdown = CancellationToken::new();
        let gateway = Arc::new(Gateway::new(
            logic.clone(),
            router,
            cfg.gateway.clone(),
            cfg.push.qos1_ttl_ms,
            &cfg.rooms,
            shutdown.clone(),
        ));
        let online_task = tokio::spawn(crate::dispatch::announce_online(
            registry.clone(),
            Duration::from_millis(cfg.rooms.online_interval_ms),
            shutdown.clone(),
        ));
        let mut tasks = Vec::new();
        if cfg.rooms.events_window_ms > 0 {
            tasks.push(tokio::spawn(crate::logic::live::announce_room_events(
                Arc::clone(logic.live()),
                Duration::from_millis(cfg.rooms.events_window_ms),
                shutdown.clone(),
            )));
        }
        // Only a cluster has anyone to tell (the embedded bus would drop every status).
        if !cfg.cluster.nats_url.is_empty() {
            tasks.push(tokio::spawn(crate::logic::nodes::share_status(
                registry.clone(),
                Arc::clone(logic.presence()),
                bus.clone(),
                crate::logic::nodes::own_status(&cfg, http_addr, tcp_addr, quic_addr, tls.is_some()),
                Duration::from_millis(cfg.cluster.status_interval_ms),
                cfg.rooms.members_list_max,
                shutdown.clone(),
            )));
        }

        let state = ApiState {
            logic,
            gateway: gateway.clone(),
            push,
            max_frame_bytes: cfg.gateway.max_frame_bytes,
            advertise_ws: cfg.server.advertise_ws.clone(),
            advertise_tcp: cfg.server.advertise_tcp.clone(),
            tcp_addr,
            proxies: Arc::new(crate::net::TrustedProxies::new(&cfg.server.trusted_proxies)),
            metrics_public: cfg.server.metrics_public,
            tls: tls.is_some(),
            quic_addr,
            transport_order: cfg.server.transport_order.clone().into(),
            files: files.clone(),
            relay: Arc::new(crate::files::relay::Relay::new(
                cfg.files.relay_bytes_per_sec_per_transfer,
                cfg.files.relay_bytes_per_sec_per_user,
            )),
        };
        let app = api::router(state);
        let header_timeout = Duration::from_millis(cfg.server.http_header_timeout_ms);
        let http_task = tokio::spawn(serve_http(http, app, header_timeout, tls.clone(), shutdown.clone()));
        let upkeep_task = {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => crate::telemetry::upkeep(),
                    }
                }
            })
        };
        let tcp_task =
            tokio::spawn(accept_tcp(tcp, gateway.clone(), cfg.gateway.max_frame_bytes, tls.clone(), shutdown.clone()));
        let sweep_task = tokio::spawn(files.clone().sweep_every_minute(shutdown.clone()));
        tasks.extend([http_task, tcp_task, online_task, upkeep_task, sweep_task]);
        if let Some(quic) = quic {
            let max_frame = cfg.gateway.max_frame_bytes;
            tasks.push(tokio::spawn(crate::gateway::transport::quic::accept(
                quic,
                gateway.clone(),
                max_frame,
                shutdown.clone(),
            )));
        }
        if let Some(tls) = &tls {
            tasks.push(tls.watch(shutdown.clone()));
        }
        tracing::info!(%http_addr, %tcp_addr, quic = ?quic_addr, data_dir = %cfg.server.data_dir.display(), "tern listening");
        Ok(Self { http_addr, tcp_addr, quic_addr, shutdown, gateway, registry, files, tasks, _data_dir: data_dir })
    }

    /// The bound HTTP address (REST + WebSocket).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound raw TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound QUIC (UDP) address, when QUIC runs.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic_addr
    }

    /// The connection layer (for counters).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Uploads and file content.
    pub fn files(&self) -> &Arc<crate::files::Files> {
        &self.files
    }

    /// Stops accepting, tells every client to reconnect, and waits (up to `deadline`) for the
    /// connections to close. Queued writes are committed by the store writer before it exits.
    pub async fn shutdown(self, deadline: Duration) {
        self.registry.set_draining();
        self.shutdown.cancel();
        self.registry.kick_all(CloseReason::ServerShutdown);
        let wait = async {
            while self.gateway.open_connections() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Serves HTTP/1.1 (REST and WebSocket upgrades) with hyper directly rather than `axum::serve`,
/// for two settings it does not expose: TCP_NODELAY on every socket (small frames must not wait
/// for ACKs) and a deadline for request headers — without it a client trickling one header byte
/// a second holds a connection forever (slowloris; measured: still open after 80 s).
///
/// With TLS, each connection's handshake runs in its connection's task, within the same deadline
/// as the request headers.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    tls: Option<Arc<Tls>>,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower_service::Service;

    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            router.clone().call(req)
        });
        let (stop, http1, tls) = (stop.clone(), http1.clone(), tls.clone());
        tasks.spawn(async move {
            let stream = match tls {
                None => Stream::Plain(stream),
                Some(tls) => match tokio::time::timeout(header_timeout, tls.http().accept(stream)).await {
                    Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                    Ok(Err(e)) => return tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                },
            };
            let conn = http1.serve_connection(TokioIo::new(stream), service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Finish the request in progress, then close; upgraded WebSockets are
                    // closed by the gateway with `server_shutdown`.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "http connection ended with an error");
            }
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
}

/// Binds a listener with a deep accept backlog: during a reconnect storm the kernel queues
/// connections instead of refusing them (the default backlog of 1,024 overflowed at 10,000
/// simultaneous connects in `tern bench storm`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(16_384)
}

/// How long a TLS client on the TCP port has to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_tcp(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    max_frame: usize,
    tls: Option<Arc<Tls>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let admitted = gateway.admit(peer.ip());
                match (&tls, admitted) {
                    (None, Ok(admitted)) => {
                        tokio::spawn(admitted.serve(TcpIo::new(Stream::Plain(stream), max_frame), peer));
                    }
                    (None, Err(refusal)) => {
                        tokio::spawn(refuse_tcp(Stream::Plain(stream), refusal));
                    }
                    // The handshake runs in a task of its own, which hands the connection to a
                    // new task once done: a plain connection's task stays as small as before,
                    // and a TLS one's does not keep the handshake's state.
                    (Some(tls), admitted) => {
                        let acceptor = tls.tcp().clone();
                        tokio::spawn(async move {
                            let limit = match admitted {
                                Ok(_) => TLS_HANDSHAKE_TIMEOUT,
                                Err(_) => Duration::from_secs(1),
                            };
                            let stream = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                                Ok(Err(e)) => return tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                            };
                            match admitted {
                                Ok(admitted) => drop(tokio::spawn(admitted.serve(TcpIo::new(stream, max_frame), peer))),
                                Err(refusal) => refuse_tcp(stream, refusal).await,
                            }
                        });
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Says `over_capacity` (with a retry hint) to a TCP connection that was not admitted, and
/// closes it. Bounded in time, so a peer that never reads costs nothing.
async fn refuse_tcp(mut stream: Stream, refusal: crate::gateway::Refusal) {
    use tokio::io::AsyncWriteExt;
    let close = tern_proto::ServerFrame::Close {
        reason: tern_proto::CloseReason::OverCapacity,
        message: refusal.message().into(),
        retry_after_ms: Some(refusal.retry_after_ms()),
    };
    let frame = tern_proto::Codec::MsgPack.encode_prefixed(&close);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    let _ = stream.shutdown().await;
}
