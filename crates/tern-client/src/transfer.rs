//! File transfers between two clients, QQ's way: the offer goes through tern
//! ([`Client::offer_file`](crate::Client::offer_file)), the receiver connects straight to one of
//! the sender's addresses, and if none answers within [`DIRECT_DEADLINE`] both meet at tern's
//! relay (`GET /v1/relay/{id}`, an HTTP upgrade on tern's own port). The bytes are the same
//! either way:
//!
//! 1. receiver → sender: `TERN-FILE/1 <ticket> <offset>\n` (the offer's ticket, which only
//!    the two of them and tern know; `offset`: bytes it already has),
//! 2. sender → receiver: `OK\n`, then the file from `offset` to its end,
//! 3. receiver → sender: `DONE\n` once the whole file's SHA-256 matched the offer (`BAD\n` if
//!    not: the receiver drops what it got).
//!
//! A connection that breaks is opened again and the transfer resumes at what the receiver holds.

use std::path::Path;
use std::time::Duration;

use sha2::Digest;
use tern_proto::UserId;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::{Error, Session};

/// How long the receiver tries the sender's addresses before going through the relay.
pub const DIRECT_DEADLINE: Duration = Duration::from_secs(3);
/// Connections opened again after a break before the transfer gives up.
const ATTEMPTS: u32 = 5;
const HELLO: &str = "TERN-FILE/1";

/// A file someone offers (an [`Event::FileOffer`](crate::Event::FileOffer)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The transfer.
    pub transfer_id: String,
    /// The sender.
    pub from: UserId,
    /// The file's name (checked by the server: no path separators).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Where the sender listens.
    pub candidates: Vec<String>,
    /// The ticket.
    pub ticket: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The server's answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// The transfer.
    pub transfer_id: String,
    /// The ticket (the receiver got the same one).
    pub ticket: String,
    /// The sender's address as tern sees it.
    pub observed: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// How the bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight between the two clients.
    Direct,
    /// Through tern's relay.
    Relay,
}

/// How one connection of a transfer ended.
enum Ended {
    /// The receiver has the whole file, verified.
    Done,
    /// The connection broke or was refused; another may do better.
    Broken(Error),
    /// The receiver's copy did not match the offer's SHA-256: no retry will fix that.
    Mismatch,
}

fn mismatch() -> Error {
    Error::Transport("the received bytes do not match the offer's SHA-256; the receiver dropped them".into())
}

fn io(e: std::io::Error) -> Error {
    Error::Transport(format!("file transfer: {e}"))
}

/// SHA-256 of a file, lowercase hex.
pub async fn sha256_of(path: &Path) -> Result<String, Error> {
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(data_encoding::HEXLOWER.encode(&hasher.finalize()))
}

/// Opens the relay for one side of a transfer.
async fn relay(session: &Session, transfer_id: &str, ticket: &str, side: &str) -> Result<reqwest::Upgraded, Error> {
    let url = format!("{}/v1/relay/{transfer_id}", session.server.trim_end_matches('/'));
    let resp = crate::http::shared_client()
        .get(url)
        .query(&[("ticket", ticket), ("side", side)])
        .bearer_auth(&session.token)
        .header("Connection", "Upgrade")
        .header("Upgrade", "tern-relay")
        .send()
        .await
        .map_err(|e| Error::Transport(crate::http::describe(e)))?;
    if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(Error::Transport(format!("the relay answered {status}: {body}")));
    }
    resp.upgrade().await.map_err(|e| Error::Transport(format!("relay upgrade: {e}")))
}

/// Serves one connection as the sender.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    ticket: &str,
    path: &Path,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Ended {
    match serve_bytes(stream, ticket, path, size, progress).await {
        Ok(Some(true)) => Ended::Done,
        Ok(Some(false)) => Ended::Mismatch,
        Ok(None) => Ended::Broken(Error::Transport("the receiver left before confirming".into())),
        Err(e) => Ended::Broken(e),
    }
}

/// The bytes of [`serve_one`]: `Some(verified)` once the receiver answered.
async fn serve_bytes<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    ticket: &str,
    path: &Path,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Option<bool>, Error> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read.take(64 * 1024));
    let mut hello = String::new();
    // A connection that says nothing (a port scan, a stalled peer) holds the sender up no longer.
    tokio::time::timeout(Duration::from_secs(10), lines.read_line(&mut hello))
        .await
        .map_err(|_| Error::Transport("the peer said nothing".into()))?
        .map_err(io)?;
    let mut parts = hello.trim_end().split(' ');
    let (Some(HELLO), Some(their), Some(offset)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Transport("the peer did not speak TERN-FILE/1".into()));
    };
    if their != ticket {
        return Err(Error::Transport("a connection without this transfer's ticket".into()));
    }
    let offset: u64 =
        offset.parse().ok().filter(|o| *o <= size).ok_or_else(|| Error::Transport("bad offset".into()))?;
    write.write_all(b"OK\n").await.map_err(io)?;
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = offset;
    while sent < size {
        let want = usize::try_from(size - sent).unwrap_or(usize::MAX).min(buf.len());
        let n = file.read(&mut buf[..want]).await.map_err(io)?;
        if n == 0 {
            return Err(Error::Transport("the file got shorter while being sent".into()));
        }
        write.write_all(&buf[..n]).await.map_err(io)?;
        sent += n as u64;
        progress(sent);
    }
    write.flush().await.map_err(io)?;
    let mut verdict = String::new();
    lines.read_line(&mut verdict).await.map_err(io)?;
    match verdict.trim_end() {
        "DONE" => Ok(Some(true)),
        "BAD" => Ok(Some(false)),
        _ => Ok(None),
    }
}

/// Sends `path` (offered as `offered`) once the receiver accepted: serves direct connections on
/// `listener` (if any) and, at the same time, through the relay, until the receiver confirms
/// the whole file. `progress` gets the bytes the receiver has been sent.
pub async fn send(
    session: &Session,
    offered: &Offered,
    listener: Option<TcpListener>,
    path: &Path,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Route, Error> {
    let direct = async {
        let Some(listener) = listener else { return std::future::pending::<Result<Route, Error>>().await };
        loop {
            let (stream, peer) = listener.accept().await.map_err(io)?;
            match serve_one(stream, &offered.ticket, path, size, progress).await {
                Ended::Done => return Ok(Route::Direct),
                Ended::Mismatch => return Err(mismatch()),
                Ended::Broken(e) => tracing::debug!(%peer, error = %e, "direct transfer connection ended"),
            }
        }
    };
    let relayed = async {
        let mut failures = 0;
        loop {
            let ended = match relay(session, &offered.transfer_id, &offered.ticket, "sender").await {
                Ok(stream) => serve_one(stream, &offered.ticket, path, size, progress).await,
                Err(e) => Ended::Broken(e),
            };
            match ended {
                Ended::Done => return Ok(Route::Relay),
                Ended::Mismatch => return Err(mismatch()),
                Ended::Broken(e) => {
                    failures += 1;
                    tracing::debug!(error = %e, "relayed transfer connection ended");
                }
            }
            if failures > ATTEMPTS * 4 {
                return Err(Error::Transport("the relay connection keeps failing".into()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        r = direct => r,
        r = relayed => r,
    }
}

/// Receives one connection's worth into `part` (appending).
async fn receive_one<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    offer: &Offer,
    part: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Ended {
    match receive_bytes(stream, offer, part, progress).await {
        Ok(Some(true)) => Ended::Done,
        Ok(Some(false)) => Ended::Mismatch,
        Ok(None) => Ended::Broken(Error::Transport("the connection ended before the last byte".into())),
        Err(e) => Ended::Broken(e),
    }
}

/// The bytes of [`receive_one`]: `Some(verified)` once every byte arrived.
async fn receive_bytes<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    offer: &Offer,
    part: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Option<bool>, Error> {
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(part).await.map_err(io)?;
    let mut have = file.metadata().await.map_err(io)?.len();
    if have > offer.size {
        file.set_len(0).await.map_err(io)?;
        have = 0;
    }
    let (read, mut write) = tokio::io::split(stream);
    write.write_all(format!("{HELLO} {} {have}\n", offer.ticket).as_bytes()).await.map_err(io)?;
    let mut reader = BufReader::new(read);
    let mut ok = String::new();
    reader.read_line(&mut ok).await.map_err(io)?;
    if ok.trim_end() != "OK" {
        return Err(Error::Transport("the sender did not accept the connection".into()));
    }
    progress(have);
    let mut buf = vec![0u8; 256 * 1024];
    while have < offer.size {
        let want = usize::try_from(offer.size - have).unwrap_or(usize::MAX).min(buf.len());
        let n = reader.read(&mut buf[..want]).await.map_err(io)?;
        if n == 0 {
            file.flush().await.map_err(io)?;
            return Ok(None);
        }
        file.write_all(&buf[..n]).await.map_err(io)?;
        have += n as u64;
        progress(have);
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    if sha256_of(part).await? != offer.sha256 {
        let _ = write.write_all(b"BAD\n").await;
        let _ = write.flush().await;
        let _ = tokio::fs::remove_file(part).await;
        return Ok(Some(false));
    }
    write.write_all(b"DONE\n").await.map_err(io)?;
    write.flush().await.map_err(io)?;
    Ok(Some(true))
}

/// Receives an accepted offer into `part` (resuming what it holds): directly from the sender's
/// addresses first (unless `relay_only`), then through the relay. The file at `part` is
/// complete and verified when this returns `Ok`.
pub async fn receive(
    session: &Session,
    offer: &Offer,
    part: &Path,
    relay_only: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Route, Error> {
    if !relay_only {
        for candidate in &offer.candidates {
            let Ok(Ok(stream)) = tokio::time::timeout(DIRECT_DEADLINE, TcpStream::connect(candidate.as_str())).await
            else {
                continue;
            };
            match receive_one(stream, offer, part, progress).await {
                Ended::Done => return Ok(Route::Direct),
                Ended::Mismatch => return Err(mismatch()),
                Ended::Broken(e) => tracing::debug!(%candidate, error = %e, "direct transfer failed"),
            }
        }
    }
    for _ in 0..ATTEMPTS {
        let ended = match relay(session, &offer.transfer_id, &offer.ticket, "receiver").await {
            Ok(stream) => receive_one(stream, offer, part, progress).await,
            Err(e) => Ended::Broken(e),
        };
        match ended {
            Ended::Done => return Ok(Route::Relay),
            Ended::Mismatch => return Err(mismatch()),
            Ended::Broken(e) => tracing::debug!(error = %e, "relayed transfer failed"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Transport("the transfer could not be completed, directly or through the relay".into()))
}
