//! `tern bench group`: one group with many members, some of them online; members send into it
//! at a rate (or as fast as ACKs allow). Measures group message throughput, ACK and delivery
//! latency, losses and duplicates; then history page latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tern_client::{Client, ConvId, Options, Session, Transport};

use crate::cli::ClientTransportArg;

/// Options of the group scenario.
#[derive(clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: super::Common,
    /// Group members (created and invited).
    #[arg(long, default_value_t = 2000)]
    pub members: usize,
    /// Members connected during the run.
    #[arg(long, default_value_t = 500)]
    pub online: usize,
    /// Online members that send.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Group messages per second across all senders; 0 = as fast as ACKs allow.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Sends in flight per sender.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Text bytes per message.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// History pages (50 messages, newest first) to time after the run.
    #[arg(long, default_value_t = 200)]
    pub history_pages: usize,
    /// Transport for every connection.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: ClientTransportArg,
}

const PASSWORD: &str = "bench password 1";

async fn users(server: &str, prefix: &str, n: usize) -> anyhow::Result<Vec<Session>> {
    let bar = super::progress(n as u64, "creating members");
    let server = server.to_owned();
    // Registration hashes a password (Argon2id) on the server: a few in flight keep it busy.
    let mut made: Vec<(usize, Session)> = futures_util::stream::iter(0..n)
        .map(|i| {
            let (server, name) = (server.clone(), format!("{prefix}m{i}"));
            async move {
                tern_client::http::register(&server, &name, PASSWORD)
                    .await
                    .with_context(|| format!("register {name}"))?;
                let s = tern_client::http::login(&server, &name, PASSWORD, "bench").await?;
                anyhow::Ok((i, s))
            }
        })
        .buffer_unordered(8)
        .map(|r| {
            bar.inc(1);
            r
        })
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    bar.finish_and_clear();
    made.sort_by_key(|(i, _)| *i);
    Ok(made.into_iter().map(|(_, s)| s).collect())
}

pub async fn group(args: GroupArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.members >= args.online && args.online >= args.senders && args.senders > 0 && args.duration > 0,
        "need members >= online >= senders > 0 and duration > 0"
    );
    super::raise_fd_limit(args.online as u64 + 64)?;
    let run: u32 = rand::random();
    let sessions = users(&args.common.server, &format!("g{run:08x}"), args.members).await?;
    let owner = &sessions[0];
    let group =
        tern_client::http::im::create_group(owner, &format!("bench {run:08x}"), tern_proto::rest::JoinPolicy::Open)
            .await?;
    let gid = group.group_id;
    let conv = ConvId::Group(gid);
    let bar = super::progress(args.members as u64 - 1, "inviting");
    for s in &sessions[1..] {
        tern_client::http::im::invite(owner, gid, s.user_id).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();

    let transport: Transport = args.transport.into();
    // Members start from the group's current end, as devices that have seen it so far: the run
    // measures live delivery, not each of them paging in the invite notices first.
    let last_seq = tern_client::http::history(owner, conv, None, 1).await?.last_seq;
    let watermarks = [(conv, last_seq)].into_iter().collect();
    let opts = Options { transport, resume: false, watermarks, ..Options::default() };
    let epoch = Instant::now();
    let bar = super::progress(args.online as u64, "connecting");
    let mut receivers = Vec::new();
    let mut clients = Vec::new();
    for s in &sessions[..args.online] {
        let (client, mut events) = Client::connect(s.clone(), opts.clone()).await?;
        let me = s.user_id;
        receivers.push(tokio::spawn(async move {
            let mut out = super::Received::default();
            let mut started = false;
            loop {
                // Wait as long as needed for the first message, then stop after 3 s of silence.
                let idle = if started { Duration::from_secs(3) } else { Duration::from_secs(3600) };
                let Ok(Some(m)) = tokio::time::timeout(idle, events.next_message()).await else { break };
                if m.conv_id != conv || m.from == me || !matches!(m.body, tern_client::Body::Text { .. }) {
                    continue;
                }
                started = true;
                out.record(&m, epoch);
            }
            out
        }));
        clients.push(client);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(args.senders as f64 / args.rate as f64));
    let pad = "x".repeat(args.payload.saturating_sub(21));
    let mut senders = Vec::new();
    for client in &clients[..args.senders] {
        let client = client.clone();
        let window = Arc::new(tokio::sync::Semaphore::new(args.window));
        let pad = pad.clone();
        senders.push(tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut ack_us = Vec::new();
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let Ok(permit) = Arc::clone(&window).acquire_owned().await else { break };
                let client = client.clone();
                let text = super::timed_text(epoch, &pad);
                tasks.spawn(async move {
                    let t = Instant::now();
                    let ok = client.send_text_to(conv, text).await.is_ok();
                    drop(permit);
                    let at = t.duration_since(epoch).as_secs_f64();
                    ok.then(|| (t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32, at))
                });
                while let Some(done) = tasks.try_join_next() {
                    ack_us.extend(done.ok().flatten());
                }
            }
            while let Some(done) = tasks.join_next().await {
                ack_us.extend(done.ok().flatten());
            }
            ack_us
        }));
    }
    let bar = super::phase("sending", args.duration);
    let started = Instant::now();
    let cpu0 = super::sample_opt(args.common.server_pid)?;
    let mut acks: Vec<(u32, f64)> = Vec::new();
    for s in senders {
        acks.extend(s.await?);
    }
    // When the slowest ACKs were sent, in seconds since the sending phase began (tells a
    // warm-up tail from a steady one).
    acks.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
    let send_start = started.duration_since(epoch).as_secs_f64();
    let slowest: Vec<f64> = acks.iter().take(10).map(|(_, at)| ((at - send_start) * 10.0).round() / 10.0).collect();
    let mut ack_us: Vec<u32> = acks.iter().map(|(us, _)| *us).collect();
    let send_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let super::Received { received, duplicates, mut delivery_us, .. } = super::Received::join_all(receivers).await?;
    let cpu1 = super::sample_opt(args.common.server_pid)?;
    let acked = ack_us.len() as u64;
    // Every online member gets every message except its own: senders miss their own share.
    let expected = acked * (args.online as u64 - 1);

    // History pages, newest first, as a member opening the group would ask.
    let reader = &sessions[args.online.min(args.members - 1)];
    let mut page_us = Vec::with_capacity(args.history_pages);
    for _ in 0..args.history_pages {
        let t = Instant::now();
        let page = tern_client::http::history(reader, conv, None, 50).await?;
        page_us.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        anyhow::ensure!(!page.messages.is_empty(), "empty history page");
    }
    for c in clients {
        c.close().await;
    }
    ack_us.sort_unstable();
    delivery_us.sort_unstable();
    page_us.sort_unstable();
    let result = serde_json::json!({
        "scenario": "group",
        "transport": args.transport.name(),
        "members": args.members,
        "online": args.online,
        "senders": args.senders,
        "rate": args.rate,
        "payload": args.payload,
        "duration_s": send_secs,
        "acked": acked,
        "msgs_per_sec": acked as f64 / send_secs,
        "deliveries_per_sec": received as f64 / send_secs,
        "ack_p50_ms": super::percentile_ms(&ack_us, 0.50),
        "ack_p99_ms": super::percentile_ms(&ack_us, 0.99),
        "delivery_p50_ms": super::percentile_ms(&delivery_us, 0.50),
        "delivery_p99_ms": super::percentile_ms(&delivery_us, 0.99),
        "slowest_acks_sent_at_s": slowest,
        "lost": expected.saturating_sub(received),
        "duplicates": duplicates,
        "history_page_p50_ms": super::percentile_ms(&page_us, 0.50),
        "history_page_p99_ms": super::percentile_ms(&page_us, 0.99),
        "server_cpu_us_per_delivery": cpu0.zip(cpu1).map(|(a, b)| (b.cpu_us - a.cpu_us) as f64 / received.max(1) as f64),
    });
    super::report(&result, args.common.json)
}
