//! The relay for file transfers between two clients that cannot reach each other: each side
//! opens `GET /v1/relay/{transfer_id}` with the transfer's ticket and an HTTP upgrade; the first
//! waits (up to [`WAIT`]), the second is piped to it. Bytes from the sender are paced per
//! transfer and per sending user; nothing is stored. Both ends must reach the same node (the
//! offer names it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tern_proto::{ErrorCode, UserId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pace::{ByteBucket, PerUser};

use crate::error::Error;

/// How long the first side waits for the second.
pub const WAIT: Duration = Duration::from_secs(60);

/// Which end of a transfer a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The one who has the file.
    Sender,
    /// The one who wants it.
    Receiver,
}

type Io = TokioIo<Upgraded>;

struct Waiting {
    side: Side,
    io: Io,
    since: Instant,
}

/// The relay of one node.
pub struct Relay {
    waiting: Mutex<HashMap<String, Waiting>>,
    per_transfer: f64,
    per_user: PerUser,
}

impl Relay {
    /// A relay pacing the sender's bytes to these rates (bytes a second; 0: unlimited).
    pub fn new(per_transfer: u64, per_user: u64) -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
            per_transfer: per_transfer as f64,
            per_user: PerUser::new(per_user),
        }
    }

    /// Checks that `side` of `transfer` may come now (before the upgrade is answered): the
    /// same side twice at once is refused.
    pub fn may_join(&self, transfer: &str, side: Side) -> Result<(), Error> {
        let mut waiting = self.waiting.lock();
        waiting.retain(|_, w| w.since.elapsed() < WAIT);
        match waiting.get(transfer) {
            Some(w) if w.side == side => Err(Error::new(
                ErrorCode::Conflict,
                "this side of the transfer is already connected to the relay; close that connection first",
            )),
            _ => Ok(()),
        }
    }

    /// An upgraded connection of `side`: waits for the other side, or is piped to it.
    pub async fn join(&self, transfer: String, side: Side, sender: UserId, io: Io) {
        // The first side waits in the table (its connection held there), the second pipes both.
        let other = {
            let mut waiting = self.waiting.lock();
            // A side that waited past WAIT is dropped (its connection closed) here as well.
            waiting.retain(|_, w| w.since.elapsed() < WAIT);
            match waiting.remove(&transfer) {
                Some(w) if w.side != side && w.since.elapsed() < WAIT => w.io,
                _ => {
                    waiting.insert(transfer.clone(), Waiting { side, io, since: Instant::now() });
                    return;
                }
            }
        };
        let (from_sender, to_receiver) = match side {
            Side::Sender => (io, other),
            Side::Receiver => (other, io),
        };
        tracing::debug!(transfer, "relay paired");
        let paired = Instant::now();
        let (mut s_read, mut s_write) = tokio::io::split(from_sender);
        let (mut r_read, mut r_write) = tokio::io::split(to_receiver);
        // The receiver's few lines (where to start, "done") go back unpaced.
        let back = async {
            let _ = tokio::io::copy(&mut r_read, &mut s_write).await;
            let _ = s_write.shutdown().await;
        };
        let forth = async {
            let mut transfer_bucket = ByteBucket::new(self.per_transfer);
            let mut buf = vec![0u8; 64 * 1024];
            let mut moved = 0u64;
            loop {
                let n = match s_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let wait = transfer_bucket.take(self.per_transfer, n).max(self.per_user.take(sender, n));
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                if r_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                moved += n as u64;
            }
            let _ = r_write.shutdown().await;
            moved
        };
        let ((), moved) = tokio::join!(back, forth);
        tracing::debug!(transfer, moved, secs = paired.elapsed().as_secs_f64(), "relay closed");
    }
}
