//! Transports: each turns its byte stream into inbound frame payloads and writes outbound
//! [`OutFrame`]s in its own encoding. Above this line a connection looks the same whatever
//! carries it.

pub mod http;
pub mod quic;
mod socket;
pub mod stream;
pub mod tcp;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tern_proto::{CloseReason, Codec};

use crate::wire::OutFrame;

/// Why reading failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A frame was larger than allowed; nothing of it was buffered.
    #[error("frame of {announced} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced or observed size (0 if unknown).
        announced: usize,
        /// The limit.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error("connection ended inside a frame ({0} bytes of an incomplete frame)")]
    Truncated(usize),
    /// WebSocket frames against RFC 6455: the connection fails with the RFC's close status
    /// (1002, or 1007 for text that is not UTF-8) and nothing else is sent (RFC 6455 7.1.7).
    #[error("{message}")]
    Violation {
        /// The close status.
        status: u16,
        /// What was wrong.
        message: String,
    },
    /// Anything else at the transport level.
    #[error("{0}")]
    Transport(String),
    /// The transport saw nothing from the client for too long (an HTTP session without a
    /// downstream request).
    #[error("{0}")]
    Silent(String),
}

impl ReadError {
    /// The close reason for this failure.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            ReadError::TooLarge { .. } => CloseReason::FrameTooLarge,
            ReadError::Truncated(_) | ReadError::Violation { .. } => CloseReason::ProtocolError,
            ReadError::Transport(_) => CloseReason::TransportError,
            ReadError::Silent(_) => CloseReason::HeartbeatTimeout,
        }
    }
}

/// One connection's frame I/O.
pub trait FrameIo: Send + 'static {
    /// The next inbound frame's payload and its encoding; `Ok(None)` when the peer closed
    /// cleanly. A poll rather than a future, so that a connection waiting for input holds no
    /// future for it (an idle connection's task is its memory).
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(Codec, Bytes)>, ReadError>>;

    /// [`FrameIo::poll_recv`] as a future.
    fn recv(&mut self) -> impl Future<Output = Result<Option<(Codec, Bytes)>, ReadError>> + Send {
        std::future::poll_fn(|cx| self.poll_recv(cx))
    }

    /// Takes frames to write, encoded with `codec` (compressed where the frame allows it and
    /// `brotli` says the client accepts it); [`FrameIo::poll_send`] writes them. What an earlier
    /// batch left unwritten (a write given up as too slow, before the `close` frame) goes first.
    fn queue(&mut self, codec: Codec, brotli: bool, frames: &[Arc<OutFrame>]) -> std::io::Result<()>;

    /// Writes what was queued, flushing once for the whole batch; ready when all of it is
    /// written. A poll with the pending bytes kept in the transport (nothing, once written), so
    /// that no write future is part of every connection's task.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;

    /// Drops queued frames not yet begun (the rest of one partly written stays, so the stream
    /// stays well-formed): a connection cut for not reading says why without waiting behind
    /// its backlog.
    fn discard_unstarted(&mut self);

    /// Queues and writes frames, as one future.
    fn send(
        &mut self,
        codec: Codec,
        brotli: bool,
        frames: &[Arc<OutFrame>],
    ) -> impl Future<Output = std::io::Result<()>> + Send {
        let queued = self.queue(codec, brotli, frames);
        async move {
            queued?;
            std::future::poll_fn(|cx| self.poll_send(cx)).await
        }
    }

    /// Closes the transport, with the reason where the transport can carry one.
    fn close(&mut self, reason: CloseReason) -> impl Future<Output = ()> + Send;

    /// Fails the connection after the peer broke the transport's own protocol: `status` is the
    /// transport's code for it; no tern frame is sent first.
    fn fail(&mut self, status: u16) -> impl Future<Output = ()> + Send {
        let _ = status;
        self.close(CloseReason::ProtocolError)
    }

    /// Name for logs and the connection gauge (`tcp`, `ws`, over TLS `tls`, `wss`; `sse`,
    /// `longpoll`, `quic`).
    fn kind(&self) -> &'static str;
}
