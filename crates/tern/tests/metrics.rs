//! `GET /metrics`: guarded by a metrics (or admin) key, and its figures follow what happened. (Its own test
//! binary: metrics are per process, so nothing else here moves them.)

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tern_client::Transport;

async fn scrape(server: &TestServer, key: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", server.url()));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// `name{labels}` → value, for every sample line.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_owned(), v.parse().unwrap())))
        .collect()
}

async fn metrics(server: &TestServer) -> HashMap<String, f64> {
    let (status, text) = scrape(server, Some(PUSH_KEY)).await;
    assert_eq!(status, 200);
    samples(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_metrics_or_admin_key_and_follow_what_happened() {
    let server = TestServer::start().await;
    assert_eq!(scrape(&server, None).await.0, 401);
    let (_, key) =
        server.push_api(PUSH_KEY, "/v1/admin/keys", serde_json::json!({"name": "r", "scopes": ["rooms"]})).await;
    assert_eq!(scrape(&server, key["key"].as_str()).await.0, 403);
    // A scraper's key: /metrics and nothing else.
    let (_, scraper) =
        server.push_api(PUSH_KEY, "/v1/admin/keys", serde_json::json!({"name": "prom", "scopes": ["metrics"]})).await;
    let scraper = scraper["key"].as_str().unwrap().to_owned();
    assert_eq!(scrape(&server, Some(&scraper)).await.0, 200);
    let (status, _) = server.push_api(&scraper, "/v1/push/all", serde_json::json!({"data": "x"})).await;
    assert_eq!(status, 403, "a metrics key pushes nothing");
    let (status, _) =
        server.push_api(&scraper, "/v1/admin/keys", serde_json::json!({"name": "x", "scopes": ["admin"]})).await;
    assert_eq!(status, 403, "a metrics key makes no keys");

    let alice = server.login("alice", "phone").await;
    let bob = server.login("bob", "phone").await;
    let (a, _a_events) = connect(&alice, Transport::WsJson).await;
    let (_b, mut b_events) = connect(&bob, Transport::Tcp).await;
    let conv = tern_proto::ConvId::direct(alice.user_id, bob.user_id);
    for i in 0..5 {
        a.send_text_to(conv, format!("m{i}")).await.unwrap();
    }
    assert_eq!(expect_messages(&mut b_events, 5).await.len(), 5);

    let m = metrics(&server).await;
    assert_eq!(m["tern_connections{transport=\"ws\"}"], 1.0);
    assert_eq!(m["tern_connections{transport=\"tcp\"}"], 1.0);
    assert_eq!(m["tern_messages_stored_total"], 5.0);
    assert_eq!(m["tern_send_ack_seconds_count"], 5.0);
    assert_eq!(m["tern_store_batch_messages_sum"], 5.0);
    assert!(m["tern_store_commit_seconds_count"] >= 1.0);
    assert!(m["tern_deliveries_total"] >= 5.0, "each message queued to bob");
    assert!(m["tern_frames_in_total"] >= 7.0, "2 auths and 5 sends at least");
    assert!(m["tern_frames_out_total"] >= 12.0, "auth_ok ×2, 5 sent, 5 msg at least");
    assert!(m["tern_send_ack_seconds_bucket{le=\"10\"}"] == 5.0);
    assert!(m["tern_process_resident_memory_bytes"] > 1e6);
    assert!(m["tern_process_cpu_seconds_total"] > 0.0);
    assert!(m["tern_process_open_fds"] > 4.0);
    assert!(m["tern_runtime_tasks"] >= 2.0, "at least the two connections' tasks");

    // Every series the Grafana dashboard in docs/ queries exists.
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana-dashboard.json")).unwrap();
    let (_, text) = scrape(&server, Some(PUSH_KEY)).await;
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("tern_") && word != "tern_connection_closes_total" {
            assert!(text.contains(word), "the dashboard queries {word}, which /metrics does not have");
        }
    }

    // A connection that closes is counted by reason; the gauge comes back down.
    drop(a);
    let closed = "tern_connection_closes_total{transport=\"ws\",reason=\"client_closed\"}";
    for _ in 0..100 {
        let m = metrics(&server).await;
        // The close is counted as the goodbye is sent, the gauge drops when the task ends.
        if m.get(closed) == Some(&1.0) && m["tern_connections{transport=\"ws\"}"] == 0.0 {
            assert_eq!(m["tern_connections{transport=\"tcp\"}"], 1.0, "bob's is still open");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the close was not counted: {:?}", metrics(&server).await.get(closed));
}

#[tokio::test]
async fn public_metrics_need_no_key() {
    let server = TestServer::with(|c| c.server.metrics_public = true).await;
    let (status, text) = scrape(&server, None).await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE tern_process_resident_memory_bytes gauge"));
}
