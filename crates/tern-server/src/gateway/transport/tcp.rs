//! Raw TCP: each frame is a 4-byte big-endian length and a MessagePack payload.

use std::sync::Arc;
use std::task::{Context, Poll, ready};

use super::socket::{Framing, Socket};
use super::stream::Stream;
use super::{FrameIo, ReadError};
use crate::wire::OutFrame;
use bytes::{Bytes, BytesMut};
use tern_proto::{CloseReason, Codec, FrameDecoder};

/// A TCP connection's framing state.
pub struct TcpIo {
    socket: Socket<Prefixed>,
    decoder: FrameDecoder,
}

/// 4-byte length-prefixed frames.
pub struct Prefixed;

impl Framing for Prefixed {
    fn frame_len(head: &[u8]) -> Option<usize> {
        tern_proto::codec::prefixed_frame_len(head)
    }
}

impl TcpIo {
    /// Wraps an accepted stream; frames above `max_frame` bytes are refused.
    pub fn new(stream: Stream, max_frame: usize) -> Self {
        Self { socket: Socket::new(stream, BytesMut::new(), false), decoder: FrameDecoder::new(max_frame) }
    }
}

impl FrameIo for TcpIo {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(Codec, Bytes)>, ReadError>> {
        loop {
            match self.decoder.decode(&mut self.socket.rbuf) {
                Ok(Some(payload)) => return Poll::Ready(Ok(Some((Codec::MsgPack, payload)))),
                Ok(None) => {}
                Err(e) => {
                    return Poll::Ready(Err(ReadError::TooLarge {
                        announced: e.announced,
                        limit: self.decoder.max_frame(),
                    }));
                }
            }
            if ready!(self.socket.poll_fill(cx))? == 0 {
                let left = self.socket.rbuf.len();
                return Poll::Ready(if left == 0 { Ok(None) } else { Err(ReadError::Truncated(left)) });
            }
        }
    }

    fn queue(&mut self, _codec: Codec, brotli: bool, frames: &[Arc<OutFrame>]) -> std::io::Result<()> {
        // Raw TCP always speaks MessagePack.
        self.socket.queue(frames.iter().map(|f| f.stream(brotli)));
        Ok(())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.socket.poll_send(cx)
    }

    fn discard_unstarted(&mut self) {
        self.socket.discard_unstarted();
    }

    async fn close(&mut self, _reason: CloseReason) {
        self.socket.shutdown().await;
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), self.socket.drain(256 * 1024)).await;
    }

    fn kind(&self) -> &'static str {
        self.socket.kind()
    }
}
