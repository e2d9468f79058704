//! WebSocket: text frames carry JSON, binary frames MessagePack. The server answers in the
//! encoding of the client's `auth` frame.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, StreamExt};
use tern_proto::{CloseReason, Codec};

use super::{FrameIo, ReadError};
use crate::dispatch::{OutFrame, Wire};

/// An upgraded WebSocket.
pub struct WsIo {
    ws: WebSocket,
    /// Queued messages not yet handed to the socket.
    pending: VecDeque<Message>,
    limit: usize,
}

impl WsIo {
    /// Wraps an upgraded socket whose limits were set at upgrade time.
    pub fn new(ws: WebSocket, max_frame: usize) -> Self {
        Self { ws, pending: VecDeque::new(), limit: max_frame }
    }
}

impl FrameIo for WsIo {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(Codec, Bytes)>, ReadError>> {
        loop {
            let Some(msg) = ready!(self.ws.poll_next_unpin(cx)) else {
                return Poll::Ready(Ok(None));
            };
            let frame = match msg {
                Ok(Message::Text(t)) => Ok(Some((Codec::Json, Bytes::from(t)))),
                Ok(Message::Binary(b)) => Ok(Some((Codec::MsgPack, b))),
                // Pongs are queued by tungstenite itself; both count as activity only through
                // our own frames, so a client must still send `ping` frames.
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => Ok(None),
                Err(e) => {
                    let text = e.to_string();
                    // tungstenite reports its size limit as a capacity error; it checks the
                    // frame header before reading the payload.
                    if text.contains("too long") || text.contains("Space limit") {
                        Err(ReadError::TooLarge { announced: 0, limit: self.limit })
                    } else {
                        Err(ReadError::Transport(text))
                    }
                }
            };
            return Poll::Ready(frame);
        }
    }

    fn queue(&mut self, codec: Codec, brotli: bool, frames: &[Arc<OutFrame>]) -> std::io::Result<()> {
        for f in frames {
            self.pending.push_back(match f.ws(codec, brotli) {
                // Our JSON encoder only emits UTF-8.
                Wire::Text(b) => Message::Text(Utf8Bytes::try_from(b).map_err(std::io::Error::other)?),
                Wire::Binary(b) => Message::Binary(b),
            });
        }
        Ok(())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            ready!(self.ws.poll_ready_unpin(cx)).map_err(std::io::Error::other)?;
            if let Some(msg) = self.pending.pop_front() {
                std::pin::Pin::new(&mut self.ws).start_send(msg).map_err(std::io::Error::other)?;
            }
        }
        if self.pending.capacity() > 16 {
            self.pending = VecDeque::new();
        }
        self.ws.poll_flush_unpin(cx).map_err(std::io::Error::other)
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
