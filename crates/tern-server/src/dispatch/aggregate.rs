//! Aggregation of low-priority pushes per target (room, area, everyone).
//!
//! One task owns every open batch. A best-effort push joins its target's batch; the batch is
//! published when it reaches `max_count` or its window ends — as one `batch` frame, encoded once
//! and compressed once for all its recipients. A must-arrive (QoS 1) low push is not batched (it
//! needs its own ACK) but goes through the same task, after its target's open batch, so the low
//! lane keeps its order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tern_proto::{Priority, Push, PushScope, ServerFrame};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::bus::{Bus, Envelope, Target};
use crate::wire::OutFrame;

/// Aggregation settings.
#[derive(Debug, Clone, Copy)]
pub struct AggregateConfig {
    /// Batch best-effort low pushes at all (off: each is published alone, still in order).
    pub enabled: bool,
    /// How long a batch stays open.
    pub window: Duration,
    /// A batch is published as soon as it holds this many pushes.
    pub max_count: usize,
    /// Frames whose encoding is longer than this are compressed for clients that accept it.
    pub compress_over: usize,
    /// Pushes queued for the aggregator before the push API answers 503.
    pub queue: usize,
}

/// A target that can be aggregated, as a map key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Room(String),
    Area(String),
    All,
}

impl Key {
    fn of(target: &Target) -> Option<Self> {
        match target {
            Target::Room(r) => Some(Key::Room(r.clone())),
            Target::Area(a) => Some(Key::Area(a.clone())),
            Target::All => Some(Key::All),
            _ => None,
        }
    }

    fn target(&self) -> Target {
        match self {
            Key::Room(r) => Target::Room(r.clone()),
            Key::Area(a) => Target::Area(a.clone()),
            Key::All => Target::All,
        }
    }

    fn scope(&self) -> PushScope {
        match self {
            Key::Room(r) => PushScope::Room { room: r.clone() },
            Key::Area(a) => PushScope::Area { area: a.clone() },
            Key::All => PushScope::All,
        }
    }
}

struct Open {
    deadline: Instant,
    pushes: Vec<Push>,
}

pub(super) fn spawn(bus: Arc<dyn Bus>, cfg: AggregateConfig) -> mpsc::Sender<(Target, Push)> {
    // Bounded: when business servers push faster than we fan out, the API says 503.
    let (tx, rx) = mpsc::channel(cfg.queue.max(1));
    tokio::spawn(run(rx, bus, cfg));
    tx
}

async fn run(mut rx: mpsc::Receiver<(Target, Push)>, bus: Arc<dyn Bus>, cfg: AggregateConfig) {
    let mut open: HashMap<Key, Open> = HashMap::new();
    let mut deadlines: BinaryHeap<Reverse<(Instant, Key)>> = BinaryHeap::new();
    let publish = |key: &Key, frame: ServerFrame| {
        let frame = OutFrame::compressible(frame, cfg.compress_over);
        bus.publish(Envelope { target: key.target(), frame, priority: Priority::Low });
    };
    let flush = |open: &mut HashMap<Key, Open>, key: &Key| {
        if let Some(batch) = open.remove(key)
            && !batch.pushes.is_empty()
        {
            publish(key, ServerFrame::Batch { scope: key.scope(), pushes: batch.pushes });
        }
    };
    loop {
        let next = deadlines.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            item = rx.recv() => {
                let Some((target, push)) = item else {
                    let keys: Vec<Key> = open.keys().cloned().collect();
                    keys.iter().for_each(|k| flush(&mut open, k));
                    return;
                };
                let Some(key) = Key::of(&target) else { continue };
                if !cfg.enabled || push.qos >= 1 {
                    flush(&mut open, &key);
                    publish(&key, ServerFrame::Push(push));
                    continue;
                }
                let batch = open.entry(key.clone()).or_insert_with(|| {
                    let deadline = Instant::now() + cfg.window;
                    deadlines.push(Reverse((deadline, key.clone())));
                    Open { deadline, pushes: Vec::new() }
                });
                batch.pushes.push(push);
                if batch.pushes.len() >= cfg.max_count {
                    flush(&mut open, &key);
                }
            }
            _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while let Some(Reverse((at, key))) = deadlines.peek().cloned() {
                    if at > now {
                        break;
                    }
                    deadlines.pop();
                    // A batch flushed early by count has a newer (or no) deadline: skip stale ones.
                    if open.get(&key).is_some_and(|b| b.deadline == at) {
                        flush(&mut open, &key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use serde_json::json;
    use tern_proto::MsgId;

    use super::*;

    #[derive(Default)]
    struct Capture(Mutex<Vec<Envelope>>);

    impl Bus for Capture {
        fn publish(&self, envelope: Envelope) {
            self.0.lock().push(envelope);
        }
    }

    fn push(id: u64, qos: u8) -> Push {
        Push {
            msg_id: MsgId(id),
            priority: Priority::Low,
            qos,
            scope: PushScope::Room { room: "r".into() },
            ts: 0,
            data: json!(id),
            from: None,
        }
    }

    fn ids(frame: &ServerFrame) -> Vec<u64> {
        match frame {
            ServerFrame::Batch { pushes, .. } => pushes.iter().map(|p| p.msg_id.0).collect(),
            ServerFrame::Push(p) => vec![p.msg_id.0],
            _ => vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_count_and_window_and_keeps_qos1_in_order() {
        let bus = Arc::new(Capture::default());
        let cfg = AggregateConfig {
            enabled: true,
            window: Duration::from_millis(100),
            max_count: 3,
            compress_over: usize::MAX,
            queue: 64,
        };
        let tx = spawn(bus.clone(), cfg);
        let room = || Target::Room("r".into());
        for id in 1..=4 {
            tx.send((room(), push(id, 0))).await.unwrap();
        }
        tx.send((room(), push(5, 1))).await.unwrap(); // must-arrive: flushes [4] first
        tx.send((room(), push(6, 0))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen: Vec<Vec<u64>> = bus.0.lock().iter().map(|e| ids(e.frame.frame())).collect();
        assert_eq!(seen, vec![vec![1, 2, 3], vec![4], vec![5]], "6 waits for its window");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen: Vec<Vec<u64>> = bus.0.lock().iter().map(|e| ids(e.frame.frame())).collect();
        assert_eq!(seen.last(), Some(&vec![6]));
        assert!(matches!(bus.0.lock()[0].frame.frame(), ServerFrame::Batch { .. }));
        assert!(matches!(bus.0.lock()[2].frame.frame(), ServerFrame::Push(_)));
    }
}
