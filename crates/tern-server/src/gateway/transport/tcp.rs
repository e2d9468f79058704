//! Raw TCP: each frame is a 4-byte big-endian length and a MessagePack payload.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tern_proto::{CloseReason, Codec, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{FrameIo, ReadError};
use crate::dispatch::OutFrame;

/// A TCP connection's framing state.
pub struct TcpIo {
    stream: TcpStream,
    decoder: FrameDecoder,
    rbuf: BytesMut,
    limit: usize,
}

impl TcpIo {
    /// Wraps an accepted stream; frames above `max_frame` bytes are refused.
    pub fn new(stream: TcpStream, max_frame: usize) -> Self {
        Self { stream, decoder: FrameDecoder::new(max_frame), rbuf: BytesMut::new(), limit: max_frame }
    }
}

impl FrameIo for TcpIo {
    async fn recv(&mut self) -> Result<Option<(Codec, Bytes)>, ReadError> {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(payload)) => return Ok(Some((Codec::MsgPack, payload))),
                Ok(None) => {}
                Err(e) => {
                    return Err(ReadError::TooLarge { announced: e.announced, limit: self.limit });
                }
            }
            // An idle connection holds no read buffer: wait for readiness first, allocate only
            // when bytes are there, and let go of the buffer once everything in it is decoded.
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                self.rbuf = BytesMut::new();
            }
            self.stream.readable().await.map_err(|e| ReadError::Transport(e.to_string()))?;
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(4096);
            }
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => {
                    return if self.rbuf.is_empty() { Ok(None) } else { Err(ReadError::Truncated(self.rbuf.len())) };
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(ReadError::Transport(e.to_string())),
            }
        }
    }

    async fn send(&mut self, _codec: Codec, brotli: bool, frames: &[Arc<OutFrame>]) -> std::io::Result<()> {
        // Raw TCP always speaks MessagePack. One write for the whole batch.
        if let [one] = frames {
            return self.stream.write_all(&one.stream(brotli)).await;
        }
        // One buffer per batch, dropped after: an idle connection keeps no write buffer.
        let parts: Vec<Bytes> = frames.iter().map(|f| f.stream(brotli)).collect();
        let mut batch = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
        parts.iter().for_each(|p| batch.extend_from_slice(p));
        self.stream.write_all(&batch).await
    }

    async fn close(&mut self, _reason: CloseReason) {
        let _ = self.stream.shutdown().await;
        // Read and discard what the peer still sends for a moment: closing with unread input
        // makes the kernel send RST, which can destroy our `close` frame before it is read.
        let drain = async {
            // On the heap: a buffer on the stack would be part of every connection's future.
            let mut sink = vec![0u8; 4096];
            let mut budget = 256 * 1024;
            while budget > 0 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => budget -= n.min(budget),
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), drain).await;
    }

    fn kind(&self) -> &'static str {
        "tcp"
    }
}
