//! `tern bench fanout`: one room, N members, pushes through the service API; every member
//! counts and checks what it receives.
//!
//! Members are lean raw TCP connections (length-prefixed MessagePack, the `tern-proto` codec),
//! not full SDK clients, so the load generator spends as little CPU per delivery as possible.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::BytesMut;
use serde_json::json;
use tern_client::Priority;
use tern_proto::codec::compression;
use tern_proto::{ClientFrame, Codec, FrameDecoder, Push, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Options of the fanout scenario.
#[derive(clap::Args)]
pub struct FanoutArgs {
    /// HTTP base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// A push API key with the rooms scope.
    #[arg(long, env = "TERN_PUSH_KEY", hide_env_values = true)]
    pub push_key: String,
    /// Room members (connections).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Pushes per second into the room; 0 = as fast as the API answers (8 in flight).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Seconds of pushing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Bytes of payload per push.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Members ask for brotli-compressed batches.
    #[arg(long)]
    pub brotli: bool,
    /// Push on the high lane (never aggregated).
    #[arg(long)]
    pub high: bool,
    /// The server's pid, to sample its CPU time from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
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

/// A danmaku-like payload of about `size` bytes: sender, text, colour, send time.
fn danmaku(state: &mut u64, size: usize) -> serde_json::Value {
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
    json!({ "uid": uid, "uname": format!("viewer{uid}"), "text": text, "color": colors[(next() % 4) as usize], "t": now_us() })
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// utime + stime of a process, in microseconds.
fn cpu_us(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks * 10_000) // USER_HZ is 100 on Linux
}

#[derive(Default)]
struct Tally {
    received: AtomicU64,
    duplicates: AtomicU64,
    bytes: AtomicU64,
}

async fn member(
    tcp: String,
    token: String,
    room: String,
    brotli: bool,
    tally: Arc<Tally>,
    sample_every: u64,
) -> anyhow::Result<Vec<u32>> {
    let mut stream = TcpStream::connect(&tcp).await.with_context(|| format!("connect {tcp}"))?;
    stream.set_nodelay(true)?;
    let accept = if brotli { vec![compression::BROTLI_NAME.to_owned()] } else { Vec::new() };
    let auth = ClientFrame::Auth { token, proto: None, resume: None, accept_compression: accept };
    stream.write_all(&Codec::MsgPack.encode_prefixed(&auth)).await?;
    stream.write_all(&Codec::MsgPack.encode_prefixed(&ClientFrame::Join { id: 1, room })).await?;
    let decoder = FrameDecoder::new(64 << 20);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Ids are checked for duplicates, not order: concurrent API calls may take ids in one order
    // and enter the room's lane in another (the lane's order is the order of acceptance).
    let mut ids = std::collections::HashSet::new();
    let mut latencies = Vec::new();
    let mut seen = 0u64;
    let mut on_push = |p: &Push, latencies: &mut Vec<u32>| {
        if !ids.insert(p.msg_id.0) {
            tally.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tally.received.fetch_add(1, Ordering::Relaxed);
        seen += 1;
        if seen.is_multiple_of(sample_every)
            && let Some(t) = p.data.get("t").and_then(|t| t.as_u64())
        {
            latencies.push(now_us().saturating_sub(t).min(u64::from(u32::MAX)) as u32);
        }
    };
    let mut last_ping = Instant::now();
    loop {
        while let Some(payload) = decoder.decode(&mut buf)? {
            tally.bytes.fetch_add(payload.len() as u64 + 4, Ordering::Relaxed);
            let opened = compression::open(&payload, 64 << 20)?;
            match Codec::MsgPack.decode::<ServerFrame>(&opened) {
                Ok(ServerFrame::Push(p)) => on_push(&p, &mut latencies),
                Ok(ServerFrame::Batch { pushes, .. }) => pushes.iter().for_each(|p| on_push(p, &mut latencies)),
                Ok(ServerFrame::Close { reason, message, .. }) => {
                    anyhow::bail!("closed: {} {message}", reason.as_str())
                }
                _ => {}
            }
        }
        if last_ping.elapsed() > Duration::from_secs(10) {
            stream.write_all(&Codec::MsgPack.encode_prefixed(&ClientFrame::Ping)).await?;
            last_ping = Instant::now();
        }
        match tokio::time::timeout(Duration::from_secs(3), stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok(latencies),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.members > 0 && args.duration > 0, "members and duration must be > 0");
    let room = format!("bench-{:08x}", rand::random::<u32>());
    eprintln!("bench fanout: {} members joining {room}", args.members);
    let tally = Arc::new(Tally::default());
    let mut members = Vec::with_capacity(args.members);
    let sample_every = (args.members as u64 / 50).max(1);
    for i in 0..args.members {
        let device = tern_client::http::device(&args.server).await.with_context(|| format!("device token {i}"))?;
        members.push(tokio::spawn(member(
            device.endpoints.tcp,
            device.token,
            room.clone(),
            args.brotli,
            Arc::clone(&tally),
            sample_every,
        )));
    }
    // Wait until the room is full.
    let http = reqwest::Client::new();
    let online_url = format!("{}/v1/rooms/{room}/online", args.server.trim_end_matches('/'));
    let started = Instant::now();
    loop {
        let v: serde_json::Value = http.get(&online_url).send().await?.json().await?;
        if v["online"].as_u64() == Some(args.members as u64) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "members did not all join: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("bench fanout: pushing for {} s", args.duration);
    let push_url = format!("{}/v1/push/rooms/{room}", args.server.trim_end_matches('/'));
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let priority = if args.high { Priority::High } else { Priority::Low };
    let cpu0 = args.server_pid.map(cpu_us).transpose()?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.duration);
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let pushed = Arc::new(AtomicU64::new(0));
    let window = Arc::new(tokio::sync::Semaphore::new(8));
    let mut next = Instant::now();
    while Instant::now() < deadline {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += iv;
        }
        let permit = Arc::clone(&window).acquire_owned().await?;
        let (http, url, pushed) = (http.clone(), push_url.clone(), Arc::clone(&pushed));
        let body = json!({ "data": danmaku(&mut rng_state, args.payload), "priority": priority });
        let key = args.push_key.clone();
        tokio::spawn(async move {
            if let Ok(r) = http.post(url).bearer_auth(key).json(&body).send().await
                && r.status().as_u16() == 202
            {
                pushed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let _all = window.acquire_many(8).await?;
    let push_secs = t0.elapsed().as_secs_f64();
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
    let cpu = match (args.server_pid, cpu0) {
        (Some(pid), Some(c0)) => Some(cpu_us(pid)?.saturating_sub(c0)),
        _ => None,
    };
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(0.0, |&v| f64::from(v) / 1000.0)
    };
    let pushed = pushed.load(Ordering::Relaxed);
    let received = tally.received.load(Ordering::Relaxed);
    let expected = pushed * args.members as u64;
    let result = json!({
        "scenario": "fanout",
        "members": args.members,
        "rate": args.rate,
        "payload": args.payload,
        "priority": if args.high { "high" } else { "low" },
        "brotli": args.brotli,
        "pushes": pushed,
        "delivered": received,
        "delivered_per_sec": received as f64 / push_secs,
        "wire_bytes_per_delivery": tally.bytes.load(Ordering::Relaxed) as f64 / received.max(1) as f64,
        "server_cpu_us_per_delivery": cpu.map(|c| c as f64 / received.max(1) as f64),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "lost": expected.saturating_sub(received),
        "duplicates": tally.duplicates.load(Ordering::Relaxed),
        "failed_members": failed,
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
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
                data: danmaku(&mut state, args.payload),
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
