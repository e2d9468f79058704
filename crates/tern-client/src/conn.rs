//! One transport connection: frames in, frames out.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tern_proto::codec::compression;
use tern_proto::{ClientFrame, Codec, FrameDecoder, ServerFrame};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::httpconn::{HttpConn, Mode};
use crate::{Endpoints, Error, Transport};

/// How long the preferred transport has to connect before [`Transport::Auto`] also tries the
/// other (happy eyeballs, RFC 8305's spirit).
const HEAD_START: std::time::Duration = std::time::Duration::from_millis(250);

/// Frames the server may send; generous so a big history page always fits.
const MAX_SERVER_FRAME: usize = 64 * 1024 * 1024;

pub(crate) enum Conn {
    Ws { ws: Box<WebSocketStream<Stream>>, codec: Codec },
    Tcp { stream: Stream, rbuf: BytesMut, wbuf: BytesMut, decoder: FrameDecoder },
    Http(Box<HttpConn>),
}

/// A connection's bytes: plain TCP, TLS over it, or a QUIC stream (the certificate verified,
/// `tls.rs`).
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Quic(Box<QuicStream>),
}

/// A QUIC connection's one stream, with the connection and endpoint it needs alive.
pub(crate) struct QuicStream {
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    pub(crate) conn: quinn::Connection,
    /// Drives the connection; kept as long as it.
    pub(crate) _endpoint: quinn::Endpoint,
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"closed");
    }
}

impl Stream {
    /// Connects to `host:port`, with TLS if asked (its ALPN `alpn`).
    async fn open(host: &str, port: u16, tls: bool, alpn: &[u8]) -> Result<Self, Error> {
        let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|e| Error::Transport(format!("connect to {host}:{port} failed: {e}")))?;
        let _ = tcp.set_nodelay(true);
        Ok(match tls {
            false => Stream::Plain(tcp),
            true => Stream::Tls(Box::new(crate::tls::connect(tcp, host, alpn).await?)),
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Quic(s) => Pin::new(&mut s.recv).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Quic(s) => Pin::new(&mut s.send).poll_write(cx, buf).map_err(io::Error::from),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Quic(s) => Pin::new(&mut s.send).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Quic(s) => Pin::new(&mut s.send).poll_shutdown(cx),
        }
    }
}

/// `host:port` split (an IPv6 literal keeps its brackets in the host).
fn host_port(addr: &str) -> Result<(&str, u16), Error> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| Error::Transport(format!("{addr:?} has no port")))?;
    let port = port.parse().map_err(|_| Error::Transport(format!("{addr:?} has no valid port")))?;
    Ok((host, port))
}

fn transport(e: impl std::fmt::Display) -> Error {
    Error::Transport(e.to_string())
}

impl Conn {
    pub(crate) async fn open(endpoints: &Endpoints, transport_kind: Transport) -> Result<Self, Error> {
        match transport_kind {
            Transport::WsJson | Transport::WsBinary => {
                let url = endpoints.ws.as_str();
                let uri: Uri = url.parse().map_err(|e| Error::Transport(format!("bad WebSocket URL {url:?}: {e}")))?;
                let tls = match uri.scheme_str() {
                    Some("wss") => true,
                    Some("ws") => false,
                    _ => return Err(Error::Transport(format!("{url:?} is not a ws:// or wss:// URL"))),
                };
                let host = uri.host().ok_or_else(|| Error::Transport(format!("{url:?} names no host")))?;
                let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
                let stream = Stream::open(host, port, tls, b"http/1.1").await?;
                let (ws, _) = tokio_tungstenite::client_async(url, stream)
                    .await
                    .map_err(|e| Error::Transport(format!("websocket connect to {url} failed: {e}")))?;
                let codec = if transport_kind == Transport::WsJson { Codec::Json } else { Codec::MsgPack };
                Ok(Conn::Ws { ws: Box::new(ws), codec })
            }
            // Resolved by the driver into the transports it tries (`open_first`).
            Transport::Auto => Err(Error::Transport("Transport::Auto names no single transport to open".into())),
            // The session opens with the first frame sent (`auth`).
            Transport::Sse => Ok(Conn::Http(Box::new(HttpConn::new(&endpoints.sse, Mode::Sse)?))),
            Transport::LongPoll => Ok(Conn::Http(Box::new(HttpConn::new(&endpoints.longpoll, Mode::LongPoll)?))),
            Transport::Tcp | Transport::Quic => {
                let stream = if transport_kind == Transport::Quic {
                    if endpoints.quic.is_empty() {
                        return Err(Error::Transport("the server offers no QUIC endpoint".into()));
                    }
                    let (host, port) = host_port(&endpoints.quic)?;
                    Stream::Quic(Box::new(crate::tls::quic(host, port).await?))
                } else {
                    let (host, port) = host_port(&endpoints.tcp)?;
                    Stream::open(host, port, endpoints.tls, crate::tls::ALPN_TERN).await?
                };
                Ok(Conn::Tcp {
                    stream,
                    rbuf: BytesMut::with_capacity(8192),
                    wbuf: BytesMut::new(),
                    decoder: FrameDecoder::new(MAX_SERVER_FRAME),
                })
            }
        }
    }

    /// Opens the transports of `order`, each started [`HEAD_START`] after the one before it
    /// (or at once when that one failed); the first to connect wins and the other attempts are
    /// dropped. All failing is the error of the last.
    ///
    /// HTTP transports connect only when their first frame is sent, so they cannot race: one of
    /// them is tried, after the others, by opening its session with `auth` — the caller does
    /// that with what this returns.
    pub(crate) async fn open_first(endpoints: &Endpoints, order: &[Transport]) -> Result<(Self, Transport), Error> {
        type Attempt<'a> =
            std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Conn, Transport), Error>> + Send + 'a>>;
        let (racing, http): (Vec<Transport>, Vec<Transport>) =
            order.iter().partition(|t| !matches!(t, Transport::Sse | Transport::LongPoll));
        let mut errors = Vec::new();
        if !racing.is_empty() {
            let (failed_tx, failed_rx) = tokio::sync::watch::channel(0usize);
            let failed_rx = &failed_rx;
            let failed_tx = &failed_tx;
            let attempts: Vec<Attempt<'_>> = racing
                .iter()
                .enumerate()
                .map(|(i, &t)| -> Attempt<'_> {
                    Box::pin(async move {
                        // Start after the previous attempts' head starts, or once they failed.
                        let mut failed = failed_rx.clone();
                        let _ = tokio::time::timeout(HEAD_START * i as u32, failed.wait_for(|n| *n >= i)).await;
                        let opened = Self::open(endpoints, t).await.map(|c| (c, t));
                        if opened.is_err() {
                            failed_tx.send_modify(|n| *n += 1);
                        }
                        opened.map_err(|e| Error::Transport(format!("{t:?}: {e}")))
                    })
                })
                .collect();
            match futures_util::future::select_ok(attempts).await {
                Ok((won, _)) => return Ok(won),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if let Some(&t) = http.first() {
            return Self::open(endpoints, t).await.map(|c| (c, t));
        }
        Err(Error::Transport(format!("no transport connected: {}", errors.join("; "))))
    }

    /// Sends frames, flushing once. Request ids are already set.
    pub(crate) async fn send(&mut self, frames: &[ClientFrame]) -> Result<(), Error> {
        match self {
            Conn::Ws { ws, codec } => {
                for f in frames {
                    let bytes = codec.encode(f);
                    let msg = match codec {
                        Codec::Json => WsMessage::Text(String::from_utf8(bytes).map_err(transport)?.into()),
                        Codec::MsgPack => WsMessage::Binary(bytes.into()),
                    };
                    ws.feed(msg).await.map_err(transport)?;
                }
                ws.flush().await.map_err(transport)
            }
            Conn::Tcp { stream, wbuf, .. } => {
                wbuf.clear();
                for f in frames {
                    let payload = Codec::MsgPack.encode(f);
                    wbuf.put_u32(payload.len() as u32);
                    wbuf.put_slice(&payload);
                }
                stream.write_all(wbuf).await.map_err(transport)?;
                // TLS may hold the end of the batch until flushed (a no-op on plain TCP).
                stream.flush().await.map_err(transport)
            }
            Conn::Http(http) => http.send(frames).await,
        }
    }

    /// The next frame; `Ok(None)` when the server closed. Cancel-safe. Compressed frames are
    /// opened; frames this client cannot decode (from a newer server) are skipped.
    pub(crate) async fn recv(&mut self) -> Result<Option<ServerFrame>, Error> {
        loop {
            let (codec, payload) = match self {
                Conn::Ws { ws, codec } => {
                    let Some(msg) = ws.next().await else { return Ok(None) };
                    match msg.map_err(transport)? {
                        WsMessage::Text(t) => (Codec::Json, Bytes::from(t)),
                        // A binary message is MessagePack, or a compressed frame in our codec.
                        WsMessage::Binary(b) if b.first() == Some(&compression::COMPRESSED) => (*codec, b),
                        WsMessage::Binary(b) => (Codec::MsgPack, b),
                        WsMessage::Close(_) => return Ok(None),
                        _ => continue,
                    }
                }
                Conn::Http(http) => return http.recv().await,
                Conn::Tcp { stream, rbuf, decoder, .. } => match decoder.decode(rbuf).map_err(transport)? {
                    Some(payload) => (Codec::MsgPack, payload),
                    None => {
                        if rbuf.capacity() - rbuf.len() < 1024 {
                            rbuf.reserve(8192);
                        }
                        if stream.read_buf(rbuf).await.map_err(transport)? == 0 {
                            return Ok(None);
                        }
                        continue;
                    }
                },
            };
            let opened = compression::open(&payload, MAX_SERVER_FRAME).map_err(transport)?;
            match codec.decode(&opened) {
                Ok(frame) => return Ok(Some(frame)),
                Err(e) => tracing::debug!(error = %e, "skipping undecodable server frame"),
            }
        }
    }

    pub(crate) async fn close(&mut self) {
        match self {
            Conn::Ws { ws, .. } => {
                let _ = WebSocketStream::close(ws, None).await;
                // Read until the server's close so the handshake completes.
                while let Some(Ok(_)) = ws.next().await {}
            }
            Conn::Tcp { stream, .. } => {
                let _ = stream.shutdown().await;
            }
            Conn::Http(http) => http.close().await,
        }
    }
}
