//! Fan-out: from "this is to be delivered" to bytes queued on every connection that must get it.
//!
//! - [`Dispatcher`] listens to store commits (chat messages: high lane, never aggregated) and
//!   takes pushes from the push service. Low-priority best-effort pushes to a room, an area or
//!   everyone go through the [`aggregate`] task, which batches them per target over a window;
//!   everything else is published at once.
//! - The bus carries each [`Envelope`] to the node(s) holding the targets; [`Registry`] is this
//!   node's map of connections and queues the same [`OutFrame`] (an `Arc`) on each.
//! - An [`OutFrame`] (in [`crate::wire`]) is encoded at most once per codec and compressed at most once per codec,
//!   lazily, whatever the number of recipients.

mod aggregate;
mod lanes;
mod recent;
mod registry;
mod router;

use std::sync::Arc;
use std::time::Duration;

pub use aggregate::AggregateConfig;
pub use lanes::{Lanes, Offer, Taken};
pub use recent::{Recent, RecentPosts};
pub use registry::{ConnHandle, Owner, Registry, RegistryStats};
pub use router::Router;
use tern_proto::{Priority, Push, ServerFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Envelope, LocalDelivery, Target};
use crate::store::{CommitListener, Committed};
use crate::wire::OutFrame;

/// Why a push was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The aggregator's queue is full.
    #[error("the push queue is full")]
    Busy,
    /// The cluster's durable queue did not confirm a must-arrive push.
    #[error("the durable push queue did not confirm the push: {0}")]
    Unconfirmed(String),
}

/// Turns commits and pushes into deliveries.
pub struct Dispatcher {
    bus: Arc<dyn Bus>,
    aggregator: mpsc::Sender<(Target, Push)>,
    compress_over: usize,
}

impl Dispatcher {
    /// A dispatcher publishing on `bus`; starts the aggregation task (needs a tokio runtime).
    pub fn new(bus: Arc<dyn Bus>, cfg: AggregateConfig) -> Self {
        let compress_over = cfg.compress_over;
        let aggregator = aggregate::spawn(Arc::clone(&bus), cfg);
        Self { bus, aggregator, compress_over }
    }

    /// Delivers a push. In a cluster, a must-arrive push goes through the bus's durable queue and
    /// this completes once that queue has stored it. Otherwise low-priority pushes to a room, an
    /// area or everyone go through the aggregator (in order; best-effort ones batched) and the
    /// rest is published at once.
    pub async fn push(&self, target: Target, push: Push) -> Result<(), Refused> {
        let priority = push.priority;
        if push.qos >= 1 && self.bus.durable() {
            let frame = OutFrame::compressible(ServerFrame::Push(push), self.compress_over);
            return Arc::clone(&self.bus)
                .publish_durable(Envelope { target, frame, priority })
                .await
                .map_err(Refused::Unconfirmed);
        }
        let aggregated = matches!(target, Target::Room(_) | Target::Area(_) | Target::All);
        if push.priority == Priority::Low && aggregated {
            return self.aggregator.try_send((target, push)).map_err(|_| Refused::Busy);
        }
        let frame = OutFrame::compressible(ServerFrame::Push(push), self.compress_over);
        self.bus.publish(Envelope { target, frame, priority });
        Ok(())
    }

    /// Tells the other nodes of a change they must apply (see [`Control`]).
    pub fn broadcast(&self, control: crate::bus::Control) {
        self.bus.broadcast(control);
    }

    /// Publishes a frame as is (e.g. online counts).
    pub fn publish(&self, target: Target, frame: Arc<OutFrame>, priority: Priority) {
        self.bus.publish(Envelope { target, frame, priority });
    }
}

impl CommitListener for Dispatcher {
    fn committed(&self, batch: &[Committed]) {
        for c in batch {
            let users = Arc::clone(&c.recipients);
            let target = Target::Users { users, skip: Some((c.message.from, c.from_device.clone())) };
            let frame = OutFrame::new(ServerFrame::Msg(c.message.clone()));
            // Stored messages must arrive: the high lane, never dropped.
            self.bus.publish(Envelope { target, frame, priority: Priority::High });
        }
    }
}

/// Tells every room its online count, periodically, on the low lane.
pub async fn announce_online(registry: Arc<Registry>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Each node tells its own members the count over the whole cluster.
        for r in registry.local_rooms(0) {
            let count = registry.room_online(&r.room);
            let frame = OutFrame::new(ServerFrame::Online { room: r.room.clone(), count });
            registry.deliver(&crate::bus::Envelope {
                target: crate::bus::Target::Room(r.room),
                frame,
                priority: Priority::Low,
            });
        }
    }
}
