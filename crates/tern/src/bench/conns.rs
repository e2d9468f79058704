//! `tern bench conns` (idle authenticated connections: server RSS per connection) and
//! `tern bench storm` (many clients connecting and authenticating at once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tern_proto::{ClientFrame, Codec, FrameDecoder, ServerFrame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Common, Dialer, devices, progress, raise_fd_limit, report, resolve, sample_opt};
use crate::cli::ClientTransportArg;

/// Options of `storm`, and the base of `conns`.
#[derive(clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections (clients) to open.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Transport: `tcp` and `ws` with the bench's own lean clients; the others (`quic`, `sse`,
    /// `longpoll`, `auto`) through the SDK.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: ClientTransportArg,
}

/// Options of `conns`.
#[derive(clap::Args)]
pub struct ConnsArgs {
    #[command(flatten)]
    pub base: StormArgs,
    /// Seconds to let the server settle before sampling its RSS.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// An admin-scope API key for `/metrics` (not needed when the server's metrics are public):
    /// with it the allocator's bytes per connection are reported too.
    #[arg(long, env = "TERN_METRICS_KEY")]
    pub metrics_key: Option<String>,
}

/// An open, authenticated connection kept idle.
enum Held {
    Tcp(#[allow(dead_code)] TcpStream),
    Tls(#[allow(dead_code)] Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Ws(#[allow(dead_code)] Box<WebSocketStream<TcpStream>>),
    /// An SDK client (QUIC, SSE, long-poll), with its event stream kept open.
    Sdk(#[allow(dead_code)] Box<(tern_client::Client, tern_client::Events)>),
}

/// Sends `auth` as a length-prefixed frame and waits for `auth_ok`.
async fn auth_framed<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, auth: &ClientFrame) -> anyhow::Result<()> {
    stream.write_all(&Codec::MsgPack.encode_prefixed(auth)).await?;
    // TLS keeps what it has not sent as a whole record until flushed.
    stream.flush().await?;
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some(p) = decoder.decode(&mut buf)? {
            return match Codec::MsgPack.decode::<ServerFrame>(&p)? {
                ServerFrame::AuthOk { .. } => Ok(()),
                other => anyhow::bail!("auth refused: {other:?}"),
            };
        }
        anyhow::ensure!(stream.read_buf(&mut buf).await? > 0, "closed during auth");
    }
}

/// Opens a connection and authenticates with a device token; returns once `auth_ok` arrived.
/// The TCP transport speaks TLS when the server's endpoints say so (verified like the SDK does:
/// system roots and `--ca`).
async fn connect_auth(
    dialer: &Dialer,
    transport: ClientTransportArg,
    device: &tern_client::DeviceSession,
) -> anyhow::Result<Held> {
    let auth = ClientFrame::Auth { token: device.token.clone(), proto: None, resume: None, accept_compression: vec![] };
    match transport {
        ClientTransportArg::Quic
        | ClientTransportArg::Sse
        | ClientTransportArg::Longpoll
        | ClientTransportArg::Auto => {
            let opts = tern_client::Options { transport: transport.into(), resume: false, ..Default::default() };
            let client = tern_client::Client::connect_device(device.clone(), opts).await?;
            Ok(Held::Sdk(Box::new(client)))
        }
        ClientTransportArg::Tcp => {
            let mut stream = dialer.dial(resolve(&device.endpoints.tcp).await?).await?;
            if device.endpoints.tls {
                let host = device.endpoints.tcp.rsplit_once(':').map_or("", |(h, _)| h);
                let mut tls = tern_client::tls::connect(stream, host, tern_client::tls::ALPN_TERN).await?;
                auth_framed(&mut tls, &auth).await?;
                return Ok(Held::Tls(Box::new(tls)));
            }
            auth_framed(&mut stream, &auth).await?;
            Ok(Held::Tcp(stream))
        }
        ClientTransportArg::Ws => {
            anyhow::ensure!(
                !device.endpoints.ws.starts_with("wss://"),
                "the bench's WebSocket dialer does not speak TLS; use --transport tcp against a TLS server"
            );
            // 4 KiB: the client reads one `auth_ok`.
            let mut ws = dialer.websocket(&device.endpoints.ws, None, 4096).await?;
            ws.send(Message::Text(String::from_utf8(Codec::Json.encode(&auth))?.into())).await?;
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match Codec::Json.decode::<ServerFrame>(t.as_bytes())? {
                    ServerFrame::AuthOk { .. } => Ok(Held::Ws(Box::new(ws))),
                    other => anyhow::bail!("auth refused: {other:?}"),
                },
                other => anyhow::bail!("no auth answer: {other:?}"),
            }
        }
    }
}

/// The server's `tern_allocator_allocated_bytes`, if its `/metrics` answers and reports it.
async fn allocated_bytes(server: &str, key: Option<&str>) -> Option<u64> {
    let mut req = tern_client::http::shared_client().get(format!("{}/metrics", server.trim_end_matches('/')));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let text = req.send().await.ok()?.error_for_status().ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("tern_allocator_allocated_bytes ")?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

pub async fn conns(ConnsArgs { base: args, settle, metrics_key }: ConnsArgs) -> anyhow::Result<()> {
    raise_fd_limit(args.count as u64)?;
    let bar = progress(args.count as u64, "device tokens");
    let devs = devices(&args.common.server, args.count, &bar).await?;
    bar.finish_and_clear();
    let before = sample_opt(args.common.server_pid)?;
    let allocated_before = allocated_bytes(&args.common.server, metrics_key.as_deref()).await;
    let dialer = Arc::new(Dialer::default());
    let bar = progress(args.count as u64, "connecting");
    let held: Vec<Held> = futures_util::stream::iter(devs.iter())
        .map(|d| {
            let (dialer, bar) = (Arc::clone(&dialer), bar.clone());
            async move {
                let h = connect_auth(&dialer, args.transport, d).await;
                bar.inc(1);
                h
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after = sample_opt(args.common.server_pid)?;
    let allocated_after = allocated_bytes(&args.common.server, metrics_key.as_deref()).await;
    let per_conn = match (before, after) {
        (Some(b), Some(a)) => Some((a.rss_bytes as f64 - b.rss_bytes as f64) / held.len() as f64),
        _ => None,
    };
    // What the server's allocator handed out per connection: exact, unlike RSS, which also
    // counts pages the allocator keeps and depends on the machine.
    let allocated_per_conn = match (allocated_before, allocated_after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / held.len() as f64),
        _ => None,
    };
    let result = json!({
        "scenario": "conns",
        "count": held.len(),
        "transport": args.transport.name(),
        "server_rss_before": before.map(|s| s.rss_bytes),
        "server_rss_after": after.map(|s| s.rss_bytes),
        "rss_bytes_per_conn": per_conn,
        "allocated_bytes_per_conn": allocated_per_conn,
    });
    drop(held);
    report(&result, args.common.json)
}

pub async fn storm(args: StormArgs) -> anyhow::Result<()> {
    raise_fd_limit(args.count as u64)?;
    let bar = progress(args.count as u64, "device tokens");
    let devs = devices(&args.common.server, args.count, &bar).await?;
    bar.finish_and_clear();
    let cpu0 = sample_opt(args.common.server_pid)?;
    // The generator's own CPU too: on one machine, a storm can be bound by either side.
    let own0 = super::sample(std::process::id())?;
    let dialer = Arc::new(Dialer::default());
    let bar = progress(args.count as u64, "storming");
    let started = Instant::now();
    // All at once: one task per client, no pacing.
    let tasks: Vec<_> = devs
        .into_iter()
        .map(|d| {
            let (dialer, bar) = (Arc::clone(&dialer), bar.clone());
            tokio::spawn(async move {
                let r = connect_auth(&dialer, args.transport, &d).await;
                bar.inc(1);
                r
            })
        })
        .collect();
    let mut held = Vec::with_capacity(tasks.len());
    let mut errors = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(h) => held.push(h),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let cpu1 = sample_opt(args.common.server_pid)?;
    let own1 = super::sample(std::process::id())?;
    if let Some(first) = errors.first() {
        eprintln!("bench storm: {} errors, first: {first}", errors.len());
    }
    let result = json!({
        "scenario": "storm",
        "transport": args.transport.name(),
        "count": args.count,
        "connected": held.len(),
        "errors": errors.len(),
        "seconds": elapsed,
        "connects_per_sec": held.len() as f64 / elapsed,
        "server_cpu_us_per_connect": match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b.cpu_us - a.cpu_us) as f64 / held.len().max(1) as f64),
            _ => None,
        },
        "client_cpu_us_per_connect": (own1.cpu_us - own0.cpu_us) as f64 / held.len().max(1) as f64,
    });
    drop(held);
    report(&result, args.common.json)
}
