//! Raw TCP: each frame is a 4-byte big-endian length and a MessagePack payload.

use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tern_proto::{CloseReason, Codec, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{FrameIo, ReadError};
use crate::dispatch::OutFrame;

/// A TCP connection's framing state.
pub struct TcpIo {
    stream: TcpStream,
    decoder: FrameDecoder,
    rbuf: BytesMut,
    /// Queued bytes not yet written; empty (and holding no frame) when idle.
    wbuf: Bytes,
}

impl TcpIo {
    /// Wraps an accepted stream; frames above `max_frame` bytes are refused.
    pub fn new(stream: TcpStream, max_frame: usize) -> Self {
        Self { stream, decoder: FrameDecoder::new(max_frame), rbuf: BytesMut::new(), wbuf: Bytes::new() }
    }
}

impl FrameIo for TcpIo {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(Codec, Bytes)>, ReadError>> {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(payload)) => return Poll::Ready(Ok(Some((Codec::MsgPack, payload)))),
                Ok(None) => {}
                Err(e) => {
                    return Poll::Ready(Err(ReadError::TooLarge {
                        announced: e.announced,
                        limit: self.decoder.max_frame(),
                    }));
                }
            }
            // An idle connection holds no read buffer: wait for readiness first, allocate only
            // when bytes are there, and let go of the buffer once everything in it is decoded.
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                self.rbuf = BytesMut::new();
            }
            ready!(self.stream.poll_read_ready(cx)).map_err(|e| ReadError::Transport(e.to_string()))?;
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(4096);
            }
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => {
                    let end = if self.rbuf.is_empty() { Ok(None) } else { Err(ReadError::Truncated(self.rbuf.len())) };
                    return Poll::Ready(end);
                }
                Ok(_) => {}
                // The readiness was stale; the next `poll_read_ready` registers for the next.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(ReadError::Transport(e.to_string()))),
            }
        }
    }

    fn queue(&mut self, _codec: Codec, brotli: bool, frames: &[Arc<OutFrame>]) -> std::io::Result<()> {
        // Raw TCP always speaks MessagePack. One write for the whole batch: a single frame is
        // written from its shared encoding, a batch from one buffer dropped once written. Bytes
        // still unwritten (a write that timed out, before the `close` frame) stay in front.
        if let ([one], true) = (frames, self.wbuf.is_empty()) {
            self.wbuf = one.stream(brotli);
            return Ok(());
        }
        let unwritten = std::mem::take(&mut self.wbuf);
        let parts: Vec<Bytes> = std::iter::once(unwritten).chain(frames.iter().map(|f| f.stream(brotli))).collect();
        let mut batch = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
        parts.iter().for_each(|p| batch.extend_from_slice(p));
        self.wbuf = batch.freeze();
        Ok(())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.wbuf.is_empty() {
            let n = ready!(std::pin::Pin::new(&mut self.stream).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.wbuf.advance(n);
        }
        // Let go of the frame (or batch) the emptied view still points into.
        self.wbuf = Bytes::new();
        Poll::Ready(Ok(()))
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
