//! WebSocket: text frames carry JSON, binary frames MessagePack (or a compressed frame). The
//! server answers in the encoding of the client's `auth` frame.
//!
//! The HTTP API answers the upgrade request ([`handshake`]); the upgraded socket is then framed
//! here with tern's own framing (`tern_proto::ws`) on the same socket buffers as raw TCP, so an
//! idle WebSocket holds what an idle TCP connection holds.

use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::http::HeaderMap;
use axum::http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use bytes::{Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tern_proto::ws::{OpCode, WsDecoder, WsError, WsEvent, close_payload, encode_frame};
use tern_proto::{CloseReason, Codec};

use super::socket::{Framing, Socket};
use super::stream::Stream;
use super::{FrameIo, ReadError};
use crate::wire::OutFrame;

/// Checks an upgrade request (RFC 6455 4.2.1); the `Sec-WebSocket-Accept` value to answer with,
/// or why the request is not a WebSocket handshake tern accepts.
pub fn handshake(version: axum::http::Version, headers: &HeaderMap) -> Result<String, &'static str> {
    if version < axum::http::Version::HTTP_11 {
        return Err("a WebSocket handshake needs HTTP/1.1 or later");
    }
    if !headers.contains_key(axum::http::header::HOST) {
        return Err("a WebSocket handshake needs a Host header");
    }
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(UPGRADE, "websocket") {
        return Err("not a WebSocket upgrade: the Upgrade header must name websocket");
    }
    if !has_token(CONNECTION, "upgrade") {
        return Err("not a WebSocket upgrade: the Connection header must include upgrade");
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err("unsupported WebSocket version: Sec-WebSocket-Version must be 13");
    }
    let key = headers.get(SEC_WEBSOCKET_KEY).ok_or("Sec-WebSocket-Key is missing")?;
    if !matches!(data_encoding::BASE64.decode(key.as_bytes()), Ok(k) if k.len() == 16) {
        return Err("Sec-WebSocket-Key must be 16 bytes in base64");
    }
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    Ok(data_encoding::BASE64.encode(&sha.finalize()))
}

/// Unwritten bytes past which a ping is not answered.
const PONG_BACKLOG: usize = 16 * 1024;

/// An upgraded WebSocket.
pub struct WsIo {
    socket: Socket<ServerFrames>,
    decoder: WsDecoder,
    /// Our close frame is queued (ours, or the answer to the client's): nothing may follow it.
    closing: bool,
}

impl WsIo {
    /// Frames a socket whose handshake is done; `read` holds bytes that came after the request.
    /// Messages above `max_frame` bytes are refused.
    pub fn new(stream: Stream, read: BytesMut, max_frame: usize) -> Self {
        Self { socket: Socket::new(stream, read, true), decoder: WsDecoder::new(max_frame), closing: false }
    }

    /// Takes the socket back from hyper once the upgrade response is sent.
    pub fn upgraded(upgraded: hyper::upgrade::Upgraded, max_frame: usize) -> Result<Self, String> {
        let parts = upgraded
            .downcast::<hyper_util::rt::TokioIo<Stream>>()
            .map_err(|_| "the upgraded connection is not one of the server's streams".to_owned())?;
        Ok(Self::new(parts.io.into_inner(), BytesMut::from(&parts.read_buf[..]), max_frame))
    }

    /// Queues a control frame and writes what it can at once: a pong or the closing handshake's
    /// answer must not wait for the next outbound frame. Whatever is left goes with the next
    /// write; a failure shows on the next read.
    fn answer(&mut self, cx: &mut Context<'_>, frame: Bytes) {
        self.socket.queue(std::iter::once(frame));
        let _ = self.socket.poll_send(cx);
    }

    /// Writes what is queued and, unless the client began the closing handshake, waits for its
    /// close frame, reading past anything else it still sends.
    async fn finish_handshake(&mut self, wait_for_client: bool) {
        let _ = std::future::poll_fn(|cx| self.socket.poll_send(cx)).await;
        if !wait_for_client {
            return;
        }
        loop {
            match self.decoder.decode(&mut self.socket.rbuf) {
                Ok(Some(WsEvent::Close(_))) | Err(_) => return,
                Ok(Some(_)) => continue,
                Ok(None) => {}
            }
            if !matches!(std::future::poll_fn(|cx| self.socket.poll_fill(cx)).await, Ok(n) if n > 0) {
                return;
            }
        }
    }
}

/// Unmasked server frames.
pub struct ServerFrames;

impl Framing for ServerFrames {
    fn frame_len(head: &[u8]) -> Option<usize> {
        tern_proto::ws::server_frame_len(head)
    }
}

impl WsIo {
    /// The closing handshake from our side: our close frame, then (when `await_reply`) the
    /// client's for up to 2 s, then the end of the stream. Whatever the client still sends is
    /// read and dropped before the socket closes — closing with unread input makes the kernel
    /// answer with a reset that can destroy the close frame (and a tern `close` before it)
    /// before the client reads them.
    async fn close_with(&mut self, status: u16, reason: &str, await_reply: bool) {
        let client_began = self.closing;
        if !self.closing {
            self.closing = true;
            self.socket.queue(std::iter::once(encode_frame(OpCode::Close, &close_payload(status, reason))));
        }
        let wait = await_reply && !client_began;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.finish_handshake(wait)).await;
        self.socket.shutdown().await;
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), self.socket.drain(256 * 1024)).await;
    }
}

impl FrameIo for WsIo {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(Codec, Bytes)>, ReadError>> {
        loop {
            match self.decoder.decode(&mut self.socket.rbuf) {
                Ok(Some(WsEvent::Message(codec, payload))) => return Poll::Ready(Ok(Some((codec, payload)))),
                Ok(Some(WsEvent::Ping(payload))) => {
                    // A client that pings without reading would grow the unwritten bytes by a
                    // pong per ping: past the bound its pings go unanswered (RFC 6455 5.5.3 lets
                    // an endpoint answer only the latest), and the slow-consumer rule deals with
                    // the client.
                    if !self.closing && self.socket.unwritten() < PONG_BACKLOG {
                        self.answer(cx, encode_frame(OpCode::Pong, &payload));
                    }
                    continue;
                }
                Ok(Some(WsEvent::Close(code))) => {
                    // The closing handshake: echo the client's code; the connection then ends.
                    if !self.closing {
                        self.closing = true;
                        let payload = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                        self.answer(cx, encode_frame(OpCode::Close, &payload));
                    }
                    return Poll::Ready(Ok(None));
                }
                Ok(None) => {}
                Err(WsError::TooLarge { announced, limit }) => {
                    let announced = usize::try_from(announced).unwrap_or(usize::MAX);
                    return Poll::Ready(Err(ReadError::TooLarge { announced, limit }));
                }
                Err(e) => return Poll::Ready(Err(ReadError::Violation { status: e.status(), message: e.to_string() })),
            }
            if ready!(self.socket.poll_fill(cx))? == 0 {
                let left = self.socket.rbuf.len();
                let clean = left == 0 && !self.decoder.in_message();
                return Poll::Ready(if clean { Ok(None) } else { Err(ReadError::Truncated(left)) });
            }
        }
    }

    fn queue(&mut self, codec: Codec, brotli: bool, frames: &[Arc<OutFrame>]) -> std::io::Result<()> {
        self.socket.queue(frames.iter().map(|f| f.ws_frame(codec, brotli)));
        Ok(())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.socket.poll_send(cx)
    }

    fn discard_unstarted(&mut self) {
        self.socket.discard_unstarted();
    }

    async fn close(&mut self, reason: CloseReason) {
        self.close_with(reason.ws_code(), reason.as_str(), true).await;
    }

    async fn fail(&mut self, status: u16) {
        let why = match status {
            1007 => "invalid UTF-8",
            1009 => "message too big",
            _ => "protocol error",
        };
        // Failing the connection (RFC 6455 7.1.7): our close frame, then the end of the stream
        // at once — no waiting for a reply from a peer that broke the protocol (the bad frame
        // may itself have been its close).
        self.close_with(status, why, false).await;
    }

    fn kind(&self) -> &'static str {
        self.socket.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request(key: &str, version: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, "WebSocket".parse().unwrap());
        h.insert(CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(SEC_WEBSOCKET_VERSION, version.parse().unwrap());
        h.insert(SEC_WEBSOCKET_KEY, key.parse().unwrap());
        h.insert(axum::http::header::HOST, "tern.example".parse().unwrap());
        h
    }

    #[tokio::test]
    async fn a_client_that_pings_without_reading_cannot_grow_the_server_s_backlog() {
        use tokio::io::AsyncWriteExt;
        // Small kernel buffers, so that the pongs back up in the server quickly.
        let (server, mut client) = super::super::socket::tests::small_buffered_pair().await;
        let mut io = WsIo::new(super::super::stream::Stream::Plain(server), BytesMut::new(), 1024);
        // 20,000 masked pings with 100 bytes each, then the end of the stream; the client never
        // reads.
        let mut ping = vec![0x89, 0x80 | 100, 1, 2, 3, 4];
        ping.extend(std::iter::repeat_n(0u8, 100));
        let flood: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 20_000).collect();
        let writer = tokio::spawn(async move {
            client.write_all(&flood).await.unwrap();
            client.shutdown().await.unwrap();
            client // kept open for reading: closing it with pongs unread would reset the stream
        });
        let end = tokio::time::timeout(std::time::Duration::from_secs(20), io.recv()).await;
        assert_eq!(end.expect("the server did not read the whole flood"), Ok(None), "pings are no message");
        // Unbounded, 20,000 pongs would be ~2 MB, minus the little the kernel took.
        assert!(
            io.socket.unwritten() < 32 * 1024,
            "{} bytes of pongs queued for a client that does not read",
            io.socket.unwritten()
        );
        drop(writer.await.unwrap());
    }

    #[test]
    fn the_handshake_answers_the_rfc_example_and_refuses_what_is_not_an_upgrade() {
        // RFC 6455 1.3's example key and answer.
        use axum::http::Version;
        let handshake = |h: &HeaderMap| super::handshake(Version::HTTP_11, h);
        let h = upgrade_request("dGhlIHNhbXBsZSBub25jZQ==", "13");
        assert_eq!(handshake(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(handshake(&upgrade_request("dGhlIHNhbXBsZSBub25jZQ==", "8")).unwrap_err().contains("version"));
        assert!(handshake(&upgrade_request("c2hvcnQ=", "13")).unwrap_err().contains("16 bytes"));
        let mut no_upgrade = h.clone();
        no_upgrade.remove(UPGRADE);
        assert!(handshake(&no_upgrade).unwrap_err().contains("Upgrade header"));
        let mut no_host = h.clone();
        no_host.remove(axum::http::header::HOST);
        assert!(handshake(&no_host).unwrap_err().contains("Host"));
        assert!(super::handshake(Version::HTTP_10, &h).unwrap_err().contains("HTTP/1.1"));
        let mut no_connection = h;
        no_connection.insert(CONNECTION, "keep-alive".parse().unwrap());
        assert!(handshake(&no_connection).unwrap_err().contains("Connection header"));
    }
}
