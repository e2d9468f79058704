//! One transport connection: frames in, frames out.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tern_proto::codec::compression;
use tern_proto::{ClientFrame, Codec, FrameDecoder, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Endpoints, Error, Transport};

/// Frames the server may send; generous so a big history page always fits.
const MAX_SERVER_FRAME: usize = 64 * 1024 * 1024;

pub(crate) enum Conn {
    Ws { ws: Box<WebSocketStream<MaybeTlsStream<TcpStream>>>, codec: Codec },
    Tcp { stream: TcpStream, rbuf: BytesMut, wbuf: BytesMut, decoder: FrameDecoder },
}

fn transport(e: impl std::fmt::Display) -> Error {
    Error::Transport(e.to_string())
}

impl Conn {
    pub(crate) async fn open(endpoints: &Endpoints, transport_kind: Transport) -> Result<Self, Error> {
        match transport_kind {
            Transport::WsJson | Transport::WsBinary => {
                let (ws, _) = tokio_tungstenite::connect_async(endpoints.ws.as_str())
                    .await
                    .map_err(|e| Error::Transport(format!("websocket connect to {} failed: {e}", endpoints.ws)))?;
                if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                    let _ = s.set_nodelay(true);
                }
                let codec = if transport_kind == Transport::WsJson { Codec::Json } else { Codec::MsgPack };
                Ok(Conn::Ws { ws: Box::new(ws), codec })
            }
            Transport::Tcp => {
                let stream = TcpStream::connect(endpoints.tcp.as_str())
                    .await
                    .map_err(|e| Error::Transport(format!("tcp connect to {} failed: {e}", endpoints.tcp)))?;
                let _ = stream.set_nodelay(true);
                Ok(Conn::Tcp {
                    stream,
                    rbuf: BytesMut::with_capacity(8192),
                    wbuf: BytesMut::new(),
                    decoder: FrameDecoder::new(MAX_SERVER_FRAME),
                })
            }
        }
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
                stream.write_all(wbuf).await.map_err(transport)
            }
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
        }
    }
}
