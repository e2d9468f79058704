//! The HTTP transports, for networks that pass nothing but HTTP(S): one logical connection
//! whose downstream is a Server-Sent Events stream (`sse`) or a held-open request answered as
//! soon as frames are ready and then re-issued (`longpoll`, BOSH style), and whose upstream is
//! POSTed frames. The connection task above is the same as for a socket; only the bytes move
//! differently, through a [`Session`] the HTTP handlers (`api/http_transport.rs`) and the
//! connection's [`HttpIo`] share.
//!
//! Nothing is lost with a dropped request: every downstream frame gets an event id and stays
//! in the session until the client acknowledges it (`Last-Event-ID`, or `ack=` on a poll or a
//! POST); a new downstream request starts after what it acknowledges, so unacknowledged frames
//! are sent again. The buffer is bounded (`gateway.http_buffer_bytes`): past it the connection
//! waits like a socket that cannot write, and is cut as a slow consumer. A session with no
//! downstream request for as long as a silent connection lives is cut with a reason that a late
//! request still learns (an ended session is kept for [`TOMBSTONE`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tern_proto::{CloseReason, Codec, DeviceId, UserId};

use super::{FrameIo, ReadError};
use crate::auth::Principal;
use crate::wire::OutFrame;

/// How long an ended session still answers (with its last frames, then "closed") before it is
/// forgotten and its id answers "not found".
pub const TOMBSTONE: Duration = Duration::from_secs(30);

/// The downstream style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `text/event-stream`, one event per frame.
    Sse,
    /// A JSON answer per request.
    LongPoll,
}

impl Mode {
    /// The transport's name (in URLs, logs and metrics).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sse => "sse",
            Mode::LongPoll => "longpoll",
        }
    }
}

/// Who a session belongs to: every request on it must carry a token of the same principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOwner {
    /// A user (any of their devices' tokens).
    User(UserId),
    /// An anonymous device.
    Device(DeviceId),
}

impl SessionOwner {
    /// The owner a principal stands for.
    pub fn of(p: &Principal) -> Self {
        match p {
            Principal::User(i) => SessionOwner::User(i.user_id),
            Principal::Device(d) => SessionOwner::Device(d.clone()),
        }
    }
}

/// Why an upstream POST was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The session has ended (with the reason's sentence when the connection said one).
    Ended,
    /// The inbound buffer is full: the connection is not reading as fast (retry shortly).
    Full,
}

/// One logical connection's buffers.
pub struct Session {
    /// The unguessable id (128 random bits, base64url).
    pub id: String,
    /// Whose it is.
    pub owner: SessionOwner,
    /// The downstream style.
    pub mode: Mode,
    state: Mutex<State>,
    /// Wakes downstream requests: frames queued, the session ended, or a newer request came.
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Frames POSTed and not yet taken by the connection.
    inbound: VecDeque<Bytes>,
    inbound_bytes: usize,
    /// The connection waiting for input.
    reader: Option<Waker>,
    /// The client ended the session (`DELETE`).
    client_closed: bool,
    /// Cut for having no downstream request: the sentence.
    cut: Option<String>,
    /// Downstream frames not yet acknowledged, with their event ids (increasing).
    out: VecDeque<(u64, Bytes)>,
    out_bytes: usize,
    /// The last event id given out.
    last_id: u64,
    /// The highest event id included in some answer (frames after it are not begun).
    delivered: u64,
    /// The connection waiting for room in `out`.
    writer: Option<Waker>,
    /// When the connection ended.
    ended: Option<Instant>,
    /// Generation of the current downstream request (a newer one supersedes it).
    downstream: u64,
    /// A downstream request is being served.
    downstream_open: bool,
    /// When the last downstream request ended (or the session began).
    last_downstream: Option<Instant>,
}

impl State {
    /// Drops frames up to `ack`, waking the connection if that made room.
    fn ack(&mut self, ack: u64, limit: usize) {
        while let Some((id, bytes)) = self.out.front() {
            if *id > ack {
                break;
            }
            self.out_bytes -= bytes.len();
            self.out.pop_front();
        }
        if self.out_bytes <= limit
            && let Some(w) = self.writer.take()
        {
            w.wake();
        }
    }
}

/// What a downstream request gets now.
pub enum Ready {
    /// Frames after the cursor, and the last one's event id.
    Frames(Vec<(u64, Bytes)>),
    /// Nothing new and the session has ended: the request ends.
    Ended,
    /// A newer downstream request took over.
    Superseded,
    /// Nothing yet.
    Nothing,
}

impl Session {
    /// The session's frames after event id `after`, marked as begun.
    fn take_after(&self, after: u64, generation: u64) -> Ready {
        let mut s = self.state.lock();
        if s.downstream != generation {
            return Ready::Superseded;
        }
        let frames: Vec<(u64, Bytes)> = s.out.iter().filter(|(id, _)| *id > after).cloned().collect();
        if let Some((last, _)) = frames.last() {
            s.delivered = s.delivered.max(*last);
            return Ready::Frames(frames);
        }
        if s.ended.is_some() { Ready::Ended } else { Ready::Nothing }
    }

    /// Begins a downstream request that acknowledges everything up to `ack`; its generation.
    pub fn begin_downstream(&self, ack: u64, limit: usize) -> u64 {
        let mut s = self.state.lock();
        s.ack(ack, limit);
        s.downstream += 1;
        s.downstream_open = true;
        let generation = s.downstream;
        drop(s);
        // The request it supersedes ends.
        self.notify.notify_waiters();
        generation
    }

    /// Ends a downstream request (if it is still the current one).
    pub fn end_downstream(&self, generation: u64) {
        let mut s = self.state.lock();
        if s.downstream == generation {
            s.downstream_open = false;
            s.last_downstream = Some(Instant::now());
        }
    }

    /// Waits up to `hold` for frames after `after` (a downstream request's one wait).
    pub async fn wait(&self, after: u64, generation: u64, hold: Duration) -> Ready {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        match self.take_after(after, generation) {
            Ready::Nothing => {}
            ready => return ready,
        }
        if tokio::time::timeout(hold, notified).await.is_err() {
            return Ready::Nothing;
        }
        self.take_after(after, generation)
    }

    /// Acknowledges frames up to `ack` (from an upstream request).
    pub fn ack(&self, ack: u64, limit: usize) {
        self.state.lock().ack(ack, limit);
    }

    /// Takes POSTed frames for the connection: all of them or, if they do not fit in
    /// `limit` bytes beside what is waiting, none.
    pub fn push_inbound(&self, frames: Vec<Bytes>, limit: usize) -> Result<(), Refused> {
        let mut s = self.state.lock();
        if s.ended.is_some() || s.client_closed || s.cut.is_some() {
            return Err(Refused::Ended);
        }
        let size: usize = frames.iter().map(Bytes::len).sum();
        if s.inbound_bytes > 0 && s.inbound_bytes + size > limit {
            return Err(Refused::Full);
        }
        s.inbound_bytes += size;
        s.inbound.extend(frames);
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        Ok(())
    }

    /// The client ends the session.
    pub fn close_by_client(&self) {
        let mut s = self.state.lock();
        s.client_closed = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Whether the connection has ended.
    pub fn ended(&self) -> bool {
        self.state.lock().ended.is_some()
    }
}

/// The sessions of this node.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    /// The sweeper runs (started with the first session).
    sweeping: std::sync::atomic::AtomicBool,
}

impl Default for Sessions {
    fn default() -> Self {
        Self { map: Mutex::new(HashMap::new()), sweeping: std::sync::atomic::AtomicBool::new(false) }
    }
}

impl Sessions {
    /// A new session for `owner`, and the connection's I/O for it.
    pub fn open(
        self: &Arc<Self>,
        owner: SessionOwner,
        mode: Mode,
        first: Bytes,
        buffer_limit: usize,
        idle: Duration,
    ) -> (Arc<Session>, HttpIo) {
        let id = data_encoding::BASE64URL_NOPAD.encode(&rand::random::<[u8; 16]>());
        let state = State {
            inbound_bytes: first.len(),
            inbound: VecDeque::from([first]),
            last_downstream: Some(Instant::now()),
            ..State::default()
        };
        let session =
            Arc::new(Session { id: id.clone(), owner, mode, state: Mutex::new(state), notify: Default::default() });
        self.map.lock().insert(id, Arc::clone(&session));
        if !self.sweeping.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self), idle));
        }
        let metrics = crate::telemetry::transport(mode.name());
        (Arc::clone(&session), HttpIo { session, buffer_limit, metrics })
    }

    /// The session with this id, if it is known.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().get(id).cloned()
    }

    /// Sessions known (live and ended ones still answering).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Once a second: forgets sessions ended longer than [`TOMBSTONE`] ago, and cuts those that
/// have had no downstream request for `idle`. Ends with the table.
async fn sweep(sessions: Weak<Sessions>, idle: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(sessions) = sessions.upgrade() else { return };
        let now = Instant::now();
        sessions.map.lock().retain(|_, session| {
            let mut s = session.state.lock();
            if let Some(ended) = s.ended {
                return now.duration_since(ended) < TOMBSTONE;
            }
            let silent = s.last_downstream.is_some_and(|t| now.duration_since(t) >= idle);
            if !s.downstream_open && silent && s.cut.is_none() {
                s.cut = Some(format!("no downstream request for {} s", idle.as_secs()));
                if let Some(w) = s.reader.take() {
                    w.wake();
                }
            }
            true
        });
    }
}

/// The connection's side of a session.
pub struct HttpIo {
    session: Arc<Session>,
    buffer_limit: usize,
    metrics: &'static crate::telemetry::TransportMetrics,
}

impl FrameIo for HttpIo {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(Codec, Bytes)>, ReadError>> {
        let mut s = self.session.state.lock();
        if let Some(frame) = s.inbound.pop_front() {
            s.inbound_bytes -= frame.len();
            self.metrics.bytes_in.increment(frame.len() as u64);
            return Poll::Ready(Ok(Some((Codec::Json, frame))));
        }
        if s.client_closed {
            return Poll::Ready(Ok(None));
        }
        if let Some(why) = &s.cut {
            return Poll::Ready(Err(ReadError::Silent(why.clone())));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn queue(&mut self, _codec: Codec, _brotli: bool, frames: &[Arc<OutFrame>]) -> std::io::Result<()> {
        // JSON only (an event stream is text), never compressed.
        let mut s = self.session.state.lock();
        for f in frames {
            let json = f.json().clone();
            s.last_id += 1;
            s.out_bytes += json.len();
            self.metrics.bytes_out.increment(json.len() as u64);
            let id = s.last_id;
            s.out.push_back((id, json));
        }
        drop(s);
        self.session.notify.notify_waiters();
        Ok(())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.session.state.lock();
        if s.out_bytes <= self.buffer_limit {
            return Poll::Ready(Ok(()));
        }
        s.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn discard_unstarted(&mut self) {
        let mut s = self.session.state.lock();
        let delivered = s.delivered;
        while s.out.back().is_some_and(|(id, _)| *id > delivered) {
            if let Some((_, bytes)) = s.out.pop_back() {
                s.out_bytes -= bytes.len();
            }
        }
    }

    async fn close(&mut self, _reason: CloseReason) {
        // The last frames (the `close` among them) stay for the client to fetch until the
        // sweeper forgets the session.
        self.session.state.lock().ended = Some(Instant::now());
        self.session.notify.notify_waiters();
    }

    fn kind(&self) -> &'static str {
        self.metrics.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::ServerFrame;

    fn session() -> (Arc<Sessions>, Arc<Session>, HttpIo) {
        let sessions = Arc::new(Sessions::default());
        let (s, io) = sessions.open(
            SessionOwner::User(UserId(1)),
            Mode::LongPoll,
            Bytes::from_static(b"{}"),
            1000,
            Duration::from_secs(60),
        );
        (sessions, s, io)
    }

    fn pong() -> Arc<OutFrame> {
        OutFrame::new(ServerFrame::Pong)
    }

    #[tokio::test]
    async fn unacknowledged_frames_are_sent_again_and_acknowledged_ones_are_not() {
        let (_sessions, s, mut io) = session();
        io.queue(Codec::Json, false, &[pong(), pong(), pong()]).unwrap();
        let g = s.begin_downstream(0, 1000);
        let Ready::Frames(first) = s.wait(0, g, Duration::from_millis(10)).await else { panic!("frames ready") };
        assert_eq!(first.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2, 3]);
        s.end_downstream(g);
        // That answer was lost: the next request acknowledges only 1.
        let g = s.begin_downstream(1, 1000);
        let Ready::Frames(again) = s.wait(1, g, Duration::from_millis(10)).await else { panic!("resent") };
        assert_eq!(again.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 3]);
        let g = s.begin_downstream(3, 1000);
        assert!(matches!(s.wait(3, g, Duration::from_millis(10)).await, Ready::Nothing));
    }

    #[tokio::test]
    async fn a_newer_downstream_request_supersedes_the_waiting_one() {
        let (_sessions, s, _io) = session();
        let g1 = s.begin_downstream(0, 1000);
        let waiting = {
            let s = Arc::clone(&s);
            tokio::spawn(async move { matches!(s.wait(0, g1, Duration::from_secs(10)).await, Ready::Superseded) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _g2 = s.begin_downstream(0, 1000);
        assert!(waiting.await.unwrap(), "the older request ends as superseded");
    }

    #[tokio::test]
    async fn the_buffer_is_bounded_and_an_ack_makes_room() {
        let (_sessions, s, mut io) = session();
        let big = OutFrame::new(ServerFrame::error(None, tern_proto::ErrorCode::BadRequest, "x".repeat(600)));
        io.queue(Codec::Json, false, &[Arc::clone(&big), big]).unwrap();
        let pending = std::future::poll_fn(|cx| Poll::Ready(io.poll_send(cx).is_pending())).await;
        assert!(pending, "over the limit the connection waits as on a full socket");
        s.ack(1, 1000);
        let ready = std::future::poll_fn(|cx| Poll::Ready(io.poll_send(cx).is_ready())).await;
        assert!(ready, "an ack that makes room lets it write");
    }

    #[test]
    fn upstream_frames_are_taken_whole_or_not_at_all() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_sessions, s, _io) = session();
            let frame = Bytes::from(vec![b' '; 600]);
            assert_eq!(s.push_inbound(vec![frame.clone(), frame.clone()], 1000), Err(Refused::Full));
            s.close_by_client();
            assert_eq!(s.push_inbound(vec![frame], 1000), Err(Refused::Ended));
        });
    }
}
