//! `tern bench fanout`: one room, N members, pushes through the service API; every member
//! counts and checks what it receives. With `--target nats://HOST:PORT` the same scenario runs
//! against a nats-server (members subscribe to one subject), measured by the same client.
//!
//! Members are lean raw connections (length-prefixed MessagePack over TCP, or MessagePack in
//! binary WebSocket messages, for tern; the text protocol for NATS), not full SDK clients, so
//! the load generator spends as little CPU per delivery as possible.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tern_client::Priority;
use tern_proto::codec::compression;
use tern_proto::{ClientFrame, Codec, FrameDecoder, Push, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::cli::TransportArg;

use super::{
    Common, Dialer, devices, nats, percentile_ms, phase, progress, raise_fd_limit, report, resolve, sample_opt, ws_host,
};

/// Options of the fanout scenario.
#[derive(clap::Args, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// A push API key with the rooms scope (tern target).
    #[arg(long, env = "TERN_PUSH_KEY", hide_env_values = true, default_value = "")]
    pub push_key: String,
    /// Run against a nats-server instead of tern: `nats://HOST:PORT`.
    #[arg(long)]
    pub target: Option<String>,
    /// Room members (connections).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Pushes per second into the room; 0 = saturated (as fast as the server takes them).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Seconds of pushing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Bytes of payload per push (danmaku-like JSON).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Members ask for brotli-compressed batches.
    #[arg(long)]
    pub brotli: bool,
    /// How tern members connect: raw TCP, or WebSocket (MessagePack in binary messages, as a
    /// browser client asking for it would).
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportArg,
    /// Push on the high lane (never aggregated).
    #[arg(long)]
    pub high: bool,
    /// Cluster: the TCP addresses (`HOST:PORT,…`) of the nodes the members connect to, spread
    /// evenly; pushes still go through `--server`. Default: the node the server hands out.
    #[arg(long, value_delimiter = ',')]
    pub members_on: Vec<String>,
    /// tern: the posts come from this many logged-in viewers in the room (`publish` on their
    /// own connections, round robin) instead of the push API. Each may post
    /// `rooms.publish_per_sec_per_conn` (5) a second: give enough of them for `--rate`.
    #[arg(long, default_value_t = 0)]
    pub publishers: usize,
    /// Run the same scenario against tern and against this nats-server (`nats://HOST:PORT`),
    /// each saturated and then both at one equal rate (`--rate`, or half the lower saturated
    /// rate when `--rate 0`), and report the four runs with the CPU ratios.
    #[arg(long, value_name = "URL", conflicts_with = "target")]
    pub compare: Option<String>,
    /// The nats-server's pid, to sample its CPU (with `--compare`).
    #[arg(long)]
    pub nats_pid: Option<u32>,
}

/// Phrases of the kind a live room's chat is made of.
const PHRASES: &[&str] = &[
    "666666",
    "哈哈哈哈哈",
    "前方高能",
    "awsl",
    "this play is insane",
    "GG",
    "主播加油",
    "来了来了",
    "what a comeback!!",
    "第一次来",
    "????",
    "好听",
    "lol",
    "泪目",
    "nice shot",
    "打卡",
];

/// A danmaku-like payload of about `size` bytes: sequence, sender, text, colour, send time.
fn danmaku(state: &mut u64, seq: u64, size: usize) -> serde_json::Value {
    let mut next = || {
        // xorshift64: cheap, deterministic, good enough for picking words.
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    let uid = next() % 1_000_000;
    let mut text = String::new();
    while text.len() + 60 < size {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(PHRASES[(next() % PHRASES.len() as u64) as usize]);
    }
    let colors = ["#ffffff", "#fe0302", "#00cd00", "#ffff00"];
    json!({ "n": seq, "uid": uid, "uname": format!("viewer{uid}"), "text": text, "color": colors[(next() % 4) as usize], "t": now_us() })
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[derive(Default)]
struct Tally {
    received: AtomicU64,
    duplicates: AtomicU64,
    bytes: AtomicU64,
}

/// Per-member accounting: each push once, latency sampled. Totals are kept locally and added to
/// the shared [`Tally`] once, when the member ends: at millions of deliveries a second, one shared
/// counter bumped per delivery from both cores would cost more than the counting itself.
struct Counter {
    tally: Arc<Tally>,
    /// Set once pushing is over: from then on, 3 s of silence ends the member.
    done: Arc<std::sync::atomic::AtomicBool>,
    /// Bit `n` is set once push `n` (the payload's sequence number, 1, 2, …) has arrived.
    seen_bits: Vec<u64>,
    received: u64,
    duplicates: u64,
    bytes: u64,
    sample_every: u64,
    latencies: Vec<u32>,
}

/// Sequence numbers above this are not the run's own (a run sends far fewer pushes).
const MAX_SEQ: u64 = 1 << 28;

impl Counter {
    fn new(tally: Arc<Tally>, done: Arc<std::sync::atomic::AtomicBool>, sample_every: u64) -> Self {
        Self {
            tally,
            done,
            seen_bits: Vec::new(),
            received: 0,
            duplicates: 0,
            bytes: 0,
            sample_every,
            latencies: Vec::new(),
        }
    }

    /// Whether a quiet spell means the run is over (rather than not started yet).
    fn finished(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    // Pushes are checked for duplicates, not order: concurrent API calls may take sequence
    // numbers in one order and enter the room's lane in another (the lane's order is the order of
    // acceptance). A push without a sequence number of this run counts as a duplicate: it is a
    // delivery nobody sent.
    fn got(&mut self, seq: Option<u64>, sent_us: Option<u64>) {
        let Some(seq) = seq.filter(|&n| n < MAX_SEQ) else {
            self.duplicates += 1;
            return;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen_bits.len() {
            self.seen_bits.resize(word + 1 + word / 2, 0);
        }
        if self.seen_bits[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen_bits[word] |= bit;
        self.received += 1;
        if self.received.is_multiple_of(self.sample_every)
            && let Some(t) = sent_us
        {
            self.latencies.push(now_us().saturating_sub(t).min(u64::from(u32::MAX)) as u32);
        }
    }

    /// Adds this member's totals to the run's and hands back its latency samples.
    fn finish(self) -> Vec<u32> {
        self.tally.received.fetch_add(self.received, Ordering::Relaxed);
        self.tally.duplicates.fetch_add(self.duplicates, Ordering::Relaxed);
        self.tally.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        self.latencies
    }
}

/// A server frame as a member reads it: the op, and of pushes only the send sequence and time.
#[derive(serde::Deserialize)]
struct LeanFrame<'a> {
    op: &'a str,
    data: Option<LeanData>,
    #[serde(default)]
    pushes: Vec<LeanPush>,
    reason: Option<&'a str>,
    message: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct LeanPush {
    data: LeanData,
}

/// The payload's sequence number and send time (see [`danmaku`]).
#[derive(serde::Deserialize)]
struct LeanData {
    n: Option<u64>,
    t: Option<u64>,
}

/// What a member counts in one server frame.
enum Counted {
    /// The pushes it carries, as (sequence number, send time in µs).
    Pushes(Vec<(Option<u64>, Option<u64>)>),
    Closed(String),
    Other,
}

impl Counted {
    fn decode(payload: &[u8]) -> anyhow::Result<Self> {
        let opened = compression::open(payload, 64 << 20)?;
        let Ok(f) = rmp_serde::from_slice::<LeanFrame>(&opened) else { return Ok(Self::Other) };
        Ok(match f.op {
            "push" => Self::Pushes(vec![f.data.map_or((None, None), |d| (d.n, d.t))]),
            "batch" => Self::Pushes(f.pushes.into_iter().map(|p| (p.data.n, p.data.t)).collect()),
            "close" => Self::Closed(format!("{} {}", f.reason.unwrap_or("?"), f.message.unwrap_or(""))),
            _ => Self::Other,
        })
    }
}

/// Frames already decoded, shared by all members of a run.
///
/// The server encodes (and compresses) a room's batch once and writes the same bytes to every
/// member, so the generator decodes each distinct frame once too: a member's frame is matched by
/// comparing **all** its bytes with a decoded one, then its pushes are counted by that member as
/// before (each sequence number once, per member). Nothing is taken on trust, and decoding no
/// longer grows with the number of members: at 10,000 members it was what capped a run on the
/// server's own two cores.
#[derive(Default)]
struct FrameMemo {
    recent: std::sync::Mutex<MemoSlots>,
}

#[derive(Default)]
struct MemoSlots {
    by_key: std::collections::HashMap<u64, Arc<(Bytes, Counted)>>,
    order: std::collections::VecDeque<u64>,
}

/// Distinct frames kept: a few seconds of batches of one room.
const MEMO_FRAMES: usize = 1024;

impl FrameMemo {
    fn counted(&self, payload: &Bytes) -> anyhow::Result<Arc<(Bytes, Counted)>> {
        let key = Self::key(payload);
        let hit = self.recent.lock().expect("memo poisoned").by_key.get(&key).cloned();
        if let Some(entry) = hit
            && entry.0 == *payload
        {
            return Ok(entry);
        }
        let entry = Arc::new((payload.clone(), Counted::decode(payload)?));
        let mut slots = self.recent.lock().expect("memo poisoned");
        if slots.by_key.insert(key, Arc::clone(&entry)).is_none() {
            slots.order.push_back(key);
            if slots.order.len() > MEMO_FRAMES
                && let Some(old) = slots.order.pop_front()
            {
                slots.by_key.remove(&old);
            }
        }
        Ok(entry)
    }

    /// A cheap key (length, head and tail): frames differ in their tails (the last push's
    /// sequence number and time). A clash only costs a decode; equality is checked on all bytes.
    fn key(payload: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        payload.len().hash(&mut h);
        payload[..payload.len().min(32)].hash(&mut h);
        payload[payload.len().saturating_sub(64)..].hash(&mut h);
        h.finish()
    }
}

/// Where a tern member connects.
#[derive(Clone)]
enum MemberAddr {
    Tcp(SocketAddr),
    /// The WebSocket URL and the address its host resolved to.
    Ws(String, SocketAddr),
}

/// A tern member's connection.
enum MemberConn {
    Tcp { stream: TcpStream, decoder: FrameDecoder, buf: BytesMut },
    Ws(Box<WebSocketStream<TcpStream>>),
}

impl MemberConn {
    async fn open(dialer: &Dialer, addr: &MemberAddr) -> anyhow::Result<Self> {
        Ok(match addr {
            MemberAddr::Tcp(tcp) => Self::Tcp {
                stream: dialer.dial(*tcp).await?,
                decoder: FrameDecoder::new(64 << 20),
                buf: BytesMut::with_capacity(16 * 1024),
            },
            MemberAddr::Ws(url, host) => Self::Ws(Box::new(dialer.websocket(url, Some(*host), 16 * 1024).await?)),
        })
    }

    async fn send(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        match self {
            Self::Tcp { stream, .. } => stream.write_all(&Codec::MsgPack.encode_prefixed(frame)).await?,
            Self::Ws(ws) => ws.send(WsMessage::Binary(Codec::MsgPack.encode(frame).into())).await?,
        }
        Ok(())
    }

    /// The next frame's payload and its bytes on the wire; `None` once the server closed.
    /// Cancel-safe (a `select!` branch): what was read stays in the connection.
    async fn recv(&mut self) -> anyhow::Result<Option<(Bytes, usize)>> {
        match self {
            Self::Tcp { stream, decoder, buf } => loop {
                if let Some(payload) = decoder.decode(buf)? {
                    let wire = payload.len() + 4;
                    return Ok(Some((payload, wire)));
                }
                if stream.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            },
            Self::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(None),
                    Some(Ok(WsMessage::Binary(payload))) => {
                        let head = match payload.len() {
                            0..=125 => 2,
                            126..=0xFFFF => 4,
                            _ => 10,
                        };
                        let wire = payload.len() + head;
                        return Ok(Some((payload, wire)));
                    }
                    Some(Ok(other)) if other.is_text() => anyhow::bail!("a text message on a MessagePack connection"),
                    Some(Ok(_)) => {} // pings (tungstenite answers them) and pongs
                    Some(Err(e)) => return Err(e.into()),
                }
            },
        }
    }
}

/// A tern member: authenticate, join, count pushes until 3 s of silence.
async fn tern_member(
    dialer: Arc<Dialer>,
    addr: MemberAddr,
    token: String,
    room: String,
    brotli: bool,
    memo: Arc<FrameMemo>,
    mut counter: Counter,
) -> anyhow::Result<Vec<u32>> {
    let mut conn = MemberConn::open(&dialer, &addr).await?;
    let accept = if brotli { vec![compression::BROTLI_NAME.to_owned()] } else { Vec::new() };
    conn.send(&ClientFrame::Auth { token, proto: None, resume: None, accept_compression: accept }).await?;
    conn.send(&ClientFrame::Join { id: 1, room, token: None, recent: None }).await?;
    let mut last_ping = Instant::now();
    // One timer for the member's life, moved on when it fires, rather than one per read.
    let mut last_data = Instant::now();
    let quiet = tokio::time::sleep(Duration::from_secs(3));
    tokio::pin!(quiet);
    loop {
        if last_ping.elapsed() > Duration::from_secs(10) {
            conn.send(&ClientFrame::Ping).await?;
            last_ping = Instant::now();
        }
        tokio::select! {
            got = conn.recv() => match got? {
                None => return Ok(counter.finish()),
                Some((payload, wire)) => {
                    last_data = Instant::now();
                    counter.bytes += wire as u64;
                    let entry = memo.counted(&payload)?;
                    match &entry.1 {
                        Counted::Pushes(pushes) => pushes.iter().for_each(|&(n, t)| counter.got(n, t)),
                        Counted::Closed(why) => anyhow::bail!("closed: {why}"),
                        Counted::Other => {}
                    }
                }
            },
            () = &mut quiet => {
                if last_data.elapsed() >= Duration::from_secs(3) && counter.finished() {
                    return Ok(counter.finish());
                }
                let (now, next) = (Instant::now(), last_data + Duration::from_secs(3));
                quiet.as_mut().reset(if next > now { next } else { now + Duration::from_secs(3) }.into());
            }
        }
    }
}

/// A NATS member: subscribe, count messages until 3 s of silence.
async fn nats_member(
    dialer: Arc<Dialer>,
    addr: SocketAddr,
    subject: String,
    ready: Arc<AtomicU64>,
    mut counter: Counter,
) -> anyhow::Result<Vec<u32>> {
    let mut conn = nats::Conn::handshake(dialer.dial(addr).await?).await?;
    conn.subscribe(&subject).await?;
    ready.fetch_add(1, Ordering::Relaxed);
    loop {
        match tokio::time::timeout(Duration::from_secs(3), conn.next()).await {
            Ok(Ok(Some(nats::Event::Msg(payload)))) => {
                counter.bytes += payload.len() as u64;
                let d: LeanData = serde_json::from_slice(&payload)?;
                counter.got(d.n, d.t);
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Ok(counter.finish()),
            Err(_) if counter.finished() => return Ok(counter.finish()),
            Err(_) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let json = args.common.json;
    let result = match args.compare.clone() {
        Some(nats) => compare(args, nats).await?,
        None => run(args).await?,
    };
    report(&result, json)
}

/// tern and nats-server side by side: both saturated, then both at one rate each sustains.
async fn compare(args: FanoutArgs, nats: String) -> anyhow::Result<serde_json::Value> {
    let tern_at = |rate: u64| FanoutArgs { rate, target: None, compare: None, ..args.clone() };
    let nats_at = |rate: u64| FanoutArgs {
        rate,
        target: Some(nats.clone()),
        compare: None,
        common: Common { server_pid: args.nats_pid, ..args.common.clone() },
        ..args.clone()
    };
    let cpu = |v: &serde_json::Value| v["server_cpu_us_per_delivery"].as_f64();
    let ratio = |t: &serde_json::Value, n: &serde_json::Value| cpu(t).zip(cpu(n)).map(|(t, n)| t / n);
    let tern_sat = run(tern_at(0)).await?;
    let nats_sat = run(nats_at(0)).await?;
    let pushes_per_sec = |v: &serde_json::Value| v["pushes"].as_f64().unwrap_or(0.0) / args.duration as f64;
    let equal = if args.rate > 0 {
        args.rate
    } else {
        ((pushes_per_sec(&tern_sat).min(pushes_per_sec(&nats_sat)) / 2.0) as u64).max(1)
    };
    let tern_eq = run(tern_at(equal)).await?;
    let nats_eq = run(nats_at(equal)).await?;
    Ok(json!({
        "scenario": "fanout_compare",
        "members": args.members,
        "saturated": { "cpu_ratio_tern_to_nats": ratio(&tern_sat, &nats_sat), "tern": tern_sat, "nats": nats_sat },
        "equal_load": {
            "rate": equal,
            "cpu_ratio_tern_to_nats": ratio(&tern_eq, &nats_eq),
            "tern": tern_eq,
            "nats": nats_eq,
        },
    }))
}

/// One run of the scenario; its result.
async fn run(args: FanoutArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.members > 0 && args.duration > 0, "members and duration must be > 0");
    raise_fd_limit(args.members as u64 + 64)?;
    let run = format!("{:08x}", rand::random::<u32>());
    let tally = Arc::new(Tally::default());
    let sample_every = (args.members as u64 / 50).max(1);
    let dialer = Arc::new(Dialer::default());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = || Counter::new(Arc::clone(&tally), Arc::clone(&done), sample_every);
    let memo = Arc::new(FrameMemo::default());
    let nats_addr = match &args.target {
        None => None,
        Some(t) => Some(resolve(t.strip_prefix("nats://").context("--target must be nats://HOST:PORT")?).await?),
    };
    let room = format!("bench-{run}");
    let mut members = Vec::with_capacity(args.members);
    let bar = progress(args.members as u64, "joining");
    match nats_addr {
        None => {
            anyhow::ensure!(!args.push_key.is_empty(), "--push-key (or TERN_PUSH_KEY) is needed to push to tern");
            let devs = devices(&args.common.server, args.members, &bar).await?;
            bar.set_position(0);
            let mut nodes = Vec::new();
            match args.transport {
                TransportArg::Tcp => {
                    for addr in &args.members_on {
                        nodes.push(MemberAddr::Tcp(resolve(addr).await?));
                    }
                    if nodes.is_empty() {
                        nodes.push(MemberAddr::Tcp(resolve(&devs[0].endpoints.tcp).await?));
                    }
                }
                TransportArg::Ws => {
                    anyhow::ensure!(
                        args.members_on.is_empty(),
                        "--members-on takes TCP addresses: use --transport tcp"
                    );
                    let url = devs[0].endpoints.ws.clone();
                    let host = resolve(ws_host(&url)).await?;
                    nodes.push(MemberAddr::Ws(url, host));
                }
            }
            for (i, d) in devs.into_iter().enumerate() {
                let addr = nodes[i % nodes.len()].clone();
                let m = tern_member(
                    Arc::clone(&dialer),
                    addr,
                    d.token,
                    room.clone(),
                    args.brotli,
                    Arc::clone(&memo),
                    counter(),
                );
                members.push(tokio::spawn(m));
            }
            // Wait until the room is full.
            let online_url = format!("{}/v1/rooms/{room}/online", args.common.server.trim_end_matches('/'));
            let http = reqwest::Client::new();
            let started = Instant::now();
            loop {
                let v: serde_json::Value = http.get(&online_url).send().await?.json().await?;
                bar.set_position(v["online"].as_u64().unwrap_or(0));
                if v["online"].as_u64() == Some(args.members as u64) {
                    break;
                }
                anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "members did not all join: {v}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Some(addr) => {
            let ready = Arc::new(AtomicU64::new(0));
            for _ in 0..args.members {
                members.push(tokio::spawn(nats_member(
                    Arc::clone(&dialer),
                    addr,
                    room.clone(),
                    Arc::clone(&ready),
                    counter(),
                )));
            }
            let started = Instant::now();
            while ready.load(Ordering::Relaxed) < args.members as u64 {
                bar.set_position(ready.load(Ordering::Relaxed));
                anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "subscribers did not all subscribe");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    bar.finish_and_clear();

    let publishers = if args.publishers > 0 {
        anyhow::ensure!(nats_addr.is_none(), "--publishers is for tern");
        viewers(&args, &run, &room).await?
    } else {
        Vec::new()
    };
    let bar = phase("pushing", args.duration);
    let before = sample_opt(args.common.server_pid)?;
    let t0 = Instant::now();
    let pushed = match nats_addr {
        None if !publishers.is_empty() => publish_tern(&args, &room, &publishers, t0, &bar).await?,
        None => push_tern(&args, &room, t0, &bar).await?,
        Some(addr) => push_nats(&args, addr, &room, &dialer, t0, &bar).await?,
    };
    let push_secs = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    // Members stop after 3 s of silence.
    let mut latencies = Vec::new();
    let mut failed = 0;
    for m in members {
        match m.await? {
            Ok(l) => latencies.extend(l),
            Err(e) => {
                failed += 1;
                eprintln!("bench fanout: member failed: {e:#}");
            }
        }
    }
    let after = sample_opt(args.common.server_pid)?;
    latencies.sort_unstable();
    let received = tally.received.load(Ordering::Relaxed);
    let expected = pushed * args.members as u64;
    let cpu = before.zip(after).map(|(b, a)| (a.cpu_us - b.cpu_us) as f64 / received.max(1) as f64);
    let result = json!({
        "scenario": "fanout",
        "target": if nats_addr.is_some() { "nats" } else { "tern" },
        "transport": if nats_addr.is_none() && matches!(args.transport, TransportArg::Ws) { "ws" } else { "tcp" },
        "nodes": args.members_on.len().max(1),
        "members": args.members,
        "rate": args.rate,
        "payload": args.payload,
        "priority": if args.high { "high" } else { "low" },
        "via": if args.publishers > 0 { "publish" } else { "push_api" },
        "publishers": args.publishers,
        "brotli": args.brotli,
        "pushes": pushed,
        "delivered": received,
        "delivered_per_sec": received as f64 / push_secs,
        "wire_bytes_per_delivery": tally.bytes.load(Ordering::Relaxed) as f64 / received.max(1) as f64,
        "server_cpu_us_per_delivery": cpu,
        "p50_ms": percentile_ms(&latencies, 0.5),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "lost": expected.saturating_sub(received),
        "duplicates": tally.duplicates.load(Ordering::Relaxed),
        "failed_members": failed,
    });
    Ok(result)
}

/// Paces a loop at a fixed rate (or not at all for rate 0 = saturated).
struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Self { interval: (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64)), next: Instant::now() }
    }

    fn saturated(&self) -> bool {
        self.interval.is_none()
    }

    async fn wait(&mut self) {
        if let Some(iv) = self.interval {
            tokio::time::sleep_until(self.next.into()).await;
            self.next += iv;
        }
    }
}

/// Offers danmaku-like payloads at `--rate` (or saturated) for the duration, with at most
/// `in_flight` unanswered, through `send` (which answers whether the server accepted it);
/// returns (offered, accepted).
async fn offer_paced<F, Fut>(
    args: &FanoutArgs,
    t0: Instant,
    bar: &indicatif::ProgressBar,
    in_flight: usize,
    mut send: F,
) -> anyhow::Result<(u64, u64)>
where
    F: FnMut(u64, serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let deadline = t0 + Duration::from_secs(args.duration);
    let mut pacer = Pacer::new(args.rate);
    let accepted = Arc::new(AtomicU64::new(0));
    let window = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut seq = 0u64;
    while Instant::now() < deadline {
        pacer.wait().await;
        let permit = Arc::clone(&window).acquire_owned().await?;
        seq += 1;
        let answer = send(seq, danmaku(&mut state, seq, args.payload));
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            if answer.await {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
        bar.set_position(t0.elapsed().as_secs());
    }
    let _all = window.acquire_many(in_flight as u32).await?;
    Ok((seq, accepted.load(Ordering::Relaxed)))
}

/// Pushes into the tern room for the duration; returns how many were accepted.
async fn push_tern(args: &FanoutArgs, room: &str, t0: Instant, bar: &indicatif::ProgressBar) -> anyhow::Result<u64> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/push/rooms/{room}", args.common.server.trim_end_matches('/'));
    let priority = if args.high { Priority::High } else { Priority::Low };
    // Saturated, 32 requests in flight are enough to keep the server busy; paced, more may be
    // needed, so that the offered rate holds while the server's answers slow down under load.
    let in_flight = if args.rate == 0 { 32 } else { 64 };
    let (_, pushed) = offer_paced(args, t0, bar, in_flight, |_, data| {
        let request = http.post(&url).bearer_auth(&args.push_key).json(&json!({ "data": data, "priority": priority }));
        async move { request.send().await.is_ok_and(|r| r.status().as_u16() == 202) }
    })
    .await?;
    Ok(pushed)
}

/// `--publishers` logged-in viewers (registered for this run), connected and in the room.
async fn viewers(args: &FanoutArgs, run: &str, room: &str) -> anyhow::Result<Vec<tern_client::Client>> {
    let server = args.common.server.trim_end_matches('/');
    let bar = progress(args.publishers as u64, "publishers");
    let mut out = Vec::with_capacity(args.publishers);
    for i in 0..args.publishers {
        let name = format!("b{run}p{i}");
        let password = format!("bench-{run}-password");
        tern_client::http::register(server, &name, &password).await?;
        let session = tern_client::http::login(server, &name, &password, "bench").await?;
        let opts = tern_client::Options { transport: args.transport.into(), resume: false, ..Default::default() };
        let (client, events) = tern_client::Client::connect(session, opts).await?;
        // Their own copies of the posts are not counted; drain them.
        tokio::spawn(async move {
            let mut events = events;
            while events.recv().await.is_some() {}
        });
        client.join(room).await?;
        out.push(client);
        bar.set_position(i as u64 + 1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Posts into the room from the viewers' own connections, round robin, for the duration;
/// returns how many were accepted.
async fn publish_tern(
    args: &FanoutArgs,
    room: &str,
    publishers: &[tern_client::Client],
    t0: Instant,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    let priority = if args.high { Priority::High } else { Priority::Low };
    // Each post waits for its `ok`, which under a hot room's load takes ~100 ms: 64 in flight
    // capped the rate at ~640/s, so allow more.
    let (offered, posted) = offer_paced(args, t0, bar, 1024, |seq, data| {
        let client = publishers[seq as usize % publishers.len()].clone();
        let room = room.to_owned();
        async move { client.publish(room, data, priority).await.is_ok() }
    })
    .await?;
    if offered > posted {
        eprintln!("bench fanout: {} posts refused (rate limits? see rooms.publish_per_sec_per_conn)", offered - posted);
    }
    Ok(posted)
}

/// Publishes to the NATS subject for the duration; returns how many were published.
async fn push_nats(
    args: &FanoutArgs,
    addr: SocketAddr,
    subject: &str,
    dialer: &Dialer,
    t0: Instant,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<u64> {
    let mut conn = nats::Conn::handshake(dialer.dial(addr).await?).await?;
    let deadline = t0 + Duration::from_secs(args.duration);
    let mut pacer = Pacer::new(args.rate);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut seq = 0u64;
    while Instant::now() < deadline {
        pacer.wait().await;
        seq += 1;
        let payload = serde_json::to_vec(&danmaku(&mut state, seq, args.payload))?;
        conn.publish(subject, &payload).await?;
        // Saturated: a round trip every 64 messages keeps the publisher from outrunning the server.
        if pacer.saturated() && seq.is_multiple_of(64) {
            conn.flush().await?;
        }
        bar.set_position(t0.elapsed().as_secs());
    }
    conn.flush().await?;
    Ok(seq)
}

/// Options of the compression scenario.
#[derive(clap::Args)]
pub struct CompressArgs {
    /// Bytes of payload per push.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// `tern bench compress`: how well room batches of danmaku-like pushes compress, by batch size,
/// with the brotli setting the server uses and with zlib for comparison. Offline (no server).
pub fn compress(args: CompressArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rows = Vec::new();
    for size in [1usize, 5, 10, 20, 50, 100, 200, 500] {
        let pushes: Vec<Push> = (0..size)
            .map(|i| Push {
                msg_id: tern_proto::MsgId(250_000_000_000_000_000 + i as u64 * 1024),
                priority: Priority::Low,
                qos: 0,
                scope: tern_proto::PushScope::Room { room: "live-12345".into() },
                ts: 1_795_000_000_000 + i as u64,
                data: danmaku(&mut state, i as u64, args.payload),
                from: None,
            })
            .collect();
        let frame = ServerFrame::Batch { scope: tern_proto::PushScope::Room { room: "live-12345".into() }, pushes };
        let mut row = serde_json::Map::new();
        row.insert("batch".into(), json!(size));
        for (name, codec) in [("msgpack", Codec::MsgPack), ("json", Codec::Json)] {
            let plain = codec.encode(&frame);
            // Median of 21 runs: the machine is shared and single timings are noisy.
            let mut times: Vec<f64> = (0..21)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(compression::brotli(&plain));
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let br_us = times[10];
            let br = compression::brotli(&plain);
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&plain)?;
            let zlib = z.finish()?;
            row.insert(format!("{name}_bytes"), json!(plain.len()));
            row.insert(format!("{name}_brotli_ratio"), json!(plain.len() as f64 / br.len() as f64));
            row.insert(format!("{name}_zlib_ratio"), json!(plain.len() as f64 / zlib.len() as f64));
            row.insert(format!("{name}_brotli_us"), json!(br_us));
        }
        rows.push(serde_json::Value::Object(row));
    }
    let result = json!({ "scenario": "compress", "payload": args.payload, "rows": rows });
    if args.json {
        println!("{result}");
    } else {
        for r in &rows {
            println!("{r}");
        }
    }
    Ok(())
}
