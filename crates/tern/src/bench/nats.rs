//! Just enough of the NATS client protocol to run the fan-out scenario against a nats-server
//! with the same load generator: CONNECT, SUB, PUB, MSG, PING/PONG. A full client library would
//! spend more of the shared CPU per message than the lean tern members do, skewing the
//! comparison, so the bench speaks the text protocol directly.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"tern-bench\"}\r\n";

/// A connection past the INFO/CONNECT handshake.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Handshakes on a connected stream.
    pub async fn handshake(mut stream: TcpStream) -> anyhow::Result<Self> {
        stream.write_all(CONNECT).await?;
        let mut conn = Self { stream, buf: BytesMut::with_capacity(16 * 1024) };
        // Round-trip a PING so CONNECT (and what follows) is known to be processed.
        conn.stream.write_all(b"PING\r\n").await?;
        loop {
            match conn.next().await? {
                Some(Event::Pong) => return Ok(conn),
                Some(_) => {}
                None => anyhow::bail!("nats closed during the handshake"),
            }
        }
    }

    /// Subscribes and waits until the server has the subscription.
    pub async fn subscribe(&mut self, subject: &str) -> anyhow::Result<()> {
        self.stream.write_all(format!("SUB {subject} 1\r\nPING\r\n").as_bytes()).await?;
        loop {
            match self.next().await? {
                Some(Event::Pong) => return Ok(()),
                Some(_) => {}
                None => anyhow::bail!("nats closed during subscribe"),
            }
        }
    }

    /// Publishes one message.
    pub async fn publish(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<()> {
        let mut out = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// Round-trips a PING: everything published before it has been processed by the server.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(b"PING\r\n").await?;
        loop {
            match self.next().await? {
                Some(Event::Pong) => return Ok(()),
                Some(_) => {}
                None => anyhow::bail!("nats closed"),
            }
        }
    }

    /// The next protocol event; answers server PINGs by itself. `None` at end of stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(event) = self.parse()? {
                if let Event::Ping = event {
                    self.stream.write_all(b"PONG\r\n").await?;
                    continue;
                }
                return Ok(Some(event));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    fn parse(&mut self) -> anyhow::Result<Option<Event>> {
        let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let line = std::str::from_utf8(&self.buf[..end])?.to_owned();
        if let Some(rest) = line.strip_prefix("MSG ") {
            let size: usize = rest.rsplit(' ').next().unwrap_or_default().parse()?;
            if self.buf.len() < end + 2 + size + 2 {
                return Ok(None);
            }
            self.buf.advance(end + 2);
            let payload = self.buf.split_to(size).freeze();
            self.buf.advance(2);
            return Ok(Some(Event::Msg(payload)));
        }
        self.buf.advance(end + 2);
        Ok(Some(match line.as_str() {
            "PING" => Event::Ping,
            "PONG" => Event::Pong,
            l if l.starts_with("-ERR") => anyhow::bail!("nats: {l}"),
            _ => Event::Other,
        }))
    }
}

/// What arrived.
pub enum Event {
    /// A message's payload.
    Msg(bytes::Bytes),
    /// PING (answered internally).
    Ping,
    /// PONG.
    Pong,
    /// INFO, +OK and the like.
    Other,
}
