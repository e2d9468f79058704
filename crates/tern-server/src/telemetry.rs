//! Prometheus metrics (`GET /metrics`).
//!
//! Handles are registered once ([`M`]) and updated on the hot paths without a registry lookup;
//! per-delivery counts are added once per dispatched envelope, not per connection. Process
//! memory, CPU and open files (from `/proc/self`) and the runtime's live tasks are read when
//! scraped. Metrics are per process
//! (several test servers in one process share them).

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tern_proto::CloseReason;

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, seconds: 0.5 ms … 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Store batch sizes, messages per commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process-wide recorder (once) and returns its handle.
fn recorder() -> &'static PrometheusHandle {
    RECORDER.get_or_init(|| {
        let built = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("tern_store_batch_messages".into()), BATCH_BUCKETS))
            .map(PrometheusBuilder::build_recorder);
        let recorder = match built {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "metrics buckets refused; using defaults");
                PrometheusBuilder::new().build_recorder()
            }
        };
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

/// The metrics tern updates.
pub struct Handles {
    /// Per transport: `tcp`, `tls` (TLS on the TCP port), `ws`, `wss`.
    pub transports: [TransportMetrics; TRANSPORTS.len()],
    /// Frames decoded from clients.
    pub frames_in: Counter,
    /// Frames written to clients.
    pub frames_out: Counter,
    /// Frames queued to connections by dispatch (chat, pushes, batches, counts).
    pub deliveries: Counter,
    /// Low-lane frames dropped for connections whose low lane was full.
    pub low_dropped: Counter,
    /// Pushed messages resent for want of an ACK.
    pub retries: Counter,
    /// Messages made durable.
    pub stored: Counter,
    /// `send` received → `sent` answered (durable).
    pub send_ack: Histogram,
    /// Message accepted → written to a recipient's socket.
    pub delivery: Histogram,
    /// One store commit (a batch of writes).
    pub commit: Histogram,
    /// Messages per store commit.
    pub batch: Histogram,
}

/// The handles, registered on first use (after the recorder is installed).
pub static M: LazyLock<Handles> = LazyLock::new(|| {
    recorder();
    Handles {
        transports: TRANSPORTS.map(|t| TransportMetrics {
            name: t,
            open: gauge!("tern_connections", "transport" => t),
            bytes_in: counter!("tern_transport_bytes_received_total", "transport" => t),
            bytes_out: counter!("tern_transport_bytes_sent_total", "transport" => t),
        }),
        frames_in: counter!("tern_frames_in_total"),
        frames_out: counter!("tern_frames_out_total"),
        deliveries: counter!("tern_deliveries_total"),
        low_dropped: counter!("tern_low_lane_dropped_total"),
        retries: counter!("tern_push_retries_total"),
        stored: counter!("tern_messages_stored_total"),
        send_ack: histogram!("tern_send_ack_seconds"),
        delivery: histogram!("tern_delivery_seconds"),
        commit: histogram!("tern_store_commit_seconds"),
        batch: histogram!("tern_store_batch_messages"),
    }
});

/// Counts a closed connection by reason (slow-consumer cut-offs among them).
pub fn closed(transport: &'static str, reason: CloseReason) {
    counter!("tern_connection_closes_total", "transport" => transport, "reason" => reason.as_str()).increment(1);
}

/// The open-connection gauge for a transport.
pub fn connections(transport: &str) -> &'static Gauge {
    &self::transport(transport).open
}

/// The transports the metrics name.
const TRANSPORTS: [&str; 7] = ["tcp", "tls", "ws", "wss", "sse", "longpoll", "quic"];

/// One transport's figures.
pub struct TransportMetrics {
    /// The transport's name.
    pub name: &'static str,
    /// Open connections.
    pub open: Gauge,
    /// Bytes read from clients (TLS: decrypted).
    pub bytes_in: Counter,
    /// Bytes written to clients (TLS: before encryption).
    pub bytes_out: Counter,
}

/// The figures of a transport by name (`tcp`, `tls`, `ws`, `wss`, `sse`, `longpoll`, `quic`;
/// anything else counts as `ws`).
pub fn transport(name: &str) -> &'static TransportMetrics {
    let i = TRANSPORTS.iter().position(|t| *t == name).unwrap_or(2);
    &M.transports[i]
}

/// Records a duration in seconds.
pub fn observe(h: &Histogram, d: Duration) {
    h.record(d.as_secs_f64());
}

fn describe() {
    describe_gauge!("tern_connections", "Open client connections by transport");
    describe_counter!("tern_transport_bytes_received_total", "Bytes read from clients, by transport");
    describe_counter!("tern_transport_bytes_sent_total", "Bytes written to clients, by transport");
    describe_counter!("tern_frames_in_total", "Frames decoded from clients");
    describe_counter!("tern_frames_out_total", "Frames written to clients");
    describe_counter!("tern_deliveries_total", "Frames queued to connections by dispatch");
    describe_counter!("tern_low_lane_dropped_total", "Low-priority frames dropped for a full low lane");
    describe_counter!("tern_push_retries_total", "Pushed messages resent for want of an ACK");
    describe_counter!("tern_messages_stored_total", "Messages made durable");
    describe_counter!("tern_connection_closes_total", "Closed connections by transport and reason");
    describe_histogram!("tern_send_ack_seconds", Unit::Seconds, "send received to sent answered (durable)");
    describe_histogram!("tern_delivery_seconds", Unit::Seconds, "Message accepted to written to a recipient socket");
    describe_histogram!("tern_store_commit_seconds", Unit::Seconds, "One store commit");
    describe_histogram!("tern_store_batch_messages", "Messages per store commit");
}

/// Drains histogram samples into their buckets; the server runs it every few seconds so memory
/// stays flat between scrapes.
pub fn upkeep() {
    recorder().run_upkeep();
}

/// The Prometheus text exposition, with process figures appended.
pub fn render() -> String {
    let handle = recorder();
    LazyLock::force(&M);
    handle.run_upkeep();
    let mut out = handle.render();
    out.push_str(&process_metrics());
    out
}

/// What the process's allocator reports: bytes handed to the program, and bytes of memory it
/// holds for them (pages, its own metadata). Unlike RSS these count exactly what the program
/// allocated, whatever the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes currently allocated by the program.
    pub allocated: u64,
    /// Bytes in physically resident pages the allocator holds.
    pub resident: u64,
}

static ALLOCATOR_STATS: std::sync::OnceLock<fn() -> Option<AllocatorStats>> = std::sync::OnceLock::new();

/// Names the global allocator's statistics for `/metrics` (the binary chooses the allocator, so
/// it supplies the reader). Set once; later calls are ignored.
pub fn set_allocator_stats(read: fn() -> Option<AllocatorStats>) {
    let _ = ALLOCATOR_STATS.set(read);
}

/// Resident memory, CPU time and open files of this process, from /proc; the allocator's
/// figures when the binary named them.
fn process_metrics() -> String {
    let mut out = String::new();
    if let Some(stats) = ALLOCATOR_STATS.get().and_then(|read| read()) {
        out.push_str("# HELP tern_allocator_allocated_bytes Bytes the server has allocated (allocator statistics)\n");
        out.push_str("# TYPE tern_allocator_allocated_bytes gauge\n");
        out.push_str(&format!("tern_allocator_allocated_bytes {}\n", stats.allocated));
        out.push_str("# HELP tern_allocator_resident_bytes Bytes in resident pages the allocator holds\n");
        out.push_str("# TYPE tern_allocator_resident_bytes gauge\n");
        out.push_str(&format!("tern_allocator_resident_bytes {}\n", stats.resident));
    }
    let page = 4096.0;
    let ticks = 100.0; // USER_HZ on Linux
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
        && let Some(rss) = statm.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok())
    {
        out.push_str("# HELP tern_process_resident_memory_bytes Resident memory of the server process\n");
        out.push_str("# TYPE tern_process_resident_memory_bytes gauge\n");
        out.push_str(&format!("tern_process_resident_memory_bytes {}\n", rss * page));
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let cpu: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
        out.push_str("# HELP tern_process_cpu_seconds_total CPU time of the server process (user + system)\n");
        out.push_str("# TYPE tern_process_cpu_seconds_total counter\n");
        out.push_str(&format!("tern_process_cpu_seconds_total {}\n", cpu / ticks));
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        out.push_str("# HELP tern_runtime_tasks Tasks alive in the server's async runtime\n");
        out.push_str("# TYPE tern_runtime_tasks gauge\n");
        out.push_str(&format!("tern_runtime_tasks {}\n", rt.metrics().num_alive_tasks()));
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.push_str("# HELP tern_process_open_fds Open file descriptors of the server process\n");
        out.push_str("# TYPE tern_process_open_fds gauge\n");
        out.push_str(&format!("tern_process_open_fds {}\n", dir.count()));
    }
    out
}
