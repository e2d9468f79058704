//! A connection's byte buffers, shared by both transports (raw TCP and WebSocket, which differ
//! only in their framing), over plain TCP or TLS.

use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::ReadError;
use super::stream::Stream;

/// How a transport's outbound frames are delimited: enough to find frame boundaries in queued
/// bytes, so that a connection being cut can drop what it has not begun to write.
pub trait Framing: Send + 'static {
    /// The whole length of the frame `head` begins with (`None` if its header is incomplete,
    /// which cannot happen for frames this process queued whole).
    fn frame_len(head: &[u8]) -> Option<usize>;
}

/// A socket with its unread and unwritten bytes; both buffers are empty (and hold no memory)
/// on an idle connection.
pub struct Socket<F> {
    stream: Stream,
    /// Read and not yet decoded.
    pub rbuf: BytesMut,
    /// Queued and not yet written.
    wbuf: Bytes,
    /// How much of `wbuf` is the rest of a frame partly written (0: `wbuf` starts at a frame
    /// boundary). Only a partial write has to look at frame headers to keep this.
    head_left: usize,
    /// Its transport's figures (and name).
    metrics: &'static crate::telemetry::TransportMetrics,
    framing: std::marker::PhantomData<fn() -> F>,
}

impl<F: Framing> Socket<F> {
    /// Wraps a stream, with bytes already read from it (past an HTTP upgrade request).
    /// `websocket` names the transport for the metrics (with TLS: `wss`, else `ws`; TCP: `tls`,
    /// `tcp`; a QUIC stream: `quic`).
    pub fn new(stream: Stream, read: BytesMut, websocket: bool) -> Self {
        let name = match (websocket, stream.is_tls()) {
            _ if stream.is_quic() => "quic",
            (false, false) => "tcp",
            (false, true) => "tls",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        let metrics = crate::telemetry::transport(name);
        Self { stream, rbuf: read, wbuf: Bytes::new(), head_left: 0, metrics, framing: std::marker::PhantomData }
    }

    /// The transport's name: `tcp`, `tls`, `ws` or `wss`.
    pub fn kind(&self) -> &'static str {
        self.metrics.name
    }

    /// Reads more into `rbuf`: `Ok(0)` at the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ReadError>> {
        match &mut self.stream {
            Stream::Plain(tcp) => loop {
                // An idle connection holds no read buffer: wait for readiness first, allocate
                // only when bytes are there, and let go of the buffer once everything in it is
                // decoded — and after a stale readiness, which found nothing to read in the
                // buffer it reserved (measured: keeping that one cost 4.2 KB per idle
                // connection).
                if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                    self.rbuf = BytesMut::new();
                }
                ready!(tcp.poll_read_ready(cx)).map_err(|e| ReadError::Transport(e.to_string()))?;
                if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                    self.rbuf.reserve(4096);
                }
                match tcp.try_read_buf(&mut self.rbuf) {
                    Ok(n) => {
                        self.metrics.bytes_in.increment(n as u64);
                        return Poll::Ready(Ok(n));
                    }
                    // The readiness was stale; the next `poll_read_ready` registers for the next.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(ReadError::Transport(e.to_string()))),
                }
            },
            // TLS may hold decrypted bytes the socket's readiness knows nothing of, and a QUIC
            // stream has no socket of its own, so they are read directly; the buffer is let go
            // again if nothing came, as above.
            tls @ (Stream::Tls(_) | Stream::Quic(_)) => {
                if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                    self.rbuf.reserve(4096);
                }
                let spare = self.rbuf.spare_capacity_mut();
                let mut buf = ReadBuf::uninit(spare);
                let polled = std::pin::Pin::new(tls).poll_read(cx, &mut buf);
                let n = buf.filled().len();
                match polled {
                    Poll::Ready(Ok(())) => {
                        // SAFETY: `poll_read` initialized the first `n` bytes of the spare capacity.
                        unsafe { self.rbuf.set_len(self.rbuf.len() + n) };
                        self.metrics.bytes_in.increment(n as u64);
                        Poll::Ready(Ok(n))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(ReadError::Transport(e.to_string()))),
                    Poll::Pending => {
                        if self.rbuf.is_empty() {
                            self.rbuf = BytesMut::new();
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    /// Queues encoded frames behind what is still unwritten. One write for the whole batch: a
    /// single frame is written from its shared encoding, a batch from one buffer dropped once
    /// written.
    pub fn queue(&mut self, mut frames: impl ExactSizeIterator<Item = Bytes>) {
        if frames.len() == 1
            && self.wbuf.is_empty()
            && let Some(one) = frames.next()
        {
            self.wbuf = one;
            return;
        }
        let unwritten = std::mem::take(&mut self.wbuf);
        let parts: Vec<Bytes> = std::iter::once(unwritten).chain(frames).collect();
        let mut batch = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
        parts.iter().for_each(|p| batch.extend_from_slice(p));
        self.wbuf = batch.freeze();
    }

    /// Bytes queued and not yet written.
    pub fn unwritten(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes what was queued; ready when all of it is written.
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.wbuf.is_empty() {
            let n = ready!(std::pin::Pin::new(&mut self.stream).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written(n);
            self.wbuf.advance(n);
            self.metrics.bytes_out.increment(n as u64);
        }
        // Let go of the frame (or batch) the emptied view still points into.
        self.wbuf = Bytes::new();
        // TLS may have taken bytes it could not send yet (the socket was full): they leave only
        // when flushed. Plain TCP has nothing to flush.
        if self.stream.is_tls() {
            ready!(std::pin::Pin::new(&mut self.stream).poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Keeps `head_left` true across a write of `n` bytes from the front of `wbuf`.
    fn written(&mut self, mut n: usize) {
        if n < self.head_left {
            self.head_left -= n;
            return;
        }
        if n == self.wbuf.len() {
            self.head_left = 0;
            return;
        }
        let mut pos = self.head_left;
        n -= self.head_left;
        self.head_left = loop {
            if n == 0 {
                break 0;
            }
            match F::frame_len(&self.wbuf[pos..]) {
                Some(len) if n >= len => {
                    pos += len;
                    n -= len;
                }
                Some(len) => break len - n,
                // Not a frame boundary after all: keep everything, dropping nothing later.
                None => break self.wbuf.len() - pos - n,
            }
        };
    }

    /// Drops the queued frames not yet begun, keeping the rest of one partly written (a peer
    /// must never see half a frame followed by another): what a connection cut for not reading
    /// does before it queues its last words.
    pub fn discard_unstarted(&mut self) {
        self.wbuf.truncate(self.head_left);
    }

    /// Ends our side of the stream (what is still queued is not written).
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads and discards what the peer still sends, for at most `budget` bytes: closing with
    /// unread input makes the kernel send RST, which can destroy our last frame before it is
    /// read.
    pub async fn drain(&mut self, mut budget: usize) {
        // On the heap: a buffer on the stack would be part of every connection's future.
        let mut sink = vec![0u8; 4096];
        while budget > 0 {
            match self.stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget -= n.min(budget),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::task::Poll;

    use bytes::{Bytes, BytesMut};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::gateway::transport::tcp::Prefixed;

    /// A connected pair — the server's accepted stream and the peer — with small kernel buffers
    /// (accepted sockets inherit the listener's), so that what the peer does not read backs up
    /// in the server quickly.
    pub(crate) async fn small_buffered_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listening = tokio::net::TcpSocket::new_v4().unwrap();
        listening.set_send_buffer_size(4096).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listening.listen(1).unwrap();
        let connecting = tokio::net::TcpSocket::new_v4().unwrap();
        connecting.set_recv_buffer_size(4096).unwrap();
        let peer = connecting.connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, peer)
    }

    fn frame(fill: u8, len: usize) -> Bytes {
        let mut out = BytesMut::from(&(len as u32).to_be_bytes()[..]);
        out.extend_from_slice(&vec![fill; len]);
        out.freeze()
    }

    /// A cut keeps the frame being written whole and drops the ones not begun, so that what
    /// the peer reads is whole frames and then whatever is queued after the cut.
    #[tokio::test]
    async fn discarding_keeps_the_partly_written_frame_whole_and_drops_the_rest() {
        let (stream, mut peer) = small_buffered_pair().await;
        let mut socket =
            Socket::<Prefixed>::new(crate::gateway::transport::stream::Stream::Plain(stream), BytesMut::new(), false);
        // Small frames the kernel takes at once, then large ones it cannot: the write stops
        // inside one of them.
        let frames: Vec<Bytes> = (0..40u8).map(|i| frame(i, if i < 4 { 100 } else { 50_000 })).collect();
        socket.queue(frames.clone().into_iter());
        let partial = std::future::poll_fn(|cx| Poll::Ready(socket.poll_send(cx))).await;
        assert!(partial.is_pending(), "the peer does not read, so the write cannot finish");
        let queued = socket.unwritten();
        socket.discard_unstarted();
        assert!(socket.unwritten() < queued, "frames not begun were dropped");
        socket.queue(std::iter::once(frame(0xEE, 10)));
        let writer = tokio::spawn(async move {
            std::future::poll_fn(|cx| socket.poll_send(cx)).await.unwrap();
            socket.shutdown().await;
            socket
        });
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        drop(writer.await.unwrap());
        let mut read = Vec::new();
        let mut rest = &got[..];
        while let Some(len) = Prefixed::frame_len(rest) {
            assert!(rest.len() >= len, "a frame was cut short");
            read.push(Bytes::copy_from_slice(&rest[..len]));
            rest = &rest[len..];
        }
        assert!(rest.is_empty(), "{} bytes after the last whole frame", rest.len());
        let last = read.pop().unwrap();
        assert_eq!(last, frame(0xEE, 10), "the frame queued after the cut comes right after");
        assert!(read.len() < frames.len());
        assert_eq!(read, frames[..read.len()], "the frames before it, whole and in order");
    }
}
