//! One transport connection: frames in, frames out.

use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tern_proto::{ClientFrame, Codec, FrameDecoder, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Error, Session, Transport};

/// Frames the server may send; generous so a big history page always fits.
const MAX_SERVER_FRAME: usize = 64 * 1024 * 1024;

pub(crate) enum Conn {
    Ws {
        ws: Box<WebSocketStream<MaybeTlsStream<TcpStream>>>,
        codec: Codec,
    },
    Tcp {
        stream: TcpStream,
        rbuf: BytesMut,
        wbuf: BytesMut,
        decoder: FrameDecoder,
    },
}

fn transport(e: impl std::fmt::Display) -> Error {
    Error::Transport(e.to_string())
}

impl Conn {
    pub(crate) async fn open(session: &Session, transport_kind: Transport) -> Result<Self, Error> {
        match transport_kind {
            Transport::WsJson | Transport::WsBinary => {
                let (ws, _) = tokio_tungstenite::connect_async(session.endpoints.ws.as_str())
                    .await
                    .map_err(|e| {
                        Error::Transport(format!(
                            "websocket connect to {} failed: {e}",
                            session.endpoints.ws
                        ))
                    })?;
                if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                    let _ = s.set_nodelay(true);
                }
                let codec = if transport_kind == Transport::WsJson {
                    Codec::Json
                } else {
                    Codec::MsgPack
                };
                Ok(Conn::Ws {
                    ws: Box::new(ws),
                    codec,
                })
            }
            Transport::Tcp => {
                let stream = TcpStream::connect(session.endpoints.tcp.as_str())
                    .await
                    .map_err(|e| {
                        Error::Transport(format!(
                            "tcp connect to {} failed: {e}",
                            session.endpoints.tcp
                        ))
                    })?;
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
                        Codec::Json => {
                            WsMessage::Text(String::from_utf8(bytes).map_err(transport)?.into())
                        }
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

    /// The next frame; `Ok(None)` when the server closed. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Result<Option<ServerFrame>, Error> {
        match self {
            Conn::Ws { ws, .. } => loop {
                let Some(msg) = ws.next().await else {
                    return Ok(None);
                };
                let decoded = match msg.map_err(transport)? {
                    WsMessage::Text(t) => Codec::Json.decode(t.as_bytes()),
                    WsMessage::Binary(b) => Codec::MsgPack.decode(&b),
                    WsMessage::Close(_) => return Ok(None),
                    _ => continue,
                };
                return decoded
                    .map(Some)
                    .map_err(|e| Error::Transport(format!("undecodable server frame: {e}")));
            },
            Conn::Tcp {
                stream,
                rbuf,
                decoder,
                ..
            } => loop {
                if let Some(payload) = decoder.decode(rbuf).map_err(transport)? {
                    match Codec::MsgPack.decode(&payload) {
                        Ok(frame) => return Ok(Some(frame)),
                        Err(e) => {
                            tracing::debug!(error = %e, "skipping undecodable server frame");
                            continue;
                        }
                    }
                }
                if rbuf.capacity() - rbuf.len() < 1024 {
                    rbuf.reserve(8192);
                }
                if stream.read_buf(rbuf).await.map_err(transport)? == 0 {
                    return Ok(None);
                }
            },
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
