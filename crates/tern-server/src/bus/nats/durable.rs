//! Must-arrive pushes through JetStream: the cluster's durable dispatch queue (the role Kafka has
//! in goim).
//!
//! - A must-arrive push is published once, with its whole target, on `<cluster>.q` into the
//!   file-backed stream `<cluster>_push`. The push API answers only once the stream has stored
//!   it; publishes are retried with the same `Nats-Msg-Id`, so the stream keeps one copy.
//! - Every node reads the stream through its own durable consumer `node-<id>`, delivers each push
//!   to its own matching connections (where the connection's ACK/retry machinery takes over) and
//!   **only then** acknowledges it. A node that dies, or loses NATS, between reading and
//!   delivering gets the push again (JetStream redelivers what is not acknowledged); a node that
//!   delivered but could not acknowledge skips the redelivery (`Recent`). The publishing node
//!   delivers to its own connections the same way, through its consumer.
//! - Every node reads every must-arrive push: they are the rare lane (gifts, invites, system
//!   notices), and a node picks its connections out with the same registry lookup as any
//!   delivery. The stream keeps a push for `push.qos1_ttl_ms` — after that a connection would
//!   have given it up anyway — and refuses new ones rather than dropping old ones when full.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{NatsBus, WireTarget};
use crate::bus::Envelope;

/// How long a must-arrive publish may take, retries included, before the caller is told.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// One publish attempt's wait for the stream's acknowledgement.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// Most bytes the stream holds; beyond, new pushes are refused (never old ones dropped).
const STREAM_MAX_BYTES: i64 = 1 << 30;
/// A node's consumer is removed after this long without the node (it does not come back).
const CONSUMER_INACTIVE: Duration = Duration::from_secs(3600);
/// JetStream redelivers a push not acknowledged within this.
const REDELIVER_AFTER: Duration = Duration::from_secs(5);
/// Stream sequences remembered to skip redeliveries of pushes already delivered.
const RECENT: usize = 65_536;

/// The durable queue of one node.
pub(super) struct Durable {
    js: jetstream::Context,
    stream: String,
    subject: String,
    ttl: Duration,
    /// The stream and this node's consumer exist.
    ready: watch::Receiver<bool>,
    ready_tx: watch::Sender<bool>,
}

impl Durable {
    pub(super) fn new(client: async_nats::Client, cluster: &str, ttl: Duration) -> Self {
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_WAIT);
        let (ready_tx, ready) = watch::channel(false);
        Self { js, stream: format!("{cluster}_push"), subject: format!("{cluster}.q"), ttl, ready, ready_tx }
    }

    /// The stream's subject (pushes arrive with it).
    pub(super) fn subject(&self) -> &str {
        &self.subject
    }

    /// Stores `payload` in the stream, retrying until [`PUBLISH_WAIT`] has passed.
    pub(super) async fn publish(&self, payload: Bytes, id: String) -> Result<(), String> {
        let deadline = Instant::now() + PUBLISH_WAIT;
        let mut ready = self.ready.clone();
        if tokio::time::timeout_at(deadline.into(), ready.wait_for(|r| *r)).await.is_err() {
            return Err("the push stream is not set up (NATS unreachable?)".into());
        }
        let mut last = String::new();
        while Instant::now() < deadline {
            let attempt = async {
                let publish = jetstream::message::PublishMessage::build().payload(payload.clone()).message_id(&id);
                self.js
                    .send_publish(self.subject.clone(), publish)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout_at(deadline.into(), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(if last.is_empty() { "no acknowledgement from the push stream".into() } else { last })
    }

    async fn consumer(&self, node: u16) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
        let stream = self
            .js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject.clone()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                max_age: self.ttl,
                max_bytes: STREAM_MAX_BYTES,
                discard: stream::DiscardPolicy::New,
                duplicate_window: self.ttl.min(Duration::from_secs(120)),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("push stream: {e}"))?;
        let name = format!("node-{node}");
        stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    // A node new to the cluster has no connections the earlier pushes were for.
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: REDELIVER_AFTER,
                    inactive_threshold: CONSUMER_INACTIVE,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("push consumer {name}: {e}"))
    }
}

/// Stream sequences this node has delivered lately.
struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    fn new() -> Self {
        Self { set: HashSet::with_capacity(RECENT), order: VecDeque::with_capacity(RECENT) }
    }

    /// Whether `seq` is new (and remembers it).
    fn first_time(&mut self, seq: u64) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > RECENT
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

impl NatsBus {
    /// Reads this node's consumer for the life of the bus: sets up the stream and consumer
    /// (again after NATS lost them), delivers, acknowledges.
    pub(super) async fn consume_durable(self: Arc<Self>) {
        let mut recent = Recent::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            let messages = match self.durable.consumer(self.opts.node).await {
                Ok(c) => c.messages().await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "must-arrive queue not ready; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let _ = self.durable.ready_tx.send(true);
            let mut failures = 0;
            while let Some(item) = messages.next().await {
                match item {
                    Ok(msg) => {
                        failures = 0;
                        self.take_durable(msg, &mut recent).await;
                    }
                    Err(e) => {
                        use consumer::pull::MessagesErrorKind as K;
                        failures += 1;
                        // Transient while NATS is away (the reader resumes by itself), unless
                        // they persist: then the consumer may be gone (a NATS that lost its
                        // store), and it is set up again.
                        let transient = matches!(e.kind(), K::MissingHeartbeat | K::NoResponders | K::Pull | K::Other);
                        if transient && failures < 5 {
                            tracing::debug!(error = %e, "must-arrive queue read");
                        } else {
                            tracing::warn!(error = %e, "must-arrive consumer lost; setting it up again");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Delivers one push to this node's connections, then acknowledges it to the stream.
    async fn take_durable(&self, msg: jetstream::Message, recent: &mut Recent) {
        let seq = msg.info().map(|i| i.stream_sequence).ok();
        let fresh = seq.is_none_or(|s| recent.first_time(s));
        if fresh {
            match self.decode(&msg.subject, &msg.payload) {
                Ok(Some(envelope)) => self.local.deliver(&envelope),
                Ok(None) => {}
                Err(why) => tracing::warn!(%why, "undecodable must-arrive push dropped"),
            }
        }
        if let Err(e) = msg.ack().await {
            // JetStream will redeliver it; `recent` keeps it from being delivered twice.
            tracing::debug!(error = %e, "must-arrive push not acknowledged");
        }
    }

    /// Encodes a must-arrive envelope with its whole target and stores it in the stream.
    pub(super) async fn publish_durable_now(&self, envelope: Envelope) -> Result<(), String> {
        let target = WireTarget::Any((&envelope.target).into());
        let kind = target.kind();
        let payload = self.encode(&envelope, target);
        // The same id on every retry: the stream keeps one copy. Two deliveries of one push (a
        // device push naming both kinds of device) differ in kind.
        let id = match envelope.frame.ack_id() {
            Some(id) => format!("{}-{kind}", id.0),
            None => format!("r{:016x}-{kind}", rand::random::<u64>()),
        };
        self.durable.publish(payload, id).await
    }
}
