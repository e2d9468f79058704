//! A short run of every `tern bench` scenario against a real server: the load generator itself
//! must work, and correctness is asserted (nothing lost, nothing duplicated, no errors). Timings
//! are reported by the benchmarks, never asserted here.

mod common;

use common::*;

async fn bench(srv: &TestServer, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("bench")
        .args(args)
        .args(["--server", &srv.url(), "--json"])
        .env("TERN_PUSH_KEY", PUSH_KEY)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bench_scenario_runs_and_loses_nothing() {
    let srv = TestServer::with(|c| c.push.aggregate_window_ms = 20).await;
    let pid = std::process::id().to_string();

    let p2p = bench(&srv, &["p2p", "--pairs", "2", "--duration", "1", "--rate", "200"]).await;
    assert!(p2p["acked"].as_u64().unwrap() > 100, "{p2p}");
    assert_eq!((p2p["lost"].as_u64(), p2p["duplicates"].as_u64()), (Some(0), Some(0)), "{p2p}");

    let group = bench(
        &srv,
        &[
            "group",
            "--members",
            "12",
            "--online",
            "6",
            "--senders",
            "2",
            "--rate",
            "40",
            "--duration",
            "1",
            "--history-pages",
            "5",
        ],
    )
    .await;
    assert!(group["acked"].as_u64().unwrap() >= 20, "{group}");
    assert_eq!((group["lost"].as_u64(), group["duplicates"].as_u64()), (Some(0), Some(0)), "{group}");
    assert_eq!(group["deliveries_per_sec"].as_f64().map(|d| d > 0.0), Some(true), "{group}");

    let fan = bench(&srv, &["fanout", "--members", "20", "--rate", "50", "--duration", "1", "--brotli"]).await;
    assert_eq!(fan["delivered"].as_u64(), fan["pushes"].as_u64().map(|p| p * 20), "{fan}");
    assert_eq!((fan["lost"].as_u64(), fan["duplicates"].as_u64()), (Some(0), Some(0)), "{fan}");
    assert!(fan["pushes"].as_u64().unwrap() >= 25);
    let fan =
        bench(&srv, &["fanout", "--members", "20", "--rate", "50", "--duration", "1", "--brotli", "--transport", "ws"])
            .await;
    assert_eq!(fan["transport"], "ws", "{fan}");
    assert_eq!(fan["delivered"].as_u64(), fan["pushes"].as_u64().map(|p| p * 20), "{fan}");
    assert_eq!((fan["lost"].as_u64(), fan["duplicates"].as_u64()), (Some(0), Some(0)), "{fan}");

    let conns = bench(&srv, &["conns", "--count", "50", "--settle", "0", "--server-pid", &pid]).await;
    assert_eq!(conns["count"], 50, "{conns}");
    assert!(conns["rss_bytes_per_conn"].is_number());

    let storm = bench(&srv, &["storm", "--count", "50", "--transport", "ws"]).await;
    assert_eq!((storm["connected"].as_u64(), storm["errors"].as_u64()), (Some(50), Some(0)), "{storm}");

    let storm = bench(&srv, &["reconnect", "--count", "60", "--jitter-ms", "300", "--push-key", PUSH_KEY]).await;
    assert_eq!((storm["reconnected"].as_u64(), storm["errors"].as_u64()), (Some(60), Some(0)), "{storm}");
    assert_eq!(storm["caught_up"].as_u64(), Some(60), "every client got the push after coming back: {storm}");
}

/// The NATS side of the fan-out comparison, against the nats-server CI runs (`NATS_URL`, default
/// `nats://127.0.0.1:4222`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_against_nats_loses_nothing() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let srv = TestServer::start().await;
    let fan = bench(&srv, &["fanout", "--target", &url, "--members", "20", "--rate", "50", "--duration", "1"]).await;
    assert_eq!(fan["target"], "nats");
    assert_eq!(fan["delivered"].as_u64(), fan["pushes"].as_u64().map(|p| p * 20), "{fan}");
    assert_eq!((fan["lost"].as_u64(), fan["duplicates"].as_u64()), (Some(0), Some(0)), "{fan}");
}

/// `--compare`: tern and nats-server, each saturated, then both at one equal rate, in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_compare_runs_tern_and_nats_saturated_and_at_equal_load() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let srv = TestServer::with(|c| c.push.aggregate_window_ms = 20).await;
    let fan = bench(&srv, &["fanout", "--compare", &url, "--members", "10", "--rate", "0", "--duration", "1"]).await;
    assert_eq!(fan["scenario"], "fanout_compare");
    for (phase, target) in
        [("saturated", "tern"), ("saturated", "nats"), ("equal_load", "tern"), ("equal_load", "nats")]
    {
        let run = &fan[phase][target];
        assert_eq!(run["target"], target, "{fan}");
        assert!(run["pushes"].as_u64().unwrap() > 0, "{phase} {target}: {run}");
        assert_eq!((run["lost"].as_u64(), run["duplicates"].as_u64()), (Some(0), Some(0)), "{phase} {target}: {run}");
    }
    let equal = fan["equal_load"]["rate"].as_u64().unwrap();
    assert!(equal >= 1);
    assert_eq!(fan["equal_load"]["tern"]["rate"].as_u64(), Some(equal));
    assert_eq!(fan["equal_load"]["nats"]["rate"].as_u64(), Some(equal));
}
