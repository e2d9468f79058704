//! Test harness: servers on port 0 in a temp dir, users, SDK clients, raw protocol peers.
#![allow(dead_code)]

pub mod pki;

use std::time::Duration;

use bytes::BufMut;
use futures_util::{SinkExt, StreamExt};
use tern_client::{Client, Event, Events, Message, Options, Session, Transport};
use tern_proto::{ClientFrame, Codec, ServerFrame};
use tern_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const PASSWORD: &str = "correct horse battery";
/// The bootstrap push key every test server accepts.
pub const PUSH_KEY: &str = "test-push-key-with-every-scope";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
    /// Serving TLS: the URLs are `https://` and `wss://`.
    pub tls: bool,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.server.http = "127.0.0.1:0".parse().unwrap();
        cfg.server.tcp = "127.0.0.1:0".parse().unwrap();
        cfg.server.data_dir = dir.path().to_path_buf();
        // Tests write thousands of messages; fsync per commit only slows them down.
        cfg.store.synchronous = tern_server::config::Synchronous::Normal;
        cfg.push.bootstrap_key = PUSH_KEY.into();
        tweak(&mut cfg);
        let tls = !cfg.server.tls_cert.is_empty();
        let server = Server::start(cfg).await.unwrap();
        Self { server, dir, tls }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.server.http_addr())
    }

    pub fn ws_url(&self) -> String {
        format!("{}://{}/v1/ws", if self.tls { "wss" } else { "ws" }, self.server.http_addr())
    }

    /// Registers `name` (if needed) and logs in `device`.
    pub async fn login(&self, name: &str, device: &str) -> Session {
        match tern_client::http::register(&self.url(), name, PASSWORD).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(tern_client::ErrorCode::Conflict) => {}
            Err(e) => panic!("register {name}: {e}"),
        }
        tern_client::http::login(&self.url(), name, PASSWORD, device).await.unwrap()
    }

    /// A new anonymous device.
    pub async fn device(&self) -> tern_client::DeviceSession {
        tern_client::http::device(&self.url()).await.unwrap()
    }

    /// Calls the push service with `key`; returns the status and JSON body.
    pub async fn push_api(&self, key: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        // The SDK's client: it trusts the test CA when the server is TLS.
        let resp = tern_client::http::shared_client()
            .post(format!("{}{path}", self.url()))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Pushes with the bootstrap key, expecting 202; returns the msg_id.
    pub async fn push(&self, path: &str, body: serde_json::Value) -> u64 {
        let (status, v) = self.push_api(PUSH_KEY, path, body).await;
        assert_eq!(status, 202, "{v}");
        v["msg_id"].as_u64().unwrap()
    }
}

pub async fn connect_device(device: &tern_client::DeviceSession, transport: Transport) -> (Client, Events) {
    let opts = Options { transport, ..Options::default() };
    Client::connect_device(device.clone(), opts).await.unwrap()
}

impl TestServer {
    /// The online count of a room, over HTTP.
    pub async fn room_online(&self, room: &str) -> u64 {
        let url = format!("{}/v1/rooms/{room}/online", self.url());
        let v: serde_json::Value =
            tern_client::http::shared_client().get(url).send().await.unwrap().json().await.unwrap();
        v["online"].as_u64().unwrap()
    }
}

/// Collects exactly `n` pushes, then checks nothing more arrives for a short while.
pub async fn expect_pushes(events: &mut Events, n: usize) -> Vec<tern_client::Push> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(WAIT, events.next_push()).await {
            Ok(Some(p)) => got.push(p),
            Ok(None) => panic!("event stream ended after {} of {n} pushes", got.len()),
            Err(_) => panic!("timed out after {} of {n} pushes", got.len()),
        }
    }
    if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(300), events.next_push()).await {
        panic!("unexpected extra push: {p:?}");
    }
    got
}

pub async fn connect(session: &Session, transport: Transport) -> (Client, Events) {
    let opts = Options { transport, ..Options::default() };
    Client::connect(session.clone(), opts).await.unwrap()
}

/// Collects exactly `n` messages (failing on timeout), then checks nothing more arrives for a
/// short while.
pub async fn expect_messages(events: &mut Events, n: usize) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(WAIT, events.next_message()).await {
            Ok(Some(m)) => got.push(m),
            Ok(None) => panic!("event stream ended after {} of {n} messages", got.len()),
            Err(_) => panic!("timed out after {} of {n} messages", got.len()),
        }
    }
    expect_quiet(events, Duration::from_millis(300)).await;
    got
}

/// Asserts no message arrives within `d`.
pub async fn expect_quiet(events: &mut Events, d: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(d, events.next_message()).await {
        panic!("unexpected extra message: {m:?}");
    }
}

/// Waits for a specific kind of event.
pub async fn wait_event(events: &mut Events, pred: impl Fn(&Event) -> bool) -> Event {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("timed out waiting for event"),
        }
    }
}

pub fn texts(ms: &[Message]) -> Vec<String> {
    ms.iter()
        .map(|m| match &m.body {
            tern_client::Body::Text { text } => text.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// A raw WebSocket peer speaking JSON, for protocol-level tests.
pub struct RawWs {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl RawWs {
    pub async fn open(server: &TestServer) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
        Self { ws }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(WsMessage::Text(text.into().into())).await.unwrap();
    }

    pub async fn send_frame(&mut self, frame: &ClientFrame) {
        self.send_text(String::from_utf8(Codec::Json.encode(frame)).unwrap()).await;
    }

    pub async fn auth(&mut self, session: &Session) -> ServerFrame {
        self.auth_with(&session.token).await
    }

    async fn recv_frame(&mut self) -> Option<ServerFrame> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame");
            match msg {
                None | Some(Err(_)) => return None,
                Some(Ok(WsMessage::Text(t))) => {
                    return Some(Codec::Json.decode(t.as_bytes()).unwrap());
                }
                Some(Ok(WsMessage::Binary(b))) => return Some(Codec::MsgPack.decode(&b).unwrap()),
                Some(Ok(WsMessage::Close(_))) => return None,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A raw TCP peer speaking length-prefixed MessagePack.
pub struct RawTcp {
    pub stream: TcpStream,
    buf: bytes::BytesMut,
}

impl RawTcp {
    pub async fn open(server: &TestServer) -> Self {
        let stream = TcpStream::connect(server.server.tcp_addr()).await.unwrap();
        Self { stream, buf: bytes::BytesMut::new() }
    }

    pub async fn send_frame(&mut self, frame: &ClientFrame) {
        let bytes = Codec::MsgPack.encode_prefixed(frame);
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// The next frame's raw payload (possibly compressed).
    pub async fn recv_payload(&mut self) -> bytes::Bytes {
        let decoder = tern_proto::FrameDecoder::new(1 << 24);
        loop {
            if let Some(p) = decoder.decode(&mut self.buf).unwrap() {
                return p;
            }
            let n =
                tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf)).await.expect("timed out").unwrap_or(0);
            assert!(n > 0, "socket closed");
        }
    }

    pub async fn send_raw_payload(&mut self, payload: &[u8]) {
        let mut b = bytes::BytesMut::new();
        b.put_u32(payload.len() as u32);
        b.put_slice(payload);
        self.stream.write_all(&b).await.unwrap();
    }

    async fn recv_frame(&mut self) -> Option<ServerFrame> {
        let decoder = tern_proto::FrameDecoder::new(1 << 24);
        loop {
            if let Some(p) = decoder.decode(&mut self.buf).unwrap() {
                return Some(Codec::MsgPack.decode(&p).unwrap());
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for a frame")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
}

/// What both raw peers can do.
pub trait RawPeer {
    /// Next server frame; `None` once the socket closed.
    fn recv(&mut self) -> impl Future<Output = Option<ServerFrame>>;

    /// Sends a frame in the peer's encoding.
    fn send(&mut self, frame: &ClientFrame) -> impl Future<Output = ()>;

    /// Sends `auth` with `token` (no resume, no compression) and returns the answer.
    async fn auth_with(&mut self, token: &str) -> ServerFrame {
        let auth = ClientFrame::Auth { token: token.into(), proto: None, resume: None, accept_compression: vec![] };
        self.send(&auth).await;
        self.recv().await.expect("auth answer")
    }

    /// Reads until the `close` frame and returns its reason, checking the socket then ends.
    async fn expect_close(&mut self) -> (tern_proto::CloseReason, String) {
        let (reason, message, _) = self.expect_close_with_retry().await;
        (reason, message)
    }

    /// [`RawPeer::expect_close`], with the frame's `retry_after_ms` too.
    async fn expect_close_with_retry(&mut self) -> (tern_proto::CloseReason, String, Option<u64>) {
        loop {
            match self.recv().await {
                Some(ServerFrame::Close { reason, message, retry_after_ms }) => {
                    assert!(self.recv().await.is_none(), "socket ends after close");
                    return (reason, message, retry_after_ms);
                }
                Some(_) => {}
                None => panic!("socket closed without a close frame"),
            }
        }
    }
}

impl RawPeer for RawWs {
    fn recv(&mut self) -> impl Future<Output = Option<ServerFrame>> {
        self.recv_frame()
    }

    fn send(&mut self, frame: &ClientFrame) -> impl Future<Output = ()> {
        self.send_frame(frame)
    }
}

impl RawPeer for RawTcp {
    fn recv(&mut self) -> impl Future<Output = Option<ServerFrame>> {
        self.recv_frame()
    }

    fn send(&mut self, frame: &ClientFrame) -> impl Future<Output = ()> {
        self.send_frame(frame)
    }
}

/// The notice of a message, if it is one.
pub fn notice_of(m: &Message) -> Option<&tern_proto::Notice> {
    match &m.body {
        tern_client::Body::Notice { notice } => Some(notice),
        _ => None,
    }
}

/// Waits for the next message that is a notice, skipping chat messages and other events.
pub async fn next_notice(events: &mut Events) -> tern_proto::Notice {
    loop {
        match tokio::time::timeout(WAIT, events.next_message()).await {
            Ok(Some(m)) => {
                if let Some(n) = notice_of(&m) {
                    return n.clone();
                }
            }
            Ok(None) => panic!("event stream ended while waiting for a notice"),
            Err(_) => panic!("timed out waiting for a notice"),
        }
    }
}

/// Collects every message for `d` (no failure when none arrive).
pub async fn drain_messages(events: &mut Events, d: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, events.next_message()).await {
        got.push(m);
    }
    got
}

/// The error code of a failed SDK call.
pub fn code<T: std::fmt::Debug>(r: Result<T, tern_client::Error>) -> tern_client::ErrorCode {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("not a server error: {e}")),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// A free loopback port (for servers run as processes, which must be told their port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Spawns a `tern serve` command (killed when dropped) and waits for its "tern listening" line.
pub async fn spawn_serve(cmd: &mut tokio::process::Command) -> tokio::process::Child {
    spawn_serve_logging(cmd, "warn", std::process::Stdio::inherit()).await
}

/// [`spawn_serve`] with a log level and where its logs (stderr) go.
pub async fn spawn_serve_logging(
    cmd: &mut tokio::process::Command,
    level: &str,
    logs: std::process::Stdio,
) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = cmd
        .env("RUST_LOG", level)
        .stdout(std::process::Stdio::piped())
        .stderr(logs)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(line.starts_with("tern listening"), "{line}");
    child
}

/// ACKs of 1:1 sends as they arrived: `(client_msg_id, ack)`.
pub type Acked = std::sync::Arc<std::sync::Mutex<Vec<(String, tern_client::Sent)>>>;

/// Sends `total` texts to `to`, keyed `k0`, `k1`, …, one every `spacing` with at most `window`
/// unacknowledged, recording each ACK in `acked`; the task ends when every send is ACKed.
pub fn spawn_windowed_sends(
    client: Client,
    to: tern_client::UserId,
    total: usize,
    window: usize,
    spacing: Duration,
    acked: Acked,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let window = std::sync::Arc::new(tokio::sync::Semaphore::new(window));
        let mut tasks = Vec::new();
        for i in 0..total {
            let permit = std::sync::Arc::clone(&window).acquire_owned().await.unwrap();
            let (client, acked) = (client.clone(), std::sync::Arc::clone(&acked));
            tasks.push(tokio::spawn(async move {
                let key = format!("k{i}");
                let sent =
                    client.send(to, tern_client::Body::Text { text: format!("m{i}") }, key.clone()).await.unwrap();
                acked.lock().unwrap().push((key, sent));
                drop(permit);
            }));
            tokio::time::sleep(spacing).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
}

/// An answer of the REST API as the JSON it travels as, for assertions on its fields.
pub fn as_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}
