//! Limits and load shedding: over a cap, the new connection or message is refused with a clear
//! code and a retry hint, and nothing already admitted is disturbed.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tern_proto::{Body, ClientFrame, CloseReason, ServerFrame};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A WebSocket upgrade with an `X-Forwarded-For` header: `Ok` when admitted, else the HTTP
/// status, `Retry-After` and body of the refusal.
async fn ws_via(server: &TestServer, forwarded_for: Option<&str>) -> Result<RawWs, (u16, Option<u64>, String)> {
    let mut req = server.ws_url().into_client_request().unwrap();
    if let Some(xff) = forwarded_for {
        req.headers_mut().insert("x-forwarded-for", xff.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(RawWs { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            Err((resp.status().as_u16(), retry, body))
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

async fn is_served(ws: &mut RawWs, session: &tern_client::Session) {
    assert!(matches!(ws.auth(session).await, ServerFrame::AuthOk { .. }));
    ws.send_frame(&ClientFrame::Ping).await;
    assert!(matches!(ws.recv().await, Some(ServerFrame::Pong)));
}

fn assert_refused(refusal: (u16, Option<u64>, String), message: &str) {
    let (status, retry, body) = refusal;
    assert_eq!(status, 503);
    assert!((1..=5).contains(&retry.expect("Retry-After")), "{retry:?}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains(message), "{body}");
}

#[tokio::test]
async fn over_the_connection_limit_new_connections_are_refused_with_a_retry_hint() {
    let server = TestServer::with(|c| c.gateway.max_connections = 3).await;
    let alice = server.login("alice", "phone").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ws_via(&server, None).await.ok().unwrap());
    }
    let refused = ws_via(&server, None).await.err().expect("the 4th WebSocket is refused");
    assert_refused(refused, "connection limit");
    let mut tcp = RawTcp::open(&server).await;
    match tcp.recv().await {
        Some(ServerFrame::Close { reason, retry_after_ms, .. }) => {
            assert_eq!(reason, CloseReason::OverCapacity);
            assert!((1000..=5000).contains(&retry_after_ms.unwrap()));
        }
        other => panic!("expected over_capacity, got {other:?}"),
    }
    assert!(tcp.recv().await.is_none(), "then the socket ends");

    // The admitted ones are untouched; a freed slot is taken again.
    for ws in &mut held {
        is_served(ws, &alice).await;
    }
    drop(held.pop());
    let mut again = loop {
        // The server notices the close asynchronously.
        if let Ok(ws) = ws_via(&server, None).await {
            break ws;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    is_served(&mut again, &alice).await;
}

#[tokio::test]
async fn the_per_address_cap_counts_clients_behind_trusted_proxies_only() {
    // 127.0.0.1 is a trusted proxy here: X-Forwarded-For names the client.
    let server = TestServer::with(|c| {
        c.gateway.max_connections_per_ip = 2;
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let alice = server.login("alice", "phone").await;
    let mut a1 = ws_via(&server, Some("198.51.100.1")).await.ok().unwrap();
    let _a2 = ws_via(&server, Some("198.51.100.1")).await.ok().unwrap();
    assert_refused(ws_via(&server, Some("198.51.100.1")).await.err().unwrap(), "your address");
    // A client-forged entry on the left does not help.
    assert_refused(ws_via(&server, Some("203.0.113.50, 198.51.100.1")).await.err().unwrap(), "your address");
    // Another client behind the same proxy is not affected.
    let mut b = ws_via(&server, Some("198.51.100.2")).await.map_err(|e| e.0).expect("another client is admitted");
    is_served(&mut b, &alice).await;
    is_served(&mut a1, &alice).await;

    // Without trusted proxies the header is ignored: every connection here is 127.0.0.1's.
    let direct = TestServer::with(|c| c.gateway.max_connections_per_ip = 2).await;
    let _d1 = ws_via(&direct, Some("198.51.100.1")).await.ok().unwrap();
    let _d2 = ws_via(&direct, Some("198.51.100.2")).await.ok().unwrap();
    assert_refused(ws_via(&direct, Some("198.51.100.3")).await.err().unwrap(), "your address");
}

#[tokio::test]
async fn a_connection_over_its_message_rate_is_answered_rate_limited_and_others_are_not() {
    let server = TestServer::with(|c| c.gateway.max_sends_per_sec = 5).await;
    let alice = server.login("alice", "phone").await;
    let bob = server.login("bob", "phone").await;
    let mut flood = RawWs::open(&server).await;
    assert!(matches!(flood.auth(&alice).await, ServerFrame::AuthOk { .. }));
    let n = 30u64;
    for i in 0..n {
        let text = format!("flood {i}");
        flood
            .send_frame(&ClientFrame::Send {
                id: i,
                to: Some(bob.user_id),
                conv_id: None,
                client_msg_id: format!("flood-{i}"),
                body: Body::Text { text },
            })
            .await;
    }
    let (mut sent, mut limited) = (0, 0);
    while sent + limited < n {
        match flood.recv().await {
            Some(ServerFrame::Sent { .. }) => sent += 1,
            Some(ServerFrame::Error { code, message, .. }) => {
                assert_eq!(code, tern_proto::ErrorCode::RateLimited);
                assert!(message.contains("5 messages per second"), "{message}");
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // The burst (5) plus whatever refilled while the frames were read: far fewer than sent.
    assert!((5..=10).contains(&sent), "{sent} sent");
    assert_eq!(limited, n - sent);

    // Only what was accepted is stored; another connection sends at once.
    let (client, _events) = connect(&bob, tern_client::Transport::WsJson).await;
    let conv = tern_proto::ConvId::direct(alice.user_id, bob.user_id);
    let page = client.history(conv, None, None, 100).await.unwrap();
    assert_eq!(page.messages.len() as u64, sent);
    client.send_text_to(conv, "not limited").await.unwrap();

    // The limit is a rate: after a second the flooding connection may send again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    flood
        .send_frame(&ClientFrame::Send {
            id: 99,
            to: Some(bob.user_id),
            conv_id: None,
            client_msg_id: "after-a-pause".into(),
            body: Body::Text { text: "calm".into() },
        })
        .await;
    loop {
        match flood.recv().await {
            Some(ServerFrame::Msg(m)) => assert_eq!(m.body, Body::Text { text: "not limited".into() }), // bob's
            Some(ServerFrame::Sent { id: 99, .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    let _ = flood.ws.send(WsMessage::Close(None)).await;
    let _ = flood.ws.next().await;
}

#[tokio::test]
async fn a_client_trickling_http_headers_is_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::with(|c| c.server.http_header_timeout_ms = 300).await;
    let mut slow = tokio::net::TcpStream::connect(server.server.http_addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: tern\r\n").await.unwrap();
    // One byte every 50 ms: never a complete header. The server must end it (a bound of 5 s
    // for a 300 ms deadline, so a loaded machine does not make this flaky).
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                read = slow.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // a 408 may precede the close
                },
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if slow.write_all(b"X").await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "the slow client was not cut off");
    let ok = reqwest::get(format!("{}/healthz", server.url())).await.unwrap();
    assert_eq!(ok.status(), 200);
}
