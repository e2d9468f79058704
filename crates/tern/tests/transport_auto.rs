//! `Transport::Auto` (`--transport auto`): TCP when it connects, WebSocket when TCP does not —
//! and then WebSocket first on the next reconnect.

mod common;

use common::*;
use tern_client::{Client, Options, Transport};

/// Open connections by transport, from this process's metrics (one test per binary: nothing
/// else opens connections here).
fn open(transport: &str) -> f64 {
    let line = format!("tern_connections{{transport=\"{transport}\"}} ");
    tern_server::telemetry::render().lines().find_map(|l| l.strip_prefix(&line)?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_uses_tcp_when_it_connects_and_falls_back_to_websocket_when_it_does_not() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (_bc, mut be) = connect(&bob, Transport::WsJson).await;
    let auto = || Options { transport: Transport::Auto, ..Options::default() };

    let (ac, _ae) = Client::connect(alice.clone(), auto()).await.unwrap();
    ac.send_text(bob.user_id, "via tcp").await.unwrap();
    assert_eq!(texts(&expect_messages(&mut be, 1).await), vec!["via tcp"]);
    assert_eq!((open("tcp"), open("ws")), (1.0, 1.0), "alice on TCP, bob on WebSocket");
    drop(ac);

    // TCP refused (nothing listens where the endpoint points): the WebSocket carries the session.
    let mut blocked = srv.login("alice", "laptop").await;
    blocked.endpoints.tcp = format!("127.0.0.1:{}", free_port());
    let (lc, _le) = Client::connect(blocked, auto()).await.unwrap();
    lc.send_text(bob.user_id, "via websocket").await.unwrap();
    assert_eq!(texts(&expect_messages(&mut be, 1).await), vec!["via websocket"]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while (open("tcp"), open("ws")) != (0.0, 2.0) {
        assert!(tokio::time::Instant::now() < deadline, "tcp {} ws {}", open("tcp"), open("ws"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
