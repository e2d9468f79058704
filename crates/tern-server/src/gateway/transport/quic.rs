//! QUIC (quinn): the native clients' fast path. A connection carries one bidirectional stream,
//! opened by the client, with the same length-prefixed MessagePack frames as raw TCP — so it
//! is served by [`super::tcp::TcpIo`] over a [`QuicStream`] (in `stream.rs`). QUIC brings its own loss recovery
//! and congestion control under tern's application ACKs, and connection migration: a client
//! whose address changes (a phone leaving Wi-Fi) keeps its connection, and so its session.
//!
//! Limits: one stream per connection (the client cannot open a second; QUIC's own flow control
//! refuses it), no 0-RTT, a connection that opens no stream within the auth deadline is closed,
//! and admission (`gateway.max_connections`, per address) happens before the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use tokio_util::sync::CancellationToken;

use super::stream::{QuicStream, Stream};
use super::tcp::TcpIo;
use crate::gateway::Gateway;

/// The QUIC endpoint on `addr`, with the TLS certificates of `tls` and the transport limits
/// above; the idle timeout is a silent connection's (heartbeats keep a live one open).
pub fn endpoint(tls: &crate::tls::Tls, addr: SocketAddr, idle: Duration) -> Result<quinn::Endpoint, String> {
    let crypto = QuicServerConfig::try_from(tls.quic()?).map_err(|e| format!("QUIC TLS setup failed: {e}"))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(idle.try_into().map_err(|e| format!("bad QUIC idle timeout: {e}"))?));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport)).migration(true);
    quinn::Endpoint::server(config, addr).map_err(|e| format!("QUIC cannot listen on {addr} (UDP): {e}"))
}

/// Accepts QUIC connections until `stop`, and serves each like a TCP connection.
pub async fn accept(endpoint: quinn::Endpoint, gateway: Arc<Gateway>, max_frame: usize, stop: CancellationToken) {
    let deadline = gateway.auth_deadline();
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let peer = incoming.remote_address();
        let admitted = match gateway.admit(peer.ip()) {
            Ok(a) => a,
            Err(refusal) => {
                tracing::debug!(%peer, why = refusal.message(), "QUIC connection refused");
                incoming.refuse();
                continue;
            }
        };
        // Handshake and the stream in a task of their own, which hands the connection to a new
        // task once done (as for TLS over TCP).
        tokio::spawn(async move {
            let opened = tokio::time::timeout(deadline, async {
                let conn = incoming.await.map_err(|e| format!("QUIC handshake failed: {e}"))?;
                match conn.accept_bi().await {
                    Ok((send, recv)) => Ok(QuicStream::new(send, recv, conn)),
                    Err(e) => Err(format!("no stream: {e}")),
                }
            })
            .await;
            match opened {
                Ok(Ok(stream)) => {
                    let io = TcpIo::new(Stream::Quic(Box::new(stream)), max_frame);
                    drop(tokio::spawn(admitted.serve(io, peer)));
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "QUIC connection failed"),
                Err(_) => tracing::debug!(%peer, "QUIC connection opened no stream in time"),
            }
        });
    }
    // The connections say `server_shutdown` themselves (the gateway kicks them); closing the
    // endpoint here would cut them before that frame arrives.
    let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
}
