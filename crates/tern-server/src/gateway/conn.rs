//! One connection's task: a single loop that waits, in one poll, for queued pushes or a kick
//! (which is also how shutdown arrives), finished requests, inbound frames and its one timer.
//! Writes are batched per loop turn; reading pauses while too many requests are in flight, so a
//! fast sender is slowed at its own socket.

use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tern_proto::codec::compression;
use tern_proto::session::{ServerSession, SessionConfig, Verdict};
use tern_proto::{ClientFrame, CloseReason, Codec, ConnId, ConvId, PROTOCOL_VERSION, ServerFrame};
use tokio::time::{Instant, Sleep, sleep_until, timeout, timeout_at};
use tracing::Instrument;

use super::transport::{FrameIo, ReadError};
use super::unacked::{Expiry, Unacked};
use super::{Admitted, Gateway};
use crate::auth::{Identity, Principal};
use crate::dispatch::{ConnHandle, Lanes, Owner};
use crate::error::Error;
use crate::logic::bucket::Bucket;
use crate::logic::{ResumeItem, SendTo};
use crate::wire::OutFrame;

/// Why the connection ends, and the sentence sent with it.
struct Close {
    reason: CloseReason,
    message: String,
    /// The peer broke the transport's own protocol (RFC 6455): fail with this transport status
    /// and send nothing else.
    violation: Option<u16>,
}

impl Close {
    fn new(reason: CloseReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), violation: None }
    }

    /// A read that failed.
    fn read(e: ReadError) -> Self {
        let violation = match &e {
            ReadError::Violation { status, .. } => Some(*status),
            _ => None,
        };
        Self { reason: e.close_reason(), message: e.to_string(), violation }
    }
}

type Response = Pin<Box<dyn Future<Output = Arc<OutFrame>> + Send>>;

/// What the serve loop woke for.
enum Wake {
    /// Pushes, or a kick, are in the lanes.
    Lanes,
    /// A request finished.
    Response(Arc<OutFrame>),
    /// An inbound frame, the peer's close, or a read error.
    Inbound(Result<Option<(Codec, Bytes)>, ReadError>),
    /// The timer fired: a heartbeat or retry deadline may have passed.
    Timer,
}

/// Requests waiting for the store. Created by the first one and dropped when all are answered:
/// even empty, a `FuturesUnordered` holds two allocations, which an idle connection does not need.
type Inflight = Option<FuturesUnordered<Response>>;

const RESUME_CHUNK: usize = 256;
const DRAIN_BATCH: usize = 256;

struct Conn<T> {
    gw: Arc<Gateway>,
    io: T,
    conn_id: ConnId,
    codec: Codec,
    session: ServerSession,
    /// Its outbound lanes and close signal, shared with the registry.
    lanes: Arc<Lanes>,
    unacked: Unacked,
    /// Per conversation, the last seq covered by resume; queued live pushes at or below it are
    /// already on their way and are dropped.
    resumed: BTreeMap<ConvId, u64>,
    out: Vec<Arc<OutFrame>>,
    /// The client accepts brotli-compressed frames.
    brotli: bool,
    /// The room this connection is in.
    room: Option<String>,
    /// `gateway.max_sends_per_sec` (None: no limit).
    sends: Option<Bucket>,
    /// `gateway.max_history_per_sec`, made on the first `history` request (most connections
    /// make none after their resume, and this state is per connection).
    history: Option<Box<Bucket>>,
}

/// A connection's task, to be spawned. The connection state is built here, synchronously, and
/// moved once into [`lifetime`]: an `async fn` taking `gw` and `io` would hold them a second
/// time beside the state built from them for as long as the connection lives.
pub(super) fn run<T: FrameIo>(
    gw: Arc<Gateway>,
    io: T,
    conn_id: ConnId,
    peer: SocketAddr,
    slot: Admitted,
) -> impl Future<Output = ()> + Send + use<T> {
    let span =
        tracing::info_span!("conn", conn_id = conn_id.0, transport = io.kind(), %peer, user_id = tracing::field::Empty);
    let open = crate::telemetry::connections(io.kind());
    let cfg = &gw.cfg;
    let session = ServerSession::new(
        std::time::Instant::now(),
        SessionConfig {
            auth_timeout: Duration::from_millis(cfg.auth_timeout_ms),
            heartbeat: Duration::from_millis(cfg.heartbeat_ms),
            max_missed_heartbeats: cfg.max_missed_heartbeats,
        },
    );
    let lanes = Arc::new(Lanes::new(cfg.outbound_queue, cfg.low_queue));
    let sends =
        (cfg.max_sends_per_sec > 0).then(|| Bucket::new(f64::from(cfg.max_sends_per_sec), cfg.max_sends_per_sec));
    let conn = Conn {
        unacked: Unacked::default(),
        gw,
        io,
        conn_id,
        codec: Codec::Json,
        session,
        lanes,
        resumed: BTreeMap::new(),
        out: Vec::new(),
        brotli: false,
        room: None,
        sends,
        history: None,
    };
    lifetime(conn, open, slot).instrument(span)
}

/// Serves a connection, cleans up after it, closes it, and gives its slot back.
///
/// Not an `async fn`: rustc keeps an `async fn`'s by-value arguments in the future as they came
/// in *and* as the body's bindings, so the connection state (448 B) was held twice for the
/// connection's life. An `async move` block uses what it captured in place.
#[allow(clippy::manual_async_fn, reason = "an async fn would hold the connection state twice")]
fn lifetime<T: FrameIo>(
    mut conn: Conn<T>,
    open: &'static metrics::Gauge,
    slot: Admitted,
) -> impl Future<Output = ()> + Send {
    async move {
        open.increment(1.0);
        tracing::debug!("connection opened");
        let mut registered = None;
        let close = match conn.drive(&mut registered).await {
            Ok(never) => match never {},
            Err(close) => close,
        };
        conn.lanes.close();
        if let Some(handle) = registered {
            conn.gw.router.detach(&handle, conn.room.take());
            if let Owner::User(user) = handle.owner {
                conn.gw.logic.presence().disconnected(user);
            }
        }
        Box::pin(conn.finish(close)).await;
        open.decrement(1.0);
        drop(slot);
    }
}

impl<T: FrameIo> Conn<T> {
    // The task of an idle connection is this future; its size is memory per connection. So the
    // one-off phases (authentication and resume, the close) and the handling of each inbound
    // frame run as boxed futures of their own, and the long-lived state is only the `serve`
    // loop's, which waits in one hand-written poll instead of a `select!` of futures
    // (docs/BENCHMARKS.md has the history). The `spawned_task_size` test prints the size.
    async fn drive(&mut self, registered: &mut Option<ConnHandle>) -> Result<std::convert::Infallible, Close> {
        let handle = Box::pin(self.start(registered)).await?;
        self.serve(handle).await
    }

    /// Authenticates, registers, answers `auth_ok` and replays what was missed.
    /// Returns the registered handle, which is also who the connection is (user or device).
    async fn start(&mut self, registered: &mut Option<ConnHandle>) -> Result<ConnHandle, Close> {
        let (principal, resume) = self.authenticate().await?;
        let mut timer = pin!(sleep_until(Instant::now()));
        let owner = match &principal {
            Principal::User(identity) => {
                tracing::Span::current().record("user_id", identity.user_id.0);
                Owner::User(identity.user_id)
            }
            Principal::Device(_) => Owner::Device,
        };
        let handle = ConnHandle::new(self.conn_id, owner, principal.device_id().clone(), Arc::clone(&self.lanes));
        // Register before reading what was missed: a message committed from here on is queued
        // for us, one committed before is in the store; overlaps are dropped by seq.
        *registered = Some(handle.clone());
        // In a cluster, also waits until deliveries from the other nodes reach this one.
        self.gw.router.attach(&handle).await;
        if let Some(identity) = principal.user() {
            self.gw.logic.presence().connected(identity.user_id);
        }
        tracing::info!(device_id = %principal.device_id(), "authenticated");

        self.out.push(OutFrame::new(ServerFrame::AuthOk {
            proto: PROTOCOL_VERSION,
            user_id: principal.user().map(|i| i.user_id),
            device_id: principal.device_id().clone(),
            conn_id: self.conn_id,
            heartbeat_ms: self.gw.cfg.heartbeat_ms,
            max_missed_heartbeats: self.gw.cfg.max_missed_heartbeats,
            max_frame_bytes: u32::try_from(self.gw.cfg.max_frame_bytes).unwrap_or(u32::MAX),
        }));
        self.flush(timer.as_mut()).await?;
        if let (Some(have), Some(identity)) = (resume, principal.user()) {
            self.resume(identity, &have, timer.as_mut()).await?;
        }
        Ok(handle)
    }

    async fn authenticate(&mut self) -> Result<(Principal, Option<BTreeMap<ConvId, u64>>), Close> {
        let timeout_ms = self.gw.cfg.auth_timeout_ms;
        let deadline = Instant::from_std(self.session.poll_timeout().unwrap_or_else(std::time::Instant::now));
        let no_auth = || Close::new(CloseReason::AuthTimeout, format!("no valid auth frame within {timeout_ms} ms"));
        let received = tokio::select! {
            biased;
            _ = self.gw.shutdown.cancelled() => return Err(Close::new(CloseReason::ServerShutdown, "server is shutting down")),
            _ = sleep_until(deadline) => return Err(no_auth()),
            r = self.io.recv() => r,
        };
        let (codec, bytes) = match received {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(Close::new(CloseReason::ClientClosed, "closed before authenticating"));
            }
            Err(e) => return Err(Close::read(e)),
        };
        self.codec = codec;
        let now = std::time::Instant::now();
        crate::telemetry::M.frames_in.increment(1);
        let frame = match codec.decode::<ClientFrame>(&bytes) {
            Ok(f) => f,
            Err(e) => {
                self.session.on_bad_frame(now);
                return Err(Close::new(CloseReason::AuthFailed, format!("the first frame must be auth: {e}")));
            }
        };
        match self.session.on_frame(now, &frame) {
            Verdict::Authenticate => {}
            Verdict::Close(reason) => {
                let message = match reason {
                    CloseReason::UnsupportedVersion => {
                        format!("this server speaks protocol version {PROTOCOL_VERSION}")
                    }
                    _ => "the first frame must be auth".to_owned(),
                };
                return Err(Close::new(reason, message));
            }
            Verdict::Process => {
                return Err(Close::new(CloseReason::ProtocolError, "unexpected state"));
            }
        }
        let ClientFrame::Auth { token, resume, accept_compression, .. } = frame else {
            return Err(Close::new(CloseReason::ProtocolError, "unexpected state"));
        };
        self.brotli = accept_compression.iter().any(|c| c == compression::BROTLI_NAME);
        match timeout_at(deadline, self.gw.logic.authenticate(&token)).await {
            Err(_) => Err(no_auth()),
            Ok(Err(e)) => Err(Close::new(CloseReason::AuthFailed, e.message)),
            Ok(Ok(principal)) => {
                self.session.auth_succeeded(std::time::Instant::now());
                Ok((principal, resume))
            }
        }
    }

    /// Sends everything the device missed, conversation by conversation, then `synced`.
    async fn resume(
        &mut self,
        identity: &Identity,
        have: &BTreeMap<ConvId, u64>,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<(), Close> {
        let items = self
            .gw
            .logic
            .resume(identity.user_id, have)
            .await
            .map_err(|e| Close::new(CloseReason::InternalError, format!("resume failed: {}", e.message)))?;
        let conversations = u32::try_from(items.len()).unwrap_or(u32::MAX);
        for item in items {
            match item {
                ResumeItem::Push(messages) => {
                    if let Some(last) = messages.last() {
                        self.resumed.insert(last.conv_id, last.seq);
                    }
                    for chunk in messages.chunks(RESUME_CHUNK) {
                        self.out.extend(chunk.iter().map(|m| OutFrame::new(ServerFrame::Msg(m.clone()))));
                        self.flush(timer.as_mut()).await?;
                    }
                }
                ResumeItem::Gap { conv_id, from_seq, to_seq } => {
                    self.resumed.insert(conv_id, to_seq);
                    self.out.push(OutFrame::new(ServerFrame::Gap { conv_id, from_seq, to_seq }));
                }
            }
        }
        self.out.push(OutFrame::new(ServerFrame::Synced { conversations }));
        self.flush(timer).await
    }

    /// The loop an authenticated connection lives in. Its identity is the registry handle's:
    /// owner and device, with no second copy. Not an `async fn`, for the reason given at
    /// [`lifetime`]: `handle` would be kept twice.
    #[allow(clippy::manual_async_fn, reason = "an async fn would hold the handle twice")]
    fn serve(
        &mut self,
        handle: ConnHandle,
    ) -> impl Future<Output = Result<std::convert::Infallible, Close>> + Send + '_ {
        async move {
            let mut inflight: Inflight = None;
            // One timer for the connection's life. A deadline that moves later (every inbound
            // frame moves the heartbeat's) is not chased: the timer fires at the old one, finds
            // nothing due, and is set again. Only an earlier deadline re-arms it at once.
            let mut timer = pin!(sleep_until(self.deadline()));
            loop {
                let due = self.deadline();
                if timer.is_elapsed() || due < timer.deadline() {
                    timer.as_mut().reset(due);
                }
                match poll_fn(|cx| self.poll_wake(cx, inflight.as_mut(), timer.as_mut())).await {
                    Wake::Lanes => {
                        let taken = self
                            .lanes
                            .take(DRAIN_BATCH)
                            .map_err(|reason| Close::new(reason, kicked_message(reason)))?;
                        for frame in taken.frames {
                            self.queue_push(frame)?;
                        }
                        if taken.low_drained {
                            self.lanes.caught_up();
                        }
                    }
                    Wake::Response(response) => {
                        self.out.push(response);
                        if inflight.as_ref().is_some_and(FuturesUnordered::is_empty) {
                            inflight = None;
                        }
                    }
                    Wake::Inbound(received) => {
                        Box::pin(self.on_inbound(received, &handle, &mut inflight)).await?;
                    }
                    Wake::Timer => self.on_timer()?,
                }
                self.flush(timer.as_mut()).await?;
            }
        }
    }

    /// The earliest of the heartbeat and retry deadlines.
    fn deadline(&mut self) -> Instant {
        [self.session.poll_timeout(), self.unacked.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map_or_else(|| Instant::now() + Duration::from_secs(3600), Instant::from_std)
    }

    /// Waits for the next thing to do, in priority order: a kick or pushes (the lanes give the
    /// high lane's first), then finished requests, then input (paused while
    /// `max_inflight_requests` are in flight), then the timer.
    fn poll_wake(
        &mut self,
        cx: &mut Context<'_>,
        inflight: Option<&mut FuturesUnordered<Response>>,
        timer: Pin<&mut Sleep>,
    ) -> Poll<Wake> {
        if self.lanes.poll_ready(cx).is_ready() {
            return Poll::Ready(Wake::Lanes);
        }
        let mut busy = 0;
        if let Some(inflight) = inflight {
            if let Poll::Ready(Some(response)) = inflight.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Response(response));
            }
            busy = inflight.len();
        }
        if busy < self.gw.cfg.max_inflight_requests
            && let Poll::Ready(received) = self.io.poll_recv(cx)
        {
            return Poll::Ready(Wake::Inbound(received));
        }
        timer.poll(cx).map(|()| Wake::Timer)
    }

    fn queue_push(&mut self, frame: Arc<OutFrame>) -> Result<(), Close> {
        if let ServerFrame::Msg(m) = frame.frame()
            && self.resumed.get(&m.conv_id).is_some_and(|&upto| m.seq <= upto)
        {
            return Ok(());
        }
        if let Some(id) = frame.ack_id() {
            if self.unacked.len() >= self.gw.cfg.max_unacked {
                return Err(Close::new(
                    CloseReason::SlowConsumer,
                    format!("more than {} pushed messages unacknowledged", self.gw.cfg.max_unacked),
                ));
            }
            // A stored message left unacknowledged ends the connection (the device resumes from
            // the store); a must-arrive push has no store behind it, so it is given up and counted.
            let (expiry, ttl) = match frame.frame() {
                ServerFrame::Msg(_) => (Expiry::Close, self.gw.cfg.push_ttl_ms),
                _ => (Expiry::Drop, self.gw.qos1_ttl_ms),
            };
            self.unacked.sent(
                &self.gw.retry,
                id,
                Arc::clone(&frame),
                std::time::Instant::now(),
                expiry,
                Duration::from_millis(ttl),
            );
        }
        self.out.push(frame);
        Ok(())
    }

    async fn on_inbound(
        &mut self,
        received: Result<Option<(Codec, Bytes)>, ReadError>,
        handle: &ConnHandle,
        inflight: &mut Inflight,
    ) -> Result<(), Close> {
        let (codec, bytes) = match received {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(Close::new(CloseReason::ClientClosed, "closed by the client"));
            }
            Err(e) => return Err(Close::read(e)),
        };
        let now = std::time::Instant::now();
        crate::telemetry::M.frames_in.increment(1);
        let frame = match codec.decode::<ClientFrame>(&bytes) {
            Ok(f) => f,
            Err(e) => {
                if let Verdict::Close(reason) = self.session.on_bad_frame(now) {
                    return Err(Close::new(reason, e.message));
                }
                tracing::debug!(code = e.code.as_str(), "bad frame");
                self.out.push(OutFrame::new(ServerFrame::error(e.id, e.code, e.message)));
                return Ok(());
            }
        };
        if let Verdict::Close(reason) = self.session.on_frame(now, &frame) {
            return Err(Close::new(reason, "auth was already done on this connection"));
        }
        match frame {
            ClientFrame::Ping => self.out.push(OutFrame::new(ServerFrame::Pong)),
            ClientFrame::Ack { msg_ids } => self.unacked.acked(&msg_ids),
            ClientFrame::Send { id, to, conv_id, client_msg_id, body } => {
                let Owner::User(user_id) = handle.owner else {
                    self.out.push(error_frame(id, login_needed()));
                    return Ok(());
                };
                if let Some(Err(secs)) = self.sends.as_mut().map(Bucket::take) {
                    let why = format!(
                        "over {} messages per second on this connection; retry in {secs} s",
                        self.gw.cfg.max_sends_per_sec
                    );
                    self.out.push(error_frame(id, Error::new(tern_proto::ErrorCode::RateLimited, why)));
                    return Ok(());
                }
                let to = match (to, conv_id) {
                    (Some(user), None) => SendTo::User(user),
                    (None, Some(conv)) => SendTo::Conv(conv),
                    _ => {
                        self.out.push(error_frame(id, Error::bad_request("give exactly one of `to` and `conv_id`")));
                        return Ok(());
                    }
                };
                // Queue now, in arrival order; wait for durability off the loop.
                let identity = Identity { user_id, device_id: handle.device_id.clone() };
                match self.gw.logic.send(&identity, to, client_msg_id, body).await {
                    Err(e) => self.out.push(error_frame(id, e)),
                    Ok(ticket) => inflight.get_or_insert_default().push(Box::pin(async move {
                        let answered = ticket.await;
                        crate::telemetry::observe(&crate::telemetry::M.send_ack, now.elapsed());
                        match answered {
                            Ok(Ok(a)) => OutFrame::new(ServerFrame::Sent {
                                id,
                                msg_id: a.message.msg_id,
                                conv_id: a.message.conv_id,
                                seq: a.message.seq,
                                ts: a.message.ts,
                                duplicate: a.duplicate,
                            }),
                            Ok(Err(e)) => error_frame(id, Error::from(e)),
                            Err(_) => error_frame(
                                id,
                                Error::from(crate::store::StoreError::Unavailable(
                                    "the store stopped before answering".into(),
                                )),
                            ),
                        }
                    })),
                }
            }
            ClientFrame::History { id, conv_id, after_seq, before_seq, limit } => {
                let Owner::User(user) = handle.owner else {
                    self.out.push(error_frame(id, login_needed()));
                    return Ok(());
                };
                let per_sec = self.gw.cfg.max_history_per_sec;
                if per_sec > 0 {
                    let bucket = self.history.get_or_insert_with(|| Box::new(Bucket::new(f64::from(per_sec), per_sec)));
                    let asked = limit.unwrap_or(crate::logic::DEFAULT_PAGE).max(1);
                    if let Err(secs) = bucket.take_n(f64::from(asked)) {
                        let why = format!(
                            "over {per_sec} messages of history per second on this connection; retry in {secs} s"
                        );
                        let e = Error::new(tern_proto::ErrorCode::RateLimited, why).retry_after(secs);
                        self.out.push(error_frame(id, e));
                        return Ok(());
                    }
                }
                let logic = Arc::clone(&self.gw.logic);
                inflight.get_or_insert_default().push(Box::pin(async move {
                    match logic.history(user, conv_id, after_seq, before_seq, limit).await {
                        Ok((messages, last_seq, from)) => {
                            let from_seq = (from > 1).then_some(from);
                            OutFrame::new(ServerFrame::History { id, conv_id, messages, last_seq, from_seq })
                        }
                        Err(e) => error_frame(id, e),
                    }
                }));
            }
            ClientFrame::Read { id, conv_id, seq } => {
                let Owner::User(user) = handle.owner else {
                    self.out.push(error_frame(id, login_needed()));
                    return Ok(());
                };
                let logic = Arc::clone(&self.gw.logic);
                inflight.get_or_insert_default().push(Box::pin(async move {
                    match logic.mark_read(user, conv_id, seq).await {
                        Ok(()) => OutFrame::new(ServerFrame::Ok { id }),
                        Err(e) => error_frame(id, e),
                    }
                }));
            }
            ClientFrame::Recall { id, conv_id, seq } => {
                let Owner::User(user) = handle.owner else {
                    self.out.push(error_frame(id, login_needed()));
                    return Ok(());
                };
                let logic = Arc::clone(&self.gw.logic);
                inflight.get_or_insert_default().push(Box::pin(async move {
                    match logic.recall(user, conv_id, seq).await {
                        Ok(()) => OutFrame::new(ServerFrame::Ok { id }),
                        Err(e) => error_frame(id, e),
                    }
                }));
            }
            ClientFrame::Typing { conv_id } => {
                let result = match handle.owner {
                    Owner::User(user) => self.gw.logic.typing(user, conv_id),
                    Owner::Device => Err(login_needed()),
                };
                if let Err(e) = result {
                    self.out.push(OutFrame::new(ServerFrame::error(None, e.code, e.message)));
                }
            }
            ClientFrame::Join { id, room } => {
                if !tern_proto::frame::valid_name(&room) {
                    let e = Error::bad_request("room names are 1 to 64 characters of [A-Za-z0-9_.:-]");
                    self.out.push(error_frame(id, e));
                    return Ok(());
                }
                let area = self.gw.logic.room_area(&room);
                let online = self.gw.router.enter_room(handle, &mut self.room, room.clone(), &area).await;
                tracing::debug!(%room, %area, online, "joined room");
                self.out.push(OutFrame::new(ServerFrame::Joined { id, room, area, online }));
            }
            ClientFrame::Leave { id } => {
                let room = self.gw.router.leave_room(self.conn_id, &mut self.room);
                self.out.push(OutFrame::new(ServerFrame::Left { id, room }));
            }
            ClientFrame::Auth { .. } => {}
        }
        Ok(())
    }

    fn on_timer(&mut self) -> Result<(), Close> {
        let now = std::time::Instant::now();
        if let Some(reason) = self.session.handle_timeout(now) {
            let silence = self.gw.cfg.heartbeat_ms * u64::from(self.gw.cfg.max_missed_heartbeats);
            return Err(Close::new(reason, format!("nothing received for {silence} ms")));
        }
        let due = self.unacked.due(&self.gw.retry, now);
        if due.dropped > 0 {
            self.gw.qos1_expired.fetch_add(due.dropped, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(dropped = due.dropped, "must-arrive pushes unacknowledged past their TTL");
        }
        if due.expired {
            return Err(Close::new(
                CloseReason::AckTimeout,
                format!("pushed messages unacknowledged for {} ms; reconnect and resume", self.gw.cfg.push_ttl_ms),
            ));
        }
        crate::telemetry::M.retries.increment(due.resend.len() as u64);
        self.out.extend(due.resend);
        Ok(())
    }

    /// Writes what the turn produced, in one batch. The write is given `gateway.slow_consumer_ms`
    /// once it has to wait; `timer` (the caller's, re-armed by it after) measures that, so a write
    /// the socket takes at once, the usual case, touches no timer.
    async fn flush(&mut self, mut timer: Pin<&mut Sleep>) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        record_written(&self.out);
        let queued = self.io.queue(self.codec, self.brotli, &self.out);
        self.out.clear();
        let limit = Duration::from_millis(self.gw.cfg.slow_consumer_ms);
        let mut armed = false;
        let result = match queued {
            Err(e) => Some(Err(e)),
            Ok(()) => {
                poll_fn(|cx| {
                    if let Poll::Ready(written) = self.io.poll_send(cx) {
                        return Poll::Ready(Some(written));
                    }
                    if !armed {
                        timer.as_mut().reset(Instant::now() + limit);
                        armed = true;
                    }
                    timer.as_mut().poll(cx).map(|()| None)
                })
                .await
            }
        };
        match result {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Close::new(CloseReason::TransportError, format!("write failed: {e}"))),
            None => {
                Err(Close::new(CloseReason::SlowConsumer, format!("socket not writable for {} ms", limit.as_millis())))
            }
        }
    }

    /// Says goodbye with a reason (when the peer can still hear it) and records the close.
    async fn finish(mut self, close: Close) {
        let Close { reason, message, violation } = close;
        self.gw.record_close(reason);
        if let Some(status) = violation {
            tracing::info!(reason = reason.as_str(), status, %message, "failing connection");
            self.io.fail(status).await;
            return;
        }
        match reason {
            CloseReason::ClientClosed | CloseReason::TransportError => {
                tracing::info!(reason = reason.as_str(), %message, "connection closed");
            }
            _ => {
                tracing::info!(reason = reason.as_str(), %message, "closing connection");
                let retry_after_ms = match reason {
                    CloseReason::ServerShutdown => Some(500 + rand::random::<u64>() % 4500),
                    CloseReason::SlowConsumer | CloseReason::InternalError => Some(1000),
                    _ => None,
                };
                self.out.clear();
                // A consumer cut for not reading would find its last words behind the backlog
                // that got it cut: they go right after the frame being written, and it is given
                // longer to read them (its resume fetches what the dropped frames held).
                let grace = if reason == CloseReason::SlowConsumer {
                    self.io.discard_unstarted();
                    Duration::from_secs(5)
                } else {
                    Duration::from_secs(1)
                };
                self.out.push(OutFrame::new(ServerFrame::Close { reason, message, retry_after_ms }));
                let _ = timeout(grace, self.io.send(self.codec, false, &self.out)).await;
            }
        }
        self.io.close(reason).await;
    }
}

fn error_frame(id: u64, e: Error) -> Arc<OutFrame> {
    OutFrame::new(ServerFrame::error(Some(id), e.code, e.message))
}

fn login_needed() -> Error {
    Error::new(tern_proto::ErrorCode::Forbidden, "log in as a user to do this (this connection uses a device token)")
}

/// Counts frames going out, and samples how long messages took from acceptance to this write
/// (1 in 16 messages, chosen by id, so a busy group does not flood the histogram).
fn record_written(out: &[Arc<OutFrame>]) {
    let m = &*crate::telemetry::M;
    m.frames_out.increment(out.len() as u64);
    let now = crate::clock::now_ms();
    for f in out {
        if let ServerFrame::Msg(msg) = f.frame()
            && (msg.msg_id.0 >> 10) & 15 == 0
        {
            let waited = now.saturating_sub(crate::logic::ids::issued_ms(msg.msg_id));
            m.delivery.record(waited as f64 / 1000.0);
        }
    }
}

fn kicked_message(reason: CloseReason) -> String {
    match reason {
        CloseReason::Replaced => "another connection authenticated as this user and device".into(),
        CloseReason::ServerShutdown => "server is shutting down; reconnect".into(),
        CloseReason::SlowConsumer => "fell too far behind (queue overflow); reconnect and resume".into(),
        CloseReason::AuthFailed => {
            "the session ended (logout, password change or account disabled); log in again".into()
        }
        other => other.as_str().replace('_', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::super::transport::tcp::TcpIo;
    use super::super::transport::ws::WsIo;
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, C, D, E, R>(_: fn(A, B, C, D, E) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// An idle connection's task is this future (plus tokio's header, in a 128-byte aligned
    /// cell), so its size is most of the memory per connection (docs/BENCHMARKS.md).
    #[test]
    fn spawned_task_size() {
        let (tcp, ws) = (returned_size(run::<TcpIo>), returned_size(run::<WsIo>));
        eprintln!("connection task: tcp {tcp} B, ws {ws} B");
        assert!(tcp <= 1024, "the TCP connection task grew to {tcp} B");
    }
}
