//! Admission: the connection caps, checked before a connection costs more than its socket.
//!
//! A node takes at most `gateway.max_connections` in all and `gateway.max_connections_per_ip`
//! from one client address; past either, a new connection is refused with a jittered retry
//! hint (TCP: a `close` frame `over_capacity`; WebSocket: `503` with `Retry-After` before the
//! upgrade) and the connections already open are not touched.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Gateway, transport};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `gateway.max_connections`.
    Full,
    /// The address holds `gateway.max_connections_per_ip`.
    PerAddress,
}

impl Refusal {
    /// A sentence for the client.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Full => "the server is at its connection limit; retry later",
            Refusal::PerAddress => "too many connections from your address; retry later",
        }
    }

    /// How long to wait before retrying: 1–5 s, jittered so refused clients do not return together.
    pub fn retry_after_ms(self) -> u64 {
        1000 + rand::random::<u64>() % 4000
    }
}

/// A connection slot, held for the connection's life (released on drop).
pub struct Admitted {
    gw: Arc<Gateway>,
    ip: IpAddr,
}

impl Admitted {
    /// The connection's task, to be spawned: it runs the connection to its end and releases the
    /// slot. Not an `async fn`: each nested layer of those kept its own copy of the moved
    /// transport beside the inner future's (the spawned TCP future measured 4.2 KB).
    pub fn serve<T: transport::FrameIo>(self, io: T, peer: SocketAddr) -> impl Future<Output = ()> + Send + use<T> {
        let gw = Arc::clone(&self.gw);
        gw.serve(io, peer, self)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gw.open.fetch_sub(1, Ordering::Relaxed);
        let mut map = self.gw.per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Gateway {
    /// Takes a slot for a new connection from `ip` (the client's address, after trusted proxies).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let max = self.cfg.max_connections;
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Full);
        }
        let cap = self.cfg.max_connections_per_ip; // 0: no cap per address
        let admitted = {
            let mut map = self.per_ip.lock();
            let n = map.entry(ip).or_insert(0);
            let room = cap == 0 || *n < cap;
            if room {
                *n += 1;
            }
            room
        };
        if !admitted {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::PerAddress);
        }
        Ok(Admitted { gw: Arc::clone(self), ip })
    }
}
