//! One connection's I/O: a single loop that waits, in one poll, for queued pushes or a kick
//! (which is also how shutdown arrives), finished requests, inbound frames and its one timer,
//! and hands each to the connection's protocol core ([`tern_proto::conn::Connection`]), which
//! decides everything: what to answer, what to ask the server for, when to wake, when to close.
//! This file only carries out the core's requests (logic, the router) and moves bytes. Writes are
//! batched per loop turn; reading pauses while too many requests are in flight, so a fast sender
//! is slowed at its own socket.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tern_proto::conn::{self, Connection, Missed, Request};
use tern_proto::{CloseReason, Codec, ConnId, ServerFrame};
use tokio::time::{Instant, Sleep, sleep_until, timeout, timeout_at};
use tracing::Instrument;

use super::transport::{FrameIo, ReadError};
use super::{Admitted, Gateway};
use crate::auth::{Identity, Principal};
use crate::dispatch::{ConnHandle, Lanes, Owner};
use crate::error::Error;
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

impl From<conn::Close> for Close {
    fn from(c: conn::Close) -> Self {
        Self::new(c.reason, c.message)
    }
}

type Response = Pin<Box<dyn Future<Output = Arc<OutFrame>> + Send>>;

/// What woke the connection's loop.
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
    /// The client's address (the forwarded one behind a trusted proxy), for the logs.
    peer: SocketAddr,
    /// The protocol.
    core: Connection<OutFrame>,
    /// Its outbound lanes and close signal, shared with the registry.
    lanes: Arc<Lanes>,
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
    let open = crate::telemetry::connections(io.kind());
    let core = Connection::new(&gw.conn_cfg, std::time::Instant::now());
    let lanes = Arc::new(Lanes::new(gw.cfg.outbound_queue, gw.cfg.low_queue));
    let conn = Conn { gw, io, conn_id, peer, core, lanes };
    lifetime(conn, open, slot)
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
        let mut registered = None;
        let close = match conn.drive(&mut registered).await {
            Ok(never) => match never {},
            Err(close) => close,
        };
        conn.lanes.close();
        let mut user = None;
        if let Some(handle) = registered {
            let room = conn.core.take_room();
            if let (Owner::User(u), Some(room)) = (handle.owner, &room) {
                conn.gw.logic.live().left(room, u, 1);
            }
            conn.gw.router.detach(&handle, room);
            if let Owner::User(u) = handle.owner {
                conn.gw.logic.presence().disconnected(u);
                user = Some(u.0);
            }
        }
        let span = conn.span(user);
        Box::pin(conn.finish(close)).instrument(span).await;
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
    //
    // For the same reason no tracing span lives as long as the connection: a span stays in the
    // subscriber's registry, its fields formatted, for as long as it exists (measured: ~430 B
    // per idle connection at the default log level). The one-off phases run inside a span of
    // their own; events of the serve loop name the connection themselves.
    async fn drive(&mut self, registered: &mut Option<ConnHandle>) -> Result<std::convert::Infallible, Close> {
        let span = self.span(None);
        let handle = Box::pin(self.start(registered)).instrument(span).await?;
        self.serve(handle).await
    }

    /// The span of a one-off phase (authentication, the close).
    fn span(&self, user: Option<u64>) -> tracing::Span {
        let span = tracing::info_span!(
            "conn",
            conn_id = self.conn_id.0,
            transport = self.io.kind(),
            peer = %self.peer,
            user_id = tracing::field::Empty
        );
        if let Some(user) = user {
            span.record("user_id", user);
        }
        span
    }

    /// Authenticates, registers, answers `auth_ok` and replays what was missed.
    /// Returns the registered handle, which is also who the connection is (user or device).
    async fn start(&mut self, registered: &mut Option<ConnHandle>) -> Result<ConnHandle, Close> {
        tracing::debug!("connection opened");
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
        let user = principal.user().map(|i| i.user_id);
        let now = std::time::Instant::now();
        let asked =
            self.core.authenticated(&self.gw.conn_cfg, now, user, principal.device_id().clone(), self.conn_id, resume);
        self.flush(timer.as_mut()).await?;
        if let Some(Request::Resume { user, have }) = asked {
            self.resume(user, &have, timer.as_mut()).await?;
        }
        Ok(handle)
    }

    /// Waits for the `auth` frame (until the auth deadline) and checks its token.
    async fn authenticate(
        &mut self,
    ) -> Result<(Principal, Option<std::collections::BTreeMap<tern_proto::ConvId, u64>>), Close> {
        let deadline =
            Instant::from_std(self.core.poll_timeout(&self.gw.conn_cfg).unwrap_or_else(std::time::Instant::now));
        let no_auth = |core: &mut Connection<OutFrame>| {
            let late = core.handle_timeout(&self.gw.conn_cfg, deadline.into_std());
            late.err().map_or_else(|| Close::new(CloseReason::AuthTimeout, "no valid auth frame in time"), Close::from)
        };
        let received = tokio::select! {
            biased;
            _ = self.gw.shutdown.cancelled() => return Err(Close::new(CloseReason::ServerShutdown, "server is shutting down")),
            _ = sleep_until(deadline) => return Err(no_auth(&mut self.core)),
            r = self.io.recv() => r,
        };
        let (codec, bytes) = match received {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(Close::new(CloseReason::ClientClosed, "closed before authenticating"));
            }
            Err(e) => return Err(Close::read(e)),
        };
        crate::telemetry::M.frames_in.increment(1);
        let asked = self.core.handle_frame(&self.gw.conn_cfg, std::time::Instant::now(), codec, &bytes)?;
        let Some(Request::Authenticate { token, resume }) = asked else {
            return Err(Close::new(CloseReason::ProtocolError, "unexpected state"));
        };
        match timeout_at(deadline, self.gw.logic.authenticate(&token)).await {
            Err(_) => Err(no_auth(&mut self.core)),
            Ok(Err(e)) => Err(self.core.auth_failed(e.message).into()),
            Ok(Ok(principal)) => Ok((principal, resume)),
        }
    }

    /// Sends everything the device missed, conversation by conversation, then `synced`.
    async fn resume(
        &mut self,
        user: tern_proto::UserId,
        have: &std::collections::BTreeMap<tern_proto::ConvId, u64>,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<(), Close> {
        let missed = self
            .gw
            .logic
            .resume(user, have)
            .await
            .map_err(|e| Close::new(CloseReason::InternalError, format!("resume failed: {}", e.message)))?;
        let conversations = u32::try_from(missed.len()).unwrap_or(u32::MAX);
        for item in missed {
            match item {
                Missed::Messages(mut messages) => {
                    while !messages.is_empty() {
                        let rest = messages.split_off(messages.len().min(RESUME_CHUNK));
                        self.core.resume_messages(std::mem::replace(&mut messages, rest));
                        self.flush(timer.as_mut()).await?;
                    }
                }
                Missed::Gap { conv_id, from_seq, to_seq } => self.core.resume_gap(conv_id, from_seq, to_seq),
            }
        }
        self.core.resume_done(conversations);
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
                        let now = std::time::Instant::now();
                        for frame in taken.frames {
                            self.core.handle_push(&self.gw.conn_cfg, now, frame)?;
                        }
                        if taken.low_drained {
                            self.lanes.caught_up();
                        }
                    }
                    Wake::Response(response) => {
                        self.core.answered(response);
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

    /// The core's next deadline (heartbeat, ACK retries).
    fn deadline(&mut self) -> Instant {
        self.core
            .poll_timeout(&self.gw.conn_cfg)
            .map_or_else(|| Instant::now() + Duration::from_secs(3600), Instant::from_std)
    }

    /// Waits for the next thing to do, in priority order: a kick or pushes (the lanes give the
    /// high lane's first), then finished requests, then input (paused while the core has
    /// `max_inflight_requests` in flight), then the timer.
    fn poll_wake(
        &mut self,
        cx: &mut Context<'_>,
        inflight: Option<&mut FuturesUnordered<Response>>,
        timer: Pin<&mut Sleep>,
    ) -> Poll<Wake> {
        if self.lanes.poll_ready(cx).is_ready() {
            return Poll::Ready(Wake::Lanes);
        }
        if let Some(inflight) = inflight
            && let Poll::Ready(Some(response)) = inflight.poll_next_unpin(cx)
        {
            return Poll::Ready(Wake::Response(response));
        }
        if self.core.wants_input(&self.gw.conn_cfg)
            && let Poll::Ready(received) = self.io.poll_recv(cx)
        {
            return Poll::Ready(Wake::Inbound(received));
        }
        timer.poll(cx).map(|()| Wake::Timer)
    }

    /// One inbound frame: the core decides; what it asks of the server is done here.
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
        let Some(request) = self.core.handle_frame(&self.gw.conn_cfg, now, codec, &bytes)? else {
            return Ok(());
        };
        match request {
            Request::Send { id, user, to, client_msg_id, body } => {
                // Queue now, in arrival order; wait for durability off the loop.
                let identity = Identity { user_id: user, device_id: handle.device_id.clone() };
                match self.gw.logic.send(&identity, to, client_msg_id, body).await {
                    Err(e) => self.core.answered(error_frame(id, e)),
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
            Request::History { id, user, conv_id, after_seq, before_seq, limit } => {
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
            Request::Read { id, user, conv_id, seq } => {
                let logic = Arc::clone(&self.gw.logic);
                inflight.get_or_insert_default().push(Box::pin(async move {
                    match logic.mark_read(user, conv_id, seq).await {
                        Ok(()) => OutFrame::new(ServerFrame::Ok { id }),
                        Err(e) => error_frame(id, e),
                    }
                }));
            }
            Request::Recall { id, user, conv_id, seq } => {
                let logic = Arc::clone(&self.gw.logic);
                inflight.get_or_insert_default().push(Box::pin(async move {
                    match logic.recall(user, conv_id, seq).await {
                        Ok(()) => OutFrame::new(ServerFrame::Ok { id }),
                        Err(e) => error_frame(id, e),
                    }
                }));
            }
            Request::FileOffer { id, user, to, name, size, sha256, candidates } => {
                let logic = Arc::clone(&self.gw.logic);
                let offer = crate::logic::transfers::Offer {
                    from: user,
                    observed: self.peer.ip(),
                    to,
                    name,
                    size,
                    sha256,
                    candidates,
                };
                inflight.get_or_insert_default().push(Box::pin(async move {
                    match logic.offer_file(id, offer).await {
                        Ok(frame) => OutFrame::new(frame),
                        Err(e) => error_frame(id, e),
                    }
                }));
            }
            Request::FileAnswer { id, user, ticket, accept } => {
                let answered = match self.gw.logic.answer_file(user, &ticket, accept) {
                    Ok(()) => OutFrame::new(ServerFrame::Ok { id }),
                    Err(e) => error_frame(id, e),
                };
                self.core.answered(answered);
            }
            Request::Typing { user, conv_id } => {
                if let Err(e) = self.gw.logic.typing(user, conv_id) {
                    self.core.reply(OutFrame::new(ServerFrame::error(None, e.code, e.message)));
                }
            }
            Request::EnterRoom { id, room, leaving, token, recent } => {
                let user = match handle.owner {
                    Owner::User(user) => Some(user),
                    Owner::Device => None,
                };
                // Joining the room it is already in is no second enter, and needs no second check.
                let already_in = leaving.is_none() && self.gw.router.registry().is_in_room(&room, self.conn_id);
                if !already_in
                    && let Err(e) = self.gw.logic.live().may_enter(self.gw.logic.auth(), &room, user, token.as_deref())
                {
                    self.core.join_refused(id, leaving, e.code, e.message);
                    return Ok(());
                }
                if let Owner::User(user) = handle.owner {
                    let live = self.gw.logic.live();
                    if let Some(old) = &leaving {
                        live.left(old, user, 1);
                    }
                    if !already_in {
                        live.entered(&room, user);
                    }
                }
                let area = self.gw.logic.room_area(&room);
                let online = self.gw.router.enter_room(handle, leaving, &room, &area).await;
                tracing::debug!(conn_id = self.conn_id.0, %room, %area, online, "joined room");
                let history = recent.map(|after| self.gw.router.registry().recent(&room, after));
                self.core.reply(OutFrame::new(ServerFrame::Joined { id, room: room.clone(), area, online }));
                if let Some(h) = history {
                    self.core.reply(OutFrame::new(ServerFrame::RoomHistory { room, pushes: h.pushes, gap: h.gap }));
                }
            }
            Request::LeaveRoom { room } => {
                if let Owner::User(user) = handle.owner {
                    self.gw.logic.live().left(&room, user, 1);
                }
                self.gw.router.leave_room(self.conn_id, room);
            }
            Request::Publish { id, user, room, data, priority } => {
                let poster = match user {
                    Some(u) => crate::logic::live::Poster::User(u),
                    None => crate::logic::live::Poster::Device(handle.device_id.clone()),
                };
                let logic = Arc::clone(&self.gw.logic);
                inflight.get_or_insert_default().push(Box::pin(async move {
                    match logic.live().publish(poster, room, data, priority).await {
                        Ok(()) => OutFrame::new(ServerFrame::Ok { id }),
                        Err(e) => error_frame(id, e),
                    }
                }));
            }
            // Only the first frame asks these, and `start` handles it.
            Request::Authenticate { .. } | Request::Resume { .. } => {
                return Err(Close::new(CloseReason::ProtocolError, "unexpected state"));
            }
        }
        Ok(())
    }

    fn on_timer(&mut self) -> Result<(), Close> {
        let retried = self.core.handle_timeout(&self.gw.conn_cfg, std::time::Instant::now())?;
        if retried.dropped > 0 {
            self.gw.qos1_expired.fetch_add(retried.dropped, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                conn_id = self.conn_id.0,
                dropped = retried.dropped,
                "must-arrive pushes unacknowledged past their TTL"
            );
        }
        crate::telemetry::M.retries.increment(retried.resent as u64);
        Ok(())
    }

    /// Writes what the turn produced, in one batch. The write is given `gateway.slow_consumer_ms`
    /// once it has to wait; `timer` (the caller's, re-armed by it after) measures that, so a write
    /// the socket takes at once, the usual case, touches no timer.
    async fn flush(&mut self, mut timer: Pin<&mut Sleep>) -> Result<(), Close> {
        if self.core.outbound().is_empty() {
            return Ok(());
        }
        record_written(self.core.outbound());
        let queued = self.io.queue(self.core.codec(), self.core.brotli(), self.core.outbound());
        self.core.clear_outbound();
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
        self.gw.record_close(self.io.kind(), reason);
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
                // A consumer cut for not reading would find its last words behind the backlog
                // that got it cut: they go right after the frame being written, and it is given
                // longer to read them (its resume fetches what the dropped frames held).
                let grace = if reason == CloseReason::SlowConsumer {
                    self.io.discard_unstarted();
                    Duration::from_secs(5)
                } else {
                    Duration::from_secs(1)
                };
                let last = [OutFrame::new(ServerFrame::Close { reason, message, retry_after_ms })];
                let _ = timeout(grace, self.io.send(self.core.codec(), false, &last)).await;
            }
        }
        self.io.close(reason).await;
    }
}

fn error_frame(id: u64, e: Error) -> Arc<OutFrame> {
    OutFrame::new(ServerFrame::error(Some(id), e.code, e.message))
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
