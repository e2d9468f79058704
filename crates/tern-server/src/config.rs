//! Configuration: one struct, read from a TOML file, then `TERN_*` environment variables
//! (`TERN_GATEWAY__HEARTBEAT_MS=10000`), then command-line flags. Every field has a default and a
//! doc comment; [`Config::validate`] rejects nonsense at start-up with one line naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the server can be told.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen and keep data.
    pub server: ServerConfig,
    /// Tokens and passwords.
    pub auth: AuthConfig,
    /// Connections: timers, limits, queues, retries.
    pub gateway: GatewayConfig,
    /// Message rules.
    pub messages: MessagesConfig,
    /// The store: embedded SQLite (default) or PostgreSQL.
    pub store: StoreConfig,
    /// Running as one of several nodes.
    pub cluster: ClusterConfig,
    /// The push service for business servers.
    pub push: PushConfig,
    /// Live rooms.
    pub rooms: RoomsConfig,
    /// Files: uploads (tus 1.0), downloads, limits.
    pub files: FilesConfig,
}

/// Files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Largest file, in bytes (an upload announcing more is refused with 413).
    pub max_file_bytes: u64,
    /// Bytes one user's files may take together, incomplete uploads included.
    pub quota_bytes_per_user: u64,
    /// Upload bytes per second one user may send, all uploads together (0: no limit). Faster
    /// uploads are slowed down, not refused.
    pub upload_bytes_per_sec_per_user: u64,
    /// An upload not finished within this many seconds of its creation expires and its bytes
    /// are removed.
    pub upload_expiry_secs: u64,
    /// How long a signed download URL (`POST /v1/files/{id}/url`) stays valid, in seconds.
    pub signed_url_secs: u64,
    /// Bytes per second the relay passes for one file transfer between two clients (0: no
    /// limit).
    pub relay_bytes_per_sec_per_transfer: u64,
    /// Bytes per second the relay passes for all of one user's transfers together (0: no limit).
    pub relay_bytes_per_sec_per_user: u64,
    /// Where the embedded engine keeps file bytes (empty: `files/` in the data directory).
    /// With PostgreSQL the bytes are kept in the database, in chunks.
    pub dir: String,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 2 << 30,
            quota_bytes_per_user: 10 << 30,
            upload_bytes_per_sec_per_user: 0,
            upload_expiry_secs: 86_400,
            signed_url_secs: 300,
            relay_bytes_per_sec_per_transfer: 10 << 20,
            relay_bytes_per_sec_per_user: 20 << 20,
            dir: String::new(),
        }
    }
}

/// The push service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// An API key with every scope, accepted as given (at least 16 characters; empty: none).
    /// `tern serve --push-key KEY` sets it. Further keys are created through the admin API.
    pub bootstrap_key: String,
    /// Requests per second allowed to the bootstrap key.
    pub bootstrap_rate_per_sec: f64,
    /// Rate given to a new key when none is asked for, per second.
    pub default_rate_per_sec: f64,
    /// Burst given to a new key when none is asked for.
    pub default_burst: u32,
    /// Largest push payload (`data`, JSON-encoded), in bytes.
    pub max_payload_bytes: usize,
    /// Batch low-priority best-effort pushes to rooms, areas and everyone.
    pub aggregate: bool,
    /// How long a batch stays open, in milliseconds.
    pub aggregate_window_ms: u64,
    /// A batch is sent as soon as it holds this many pushes.
    pub aggregate_max: usize,
    /// Frames longer than this many bytes go out brotli-compressed to clients that accept it.
    pub compress_over_bytes: usize,
    /// Pushes waiting for the aggregator before the API answers 503.
    pub queue: usize,
    /// How long a must-arrive (QoS 1) push is retried before it is given up (and counted).
    pub qos1_ttl_ms: u64,
}

/// Live rooms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// How often each room is told its online count, in milliseconds.
    pub online_interval_ms: u64,
    /// The area of a room nobody assigned one to.
    pub default_area: String,
    /// Posts (`publish`) per second one connection may make into its room (0: no limit).
    pub publish_per_sec_per_conn: u32,
    /// Posts per second one room accepts from all its viewers together, on this node (0: no
    /// limit).
    pub publish_per_sec_per_room: u32,
    /// Largest `publish` data, in bytes of JSON.
    pub max_publish_bytes: usize,
    /// Slow mode for every room: one post per user per this many seconds (0: off). A business
    /// server can set it per room (`PUT /v1/rooms/{room}/settings`).
    pub slow_mode_secs: u32,
    /// Words refused or masked in posts (case-insensitive, matched anywhere in the text).
    pub word_filter: Vec<String>,
    /// What a filtered word does to a post: `mask` (replaced by `*`s) or `refuse`.
    pub word_filter_action: FilterAction,
    /// Enter and leave events are gathered per room over this many milliseconds and sent as one
    /// `room_events` frame (0: none are sent).
    pub events_window_ms: u64,
    /// Users named per window in a `room_events` frame, for entries and for leaves; the rest are
    /// counted ("A, B and 1,203 others joined").
    pub events_names: usize,
    /// A user who leaves a room and is back within this many milliseconds (a reconnect, a page
    /// reload) neither left nor entered.
    pub leave_grace_ms: u64,
    /// Rooms with at most this many logged-in users on a node list them
    /// (`GET /v1/rooms/{room}/members`, and in a cluster each node's status); larger rooms only
    /// count.
    pub members_list_max: usize,
    /// Recent pushes kept per room for late joiners (a `join` with `recent`; 0: none kept).
    pub history_size: usize,
    /// Recent pushes older than this many seconds are not replayed.
    pub history_secs: u64,
}

/// What the word filter does to a post that contains a listed word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Replace each listed word by as many `*` as it has characters.
    Mask,
    /// Refuse the post with `forbidden`.
    Refuse,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            bootstrap_key: String::new(),
            bootstrap_rate_per_sec: 10_000.0,
            default_rate_per_sec: 100.0,
            default_burst: 200,
            max_payload_bytes: 4096,
            aggregate: true,
            aggregate_window_ms: 100,
            aggregate_max: 200,
            compress_over_bytes: 512,
            queue: 65_536,
            qos1_ttl_ms: 30_000,
        }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            online_interval_ms: 5_000,
            default_area: "default".into(),
            publish_per_sec_per_conn: 5,
            publish_per_sec_per_room: 2_000,
            max_publish_bytes: 1024,
            slow_mode_secs: 0,
            word_filter: Vec::new(),
            word_filter_action: FilterAction::Mask,
            events_window_ms: 1_000,
            events_names: 10,
            leave_grace_ms: 5_000,
            members_list_max: 500,
            history_size: 50,
            history_secs: 300,
        }
    }
}

/// Listening addresses and the data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP address: REST API and WebSocket (`/v1/ws`).
    pub http: SocketAddr,
    /// Raw TCP address: length-prefixed MessagePack frames.
    pub tcp: SocketAddr,
    /// Directory of the embedded store and the generated token secret.
    pub data_dir: PathBuf,
    /// WebSocket URL handed out at login; empty means `ws://<Host header>/v1/ws`.
    pub advertise_ws: String,
    /// TCP `host:port` handed out at login; empty means the Host header's host and the TCP port.
    pub advertise_tcp: String,
    /// Reverse proxies (addresses or CIDR blocks, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` is
    /// believed; from anyone else the header is ignored and the peer address is the client.
    pub trusted_proxies: Vec<String>,
    /// A client must send a request's headers within this many milliseconds, or the HTTP
    /// connection is closed (slowloris).
    pub http_header_timeout_ms: u64,
    /// Serve `GET /metrics` to anyone. Off: it needs an API key with the `admin` scope (as a
    /// bearer token, which Prometheus' `authorization` scrape setting sends).
    pub metrics_public: bool,
    /// PEM certificate chain (leaf first). With `tls_key`, the HTTP port serves HTTPS and WSS and
    /// the TCP port TLS; the files are reloaded when they change or on SIGHUP. Empty: plaintext.
    pub tls_cert: String,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: String,
    /// QUIC (UDP, ALPN `tern/1`) address. Empty: with TLS on, the TCP listener's address and
    /// port over UDP; without TLS, off (QUIC always encrypts). `off`: never.
    pub quic: String,
    /// The transports a login lists, best first (`quic`, `tcp`, `ws`, `sse`, `longpoll`); QUIC
    /// is left out when it does not run, and a browser (a request with `Origin`) is offered only
    /// `ws`, `sse` and `longpoll`.
    pub transport_order: Vec<String>,
}

/// The transports a client may be offered.
pub const TRANSPORT_NAMES: [&str; 5] = ["quic", "tcp", "ws", "sse", "longpoll"];

/// Token and password settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC secret for tokens (at least 32 bytes). Empty: a random one is generated once and kept
    /// in `<data_dir>/token.secret`, so tokens survive restarts.
    pub token_secret: String,
    /// How long a login token is valid, in seconds.
    pub token_ttl_secs: u64,
    /// How many password hashes may run at once (each takes ~19 MiB and tens of ms of CPU).
    pub max_concurrent_hashes: usize,
    /// Failed logins for one username from one address before that address is refused for
    /// that username (`rate_limited`, before any hash; a token bucket).
    pub login_failures_per_user: u32,
    /// Failed logins for one username from all addresses before its attempts are slowed to one
    /// per second (a correct password still logs in).
    pub login_failures_per_user_total: u32,
    /// Failed logins from one client address (any usernames) before its attempts are slowed.
    pub login_failures_per_ip: u32,
    /// One more failed attempt is allowed every this many seconds (per username and address).
    pub login_failure_refill_secs: u64,
}

/// Connection handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// A new connection must authenticate within this many milliseconds.
    pub auth_timeout_ms: u64,
    /// Heartbeat interval advertised to clients, in milliseconds.
    pub heartbeat_ms: u64,
    /// Silent heartbeat intervals tolerated before a connection is closed.
    pub max_missed_heartbeats: u32,
    /// Largest accepted inbound frame, in bytes (checked before buffering).
    pub max_frame_bytes: usize,
    /// HTTP transports (SSE, long-poll): downstream bytes kept for one session until the client
    /// acknowledges them; past it the session waits like an unwritable socket (and is cut after
    /// `slow_consumer_ms`).
    pub http_buffer_bytes: usize,
    /// High-lane frames (chat messages, high-priority pushes) queued towards one connection;
    /// overflowing it closes the connection as a slow consumer (high is never dropped).
    pub outbound_queue: usize,
    /// Low-lane frames (low-priority pushes, batches, online counts) queued towards one
    /// connection; beyond it low frames are dropped and counted.
    pub low_queue: usize,
    /// A connection that keeps overflowing its low lane, or whose socket stays unwritable, for
    /// this many milliseconds is closed as a slow consumer.
    pub slow_consumer_ms: u64,
    /// Pushed messages awaiting a device ACK on one connection before it counts as a slow consumer.
    pub max_unacked: usize,
    /// Requests (`send`, `history`) one connection may have in flight; reading pauses beyond it.
    pub max_inflight_requests: usize,
    /// Most connections this node holds; past it new ones are refused (`over_capacity` with a
    /// retry hint) and the open ones are untouched.
    pub max_connections: usize,
    /// Most connections from one client address (after `server.trusted_proxies`); 0: no cap.
    /// Generous by default: carrier NAT puts many users behind one address.
    pub max_connections_per_ip: usize,
    /// `send` frames one connection may make per second (a token bucket of as many); past it a
    /// send is answered `rate_limited`. 0: no limit.
    pub max_sends_per_sec: u32,
    /// Messages of history one connection may ask for per second (each `history` request counts
    /// its `limit`; a token bucket of as many); past it a request is answered `rate_limited`.
    /// 0: no limit.
    pub max_history_per_sec: u32,
    /// First retry of an unacknowledged push, in milliseconds; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest wait between retries of one push, in milliseconds.
    pub retry_max_ms: u64,
    /// How long a push is retried before the connection is closed (`ack_timeout`) so the device
    /// reconnects and resumes, in milliseconds.
    pub push_ttl_ms: u64,
    /// On resume, a conversation missing more than this many messages gets a `gap` answer
    /// (fetch with `history`) instead of a push of each one.
    pub resume_push_limit: u64,
}

/// Message rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagesConfig {
    /// Largest message body, in bytes of its JSON encoding.
    pub max_body_bytes: usize,
    /// Most members a group may have.
    pub max_group_members: u32,
    /// How long after sending a message may be recalled, in seconds.
    pub recall_window_secs: u64,
    /// A user's online/offline change is told to friends only if it still holds after this
    /// long, in milliseconds (a quick reconnect causes no flap).
    pub presence_debounce_ms: u64,
}

/// SQLite durability trade-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync every commit: an acknowledged message survives power loss.
    Full,
    /// fsync at checkpoints: survives a process crash (kill -9), may lose the last commits on
    /// power loss.
    Normal,
}

/// The store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Empty: the embedded SQLite store in `server.data_dir`. A `postgres://user@host:port/db`
    /// URL: PostgreSQL, shared by every node of a cluster (`tern serve --store URL`).
    pub postgres_url: String,
    /// PostgreSQL schema holding tern's tables (created if missing); empty: the connection's
    /// default (`public`).
    pub postgres_schema: String,
    /// Connections to PostgreSQL per node.
    pub postgres_pool: usize,
    /// SQLite: `full` or `normal`; see [`Synchronous`].
    pub synchronous: Synchronous,
    /// Most writes committed in one transaction (group commit).
    pub max_batch: usize,
    /// SQLite: read connections kept open.
    pub readers: usize,
}

/// Several nodes serving one deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's number, 0–1023, unique in the cluster (it is part of every message id the
    /// node issues). `tern serve --node-id N`.
    pub node_id: u16,
    /// Empty: a single node. A `nats://host:port` URL: deliveries between the nodes go over this
    /// NATS server (`tern serve --cluster URL`); every node also needs the same
    /// `store.postgres_url` and `auth.token_secret`.
    pub nats_url: String,
    /// The cluster's name: the prefix of its NATS subjects, so several clusters can share one
    /// NATS server.
    pub name: String,
    /// How often a node tells the others its load and rooms, in milliseconds; a node not heard
    /// from for three intervals is dead (its connections and room members stop counting, and
    /// logins are no longer sent to it).
    pub status_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { node_id: 0, nats_url: String::new(), name: "tern".into(), status_interval_ms: 1000 }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 7070)),
            tcp: SocketAddr::from(([127, 0, 0, 1], 7071)),
            data_dir: PathBuf::from("tern-data"),
            advertise_ws: String::new(),
            advertise_tcp: String::new(),
            trusted_proxies: Vec::new(),
            http_header_timeout_ms: 10_000,
            metrics_public: false,
            tls_cert: String::new(),
            tls_key: String::new(),
            quic: String::new(),
            transport_order: TRANSPORT_NAMES.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_secret: String::new(),
            token_ttl_secs: 24 * 3600,
            max_concurrent_hashes: 4,
            login_failures_per_user: 10,
            login_failures_per_user_total: 50,
            login_failures_per_ip: 100,
            login_failure_refill_secs: 30,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            auth_timeout_ms: 10_000,
            heartbeat_ms: 25_000,
            max_missed_heartbeats: 3,
            max_frame_bytes: 64 * 1024,
            http_buffer_bytes: 1024 * 1024,
            outbound_queue: 4096,
            low_queue: 1024,
            slow_consumer_ms: 10_000,
            max_unacked: 8192,
            max_inflight_requests: 256,
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            max_sends_per_sec: 5_000,
            max_history_per_sec: 20_000,
            retry_initial_ms: 2_000,
            retry_max_ms: 30_000,
            push_ttl_ms: 120_000,
            resume_push_limit: 1_000,
        }
    }
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self { max_body_bytes: 16 * 1024, max_group_members: 2000, recall_window_secs: 120, presence_debounce_ms: 2000 }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            postgres_url: String::new(),
            postgres_schema: String::new(),
            postgres_pool: 16,
            synchronous: Synchronous::Full,
            max_batch: 512,
            readers: 4,
        }
    }
}

/// A setting is wrong; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads the optional TOML file, then `TERN_*` environment variables over it.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        // Only `TERN_<SECTION>__<FIELD>` variables are settings; others of the CLI's (TERN_URL,
        // TERN_PASSWORD, TERN_PUSH_KEY, …) must not be mistaken for unknown settings.
        let settings: std::collections::HashMap<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("TERN_") && k.contains("__")).collect();
        builder = builder.add_source(
            config::Environment::with_prefix("TERN").prefix_separator("_").separator("__").source(Some(settings)),
        );
        let cfg: Config = builder.build().and_then(|c| c.try_deserialize()).map_err(|e| ConfigError(e.to_string()))?;
        Ok(cfg)
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.gateway;
        let a = &self.auth;
        if self.server.tls_cert.is_empty() != self.server.tls_key.is_empty() {
            return Err(ConfigError(
                "server.tls_cert and server.tls_key go together (--tls-cert and --tls-key): set both or neither".into(),
            ));
        }
        if let Some(bad) = self.server.trusted_proxies.iter().find(|p| crate::net::Cidr::parse(p).is_none()) {
            return Err(ConfigError(format!(
                "server.trusted_proxies: {bad:?} is not an IP address or CIDR block (like 10.0.0.0/8)"
            )));
        }
        let pg = &self.store.postgres_url;
        let postgres_scheme = pg.starts_with("postgres://") || pg.starts_with("postgresql://");
        if !pg.is_empty() && !postgres_scheme {
            return Err(ConfigError(
                "store.postgres_url must start with postgres:// (or be empty: embedded store)".into(),
            ));
        }
        if !pg.is_empty() && self.auth.token_secret.is_empty() {
            return Err(ConfigError(
                "auth.token_secret must be set when the store is shared (store.postgres_url): every node must \
                 accept the tokens the others issue"
                    .into(),
            ));
        }
        if !self.cluster.nats_url.is_empty() && pg.is_empty() {
            return Err(ConfigError(
                "cluster.nats_url needs store.postgres_url: the nodes of a cluster share one store".into(),
            ));
        }
        let checks: [(bool, &str); 28] = [
            (self.cluster.status_interval_ms >= 50, "cluster.status_interval_ms must be >= 50"),
            (
                self.cluster.nats_url.is_empty() || self.cluster.nats_url.starts_with("nats://"),
                "cluster.nats_url must start with nats:// (or be empty: one node)",
            ),
            (
                !self.cluster.name.is_empty()
                    && self.cluster.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "cluster.name must be letters, digits, _ and - (it prefixes NATS subjects)",
            ),
            (self.cluster.node_id < 1024, "cluster.node_id must be 0 to 1023"),
            (self.store.postgres_pool >= 2, "store.postgres_pool must be >= 2"),
            (
                self.store.postgres_schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "store.postgres_schema may hold only letters, digits and _",
            ),
            (g.max_connections >= 1, "gateway.max_connections must be >= 1"),
            (self.server.http_header_timeout_ms >= 100, "server.http_header_timeout_ms must be >= 100"),
            (
                a.login_failures_per_user >= 1 && a.login_failures_per_user_total >= 1 && a.login_failures_per_ip >= 1,
                "auth.login_failures_per_user, _per_user_total and _per_ip must be >= 1",
            ),
            (a.login_failure_refill_secs >= 1, "auth.login_failure_refill_secs must be >= 1"),
            (g.auth_timeout_ms > 0, "gateway.auth_timeout_ms must be > 0"),
            (g.heartbeat_ms >= 100, "gateway.heartbeat_ms must be >= 100"),
            (g.max_missed_heartbeats >= 1, "gateway.max_missed_heartbeats must be >= 1"),
            (
                (256..=16 * 1024 * 1024).contains(&g.max_frame_bytes),
                "gateway.max_frame_bytes must be between 256 and 16777216",
            ),
            (g.outbound_queue >= 16, "gateway.outbound_queue must be >= 16"),
            (g.http_buffer_bytes >= g.max_frame_bytes, "gateway.http_buffer_bytes must be >= gateway.max_frame_bytes"),
            (
                self.server.transport_order.iter().all(|t| TRANSPORT_NAMES.contains(&t.as_str())),
                "server.transport_order may name only quic, tcp, ws, sse and longpoll",
            ),
            (
                self.server.quic.is_empty()
                    || self.server.quic == "off"
                    || self.server.quic.parse::<SocketAddr>().is_ok(),
                "server.quic must be empty, off, or an address such as 0.0.0.0:7071",
            ),
            (g.max_unacked >= 16, "gateway.max_unacked must be >= 16"),
            (g.max_inflight_requests >= 1, "gateway.max_inflight_requests must be >= 1"),
            (
                g.retry_initial_ms > 0 && g.retry_initial_ms <= g.retry_max_ms,
                "gateway.retry_initial_ms must be > 0 and <= gateway.retry_max_ms",
            ),
            (g.push_ttl_ms >= g.retry_initial_ms, "gateway.push_ttl_ms must be >= gateway.retry_initial_ms"),
            (
                self.messages.max_body_bytes >= 16 && self.messages.max_body_bytes < g.max_frame_bytes,
                "messages.max_body_bytes must be >= 16 and below gateway.max_frame_bytes",
            ),
            (
                (2..=100_000).contains(&self.messages.max_group_members),
                "messages.max_group_members must be 2 to 100000",
            ),
            (
                self.messages.recall_window_secs <= 7 * 86_400,
                "messages.recall_window_secs must be at most 604800 (7 days)",
            ),
            (self.messages.presence_debounce_ms <= 60_000, "messages.presence_debounce_ms must be at most 60000"),
            ((1..=65_536).contains(&self.store.max_batch), "store.max_batch must be between 1 and 65536"),
            (self.store.readers >= 1, "store.readers must be >= 1"),
        ];
        if let Some((_, msg)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(ConfigError((*msg).to_owned()));
        }
        if !self.auth.token_secret.is_empty() && self.auth.token_secret.len() < 32 {
            return Err(ConfigError("auth.token_secret must be at least 32 bytes".into()));
        }
        if self.auth.token_ttl_secs < 60 {
            return Err(ConfigError("auth.token_ttl_secs must be >= 60".into()));
        }
        if self.auth.max_concurrent_hashes == 0 {
            return Err(ConfigError("auth.max_concurrent_hashes must be >= 1".into()));
        }
        let p = &self.push;
        if !p.bootstrap_key.is_empty() && p.bootstrap_key.len() < 16 {
            return Err(ConfigError("push.bootstrap_key must be at least 16 characters".into()));
        }
        if !(p.bootstrap_rate_per_sec > 0.0 && p.default_rate_per_sec > 0.0 && p.default_burst >= 1) {
            return Err(ConfigError("push rates must be > 0 and push.default_burst >= 1".into()));
        }
        if !(16..=1024 * 1024).contains(&p.max_payload_bytes) {
            return Err(ConfigError("push.max_payload_bytes must be between 16 and 1048576".into()));
        }
        if p.aggregate_max == 0 || p.aggregate_window_ms == 0 || p.queue == 0 || p.qos1_ttl_ms == 0 {
            return Err(ConfigError(
                "push.aggregate_max, push.aggregate_window_ms, push.queue and push.qos1_ttl_ms must be >= 1".into(),
            ));
        }
        if g.low_queue < 16 || g.slow_consumer_ms == 0 {
            return Err(ConfigError("gateway.low_queue must be >= 16 and gateway.slow_consumer_ms >= 1".into()));
        }
        if !(16..=65_536).contains(&self.rooms.max_publish_bytes) {
            return Err(ConfigError("rooms.max_publish_bytes must be 16 to 65536".into()));
        }
        if self.rooms.word_filter.iter().any(|w| w.trim().is_empty()) {
            return Err(ConfigError("rooms.word_filter must not list an empty word".into()));
        }
        if !tern_proto::frame::valid_name(&self.rooms.default_area) {
            return Err(ConfigError("rooms.default_area must be 1-64 characters of [A-Za-z0-9_.:-]".into()));
        }
        if g.resume_push_limit == 0 {
            return Err(ConfigError("gateway.resume_push_limit must be >= 1".into()));
        }
        let f = &self.files;
        if f.max_file_bytes == 0 || f.quota_bytes_per_user < f.max_file_bytes {
            return Err(ConfigError(
                "files.max_file_bytes must be >= 1 and files.quota_bytes_per_user at least as large".into(),
            ));
        }
        if f.upload_expiry_secs == 0 || !(1..=86_400).contains(&f.signed_url_secs) {
            return Err(ConfigError(
                "files.upload_expiry_secs must be >= 1 and files.signed_url_secs 1 to 86400".into(),
            ));
        }
        Ok(())
    }
}

/// `tern config example`: every setting as TOML, with its default value and its meaning.
///
/// The meanings are the doc comments in this file, read from its own source (embedded at build
/// time), and the values are `Config::default()` — so the example cannot drift from the code.
pub fn example() -> String {
    const SOURCE: &str = include_str!("config.rs");
    let docs = StructDocs::parse(SOURCE);
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut out = String::from(
        "# tern configuration: every setting with its default.\n\
         # Use with `tern serve --config FILE`; any setting can also be given as an environment\n\
         # variable TERN_<SECTION>__<SETTING> (e.g. TERN_GATEWAY__HEARTBEAT_MS=10000), and flags win.\n",
    );
    for (section, section_doc, type_name) in docs.fields("Config") {
        out.push_str(&format!("\n# {}\n[{section}]\n", section_doc.join("\n# ")));
        let Some(values) = defaults.get(section).and_then(toml::Value::as_table) else { continue };
        for (field, doc, _) in docs.fields(type_name) {
            let value = values.get(field).map_or_else(|| "# (no default)".to_owned(), toml::Value::to_string);
            out.push_str(&format!("# {}\n{field} = {value}\n", doc.join("\n# ")));
        }
    }
    out
}

/// A documented field: name, doc comment lines, type.
type FieldDoc<'a> = (&'a str, Vec<&'a str>, &'a str);

/// Doc comments of struct fields, as written in a source file.
struct StructDocs<'a> {
    /// struct name → its fields in order.
    structs: Vec<(&'a str, Vec<FieldDoc<'a>>)>,
}

impl<'a> StructDocs<'a> {
    fn parse(source: &'a str) -> Self {
        let mut structs = Vec::new();
        let mut current: Option<(&str, Vec<_>)> = None;
        let mut doc = Vec::new();
        for line in source.lines() {
            let trimmed = line.trim();
            if let Some(text) = trimmed.strip_prefix("///") {
                doc.push(text.trim());
                continue;
            }
            if trimmed.starts_with("#[") {
                continue;
            }
            if let Some(name) = trimmed.strip_prefix("pub struct ").and_then(|r| r.strip_suffix(" {")) {
                current = Some((name, Vec::new()));
            } else if line == "}" {
                structs.extend(current.take());
            } else if let (Some((_, fields)), Some((name, ty))) =
                (current.as_mut(), trimmed.strip_prefix("pub ").and_then(|f| f.split_once(": ")))
            {
                fields.push((name, std::mem::take(&mut doc), ty.trim_end_matches(',')));
            }
            doc.clear();
        }
        Self { structs }
    }

    fn fields(&self, name: &str) -> Vec<FieldDoc<'a>> {
        self.structs.iter().find(|(n, _)| *n == name).map(|(_, f)| f.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_values_override_defaults_and_typos_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, "[gateway]\nheartbeat_ms = 5000\n").unwrap();
        let cfg = Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.gateway.heartbeat_ms, 5000);
        assert_eq!(cfg.gateway.max_missed_heartbeats, 3);

        std::fs::write(&path, "[gateway]\nheartbeat = 5000\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("heartbeat"), "{err}");
    }

    #[test]
    fn environment_settings_apply_and_other_tern_variables_are_ignored() {
        // SAFETY (edition 2024 marks set_var unsafe): this test module's only env mutation, and
        // the names are unique to it.
        unsafe {
            std::env::set_var("TERN_ROOMS__DEFAULT_AREA", "lobby");
            std::env::set_var("TERN_PASSWORD", "not a setting");
        }
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.rooms.default_area, "lobby");
        unsafe {
            std::env::remove_var("TERN_ROOMS__DEFAULT_AREA");
            std::env::remove_var("TERN_PASSWORD");
        }
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let mut cfg = Config::default();
        cfg.gateway.max_frame_bytes = 10;
        assert!(cfg.validate().unwrap_err().to_string().contains("gateway.max_frame_bytes"));
    }

    #[test]
    fn a_shared_store_needs_a_postgres_url_a_shared_token_secret_and_a_node_id_in_range() {
        let mut cfg = Config::default();
        cfg.store.postgres_url = "mysql://x".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("store.postgres_url"));
        cfg.store.postgres_url = "postgres://postgres@127.0.0.1/test".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("auth.token_secret"));
        cfg.auth.token_secret = "x".repeat(32);
        cfg.validate().unwrap();
        cfg.cluster.node_id = 1024;
        assert!(cfg.validate().unwrap_err().to_string().contains("cluster.node_id"));
        cfg.cluster.node_id = 3;
        cfg.store.postgres_schema = "a; DROP TABLE users".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("store.postgres_schema"));
    }

    #[test]
    fn the_example_lists_every_setting_with_its_meaning_and_parses_to_the_defaults() {
        let text = example();
        let parsed: Config = toml::from_str(&text).expect("the example is valid config");
        assert_eq!(toml::to_string(&parsed).unwrap(), toml::to_string(&Config::default()).unwrap());
        let docs = StructDocs::parse(include_str!("config.rs"));
        let sections = docs.fields("Config");
        assert_eq!(sections.len(), 9);
        for (section, doc, ty) in sections {
            assert!(!doc.is_empty(), "[{section}] has no doc comment");
            assert!(text.contains(&format!("[{section}]")), "[{section}] missing");
            let fields = docs.fields(ty);
            assert!(!fields.is_empty(), "{ty} has no fields");
            for (field, doc, _) in fields {
                assert!(!doc.is_empty(), "{section}.{field} has no doc comment");
                assert!(text.lines().any(|l| l.starts_with(&format!("{field} = "))), "{section}.{field} missing");
            }
        }
    }
}
