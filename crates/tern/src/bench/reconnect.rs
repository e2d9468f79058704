//! `tern bench reconnect`: a reconnect storm. N clients (device tokens, raw TCP) sit in one live
//! room; every socket drops at once (as when a load balancer or a network path resets), and each
//! client reconnects after a random delay within `--jitter-ms`, authenticates and re-joins; then
//! one push to the room must reach every client. The server's RSS is sampled throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::json;
use tern_proto::{ClientFrame, Codec, FrameDecoder, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Common, Dialer, devices, progress, raise_fd_limit, report, resolve, sample_opt};

/// Options of `reconnect`.
#[derive(clap::Args)]
pub struct ReconnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Each client waits a random time up to this before reconnecting.
    #[arg(long, default_value_t = 5000)]
    pub jitter_ms: u64,
    /// Push API key (for the final push that proves every client is back).
    #[arg(long, env = "TERN_PUSH_KEY", hide_env_values = true)]
    pub push_key: String,
}

const ROOM: &str = "bench-reconnect";

/// A lean TCP client: one socket and its read buffer.
struct Lean {
    stream: TcpStream,
    buf: BytesMut,
}

impl Lean {
    async fn send(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        Ok(self.stream.write_all(&Codec::MsgPack.encode_prefixed(frame)).await?)
    }

    async fn next(&mut self) -> anyhow::Result<ServerFrame> {
        let decoder = FrameDecoder::new(1 << 22);
        loop {
            if let Some(p) = decoder.decode(&mut self.buf)? {
                return Ok(Codec::MsgPack.decode::<ServerFrame>(&p)?);
            }
            anyhow::ensure!(self.stream.read_buf(&mut self.buf).await? > 0, "connection closed");
        }
    }

    /// Connects, authenticates and joins the room.
    async fn enter(dialer: &Dialer, device: &tern_client::DeviceSession) -> anyhow::Result<Self> {
        let stream = dialer.dial(resolve(&device.endpoints.tcp).await?).await?;
        let mut lean = Self { stream, buf: BytesMut::with_capacity(512) };
        let auth =
            ClientFrame::Auth { token: device.token.clone(), proto: None, resume: None, accept_compression: vec![] };
        lean.send(&auth).await?;
        match lean.next().await? {
            ServerFrame::AuthOk { .. } => {}
            other => anyhow::bail!("auth refused: {other:?}"),
        }
        lean.send(&ClientFrame::Join { id: 1, room: ROOM.into(), token: None, recent: None }).await?;
        loop {
            match lean.next().await? {
                ServerFrame::Joined { .. } => return Ok(lean),
                ServerFrame::Error { code, message, .. } => anyhow::bail!("join refused: {code:?} {message}"),
                _ => {}
            }
        }
    }

    /// Reads until a push whose data equals `marker`.
    async fn wait_for(&mut self, marker: &serde_json::Value) -> anyhow::Result<()> {
        loop {
            match self.next().await? {
                ServerFrame::Push(p) if &p.data == marker => return Ok(()),
                ServerFrame::Batch { pushes, .. } if pushes.iter().any(|p| &p.data == marker) => return Ok(()),
                _ => {}
            }
        }
    }
}

pub async fn reconnect(args: ReconnectArgs) -> anyhow::Result<()> {
    raise_fd_limit(args.count as u64)?;
    let bar = progress(args.count as u64, "device tokens");
    let devs = Arc::new(devices(&args.common.server, args.count, &bar).await?);
    bar.finish_and_clear();
    let dialer = Arc::new(Dialer::default());
    let bar = progress(args.count as u64, "joining");
    let mut first = Vec::with_capacity(args.count);
    for chunk in devs.chunks(256) {
        let joins = chunk.iter().map(|d| Lean::enter(&dialer, d));
        for r in futures_util::future::join_all(joins).await {
            first.push(r?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sample_opt(args.common.server_pid)?;

    // RSS of the server every 100 ms while the storm lasts.
    let peak = Arc::new(AtomicU64::new(before.map_or(0, |s| s.rss_bytes)));
    let sampling = {
        let (peak, pid) = (Arc::clone(&peak), args.common.server_pid);
        tokio::spawn(async move {
            loop {
                if let Ok(Some(s)) = sample_opt(pid) {
                    peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Every socket drops at once; each client comes back after its own random delay.
    drop(first);
    let started = Instant::now();
    let bar = progress(args.count as u64, "reconnecting");
    let tasks: Vec<_> = (0..args.count)
        .map(|i| {
            let (dialer, devs, bar) = (Arc::clone(&dialer), Arc::clone(&devs), bar.clone());
            let delay = Duration::from_millis(rand::random::<u64>() % args.jitter_ms.max(1));
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut tries = 0;
                loop {
                    match Lean::enter(&dialer, &devs[i]).await {
                        Ok(lean) => {
                            bar.inc(1);
                            return Ok((lean, started.elapsed(), tries));
                        }
                        Err(e) if tries < 5 => {
                            tries += 1;
                            let backoff = 200u64 << tries;
                            tokio::time::sleep(Duration::from_millis(backoff / 2 + rand::random::<u64>() % backoff))
                                .await;
                            let _ = e;
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();
    let mut back = Vec::with_capacity(args.count);
    let (mut errors, mut retried, mut last) = (Vec::new(), 0usize, Duration::ZERO);
    for t in tasks {
        match t.await? {
            Ok((lean, at, tries)) => {
                back.push(lean);
                retried += usize::from(tries > 0);
                last = last.max(at);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = sample_opt(args.common.server_pid)?;

    // One high-priority push to the room: every client that came back must get it.
    let marker = json!({ "bench": "reconnect", "nonce": rand::random::<u64>() });
    let url = format!("{}/v1/push/rooms/{ROOM}", args.common.server.trim_end_matches('/'));
    let answer = reqwest::Client::new()
        .post(url)
        .bearer_auth(&args.push_key)
        .json(&json!({ "data": marker, "priority": "high" }))
        .send()
        .await?;
    anyhow::ensure!(answer.status().as_u16() == 202, "push refused: {}", answer.status());
    let waits = back.iter_mut().map(|lean| tokio::time::timeout(Duration::from_secs(30), lean.wait_for(&marker)));
    let caught_up = futures_util::future::join_all(waits).await.into_iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    sampling.abort();
    if let Some(first) = errors.first() {
        eprintln!("bench reconnect: {} clients did not come back, first: {first}", errors.len());
    }
    let result = json!({
        "scenario": "reconnect",
        "count": args.count,
        "jitter_ms": args.jitter_ms,
        "reconnected": back.len(),
        "errors": errors.len(),
        "retried": retried,
        "seconds_to_all_back": last.as_secs_f64(),
        "caught_up": caught_up,
        "server_rss_before": before.map(|s| s.rss_bytes),
        "server_rss_peak": peak.load(Ordering::Relaxed),
        "server_rss_after": settled.map(|s| s.rss_bytes),
    });
    report(&result, args.common.json)
}
