//! WebSocket: text frames carry JSON, binary frames MessagePack. The server answers in the
//! encoding of the client's `auth` frame.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use tern_proto::{CloseReason, Codec};

use super::{FrameIo, ReadError};
use crate::dispatch::{OutFrame, Wire};

/// An upgraded WebSocket.
pub struct WsIo {
    ws: WebSocket,
    limit: usize,
}

impl WsIo {
    /// Wraps an upgraded socket whose limits were set at upgrade time.
    pub fn new(ws: WebSocket, max_frame: usize) -> Self {
        Self { ws, limit: max_frame }
    }
}

impl FrameIo for WsIo {
    async fn recv(&mut self) -> Result<Option<(Codec, Bytes)>, ReadError> {
        loop {
            let Some(msg) = self.ws.recv().await else {
                return Ok(None);
            };
            match msg {
                Ok(Message::Text(t)) => return Ok(Some((Codec::Json, Bytes::from(t)))),
                Ok(Message::Binary(b)) => return Ok(Some((Codec::MsgPack, b))),
                // Pongs are queued by tungstenite itself; both count as activity only through
                // our own frames, so a client must still send `ping` frames.
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => return Ok(None),
                Err(e) => {
                    let text = e.to_string();
                    // tungstenite reports its size limit as a capacity error; it checks the
                    // frame header before reading the payload.
                    if text.contains("too long") || text.contains("Space limit") {
                        return Err(ReadError::TooLarge { announced: 0, limit: self.limit });
                    }
                    return Err(ReadError::Transport(text));
                }
            }
        }
    }

    async fn send(&mut self, codec: Codec, brotli: bool, frames: &[Arc<OutFrame>]) -> std::io::Result<()> {
        for f in frames {
            let msg = match f.ws(codec, brotli) {
                // Our JSON encoder only emits UTF-8.
                Wire::Text(b) => Message::Text(Utf8Bytes::try_from(b).map_err(std::io::Error::other)?),
                Wire::Binary(b) => Message::Binary(b),
            };
            self.ws.feed(msg).await.map_err(std::io::Error::other)?;
        }
        self.ws.flush().await.map_err(std::io::Error::other)
    }

    async fn close(&mut self, reason: CloseReason) {
        let frame = CloseFrame { code: reason.ws_code(), reason: Utf8Bytes::from(reason.as_str()) };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        // Drain until the peer's close so the client sees a clean close handshake.
        let drain = async { while let Some(Ok(_)) = self.ws.recv().await {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    }

    fn kind(&self) -> &'static str {
        "ws"
    }
}
