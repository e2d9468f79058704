//! Message ids: unique across nodes without coordination, roughly time-ordered.
//!
//! Layout: milliseconds since 2025-01-01 in the high 42 bits, a 12-bit counter, a 10-bit node id.
//! Ids from one node strictly increase: when the clock stalls or steps back the counter carries
//! into the time bits, never into the node bits.

use std::sync::atomic::{AtomicU64, Ordering};

use tern_proto::MsgId;

use crate::clock::now_ms;

const EPOCH_MS: u64 = 1_735_689_600_000;
const NODE_BITS: u32 = 10;
const TIME_SHIFT: u32 = 22;

/// Generates message ids for one node.
pub struct MsgIdGen {
    node: u64,
    last: AtomicU64,
}

impl MsgIdGen {
    /// A generator for node `node` (0–1023).
    pub fn new(node: u16) -> Self {
        Self { node: u64::from(node) & ((1 << NODE_BITS) - 1), last: AtomicU64::new(0) }
    }

    /// The next id.
    pub fn next(&self) -> MsgId {
        let from_clock = (now_ms().saturating_sub(EPOCH_MS) << TIME_SHIFT) | self.node;
        let step = 1 << NODE_BITS;
        let prev = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some((last + step).max(from_clock)))
            .unwrap_or_else(|v| v);
        MsgId((prev + step).max(from_clock))
    }
}

/// When an id was issued (ms since the Unix epoch): the message's acceptance time.
pub fn issued_ms(id: MsgId) -> u64 {
    (id.0 >> TIME_SHIFT) + EPOCH_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase_and_keep_the_node() {
        let g = MsgIdGen::new(7);
        let ids: Vec<u64> = (0..10_000).map(|_| g.next().0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id & 1023 == 7));
        let issued = issued_ms(MsgId(ids[0]));
        assert!(issued.abs_diff(now_ms()) < 60_000, "issued_ms reads the clock back");
    }
}
