//! `tern bench p2p`: 1:1 messages end to end (send → durable → ACK, and → push → delivered),
//! measured with the real SDK against a running server.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tern_client::{Client, Options, Session, Transport};

use crate::cli::ClientTransportArg;

/// Options of the p2p scenario.
#[derive(clap::Args)]
pub struct P2pArgs {
    #[command(flatten)]
    pub common: super::Common,
    /// Sender/receiver pairs (each a user with its own connection).
    #[arg(long, default_value_t = 20)]
    pub pairs: usize,
    /// Total messages per second across all pairs; 0 = as fast as ACKs allow.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Sends in flight per sender (unacknowledged).
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Text bytes per message.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Transport for every connection.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: ClientTransportArg,
    /// Another node of the same cluster (its HTTP base URL): the receivers log in and connect
    /// there, the senders on `--server`, so every message crosses nodes. Needs `--transport ws`
    /// (the WebSocket endpoint is derived from the URL).
    #[arg(long, value_name = "URL")]
    pub receivers_on: Option<String>,
}

struct SenderResult {
    acked: u64,
    ack_us: Vec<u32>,
}

async fn user(server: &str, name: &str, pin: bool) -> anyhow::Result<Session> {
    const PASSWORD: &str = "bench password 1";
    tern_client::http::register(server, name, PASSWORD).await.with_context(|| format!("register {name}"))?;
    let session = tern_client::http::login(server, name, PASSWORD, "bench").await?;
    if !pin {
        return Ok(session);
    }
    // Connect to the node logged in through, not the one the cluster would balance to.
    let ws = format!("{}/v1/ws", server.trim_end_matches('/').replacen("http", "ws", 1));
    let endpoints = tern_client::Endpoints { ws, ..session.endpoints.clone() };
    Ok(Session { endpoints, alternates: Vec::new(), ..session })
}

pub async fn p2p(args: P2pArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.pairs > 0 && args.window > 0 && args.duration > 0, "pairs, window and duration must be > 0");
    let run: u32 = rand::random();
    let transport: Transport = args.transport.into();
    let pin = args.receivers_on.is_some();
    anyhow::ensure!(!pin || transport == Transport::WsJson, "--receivers-on needs --transport ws");
    let receivers_on = args.receivers_on.clone().unwrap_or_else(|| args.common.server.clone());
    let users = super::progress(args.pairs as u64 * 2, "creating users");
    let mut pairs = Vec::new();
    for i in 0..args.pairs {
        let s = user(&args.common.server, &format!("b{run:08x}s{i}"), pin).await?;
        let r = user(&receivers_on, &format!("b{run:08x}r{i}"), pin).await?;
        users.inc(2);
        pairs.push((s, r));
    }
    let opts = Options { transport, ..Options::default() };
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(args.duration);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (s, r) in pairs {
        let (_rc, mut events) = Client::connect(r.clone(), opts.clone()).await?;
        let expected_from = s.user_id;
        receivers.push(tokio::spawn(async move {
            let _keep = _rc;
            let mut out = super::Received::default();
            let idle = Duration::from_secs(3);
            while let Ok(Some(m)) = tokio::time::timeout(idle, events.next_message()).await {
                if m.from == expected_from {
                    out.record(&m, epoch);
                }
            }
            out
        }));
        let (sc, _se) = Client::connect(s, opts.clone()).await?;
        let to = r.user_id;
        let per_pair_interval = (args.rate > 0).then(|| Duration::from_secs_f64(args.pairs as f64 / args.rate as f64));
        let window = args.window;
        let pad = "x".repeat(args.payload.saturating_sub(21));
        senders.push(tokio::spawn(async move {
            let _keep = _se;
            // The sends in flight are futures of this one task, not a task each: a spawn per
            // message cost the generator ~5% of its CPU, which it shares with the server here.
            let mut inflight = FuturesUnordered::new();
            let mut ack_us = Vec::new();
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = per_pair_interval {
                    let pace = tokio::time::sleep_until(next.into());
                    tokio::pin!(pace);
                    loop {
                        tokio::select! {
                            biased;
                            () = &mut pace => break,
                            Some(done) = inflight.next(), if !inflight.is_empty() => ack_us.extend(done),
                        }
                    }
                    next += iv;
                }
                while inflight.len() >= window {
                    if let Some(done) = inflight.next().await {
                        ack_us.extend(done);
                    }
                }
                let client = sc.clone();
                let text = super::timed_text(epoch, &pad);
                // The clock starts before the request is queued, so any wait for a first poll
                // counts against the ACK latency.
                let started = Instant::now();
                inflight.push(async move {
                    let ok = client.send_text(to, text).await.is_ok();
                    ok.then(|| started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
                });
                // Poll the new send at once (it queues its frame), and take whatever finished.
                while let Some(Some(done)) = inflight.next().now_or_never() {
                    ack_us.extend(done);
                }
            }
            while let Some(done) = inflight.next().await {
                ack_us.extend(done);
            }
            SenderResult { acked: ack_us.len() as u64, ack_us }
        }));
    }
    let bar = super::phase("sending", args.duration);
    let cpu0 = super::sample_opt(args.common.server_pid)?;
    let mut acked = 0;
    let mut ack_us = Vec::new();
    for s in senders {
        let r = s.await?;
        acked += r.acked;
        ack_us.extend(r.ack_us);
    }
    let send_secs = epoch.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let super::Received { received, duplicates, mut delivery_us, .. } = super::Received::join_all(receivers).await?;
    let cpu1 = super::sample_opt(args.common.server_pid)?;
    ack_us.sort_unstable();
    delivery_us.sort_unstable();
    let result = serde_json::json!({
        "scenario": "p2p",
        "transport": args.transport.name(),
        "pairs": args.pairs,
        "rate": args.rate,
        "window": args.window,
        "payload": args.payload,
        "duration_s": send_secs,
        "acked": acked,
        "msgs_per_sec": acked as f64 / send_secs,
        "ack_p50_ms": super::percentile_ms(&ack_us, 0.50),
        "ack_p99_ms": super::percentile_ms(&ack_us, 0.99),
        "delivery_p50_ms": super::percentile_ms(&delivery_us, 0.50),
        "delivery_p99_ms": super::percentile_ms(&delivery_us, 0.99),
        "lost": acked.saturating_sub(received),
        "duplicates": duplicates,
        "server_cpu_us_per_msg": cpu0.zip(cpu1).map(|(a, b)| (b.cpu_us - a.cpu_us) as f64 / acked.max(1) as f64),
    });
    super::report(&result, args.common.json)
}
