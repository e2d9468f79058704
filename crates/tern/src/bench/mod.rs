//! `tern bench SCENARIO`: load scenarios against a running server, measured from outside.
//!
//! Every scenario takes `--server` (the HTTP base), `--push-key` where it pushes, `--server-pid`
//! to sample the server's CPU and RSS from `/proc`, and `--json` to print one JSON object as the
//! last line. Scenarios create the users, devices and rooms they need. Progress goes to stderr.
//!
//! - `p2p` — 1:1 messages with persistence and ACKs.
//! - `group` — one big group, some members online: group throughput, delivery and history latency.
//! - `fanout` — one room, many members (or one NATS subject, `--target nats://…`).
//! - `conns` — idle authenticated connections: server RSS per connection.
//! - `storm` — many clients connecting and authenticating at once.
//! - `compress` — batch compression ratios (offline).

pub mod conns;
pub mod fanout;
pub mod group;
pub mod nats;
pub mod p2p;
pub mod reconnect;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What receiving clients saw of timed chat messages (p2p, group): each message once, in seq
/// order per conversation, with its delivery latency.
#[derive(Default)]
pub struct Received {
    /// Messages counted.
    pub received: u64,
    /// Messages seen again (seq not above the last one).
    pub duplicates: u64,
    /// Send → receive, microseconds.
    pub delivery_us: Vec<u32>,
    last_seq: u64,
}

impl Received {
    /// Counts a message of one conversation whose text starts with its send time (see
    /// [`timed_text`]).
    pub fn record(&mut self, m: &tern_client::Message, epoch: std::time::Instant) {
        if m.seq <= self.last_seq {
            self.duplicates += 1;
            return;
        }
        self.last_seq = m.seq;
        self.received += 1;
        if let tern_client::Body::Text { text } = &m.body
            && let Some(sent_us) = text.split(' ').next().and_then(|t| t.parse::<u64>().ok())
        {
            let now_us = epoch.elapsed().as_micros() as u64;
            self.delivery_us.push(now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32);
        }
    }

    /// Waits for every receiver task and adds up what they saw.
    pub async fn join_all(receivers: Vec<tokio::task::JoinHandle<Received>>) -> anyhow::Result<Received> {
        let mut all = Received::default();
        for r in receivers {
            all.merge(r.await?);
        }
        Ok(all)
    }

    /// Adds another receiver's counts.
    pub fn merge(&mut self, other: Received) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.delivery_us.extend(other.delivery_us);
    }
}

/// A message text carrying its send time (µs since `epoch`), padded with `pad`.
pub fn timed_text(epoch: std::time::Instant, pad: &str) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(21 + pad.len());
    // u64 µs: 584,000 years; formatting a u128 was a visible share of the generator's CPU.
    let _ = write!(text, "{:020} {pad}", epoch.elapsed().as_micros() as u64);
    text
}

/// Options every scenario shares.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// HTTP base URL of the tern server.
    #[arg(long, env = "TERN_URL", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// The server's pid, to sample its CPU time and RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// A sample of a process's resource use.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime, microseconds.
    pub cpu_us: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` (CPU) and `/proc/<pid>/status` (RSS).
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    // The fields after the parenthesised command; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    // USER_HZ is 100 on Linux.
    Ok(ProcSample { cpu_us: ticks * 10_000, rss_bytes: rss_kb * 1024 })
}

/// Samples the server if a pid was given.
pub fn sample_opt(pid: Option<u32>) -> anyhow::Result<Option<ProcSample>> {
    pid.map(sample).transpose()
}

/// Raises this process's open-file soft limit to the hard limit; fails clearly when `needed`
/// descriptors cannot fit.
pub fn raise_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        anyhow::bail!("cannot read the open-file limit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            anyhow::bail!("cannot raise the open-file limit: {}", std::io::Error::last_os_error());
        }
    }
    let limit: u64 = lim.rlim_cur;
    anyhow::ensure!(
        needed + 64 <= limit,
        "{needed} connections need {} open files here, but this process may open at most {limit} (hard limit); \
         use fewer or raise the hard limit",
        needed + 64
    );
    Ok(limit)
}

/// Opens many TCP connections to one address. On loopback, spreads them over source addresses
/// 127.0.0.1, 127.0.0.2, … so that more connections than one address has ephemeral ports fit.
#[derive(Default)]
pub struct Dialer {
    opened: AtomicUsize,
}

/// Connections per loopback source address. The ephemeral range is ~28,000 ports, and sockets of
/// a previous run linger in TIME_WAIT for a minute, so stay well below it.
const PER_SOURCE: usize = 10_000;

impl Dialer {
    /// Connects, with TCP_NODELAY.
    pub async fn dial(&self, target: SocketAddr) -> anyhow::Result<TcpStream> {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        let stream = match target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => {
                let k = (n / PER_SOURCE) as u8;
                let source = Ipv4Addr::new(127, 0, 0, 1u8.saturating_add(k));
                let socket = TcpSocket::new_v4()?;
                // Lets bind() take a port whose previous connection is still in TIME_WAIT (the
                // 4-tuple differs); without it back-to-back runs run out of ports.
                socket.set_reuseaddr(true)?;
                bind_address_no_port(&socket);
                socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).with_context(|| format!("bind {source}"))?;
                socket.connect(target).await.with_context(|| format!("connect {target} from {source}"))?
            }
            _ => TcpStream::connect(target).await.with_context(|| format!("connect {target}"))?,
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens a WebSocket to `url` (`ws://HOST:PORT/…`), dialing `host` (its resolved address)
    /// when given, with a read buffer of `read_buffer` bytes. tungstenite's default is 128 KiB,
    /// allocated eagerly: zeroing fresh pages for it was most of this generator's ~235 µs of CPU
    /// per connect, and 15,000 held clients kept 1.9 GB.
    pub async fn websocket(
        &self,
        url: &str,
        host: Option<SocketAddr>,
        read_buffer: usize,
    ) -> anyhow::Result<WebSocketStream<TcpStream>> {
        let host = match host {
            Some(h) => h,
            None => resolve(ws_host(url)).await?,
        };
        let stream = self.dial(host).await?;
        let config = WebSocketConfig::default().read_buffer_size(read_buffer).write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("websocket handshake")?;
        Ok(ws)
    }
}

/// The `HOST:PORT` of a `ws://HOST:PORT/…` URL.
pub fn ws_host(url: &str) -> &str {
    url.trim_start_matches("ws://").split('/').next().unwrap_or_default()
}

/// Leaves the choice of the source port to `connect` (`IP_BIND_ADDRESS_NO_PORT`): `bind` to port
/// 0 otherwise searches the ephemeral range for a port free of every connection, which grows
/// slow as thousands are taken — at 15,000 connections that search, not the server, was most of
/// a storm's time. Best effort: without it (old kernels) the bind still works.
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on` (an int of the given size) on a socket we own.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Resolves `host:port` to one address.
pub async fn resolve(hostport: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(hostport).await?.next().with_context(|| format!("cannot resolve {hostport}"))
}

/// A progress bar on stderr.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{spinner} {msg:<24} [{bar:30}] {pos}/{len} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A spinner on stderr for a timed phase.
pub fn phase(what: &str, secs: u64) -> ProgressBar {
    progress(secs, what)
}

/// Prints the result: pretty, or one JSON line (always the last line).
pub fn report(result: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(result)?);
    }
    Ok(())
}

/// The p-th percentile of sorted microsecond samples, in milliseconds.
pub fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}

/// Gets `n` anonymous device tokens, several requests at a time.
pub async fn devices(server: &str, n: usize, bar: &ProgressBar) -> anyhow::Result<Vec<tern_client::DeviceSession>> {
    use futures_util::StreamExt;
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|_| async {
            let d = tern_client::http::device(server).await;
            bar.inc(1);
            d
        })
        .buffered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>().context("getting device tokens")
}
