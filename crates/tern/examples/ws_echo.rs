//! An echo server on tern's WebSocket framing (`tern_proto::ws`) and handshake
//! (`tern_server::gateway::transport::ws::handshake`), for the Autobahn test suite's echo
//! cases (`scripts/autobahn`). Messages are echoed in kind; pings answered; protocol failures
//! close with the RFC status `WsError::status` names, as `/v1/ws` does.
//!
//! `cargo run --release --example ws_echo -- 127.0.0.1:9001`

use bytes::BytesMut;
use tern_proto::ws::{OpCode, WsDecoder, WsEvent, close_payload, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Autobahn's largest messages are 16 MiB.
const MAX_MESSAGE: usize = 32 << 20;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("ws_echo listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = serve(stream).await;
        });
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let _ = buf.split_to(end);
    let mut lines = head.split("\r\n");
    let version = match lines.next().unwrap_or_default().rsplit(' ').next() {
        Some("HTTP/1.1") => reqwest::Version::HTTP_11,
        _ => reqwest::Version::HTTP_10,
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()),
                reqwest::header::HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(n, v);
        }
    }
    let accept = match tern_server::gateway::transport::ws::handshake(version, &headers) {
        Ok(a) => a,
        Err(why) => {
            let body = format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{why}", why.len());
            return stream.write_all(body.as_bytes()).await;
        }
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(answer.as_bytes()).await?;
    let mut decoder = WsDecoder::new(MAX_MESSAGE);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(WsEvent::Message(codec, payload))) => {
                let op = if codec == tern_proto::Codec::Json { OpCode::Text } else { OpCode::Binary };
                stream.write_all(&encode_frame(op, &payload)).await?;
            }
            Ok(Some(WsEvent::Ping(payload))) => stream.write_all(&encode_frame(OpCode::Pong, &payload)).await?,
            Ok(Some(WsEvent::Close(code))) => {
                let payload = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                stream.write_all(&encode_frame(OpCode::Close, &payload)).await?;
                return stream.shutdown().await;
            }
            Ok(None) => {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
            Err(e) => {
                stream.write_all(&encode_frame(OpCode::Close, &close_payload(e.status(), "protocol error"))).await?;
                stream.shutdown().await?;
                // Read what the client still sends, so the close is not lost to a reset.
                let mut sink = vec![0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return Ok(());
            }
        }
    }
}
