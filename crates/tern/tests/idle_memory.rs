//! Memory per idle connection, counted by the server's allocator (jemalloc's `stats.allocated`
//! in `/metrics`): bytes handed out do not depend on the machine, its load or the kernel, unlike
//! RSS, so a bound on them is a test that cannot flake and fails on a build that grows a
//! connection. The figure is for this (unoptimized) test build, whose futures are larger than a
//! release build's; docs/BENCHMARKS.md has the release figures.

mod common;

use tokio::process::Command;

/// Runs `tern bench conns` against a fresh `tern serve` and returns its JSON result.
async fn idle_connections(transport: &str, count: u32) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (common::free_port(), common::free_port());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_tern"));
    serve
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http", &format!("127.0.0.1:{http}"), "--tcp", &format!("127.0.0.1:{tcp}")])
        .env("TERN_SERVER__METRICS_PUBLIC", "true")
        // No thread caches: jemalloc counts what sits in them as allocated, which would add a
        // few hundred bytes of noise per connection.
        .env("_RJEM_MALLOC_CONF", "tcache:false");
    // At the default log level, so what logging keeps per connection is counted.
    let _server = common::spawn_serve_logging(&mut serve, "info", std::process::Stdio::null()).await;
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["bench", "conns", "--server", &format!("http://127.0.0.1:{http}")])
        .args(["--count", &count.to_string(), "--transport", transport, "--settle", "2", "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "bench conns failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_allocates_a_bounded_number_of_bytes() {
    for (transport, bound) in [("tcp", TCP_BOUND), ("ws", WS_BOUND)] {
        let result = idle_connections(transport, 2000).await;
        assert_eq!(result["count"], 2000, "{result}");
        let per = result["allocated_bytes_per_conn"].as_f64().expect("the server reports allocator statistics");
        eprintln!("idle {transport} connection: {per:.0} B allocated");
        assert!(per <= bound, "an idle {transport} connection allocates {per:.0} B, over the bound of {bound} B");
        // Something is allocated per connection: a zero would mean the figure measures nothing.
        assert!(per >= 256.0, "implausibly small: {per:.0} B per connection ({result})");
    }
}

/// Bounds for this debug build: measured 1,762–1,793 B (TCP) and 1,800–1,804 B (WebSocket) per
/// connection, plus a margin for what background tasks allocate between the two samples. A
/// span kept for each connection's life (what the 2.34 KB RSS figure was) measured 2,178 B.
const TCP_BOUND: f64 = 1900.0;
const WS_BOUND: f64 = 1900.0;
