//! Subcommands.

pub mod account;
pub mod chat;
pub mod file;
pub mod ops;
pub mod push;
pub mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tern_client::{ConvId, Session, Transport};

/// Where the server is.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// HTTP base URL of the server (`host:port` means `http://host:port`).
    #[arg(long, env = "TERN_URL", default_value = "http://127.0.0.1:7070", value_parser = server_url)]
    pub server: String,
}

/// `--server`'s parser: an `http://` or `https://` base URL; a bare `host:port` gets `http://`.
/// Anything else is refused here, with a sentence, instead of failing later as reqwest's
/// "builder error".
pub fn server_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let url = if raw.contains("://") { raw.to_owned() } else { format!("http://{raw}") };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| format!("{raw:?} is not a server address ({e}); expected http://HOST:PORT"))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        "http" | "https" => Err(format!("{raw:?} names no host; expected http://HOST:PORT")),
        other => Err(format!("{raw:?} uses {other}://; the server's address is its HTTP URL (http:// or https://)")),
    }
}

/// A secret that may come from a flag or its environment variable, and must come from one:
/// clap's `required` would show it as mandatory in the usage line even where the environment
/// supplies it.
pub fn given<'a>(value: &'a Option<String>, what: &str, flag: &str, env: &str) -> anyhow::Result<&'a str> {
    value.as_deref().ok_or_else(|| anyhow::anyhow!("no {what} given: pass {flag} or set {env}"))
}

/// Which profile file holds the session.
#[derive(clap::Args)]
pub struct ProfileArg {
    /// Profile file (session and resume position). One per user/device.
    #[arg(long, env = "TERN_PROFILE", default_value = "tern-profile.json")]
    pub profile: PathBuf,
}

/// Transport choice on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum TransportArg {
    /// WebSocket, JSON frames.
    Ws,
    /// Raw TCP, MessagePack frames.
    Tcp,
}

/// Transport choice of the client commands (`send`, `listen`, `room join`).
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ClientTransportArg {
    /// WebSocket, JSON frames.
    Ws,
    /// Raw TCP, MessagePack frames.
    Tcp,
    /// QUIC (UDP), MessagePack frames; needs a server with TLS.
    Quic,
    /// Server-Sent Events down, POSTs up (JSON), for networks that pass only HTTP.
    Sse,
    /// Long polls down, POSTs up (JSON).
    Longpoll,
    /// The server's preferred order for this client, each tried after a short head start for
    /// the one before; the first to connect is used, and tried first next time.
    Auto,
}

impl ClientTransportArg {
    /// The name on the command line (and in bench reports).
    pub fn name(self) -> &'static str {
        match self {
            ClientTransportArg::Ws => "ws",
            ClientTransportArg::Tcp => "tcp",
            ClientTransportArg::Quic => "quic",
            ClientTransportArg::Sse => "sse",
            ClientTransportArg::Longpoll => "longpoll",
            ClientTransportArg::Auto => "auto",
        }
    }
}

impl From<ClientTransportArg> for Transport {
    fn from(t: ClientTransportArg) -> Self {
        match t {
            ClientTransportArg::Ws => Transport::WsJson,
            ClientTransportArg::Tcp => Transport::Tcp,
            ClientTransportArg::Quic => Transport::Quic,
            ClientTransportArg::Sse => Transport::Sse,
            ClientTransportArg::Longpoll => Transport::LongPoll,
            ClientTransportArg::Auto => Transport::Auto,
        }
    }
}

impl From<TransportArg> for Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Ws => Transport::WsJson,
            TransportArg::Tcp => Transport::Tcp,
        }
    }
}

/// What `tern login` saves and `send`/`listen` use.
#[derive(Serialize, Deserialize)]
pub struct Profile {
    /// The session.
    pub session: Session,
    /// What `listen` has printed, per conversation.
    #[serde(default)]
    pub watermarks: BTreeMap<ConvId, u64>,
}

impl Profile {
    /// Reads a profile.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read profile {} (run `tern login` first)", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("profile {} is not valid", path.display()))
    }

    /// Writes a profile atomically (write + rename), readable by the owner only.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(self)?;
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}
