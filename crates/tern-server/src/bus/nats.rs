//! The cluster bus: envelopes between nodes over NATS core subjects, routed by interest.
//!
//! A node subscribes only to what its own connections need — `<cluster>.u.<user id>` while a
//! user has a connection here, `<cluster>.d.<device>` for an anonymous device, `<cluster>.r.<room>`
//! while the room has a member here — plus `<cluster>.all` for area and global deliveries (each
//! node picks its own members of the area). So a delivery to a user or a room reaches exactly
//! the nodes holding its connections, and NATS does the routing.
//!
//! A delivery is delivered to this node's connections at once (no round trip through NATS) and
//! published for the others; a node ignores what it published itself (`origin`). The frame
//! travels as the MessagePack encoding the binary clients get, and, when the frame is large
//! enough to be compressed, its brotli form too: so a room batch is encoded and compressed once
//! for the whole cluster, and a receiving node queues those bytes without re-encoding.
//!
//! Must-arrive pushes take the durable path instead ([`durable`]).
//!
//! Room and device names are hex-encoded in subjects (NATS splits subjects on `.`, which room
//! names may contain).

mod durable;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tern_proto::{Codec, DeviceId, Priority, ServerFrame, UserId};
use tokio::sync::{mpsc, watch};

use super::{Bus, Control, ControlHandler, Envelope, Interest, LocalDelivery, Target};
use crate::store::BoxFut;
use crate::wire::OutFrame;

/// Envelopes waiting to be published; beyond this the bus drops (and counts) rather than grow.
const PUBLISH_QUEUE: usize = 65_536;
/// How long a new connection waits for its subscription to be in place before going on without.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);

/// Where to find NATS and how this node is named in it.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:port`.
    pub url: String,
    /// Subject prefix shared by the nodes of one cluster.
    pub cluster: String,
    /// This node's id (unique in the cluster).
    pub node: u16,
    /// How long the durable queue keeps a must-arrive push (`push.qos1_ttl_ms`).
    pub durable_ttl: Duration,
}

/// What travels ahead of the frame bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    /// The publishing node.
    origin: u16,
    priority: Priority,
    target: WireTarget,
    /// The frame's compression threshold (for the encodings a receiver computes itself).
    compress_over: u64,
    /// Length of the MessagePack frame that follows; the rest is its brotli form (if any).
    frame_len: u32,
}

/// A target, less what the subject already says (which user, device or room).
#[derive(Debug, Serialize, Deserialize)]
enum WireTarget {
    /// The subject's user, except one device.
    User { skip: Option<(UserId, DeviceId)> },
    /// These devices of the subject's user.
    UserDevices(Vec<DeviceId>),
    /// The subject's anonymous device.
    Device,
    /// The subject's room.
    Room,
    /// Every local connection in a room of this area (on `<cluster>.all`).
    Area(String),
    /// Every local connection (on `<cluster>.all`).
    All,
    /// The whole target (a must-arrive push on the durable queue's subject).
    Any(AnyTarget),
}

impl WireTarget {
    /// A short name, part of a must-arrive push's id in the durable queue.
    fn kind(&self) -> &'static str {
        match self {
            WireTarget::User { .. } | WireTarget::Any(AnyTarget::Users { .. }) => "users",
            WireTarget::UserDevices(_) | WireTarget::Any(AnyTarget::UserDevices(_)) => "user-devices",
            WireTarget::Device | WireTarget::Any(AnyTarget::Devices(_)) => "devices",
            WireTarget::Room | WireTarget::Any(AnyTarget::Room(_)) => "room",
            WireTarget::Area(_) | WireTarget::Any(AnyTarget::Area(_)) => "area",
            WireTarget::All | WireTarget::Any(AnyTarget::All) => "all",
        }
    }
}

/// [`Target`] as it travels whole.
#[derive(Debug, Serialize, Deserialize)]
enum AnyTarget {
    Users { users: Vec<UserId>, skip: Option<(UserId, DeviceId)> },
    UserDevices(Vec<(UserId, DeviceId)>),
    Devices(Vec<DeviceId>),
    Room(String),
    Area(String),
    All,
}

impl From<&Target> for AnyTarget {
    fn from(t: &Target) -> Self {
        match t {
            Target::Users { users, skip } => AnyTarget::Users { users: users.to_vec(), skip: skip.clone() },
            Target::UserDevices(list) => AnyTarget::UserDevices(list.clone()),
            Target::Devices(list) => AnyTarget::Devices(list.clone()),
            Target::Room(r) => AnyTarget::Room(r.clone()),
            Target::Area(a) => AnyTarget::Area(a.clone()),
            Target::All => AnyTarget::All,
        }
    }
}

impl From<AnyTarget> for Target {
    fn from(t: AnyTarget) -> Self {
        match t {
            AnyTarget::Users { users, skip } => Target::Users { users: users.into(), skip },
            AnyTarget::UserDevices(list) => Target::UserDevices(list),
            AnyTarget::Devices(list) => Target::Devices(list),
            AnyTarget::Room(r) => Target::Room(r),
            AnyTarget::Area(a) => Target::Area(a),
            AnyTarget::All => Target::All,
        }
    }
}

struct Subscription {
    refs: usize,
    ready: watch::Receiver<bool>,
    task: tokio::task::AbortHandle,
}

/// The NATS bus of one node.
pub struct NatsBus {
    client: async_nats::Client,
    opts: NatsOptions,
    local: Arc<dyn LocalDelivery>,
    outbox: mpsc::Sender<Envelope>,
    subscriptions: Mutex<HashMap<Interest, Subscription>>,
    dropped: AtomicU64,
    control: std::sync::OnceLock<ControlHandler>,
    durable: durable::Durable,
    /// Controls and statuses, published in the order they were made (a presence delta must not
    /// overtake the one before it).
    notices: mpsc::Sender<(String, Bytes)>,
}

/// A control as published on `<cluster>.ctl`.
#[derive(Debug, Serialize, Deserialize)]
struct ControlMsg {
    origin: u16,
    control: Control,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

impl NatsBus {
    /// Connects (retrying in the background if NATS is not up yet), starts the publisher and
    /// subscribes to `<cluster>.all`.
    pub async fn connect(
        opts: NatsOptions,
        local: Arc<dyn LocalDelivery>,
        peers: Arc<crate::cluster::Peers>,
    ) -> Result<Arc<Self>, String> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("tern-node-{}", opts.node))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected; reconnecting"),
                    other => tracing::debug!(%other, "nats event"),
                }
            })
            .connect(opts.url.as_str())
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", opts.url))?;
        let (outbox, rx) = mpsc::channel(PUBLISH_QUEUE);
        let durable = durable::Durable::new(client.clone(), &opts.cluster, opts.durable_ttl);
        let (notices, mut notices_rx) = mpsc::channel::<(String, Bytes)>(PUBLISH_QUEUE);
        {
            let client = client.clone();
            tokio::spawn(async move {
                while let Some((subject, payload)) = notices_rx.recv().await {
                    // Fails only when the client is closed; while disconnected it buffers.
                    if let Err(e) = client.publish(subject, payload).await {
                        tracing::warn!(error = %e, "control publish failed");
                    }
                }
            });
        }
        let bus = Arc::new(Self {
            notices,
            durable,
            client,
            opts,
            local,
            outbox,
            subscriptions: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            control: std::sync::OnceLock::new(),
        });
        tokio::spawn(Arc::clone(&bus).publisher(rx));
        tokio::spawn(Arc::clone(&bus).consume_durable());
        let all = format!("{}.all", bus.opts.cluster);
        let sub = bus.client.subscribe(all).await.map_err(|e| format!("cannot subscribe: {e}"))?;
        bus.client.flush().await.map_err(|e| format!("NATS flush: {e}"))?;
        tokio::spawn(Arc::clone(&bus).receive(sub));
        let ctl = format!("{}.ctl", bus.opts.cluster);
        let sub = bus.client.subscribe(ctl).await.map_err(|e| format!("cannot subscribe: {e}"))?;
        bus.client.flush().await.map_err(|e| format!("NATS flush: {e}"))?;
        tokio::spawn(Arc::clone(&bus).receive_controls(sub));
        let nodes = format!("{}.nodes", bus.opts.cluster);
        let mut sub = bus.client.subscribe(nodes).await.map_err(|e| format!("cannot subscribe: {e}"))?;
        let me = bus.opts.node;
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                match serde_json::from_slice::<crate::cluster::NodeStatus>(&msg.payload) {
                    Ok(s) if s.node == me => {}
                    Ok(s) => peers.heard(s),
                    Err(e) => tracing::warn!(error = %e, "undecodable node status dropped"),
                }
            }
        });
        Ok(bus)
    }

    /// Queues a control or status for publishing, in order. When the queue is full (NATS away
    /// for long) a `must` one waits for room (out of order), the others are dropped: statuses
    /// repeat and presence recovers by snapshot.
    fn notice(&self, subject: String, payload: Bytes, must: bool) {
        match self.notices.try_send((subject, payload)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) if must => {
                let queue = self.notices.clone();
                tokio::spawn(async move {
                    let _ = queue.send(item).await;
                });
            }
            Err(_) => tracing::warn!("control queue full; a status or presence change was dropped"),
        }
    }

    /// Envelopes dropped because the publish queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn subject(&self, key: &Interest) -> String {
        let c = &self.opts.cluster;
        match key {
            Interest::User(u) => format!("{c}.u.{}", u.0),
            Interest::Device(d) => format!("{c}.d.{}", hex(&d.0)),
            Interest::Room(r) => format!("{c}.r.{}", hex(r)),
        }
    }

    /// Encodes once; the same bytes go out on every subject.
    fn encode(&self, envelope: &Envelope, target: WireTarget) -> Bytes {
        let frame = envelope.frame.binary();
        let compressed = envelope.frame.binary_compressed();
        let compressed = compressed.as_ref();
        let head = Head {
            origin: self.opts.node,
            priority: envelope.priority,
            target,
            compress_over: envelope.frame.compress_over() as u64,
            frame_len: frame.len() as u32,
        };
        // A head of plain types always serializes.
        let head = serde_json::to_vec(&head).unwrap_or_default();
        let mut out = BytesMut::with_capacity(2 + head.len() + frame.len() + compressed.map_or(0, Bytes::len));
        out.put_u16(head.len() as u16);
        out.put_slice(&head);
        out.put_slice(&frame);
        if let Some(c) = compressed {
            out.put_slice(c);
        }
        out.freeze()
    }

    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Envelope>) {
        while let Some(envelope) = rx.recv().await {
            let c = &self.opts.cluster;
            let mut sends: Vec<(String, Bytes)> = Vec::new();
            match &envelope.target {
                Target::Users { users, skip } => {
                    let payload = self.encode(&envelope, WireTarget::User { skip: skip.clone() });
                    sends.extend(users.iter().map(|u| (self.subject(&Interest::User(*u)), payload.clone())));
                }
                Target::UserDevices(list) => {
                    let mut by_user: HashMap<UserId, Vec<DeviceId>> = HashMap::new();
                    for (u, d) in list {
                        by_user.entry(*u).or_default().push(d.clone());
                    }
                    for (u, devices) in by_user {
                        let payload = self.encode(&envelope, WireTarget::UserDevices(devices));
                        sends.push((self.subject(&Interest::User(u)), payload));
                    }
                }
                Target::Devices(devices) => {
                    let payload = self.encode(&envelope, WireTarget::Device);
                    sends.extend(devices.iter().map(|d| (self.subject(&Interest::Device(d.clone())), payload.clone())));
                }
                Target::Room(room) => {
                    sends.push((self.subject(&Interest::Room(room.clone())), self.encode(&envelope, WireTarget::Room)));
                }
                Target::Area(area) => {
                    sends.push((format!("{c}.all"), self.encode(&envelope, WireTarget::Area(area.clone()))));
                }
                Target::All => sends.push((format!("{c}.all"), self.encode(&envelope, WireTarget::All))),
            }
            for (subject, payload) in sends {
                // Fails only when the client is closed; while disconnected it buffers.
                if let Err(e) = self.client.publish(subject, payload).await {
                    tracing::warn!(error = %e, "nats publish failed");
                }
            }
        }
    }

    /// Delivers what arrives on one subscription to this node's connections.
    async fn receive(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            match self.decode(&msg.subject, &msg.payload) {
                Ok(Some(envelope)) => self.local.deliver(&envelope),
                Ok(None) => {}
                Err(why) => tracing::warn!(subject = %msg.subject, %why, "undecodable bus message dropped"),
            }
        }
    }

    async fn receive_controls(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            match serde_json::from_slice::<ControlMsg>(&msg.payload) {
                Ok(m) if m.origin == self.opts.node => {}
                Ok(m) => match self.control.get() {
                    Some(apply) => apply(m.control),
                    None => tracing::warn!(control = ?m.control, "control before start-up finished; dropped"),
                },
                Err(e) => tracing::warn!(error = %e, "undecodable control dropped"),
            }
        }
    }

    /// The envelope for this node, or `None` for its own publication.
    fn decode(&self, subject: &str, payload: &Bytes) -> Result<Option<Envelope>, String> {
        let short = || "payload too short".to_owned();
        let head_len =
            usize::from(u16::from_be_bytes([*payload.first().ok_or_else(short)?, *payload.get(1).ok_or_else(short)?]));
        let head: Head =
            serde_json::from_slice(payload.get(2..2 + head_len).ok_or_else(short)?).map_err(|e| e.to_string())?;
        // A node delivers its own publications at once, except must-arrive pushes, which reach
        // every node (this one included) through the durable queue.
        let durable = subject == self.durable.subject();
        if head.origin == self.opts.node && !durable {
            return Ok(None);
        }
        let frame_at = 2 + head_len;
        let frame_end = frame_at + head.frame_len as usize;
        let binary = payload.slice(frame_at..frame_end.min(payload.len()));
        let compressed = (payload.len() > frame_end).then(|| payload.slice(frame_end..));
        let frame: ServerFrame = Codec::MsgPack.decode(&binary).map_err(|e| e.to_string())?;
        let key =
            subject.strip_prefix(&self.opts.cluster).and_then(|s| s.strip_prefix('.')).ok_or("foreign subject")?;
        let (kind, id) = key.split_once('.').unwrap_or((key, ""));
        let target = match (kind, head.target) {
            ("q", WireTarget::Any(target)) if durable => target.into(),
            ("u", WireTarget::User { skip }) => Target::Users { users: Arc::from(vec![parse_user(id)?]), skip },
            ("u", WireTarget::UserDevices(devices)) => {
                let user = parse_user(id)?;
                Target::UserDevices(devices.into_iter().map(|d| (user, d)).collect())
            }
            ("d", WireTarget::Device) => Target::Devices(vec![DeviceId(unhex(id).ok_or("bad device")?)]),
            ("r", WireTarget::Room) => Target::Room(unhex(id).ok_or("bad room")?),
            ("all", WireTarget::Area(area)) => Target::Area(area),
            ("all", WireTarget::All) => Target::All,
            (kind, target) => return Err(format!("target {target:?} on subject kind {kind:?}")),
        };
        let frame = OutFrame::from_wire(frame, head.compress_over as usize, binary, compressed);
        Ok(Some(Envelope { target, frame, priority: head.priority }))
    }
}

fn parse_user(id: &str) -> Result<UserId, String> {
    id.parse::<u64>().map(UserId).map_err(|_| format!("bad user id {id:?}"))
}

impl Bus for NatsBus {
    fn publish(&self, envelope: Envelope) {
        self.local.deliver(&envelope);
        if self.outbox.try_send(envelope).is_err() {
            // The store has every chat message (remote devices get it by resume or a gap fetch);
            // what is lost here is a live delivery, counted.
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "bus publish queue full; deliveries to other nodes dropped");
            }
        }
    }

    fn subscribe(self: Arc<Self>, key: Interest) -> BoxFut<'static, ()> {
        let mut ready = {
            let mut subs = self.subscriptions.lock();
            match subs.get_mut(&key) {
                Some(s) => {
                    s.refs += 1;
                    s.ready.clone()
                }
                None => {
                    let (tx, rx) = watch::channel(false);
                    let bus = Arc::clone(&self);
                    let subject = self.subject(&key);
                    let task = tokio::spawn(async move {
                        let sub = match bus.client.subscribe(subject.clone()).await {
                            Ok(sub) => sub,
                            Err(e) => {
                                tracing::warn!(%subject, error = %e, "nats subscribe failed");
                                return;
                            }
                        };
                        // The subscription is in place at the server once a flush returns.
                        if let Err(e) = bus.client.flush().await {
                            tracing::warn!(%subject, error = %e, "nats flush failed");
                        }
                        let _ = tx.send(true);
                        bus.receive(sub).await;
                    });
                    subs.insert(key, Subscription { refs: 1, ready: rx.clone(), task: task.abort_handle() });
                    rx
                }
            }
        };
        Box::pin(async move {
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, ready.wait_for(|r| *r)).await;
        })
    }

    fn broadcast(&self, control: Control) {
        let subject = format!("{}.ctl", self.opts.cluster);
        // Presence heals by snapshot; a cutoff or an area must get through.
        let must = !matches!(
            control,
            Control::PresenceDelta { .. } | Control::PresenceResync { .. } | Control::PresenceSnapshot { .. }
        );
        let payload = serde_json::to_vec(&ControlMsg { origin: self.opts.node, control }).unwrap_or_default();
        self.notice(subject, payload.into(), must);
    }

    fn durable(&self) -> bool {
        true
    }

    fn publish_durable(self: Arc<Self>, envelope: Envelope) -> BoxFut<'static, Result<(), String>> {
        Box::pin(async move { self.publish_durable_now(envelope).await })
    }

    fn share_status(&self, status: &crate::cluster::NodeStatus) {
        let subject = format!("{}.nodes", self.opts.cluster);
        let payload = serde_json::to_vec(status).unwrap_or_default();
        self.notice(subject, payload.into(), false);
    }

    fn on_control(&self, handler: ControlHandler) {
        let _ = self.control.set(handler);
    }

    fn unsubscribe(&self, key: Interest) {
        let mut subs = self.subscriptions.lock();
        if let Some(s) = subs.get_mut(&key) {
            s.refs -= 1;
            if s.refs == 0 {
                // Dropping the subscriber (with its task) unsubscribes.
                s.task.abort();
                subs.remove(&key);
            }
        }
    }
}
