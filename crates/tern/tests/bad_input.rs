//! Hostile and broken input: every case gets a clear error or close reason, loses nothing, and
//! leaves other connections working.

mod common;

use std::time::Duration;

use common::*;
use tern_client::{ConvId, ErrorCode, Transport};
use tern_proto::{Body, ClientFrame, CloseReason, ServerFrame, UserId};

fn short_timers(c: &mut tern_server::Config) {
    c.gateway.auth_timeout_ms = 300;
    c.gateway.heartbeat_ms = 200;
    c.gateway.max_missed_heartbeats = 2;
    c.gateway.max_frame_bytes = 4096;
    c.messages.max_body_bytes = 1024;
}

/// A bystander pair that must keep chatting whatever else happens.
async fn bystanders_still_chat(srv: &TestServer, round: usize) {
    let carol = srv.login("carol", "phone").await;
    let dave = srv.login("dave", "phone").await;
    let (c, _ce) = connect(&carol, Transport::Tcp).await;
    let (_d, mut de) = connect(&dave, Transport::WsJson).await;
    let sent = c.send_text(dave.user_id, format!("still here {round}")).await.unwrap();
    let got = expect_messages(&mut de, 1).await;
    assert_eq!(got[0].msg_id, sent.msg_id);
    assert_eq!(texts(&got), [format!("still here {round}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_frames_get_errors_and_the_connection_stays_usable() {
    let srv = TestServer::with(short_timers).await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (_b, mut bob_events) = connect(&bob, Transport::Tcp).await;
    let mut ws = RawWs::open(&srv).await;
    assert!(matches!(ws.auth(&alice).await, ServerFrame::AuthOk { .. }));

    ws.send_text("{not json").await;
    match ws.recv().await {
        Some(ServerFrame::Error { id: None, code: ErrorCode::BadRequest, message }) => {
            assert!(message.contains("JSON"), "{message}")
        }
        other => panic!("expected bad_request, got {other:?}"),
    }
    ws.send_text(r#"{"op":"teleport","id":77}"#).await;
    match ws.recv().await {
        Some(ServerFrame::Error { id: Some(77), code: ErrorCode::UnknownOp, message }) => {
            assert!(message.contains("teleport"))
        }
        other => panic!("expected unknown_op, got {other:?}"),
    }
    ws.send_text(r#"{"op":"send","id":78,"to":"bob"}"#).await;
    assert!(matches!(ws.recv().await, Some(ServerFrame::Error { id: Some(78), code: ErrorCode::BadRequest, .. })));

    // Sending to a user that does not exist.
    ws.send_frame(&ClientFrame::Send {
        id: 79,
        to: Some(UserId(999_999)),
        conv_id: None,
        client_msg_id: "c1".into(),
        body: Body::Text { text: "?".into() },
    })
    .await;
    match ws.recv().await {
        Some(ServerFrame::Error { id: Some(79), code: ErrorCode::NotFound, message }) => {
            assert!(message.contains("999999"))
        }
        other => panic!("expected not_found, got {other:?}"),
    }
    // Body over the limit, empty text, bad client_msg_id.
    let big = Body::Text { text: "x".repeat(2000) };
    ws.send_frame(&ClientFrame::Send {
        id: 80,
        to: Some(bob.user_id),
        conv_id: None,
        client_msg_id: "c2".into(),
        body: big,
    })
    .await;
    assert!(matches!(ws.recv().await, Some(ServerFrame::Error { id: Some(80), code: ErrorCode::BodyTooLarge, .. })));
    ws.send_frame(&ClientFrame::Send {
        id: 81,
        to: Some(bob.user_id),
        conv_id: None,
        client_msg_id: "c3".into(),
        body: Body::Text { text: String::new() },
    })
    .await;
    assert!(matches!(ws.recv().await, Some(ServerFrame::Error { id: Some(81), code: ErrorCode::BadRequest, .. })));
    ws.send_frame(&ClientFrame::Send {
        id: 82,
        to: Some(bob.user_id),
        conv_id: None,
        client_msg_id: String::new(),
        body: Body::Text { text: "a".into() },
    })
    .await;
    assert!(matches!(ws.recv().await, Some(ServerFrame::Error { id: Some(82), code: ErrorCode::BadRequest, .. })));

    // Still usable: a valid send goes through and is the first message bob ever gets.
    ws.send_frame(&ClientFrame::Send {
        id: 83,
        to: Some(bob.user_id),
        conv_id: None,
        client_msg_id: "ok".into(),
        body: Body::Text { text: "valid".into() },
    })
    .await;
    assert!(matches!(ws.recv().await, Some(ServerFrame::Sent { id: 83, seq: 1, .. })));
    let got = expect_messages(&mut bob_events, 1).await;
    assert_eq!(texts(&got), ["valid"]);
    bystanders_still_chat(&srv, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused_before_buffering() {
    let srv = TestServer::with(short_timers).await;
    let alice = srv.login("alice", "phone").await;

    let mut ws = RawWs::open(&srv).await;
    assert!(matches!(ws.auth(&alice).await, ServerFrame::AuthOk { .. }));
    ws.send_text(format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(10_000))).await;
    // tungstenite refuses the frame from its header; the socket then ends with the reason.
    assert_eq!(ws.expect_close().await.0, CloseReason::FrameTooLarge);

    let mut tcp = RawTcp::open(&srv).await;
    assert!(matches!(tcp.auth_with(&alice.token).await, ServerFrame::AuthOk { .. }));
    // Announce 1 GiB; send only the prefix.
    tcp.stream.try_write(&(1u32 << 30).to_be_bytes()).unwrap();
    let (reason, message) = tcp.expect_close().await;
    assert_eq!(reason, CloseReason::FrameTooLarge);
    assert!(message.contains("1073741824"), "{message}");
    bystanders_still_chat(&srv, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_length_prefix_is_a_protocol_error() {
    let srv = TestServer::with(short_timers).await;
    let alice = srv.login("alice", "phone").await;
    let mut tcp = RawTcp::open(&srv).await;
    assert!(matches!(tcp.auth_with(&alice.token).await, ServerFrame::AuthOk { .. }));
    use tokio::io::AsyncWriteExt;
    tcp.stream.write_all(&[0, 0]).await.unwrap();
    tcp.stream.shutdown().await.unwrap(); // half-close: we can still read the answer
    let (reason, message) = tcp.expect_close().await;
    assert_eq!(reason, CloseReason::ProtocolError);
    assert!(message.contains("inside a frame"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_authenticate_or_go_silent_are_closed_with_a_reason() {
    let srv = TestServer::with(short_timers).await;
    let alice = srv.login("alice", "phone").await;

    let mut silent = RawWs::open(&srv).await;
    let (reason, message) = silent.expect_close().await;
    assert_eq!(reason, CloseReason::AuthTimeout);
    assert!(message.contains("300 ms"), "{message}");

    let mut tcp_silent = RawTcp::open(&srv).await;
    assert_eq!(tcp_silent.expect_close().await.0, CloseReason::AuthTimeout);

    let mut early = RawWs::open(&srv).await;
    early.send_frame(&ClientFrame::Ping).await;
    assert_eq!(early.expect_close().await.0, CloseReason::AuthRequired);

    let mut garbage = RawWs::open(&srv).await;
    garbage.send_text("hello?").await;
    assert_eq!(garbage.expect_close().await.0, CloseReason::AuthFailed);

    let mut future = RawWs::open(&srv).await;
    future
        .send_frame(&ClientFrame::Auth {
            token: alice.token.clone(),
            proto: Some(99),
            resume: None,
            accept_compression: vec![],
        })
        .await;
    assert_eq!(future.expect_close().await.0, CloseReason::UnsupportedVersion);

    // Authenticated, then silent: closed after heartbeat × max missed (400 ms here).
    let mut quiet = RawWs::open(&srv).await;
    match quiet.auth(&alice).await {
        ServerFrame::AuthOk { heartbeat_ms: 200, max_missed_heartbeats: 2, .. } => {}
        other => panic!("{other:?}"),
    }
    let started = std::time::Instant::now();
    assert_eq!(quiet.expect_close().await.0, CloseReason::HeartbeatTimeout);
    assert!(started.elapsed() >= Duration::from_millis(350));

    // Pinging keeps a connection alive past that.
    let mut alive = RawWs::open(&srv).await;
    alive.auth(&alice).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        alive.send_frame(&ClientFrame::Ping).await;
        assert_eq!(alive.recv().await, Some(ServerFrame::Pong));
    }
    let closes = srv.server.gateway().close_counts();
    assert_eq!(closes.get(&CloseReason::AuthTimeout), Some(&2));
    assert_eq!(closes.get(&CloseReason::HeartbeatTimeout), Some(&1));
    bystanders_still_chat(&srv, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expired_and_tampered_tokens_are_refused() {
    let srv = TestServer::with(short_timers).await;
    let alice = srv.login("alice", "phone").await;
    let mut tampered = alice.token.clone();
    // Flip a character of the payload (the claims), keeping the signature.
    let dot = tampered.find('.').unwrap() + 5;
    let flipped = if &tampered[dot..=dot] == "A" { "B" } else { "A" };
    tampered.replace_range(dot..=dot, flipped);
    let other_server = TestServer::with(short_timers).await;
    let foreign = other_server.login("alice", "phone").await.token;
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiZGlkIjoicGhvbmUiLCJpc3MiOiJ0ZXJuIiwiYXVkIjoidGVybi1jbGllbnQiLCJpYXQiOjEsIm5iZiI6MSwiZXhwIjo5OTk5OTk5OTk5fQ.";
    for token in ["", "garbage", alg_none, tampered.as_str(), foreign.as_str()] {
        let mut ws = RawWs::open(&srv).await;
        ws.send_frame(&ClientFrame::Auth {
            token: token.into(),
            proto: None,
            resume: None,
            accept_compression: vec![],
        })
        .await;
        let (reason, message) = ws.expect_close().await;
        assert_eq!(reason, CloseReason::AuthFailed, "{token}");
        assert_eq!(message, "token invalid");
    }
    // REST refuses them the same way.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/users/by-name/alice", srv.url()))
        .bearer_auth(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    // The SDK reports a refusal as final.
    let mut bad = alice.clone();
    bad.token = tampered;
    let err = tern_client::Client::connect(bad, Default::default()).await.err().unwrap();
    assert!(matches!(err, tern_client::Error::Refused { reason: CloseReason::AuthFailed, .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_conversation_is_indistinguishable_from_a_missing_one() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let eve = srv.login("eve", "phone").await;
    let (a, _ae) = connect(&alice, Transport::WsJson).await;
    a.send_text(bob.user_id, "private").await.unwrap();
    let conv = ConvId::direct(alice.user_id, bob.user_id);

    let http = reqwest::Client::new();
    let get = |path: String| http.get(format!("{}{path}", srv.url())).bearer_auth(&eve.token).send();
    let theirs = get(format!("/v1/conversations/{conv}/messages")).await.unwrap();
    let (s1, b1) = (theirs.status(), theirs.text().await.unwrap());
    let missing = get(format!("/v1/conversations/{}/messages", ConvId::direct(UserId(77), UserId(78)))).await.unwrap();
    let (s2, b2) = (missing.status(), missing.text().await.unwrap());
    let garbage = get("/v1/conversations/zzz/messages".into()).await.unwrap();
    let (s3, b3) = (garbage.status(), garbage.text().await.unwrap());
    assert_eq!((s1.as_u16(), s2.as_u16(), s3.as_u16()), (404, 404, 404));
    assert_eq!(b1, b2);
    assert_eq!(b1, b3);
    assert!(!b1.contains("private"));

    let (e, _ee) = connect(&eve, Transport::Tcp).await;
    let err = e.history(conv, Some(0), None, 10).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    // No token at all.
    let anon = http.get(format!("{}/v1/conversations/{conv}/messages", srv.url())).send().await.unwrap();
    assert_eq!(anon.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_accounts_answer_bad_input_with_clear_errors() {
    let srv = TestServer::start().await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: &str| {
        http.post(format!("{}{path}", srv.url()))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let created = post("/v1/users", r#"{"username":"zed","password":"a fine passphrase"}"#).await.unwrap();
    assert_eq!(created.status(), 201);
    let login =
        |user: &str, pw: &str, dev: &str| format!(r#"{{"username":"{user}","password":"{pw}","device_id":"{dev}"}}"#);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/users", "{oops".into(), 400, "bad_request"),
        ("/v1/users", r#"{"username":"x"}"#.into(), 400, "bad_request"),
        ("/v1/users", r#"{"username":"no spaces","password":"long enough pw"}"#.into(), 400, "bad_request"),
        ("/v1/users", r#"{"username":"zed2","password":"short"}"#.into(), 400, "weak_password"),
        ("/v1/users", r#"{"username":"zed2","password":"password123"}"#.into(), 400, "weak_password"),
        ("/v1/users", r#"{"username":"ZED","password":"another passphrase"}"#.into(), 409, "conflict"),
        ("/v1/sessions", login("zed", "wrong passphrase", "d"), 401, "unauthorized"),
        ("/v1/sessions", login("nobody", "a fine passphrase", "d"), 401, "unauthorized"),
        ("/v1/sessions", login("zed", "a fine passphrase", "bad device"), 400, "bad_request"),
        ("/v1/nope", "{}".into(), 404, "not_found"),
    ];
    for (path, body, status, code) in cases {
        let resp = post(path, &body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path} {body}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{path} {body}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let ok = post("/v1/sessions", &login("zed", "a fine passphrase", "d")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let v: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(v["endpoints"]["ws"], format!("ws://{}/v1/ws", srv.server.http_addr()));
    assert_eq!(v["endpoints"]["tcp"], format!("127.0.0.1:{}", srv.server.tcp_addr().port()));
    let health = http.get(format!("{}/healthz", srv.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// A WebSocket client written byte by byte, to send what a library would not.
struct WireWs {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl WireWs {
    /// Upgrades with the RFC's example key; the 101 must carry the RFC's answer to it.
    async fn open(srv: &TestServer) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(srv.server.http_addr()).await.unwrap();
        let request = "GET /v1/ws HTTP/1.1\r\nHost: tern\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
        Self { stream, buf: buf[end..].to_vec() }
    }

    async fn send(&mut self, b0: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut frame = vec![b0];
        let bit = if masked { 0x80 } else { 0 };
        if payload.len() < 126 {
            frame.push(payload.len() as u8 | bit);
        } else {
            frame.push(126 | bit);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next server frame: (first byte, payload); `None` at the end of the stream.
    async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, head) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    126 => (usize::MAX, 0),
                    127 => panic!("unexpectedly long frame"),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= head + len {
                    let frame = (self.buf[0], self.buf[head..head + len].to_vec());
                    self.buf.drain(..head + len);
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a frame")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn recv_text(&mut self) -> ServerFrame {
        let (b0, payload) = self.recv().await.expect("closed");
        assert_eq!(b0, 0x81, "a final text frame");
        tern_proto::Codec::Json.decode(&payload).unwrap()
    }

    async fn auth(&mut self, session: &tern_client::Session) {
        let auth = format!(r#"{{"op":"auth","token":"{}"}}"#, session.token);
        self.send(0x81, auth.as_bytes(), true).await;
        assert!(matches!(self.recv_text().await, ServerFrame::AuthOk { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pings_fragments_and_the_closing_handshake_follow_rfc_6455() {
    let srv = TestServer::with(short_timers).await;
    let alice = srv.login("alice", "phone").await;
    let mut ws = WireWs::open(&srv).await;
    ws.auth(&alice).await;

    ws.send(0x89, b"are you there", true).await;
    assert_eq!(ws.recv().await, Some((0x8A, b"are you there".to_vec())), "a pong with the ping's payload");

    // A tern ping in three fragments, a WebSocket ping between them.
    ws.send(0x01, br#"{"op":"#, true).await;
    ws.send(0x89, b"x", true).await;
    ws.send(0x00, br#""pi"#, true).await;
    ws.send(0x80, br#"ng"}"#, true).await;
    assert_eq!(ws.recv().await, Some((0x8A, b"x".to_vec())));
    assert!(matches!(ws.recv_text().await, ServerFrame::Pong));

    // The client closes: its code is echoed, then the stream ends.
    ws.send(0x88, &4321u16.to_be_bytes(), true).await;
    assert_eq!(ws.recv().await, Some((0x88, 4321u16.to_be_bytes().to_vec())));
    assert_eq!(ws.recv().await, None);
    bystanders_still_chat(&srv, 1).await;
}

/// RFC 6455 7.1.7: an endpoint that receives frames against the RFC fails the connection with
/// the RFC's status (1002, 1007 for text that is not UTF-8) and sends nothing after the failure
/// — no tern `close` frame, which is for tern's own reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_against_the_rfc_fail_with_the_rfc_s_status_and_nothing_else() {
    let srv = TestServer::with(short_timers).await;
    let alice = srv.login("alice", "phone").await;
    for (round, (b0, payload, masked, status)) in [
        (0x81u8, &br#"{"op":"ping"}"#[..], false, 1002u16), // unmasked
        (0xC1, &br#"{"op":"ping"}"#[..], true, 1002),       // a reserved bit
        (0x83, &b"x"[..], true, 1002),                      // a reserved opcode
        (0x09, &b"x"[..], true, 1002),                      // a fragmented ping
        (0x89, &[b'p'; 126][..], true, 1002),               // a ping over 125 bytes
        (0x88, &1005u16.to_be_bytes()[..], true, 1002),     // a close code no one may send
        (0x81, &[0xC3, 0x28][..], true, 1007),              // text that is not UTF-8
        (0x01, &[b'{', 0xff][..], true, 1007),              // ... found in the first fragment
        (0x80, &b"{}"[..], true, 1002),                     // a continuation of nothing
    ]
    .into_iter()
    .enumerate()
    {
        let mut ws = WireWs::open(&srv).await;
        ws.auth(&alice).await;
        ws.send(b0, payload, masked).await;
        let (b0, code) = ws.recv().await.expect("a close frame");
        assert_eq!((b0, &code[..2]), (0x88, &status.to_be_bytes()[..]), "round {round}: the first frame is the close");
        ws.send(0x88, &status.to_be_bytes(), true).await;
        assert_eq!(ws.recv().await, None, "round {round}: the server ends the stream");
    }
    bystanders_still_chat(&srv, 1).await;
}

/// A message over the limit is tern's reason (`frame_too_large`, said in a `close` frame) with
/// RFC 6455's status for it, 1009 — also before authentication, when the client is still
/// writing the refused message (its unread bytes must not turn the close into a reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_said_with_a_close_frame_and_1009_even_before_auth() {
    let srv = TestServer::with(short_timers).await;
    let mut ws = WireWs::open(&srv).await;
    ws.send(0x82, &vec![0u8; 60_000], true).await;
    match ws.recv_text().await {
        ServerFrame::Close { reason: CloseReason::FrameTooLarge, message, .. } => {
            assert!(message.contains("60000"), "{message}")
        }
        other => panic!("expected a frame_too_large close, got {other:?}"),
    }
    let (b0, code) = ws.recv().await.expect("a close frame");
    assert_eq!((b0, &code[..2]), (0x88, &1009u16.to_be_bytes()[..]));
    bystanders_still_chat(&srv, 1).await;
}

/// RFC 6455 4.2.1: the opening handshake is an HTTP/1.1 (or later) GET with a Host header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_over_http_1_0_or_without_host_is_refused_with_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::with(short_timers).await;
    for (version, host) in [("HTTP/1.0", "Host: tern\r\n"), ("HTTP/1.1", "")] {
        let mut stream = tokio::net::TcpStream::connect(srv.server.http_addr()).await.unwrap();
        let request = format!(
            "GET /v1/ws {version}\r\n{host}Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.contains(" 400 "), "{version} {host:?}: {answer}");
        assert!(answer.contains("bad_request"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_is_not_a_websocket_upgrade_gets_a_400_in_tern_s_error_format() {
    let srv = TestServer::with(short_timers).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/ws", srv.server.http_addr());
    let plain = http.get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 400);
    let body: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Upgrade header"), "{body}");
    let old = http
        .get(&url)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "8")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 400);
    assert_eq!(old.headers()["sec-websocket-version"], "13", "names the version it speaks");
}

/// Client JSON nested deeper than the limit is refused the same way in every codec, before
/// anything is stored; at the limit it is stored and every participant reads it back. (Found by
/// outside testing: ~130 levels over MessagePack were stored, then broke history, the list and
/// resume for everyone in the conversation.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_data_is_refused_alike_in_every_codec_and_never_poisons_a_conversation() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let nested = |depth: usize| (0..depth).fold(serde_json::json!(1), |v, _| serde_json::json!({ "a": v }));
    let custom = |id: u64, depth: usize| ClientFrame::Send {
        id,
        to: Some(bob.user_id),
        conv_id: None,
        client_msg_id: format!("deep{id}"),
        body: Body::Custom { data: nested(depth) },
    };
    let mut tcp = RawTcp::open(&srv).await;
    assert!(matches!(tcp.auth_with(&alice.token).await, ServerFrame::AuthOk { .. }));
    let mut ws = RawWs::open(&srv).await;
    assert!(matches!(ws.auth(&srv.login("alice", "laptop").await).await, ServerFrame::AuthOk { .. }));
    let refused = |frame: Option<ServerFrame>, id: u64| match frame {
        Some(ServerFrame::Error { id: Some(got), code: ErrorCode::BadRequest, message }) if got == id => message,
        other => panic!("expected bad_request for {id}, got {other:?}"),
    };
    for depth in [33, 100] {
        tcp.send(&custom(depth as u64, depth)).await;
        let message = refused(tcp.recv().await, depth as u64);
        assert_eq!(message, format!("custom data nests {depth} levels deep; the limit is 32"));
        ws.send(&custom(depth as u64, depth)).await;
        assert_eq!(refused(ws.recv().await, depth as u64), message, "the same in JSON");
    }
    // Past what a frame may nest at all (128 levels, either codec), the decoder refuses it (a
    // MessagePack frame that deep is not read far enough to find its id).
    tcp.send(&custom(200, 200)).await;
    match tcp.recv().await {
        Some(ServerFrame::Error { code: ErrorCode::BadRequest, message, .. }) => {
            assert!(message.contains("depth limit exceeded"), "{message}")
        }
        other => panic!("expected bad_request, got {other:?}"),
    }
    ws.send(&custom(200, 200)).await;
    assert!(refused(ws.recv().await, 200).contains("recursion limit exceeded"));

    tcp.send(&custom(32, 32)).await;
    assert!(matches!(tcp.recv().await, Some(ServerFrame::Sent { id: 32, seq: 1, .. })));
    tcp.send(&ClientFrame::Send {
        id: 2,
        to: Some(bob.user_id),
        conv_id: None,
        client_msg_id: "after".into(),
        body: Body::Text { text: "still fine".into() },
    })
    .await;
    assert!(matches!(tcp.recv().await, Some(ServerFrame::Sent { id: 2, seq: 2, .. })));
    // Bob resumes, reads history and lists his conversations: all of it works.
    let (_b, mut events) = connect(&bob, Transport::Tcp).await;
    let got = expect_messages(&mut events, 2).await;
    assert_eq!(got[0].body, Body::Custom { data: nested(32) });
    let conv = ConvId::direct(alice.user_id, bob.user_id);
    let page = tern_client::http::history(&bob, conv, Some(0), 10).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    let list = reqwest::Client::new()
        .get(format!("{}/v1/conversations", srv.url()))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);

    // Pushes carry client JSON to every member: the same limit.
    let (status, body) = srv.push_api(PUSH_KEY, "/v1/push/all", serde_json::json!({ "data": nested(40) })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("push data nests 40 levels deep"), "{body}");
}

/// A client id with control characters (NUL cannot even be stored by PostgreSQL) is refused
/// up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_with_control_characters_are_refused() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let mut tcp = RawTcp::open(&srv).await;
    assert!(matches!(tcp.auth_with(&alice.token).await, ServerFrame::AuthOk { .. }));
    tcp.send(&ClientFrame::Send {
        id: 1,
        to: Some(bob.user_id),
        conv_id: None,
        client_msg_id: "a\0b".into(),
        body: Body::Text { text: "x".into() },
    })
    .await;
    match tcp.recv().await {
        Some(ServerFrame::Error { id: Some(1), code: ErrorCode::BadRequest, message }) => {
            assert!(message.contains("control characters"), "{message}")
        }
        other => panic!("expected bad_request, got {other:?}"),
    }
}
