//! One connection's whole protocol, as a state machine without I/O (in the style of
//! quinn-proto): authentication, catch-up with its watermark, pushes awaiting a device ACK and
//! their retries, the cap on requests in flight, per-connection rates, the heartbeat and the room
//! a connection is in.
//!
//! A transport driver (the server's `gateway/conn.rs` today; long-poll, SSE or QUIC tomorrow)
//! feeds it what happened — bytes of one frame arrived ([`Connection::handle_frame`]), a request
//! finished ([`Connection::answered`]), a push was queued for the connection
//! ([`Connection::handle_push`]), time passed ([`Connection::handle_timeout`]) — and does what it
//! is told: write [`Connection::outbound`], carry out the [`Request`]s (the parts that need the
//! server: the store, the router), wake at [`Connection::poll_timeout`], or close with the
//! [`Close`] a handler returned. Every decision is here, so every transport behaves the same
//! and all of it is tested in virtual time.
//!
//! The settings ([`ConnConfig`]) are the server's, one copy shared by every connection and
//! passed in on each call: an idle connection's state is its memory.

mod unacked;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use unacked::{Due, Expiry, RetryPolicy, Unacked};

use crate::codec::{Codec, compression};
use crate::frame::{
    Body, ClientFrame, CloseReason, ErrorCode, MAX_DATA_DEPTH, Message, PROTOCOL_VERSION, Priority, ServerFrame,
    data_depth, valid_name,
};
use crate::ids::{ConnId, ConvId, DeviceId, MsgId, UserId};
use crate::rate::Bucket;
use crate::session::{Phase, ServerSession, SessionConfig, Verdict};

/// A frame on its way out, as the driver keeps it (the server: encoded once, shared by every
/// recipient through an `Arc`).
pub trait Outbound {
    /// Wraps a frame this connection produced itself.
    fn from_frame(frame: ServerFrame) -> Arc<Self>;
    /// The frame.
    fn frame(&self) -> &ServerFrame;
    /// The id a device must ACK, for stored messages and must-arrive pushes.
    fn ack_id(&self) -> Option<MsgId>;
}

/// The server's settings for every connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Auth deadline and heartbeat.
    pub session: SessionConfig,
    /// ACK retry timing.
    pub retry: RetryPolicy,
    /// Pushes awaiting an ACK past which the connection is cut (`slow_consumer`).
    pub max_unacked: usize,
    /// How long a stored message may go unacknowledged before the connection is closed.
    pub push_ttl: Duration,
    /// How long a must-arrive push is retried before it is given up.
    pub qos1_ttl: Duration,
    /// Requests in flight past which the connection stops reading.
    pub max_inflight: usize,
    /// `send`s per second (0: no limit).
    pub max_sends_per_sec: u32,
    /// Messages of `history` per second (0: no limit).
    pub max_history_per_sec: u32,
    /// The `history` page size when the client gives none.
    pub default_history_page: u32,
    /// The frame size limit, advertised in `auth_ok`.
    pub max_frame_bytes: u32,
    /// `publish`es per second (0: no limit).
    pub max_publishes_per_sec: u32,
    /// Largest `publish` data, in bytes of JSON.
    pub max_publish_bytes: usize,
}

/// Where a `send` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendTo {
    /// A user (their 1:1 conversation with the sender).
    User(UserId),
    /// A conversation the sender is in.
    Conv(ConvId),
}

/// What a device missed, one conversation at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Missed {
    /// Missed messages of one conversation, ascending.
    Messages(Vec<Message>),
    /// Too many missed; the device must page `from_seq..=to_seq` with `history`.
    Gap {
        /// The conversation.
        conv_id: ConvId,
        /// First missing.
        from_seq: u64,
        /// Last missing.
        to_seq: u64,
    },
}

/// Work only the server can do. Those with a request `id` are answered through
/// [`Connection::answered`] (and count as in flight until then); `Authenticate` through
/// [`Connection::authenticated`]; `Resume` through the `resume_*` calls; the rest need no answer
/// or are answered with [`Connection::reply`].
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Verify this token; `resume` is handed back to [`Connection::authenticated`].
    Authenticate {
        /// The token.
        token: String,
        /// What the device already has, if it asked for catch-up.
        resume: Option<BTreeMap<ConvId, u64>>,
    },
    /// Find what the user's device missed beyond `have`.
    Resume {
        /// The user.
        user: UserId,
        /// The last seq the device holds per conversation.
        have: BTreeMap<ConvId, u64>,
    },
    /// Queue a message (answered `sent` or an error once durable).
    Send {
        /// Request id.
        id: u64,
        /// The sender.
        user: UserId,
        /// Where.
        to: SendTo,
        /// The client's idempotency key.
        client_msg_id: String,
        /// The body.
        body: Body,
    },
    /// A page of history.
    History {
        /// Request id.
        id: u64,
        /// Who asks.
        user: UserId,
        /// The conversation.
        conv_id: ConvId,
        /// Ascending after this seq.
        after_seq: Option<u64>,
        /// Descending before this seq.
        before_seq: Option<u64>,
        /// Page size.
        limit: Option<u32>,
    },
    /// Move the user's read position.
    Read {
        /// Request id.
        id: u64,
        /// Who read.
        user: UserId,
        /// The conversation.
        conv_id: ConvId,
        /// Read up to here.
        seq: u64,
    },
    /// Recall a message.
    Recall {
        /// Request id.
        id: u64,
        /// Who recalls.
        user: UserId,
        /// The conversation.
        conv_id: ConvId,
        /// The message.
        seq: u64,
    },
    /// Offer a file for a direct transfer (answered `file_offered` or an error).
    FileOffer {
        /// Request id.
        id: u64,
        /// Who offers.
        user: UserId,
        /// To whom.
        to: UserId,
        /// The file's name.
        name: String,
        /// Bytes.
        size: u64,
        /// SHA-256, lowercase hex.
        sha256: String,
        /// Where the sender listens.
        candidates: Vec<String>,
    },
    /// Accept or decline a file offer (answered `ok` or an error).
    FileAnswer {
        /// Request id.
        id: u64,
        /// Who answers.
        user: UserId,
        /// The offer's ticket.
        ticket: String,
        /// Accepted.
        accept: bool,
    },
    /// The user is typing (no answer; an error is reported with [`Connection::reply`]).
    Typing {
        /// Who.
        user: UserId,
        /// Where.
        conv_id: ConvId,
    },
    /// Put the connection in `room`, out of `leaving` (a switch); answered `joined` by
    /// [`Connection::reply`] with the room's area and online count.
    EnterRoom {
        /// Request id.
        id: u64,
        /// The room.
        room: String,
        /// The room it was in, if another.
        leaving: Option<String>,
        /// The join token given, for a private room.
        token: Option<String>,
        /// Recent pushes asked for: after this msg_id, or all (0).
        recent: Option<u64>,
    },
    /// Take the connection out of `room` (already answered `left`).
    LeaveRoom {
        /// The room.
        room: String,
    },
    /// Post into the room the connection is in (answered `ok` or an error). The core has
    /// checked the poster, the room, the size and the connection's rate.
    Publish {
        /// Request id.
        id: u64,
        /// The poster; `None` for a device-token (anonymous) connection.
        user: Option<UserId>,
        /// The connection's room.
        room: String,
        /// The post.
        data: serde_json::Value,
        /// Its lane.
        priority: Priority,
    },
}

/// The connection must end: the reason and the sentence for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The reason.
    pub reason: CloseReason,
    /// For humans.
    pub message: String,
}

impl Close {
    /// A close with a reason and message.
    pub fn new(reason: CloseReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// What a timeout did, for the driver's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retried {
    /// Pushes sent again.
    pub resent: usize,
    /// Must-arrive pushes given up after their TTL.
    pub dropped: u64,
}

/// One connection's protocol state.
pub struct Connection<F> {
    session: ServerSession,
    codec: Codec,
    /// The client accepts brotli-compressed frames.
    brotli: bool,
    /// The user's id once authenticated with a user token; 0 for a device token or before
    /// authentication (user ids start at 1). Not an `Option<UserId>`: that takes twice the room,
    /// in every connection.
    user: u64,
    unacked: Unacked<Arc<F>>,
    /// Per conversation, the last seq covered by catch-up; queued live pushes at or below it are
    /// already on their way and are dropped.
    resumed: BTreeMap<ConvId, u64>,
    out: Vec<Arc<F>>,
    /// Requests answered through [`Connection::answered`] still to come.
    inflight: u32,
    /// The room the connection is in.
    room: Option<String>,
    /// `max_sends_per_sec`, made with the connection when there is a limit.
    sends: Option<Bucket>,
    /// `max_history_per_sec`, made on the first `history` request (most connections make none
    /// after their catch-up, and this state is per connection).
    history: Option<Box<Bucket>>,
    /// `max_publishes_per_sec`, made on the first `publish` (most connections never post).
    publishes: Option<Box<Bucket>>,
}

impl<F: Outbound> Connection<F> {
    /// A connection accepted at `now`.
    pub fn new(cfg: &ConnConfig, now: Instant) -> Self {
        let per_sec = cfg.max_sends_per_sec;
        Self {
            session: ServerSession::new(now, &cfg.session),
            codec: Codec::Json,
            brotli: false,
            user: 0,
            unacked: Unacked::default(),
            resumed: BTreeMap::new(),
            out: Vec::new(),
            inflight: 0,
            room: None,
            sends: (per_sec > 0).then(|| Bucket::new(f64::from(per_sec), per_sec, now)),
            history: None,
            publishes: None,
        }
    }

    /// The encoding the client chose (that of its `auth` frame).
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether the client accepts brotli-compressed frames.
    pub fn brotli(&self) -> bool {
        self.brotli
    }

    /// The room the connection is in.
    pub fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }

    /// Takes the room (the connection ended: the driver takes it out).
    pub fn take_room(&mut self) -> Option<String> {
        self.room.take()
    }

    /// Frames to write, in order.
    pub fn outbound(&self) -> &[Arc<F>] {
        &self.out
    }

    /// The outbound frames were handed to the transport.
    pub fn clear_outbound(&mut self) {
        self.out.clear();
    }

    /// Queues a frame the driver produced (an answer to a [`Request`] that has no `answered`
    /// path, or the last `close`).
    pub fn reply(&mut self, frame: Arc<F>) {
        self.out.push(frame);
    }

    /// Whether the driver should read more input: not while `max_inflight` requests wait.
    pub fn wants_input(&self, cfg: &ConnConfig) -> bool {
        usize::try_from(self.inflight).is_ok_and(|n| n < cfg.max_inflight)
    }

    /// How many pushes await an ACK.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// One inbound frame's bytes, in `codec`, arrived at `now`.
    pub fn handle_frame(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        codec: Codec,
        bytes: &[u8],
    ) -> Result<Option<Request>, Close> {
        if self.session.phase() == Phase::AwaitingAuth {
            return self.handle_auth_frame(now, codec, bytes).map(Some);
        }
        let frame = match codec.decode::<ClientFrame>(bytes) {
            Ok(f) => f,
            Err(e) => {
                if let Verdict::Close(reason) = self.session.on_bad_frame(now) {
                    return Err(Close::new(reason, e.message));
                }
                self.out.push(F::from_frame(ServerFrame::error(e.id, e.code, e.message)));
                return Ok(None);
            }
        };
        if let Verdict::Close(reason) = self.session.on_frame(now, &frame) {
            let message = match reason {
                CloseReason::AuthRequired => "authentication is still in progress",
                _ => "auth was already done on this connection",
            };
            return Err(Close::new(reason, message));
        }
        self.handle_client_frame(cfg, now, frame)
    }

    /// The first frame: `auth`, or the connection ends.
    fn handle_auth_frame(&mut self, now: Instant, codec: Codec, bytes: &[u8]) -> Result<Request, Close> {
        self.codec = codec;
        let frame = match codec.decode::<ClientFrame>(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.session.on_bad_frame(now);
                return Err(Close::new(CloseReason::AuthFailed, format!("the first frame must be auth: {e}")));
            }
        };
        match self.session.on_frame(now, &frame) {
            Verdict::Authenticate => {}
            Verdict::Close(CloseReason::UnsupportedVersion) => {
                return Err(Close::new(
                    CloseReason::UnsupportedVersion,
                    format!("this server speaks protocol version {PROTOCOL_VERSION}"),
                ));
            }
            Verdict::Close(reason) => return Err(Close::new(reason, "the first frame must be auth")),
            Verdict::Process => return Err(Close::new(CloseReason::ProtocolError, "unexpected state")),
        }
        let ClientFrame::Auth { token, resume, accept_compression, .. } = frame else {
            return Err(Close::new(CloseReason::ProtocolError, "unexpected state"));
        };
        self.brotli = accept_compression.iter().any(|c| c == compression::BROTLI_NAME);
        Ok(Request::Authenticate { token, resume })
    }

    /// The token was refused (or could not be checked in time).
    pub fn auth_failed(&mut self, message: impl Into<String>) -> Close {
        self.session.close(CloseReason::AuthFailed);
        Close::new(CloseReason::AuthFailed, message)
    }

    /// The token was verified at `now`: `user` for a user token, `None` for a device token.
    /// Queues `auth_ok`; asks for the catch-up when the device asked for one.
    pub fn authenticated(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        user: Option<UserId>,
        device_id: DeviceId,
        conn_id: ConnId,
        resume: Option<BTreeMap<ConvId, u64>>,
    ) -> Option<Request> {
        self.session.auth_succeeded(now);
        self.user = user.map_or(0, |u| u.0);
        self.out.push(F::from_frame(ServerFrame::AuthOk {
            proto: PROTOCOL_VERSION,
            user_id: user,
            device_id,
            conn_id,
            heartbeat_ms: u64::try_from(cfg.session.heartbeat.as_millis()).unwrap_or(u64::MAX),
            max_missed_heartbeats: cfg.session.max_missed_heartbeats,
            max_frame_bytes: cfg.max_frame_bytes,
        }));
        match (user, resume) {
            (Some(user), Some(have)) => Some(Request::Resume { user, have }),
            _ => None,
        }
    }

    /// Part of the catch-up: missed messages of one conversation (a chunk of them, in order;
    /// the driver writes between chunks).
    pub fn resume_messages(&mut self, messages: Vec<Message>) {
        if let Some(last) = messages.last() {
            let upto = self.resumed.entry(last.conv_id).or_default();
            *upto = (*upto).max(last.seq);
        }
        self.out.extend(messages.into_iter().map(|m| F::from_frame(ServerFrame::Msg(m))));
    }

    /// Part of the catch-up: too much missed in one conversation.
    pub fn resume_gap(&mut self, conv_id: ConvId, from_seq: u64, to_seq: u64) {
        self.resumed.insert(conv_id, to_seq);
        self.out.push(F::from_frame(ServerFrame::Gap { conv_id, from_seq, to_seq }));
    }

    /// The catch-up is complete: `conversations` were looked at.
    pub fn resume_done(&mut self, conversations: u32) {
        self.out.push(F::from_frame(ServerFrame::Synced { conversations }));
    }

    /// A request counted in flight finished with `frame`.
    pub fn answered(&mut self, frame: Arc<F>) {
        self.inflight = self.inflight.saturating_sub(1);
        self.out.push(frame);
    }

    /// A frame queued for this connection (a stored message or a push) is taken from its lanes
    /// at `now`.
    pub fn handle_push(&mut self, cfg: &ConnConfig, now: Instant, frame: Arc<F>) -> Result<(), Close> {
        match frame.frame() {
            ServerFrame::Msg(m) if self.resumed.get(&m.conv_id).is_some_and(|&upto| m.seq <= upto) => return Ok(()),
            // Out of the room at once: a post that follows is refused here, not by the server.
            // A kick from a room the connection has since left is only passed on.
            ServerFrame::Kicked { room, .. } if self.room.as_deref() == Some(room.as_str()) => self.room = None,
            _ => {}
        }
        if let Some(id) = frame.ack_id() {
            if self.unacked.len() >= cfg.max_unacked {
                return Err(Close::new(
                    CloseReason::SlowConsumer,
                    format!("more than {} pushed messages unacknowledged", cfg.max_unacked),
                ));
            }
            // A stored message left unacknowledged ends the connection (the device resumes from
            // the store); a must-arrive push has no store behind it, so it is given up and counted.
            let (expiry, ttl) = match frame.frame() {
                ServerFrame::Msg(_) => (Expiry::Close, cfg.push_ttl),
                _ => (Expiry::Drop, cfg.qos1_ttl),
            };
            self.unacked.sent(&cfg.retry, id, Arc::clone(&frame), now, expiry, ttl);
        }
        self.out.push(frame);
        Ok(())
    }

    /// When [`Connection::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self, cfg: &ConnConfig) -> Option<Instant> {
        [self.session.poll_timeout(&cfg.session), self.unacked.next_deadline()].into_iter().flatten().min()
    }

    /// Time passed: the auth deadline, the heartbeat, ACK retries.
    pub fn handle_timeout(&mut self, cfg: &ConnConfig, now: Instant) -> Result<Retried, Close> {
        if let Some(reason) = self.session.handle_timeout(&cfg.session, now) {
            let message = match reason {
                CloseReason::AuthTimeout => {
                    format!("no valid auth frame within {} ms", cfg.session.auth_timeout.as_millis())
                }
                _ => {
                    let silence = cfg.session.heartbeat * cfg.session.max_missed_heartbeats;
                    format!("nothing received for {} ms", silence.as_millis())
                }
            };
            return Err(Close::new(reason, message));
        }
        let due = self.unacked.due(&cfg.retry, now);
        if due.expired {
            return Err(Close::new(
                CloseReason::AckTimeout,
                format!("pushed messages unacknowledged for {} ms; reconnect and resume", cfg.push_ttl.as_millis()),
            ));
        }
        let retried = Retried { resent: due.resend.len(), dropped: due.dropped };
        self.out.extend(due.resend);
        Ok(retried)
    }

    /// An authenticated client's frame: one handler per op.
    fn handle_client_frame(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        frame: ClientFrame,
    ) -> Result<Option<Request>, Close> {
        Ok(match frame {
            ClientFrame::Ping => {
                self.out.push(F::from_frame(ServerFrame::Pong));
                None
            }
            ClientFrame::Ack { msg_ids } => {
                self.unacked.acked(&msg_ids);
                None
            }
            ClientFrame::Send { id, to, conv_id, client_msg_id, body } => {
                self.on_send(cfg, now, id, to, conv_id, client_msg_id, body)
            }
            ClientFrame::History { id, conv_id, after_seq, before_seq, limit } => {
                self.on_history(cfg, now, id, conv_id, after_seq, before_seq, limit)
            }
            ClientFrame::Read { id, conv_id, seq } => {
                self.as_user(Some(id)).map(|user| self.in_flight(Request::Read { id, user, conv_id, seq }))
            }
            ClientFrame::Recall { id, conv_id, seq } => {
                self.as_user(Some(id)).map(|user| self.in_flight(Request::Recall { id, user, conv_id, seq }))
            }
            ClientFrame::Typing { conv_id } => self.as_user(None).map(|user| Request::Typing { user, conv_id }),
            ClientFrame::FileOffer { id, to, name, size, sha256, candidates } => {
                let user = self.as_user(Some(id));
                // Offers reach other people's devices: they count against the send rate.
                match (user, self.sends.as_mut().map(|b| b.take(now))) {
                    (None, _) => None,
                    (Some(_), Some(Err(secs))) => {
                        let why = format!(
                            "over {} requests per second on this connection; retry in {secs} s",
                            cfg.max_sends_per_sec
                        );
                        self.refuse(Some(id), ErrorCode::RateLimited, why);
                        None
                    }
                    (Some(user), _) => {
                        Some(self.in_flight(Request::FileOffer { id, user, to, name, size, sha256, candidates }))
                    }
                }
            }
            ClientFrame::FileAnswer { id, ticket, accept } => {
                self.as_user(Some(id)).map(|user| self.in_flight(Request::FileAnswer { id, user, ticket, accept }))
            }
            ClientFrame::Join { id, room, token, recent } => self.on_join(id, room, token, recent),
            ClientFrame::Publish { id, room, data, priority } => self.on_publish(cfg, now, id, room, data, priority),
            ClientFrame::Leave { id } => {
                let room = self.room.take();
                self.out.push(F::from_frame(ServerFrame::Left { id, room: room.clone() }));
                room.map(|room| Request::LeaveRoom { room })
            }
            // Refused by the session before it gets here.
            ClientFrame::Auth { .. } => None,
        })
    }

    /// The user behind the connection; a device-token connection is answered `forbidden`.
    fn as_user(&mut self, id: Option<u64>) -> Option<UserId> {
        if self.user == 0 {
            self.refuse(
                id,
                ErrorCode::Forbidden,
                "log in as a user to do this (this connection uses a device token)".into(),
            );
            return None;
        }
        Some(UserId(self.user))
    }

    fn refuse(&mut self, id: Option<u64>, code: ErrorCode, message: String) {
        self.out.push(F::from_frame(ServerFrame::error(id, code, message)));
    }

    fn in_flight(&mut self, request: Request) -> Request {
        self.inflight += 1;
        request
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of one `send` frame")]
    fn on_send(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        id: u64,
        to: Option<UserId>,
        conv_id: Option<ConvId>,
        client_msg_id: String,
        body: Body,
    ) -> Option<Request> {
        let user = self.as_user(Some(id))?;
        if let Some(Err(secs)) = self.sends.as_mut().map(|b| b.take(now)) {
            let why =
                format!("over {} messages per second on this connection; retry in {secs} s", cfg.max_sends_per_sec);
            self.refuse(Some(id), ErrorCode::RateLimited, why);
            return None;
        }
        let to = match (to, conv_id) {
            (Some(user), None) => SendTo::User(user),
            (None, Some(conv)) => SendTo::Conv(conv),
            _ => {
                self.refuse(Some(id), ErrorCode::BadRequest, "give exactly one of `to` and `conv_id`".into());
                return None;
            }
        };
        Some(self.in_flight(Request::Send { id, user, to, client_msg_id, body }))
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of one `history` frame")]
    fn on_history(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        id: u64,
        conv_id: ConvId,
        after_seq: Option<u64>,
        before_seq: Option<u64>,
        limit: Option<u32>,
    ) -> Option<Request> {
        let user = self.as_user(Some(id))?;
        let per_sec = cfg.max_history_per_sec;
        if per_sec > 0 {
            let bucket = self.history.get_or_insert_with(|| Box::new(Bucket::new(f64::from(per_sec), per_sec, now)));
            let asked = limit.unwrap_or(cfg.default_history_page).max(1);
            if let Err(secs) = bucket.take_n(now, f64::from(asked)) {
                let why =
                    format!("over {per_sec} messages of history per second on this connection; retry in {secs} s");
                self.refuse(Some(id), ErrorCode::RateLimited, why);
                return None;
            }
        }
        Some(self.in_flight(Request::History { id, user, conv_id, after_seq, before_seq, limit }))
    }

    fn on_publish(
        &mut self,
        cfg: &ConnConfig,
        now: Instant,
        id: u64,
        room: String,
        data: serde_json::Value,
        priority: Priority,
    ) -> Option<Request> {
        if self.room.as_deref() != Some(room.as_str()) {
            let why = match &self.room {
                Some(current) => {
                    format!("this connection is in room {current:?}, not {room:?}; join a room to post into it")
                }
                None => format!("join room {room:?} before posting into it"),
            };
            self.refuse(Some(id), ErrorCode::Forbidden, why);
            return None;
        }
        let per_sec = cfg.max_publishes_per_sec;
        if per_sec > 0 {
            let bucket = self.publishes.get_or_insert_with(|| Box::new(Bucket::new(f64::from(per_sec), per_sec, now)));
            if let Err(secs) = bucket.take(now) {
                let why = format!("over {per_sec} posts per second on this connection; retry in {secs} s");
                self.refuse(Some(id), ErrorCode::RateLimited, why);
                return None;
            }
        }
        if data_depth(&data) > MAX_DATA_DEPTH {
            let why = format!("post data nests deeper than {MAX_DATA_DEPTH} levels");
            self.refuse(Some(id), ErrorCode::BadRequest, why);
            return None;
        }
        let size = serde_json::to_vec(&data).map_or(usize::MAX, |v| v.len());
        if size > cfg.max_publish_bytes {
            let why = format!("post data is {size} bytes, the limit is {}", cfg.max_publish_bytes);
            self.refuse(Some(id), ErrorCode::BodyTooLarge, why);
            return None;
        }
        // A device-token connection may post only where the room allows it: the server decides.
        let user = (self.user != 0).then_some(UserId(self.user));
        Some(self.in_flight(Request::Publish { id, user, room, data, priority }))
    }

    /// The server refused an `EnterRoom` (a ban): the connection stays where it was, as if the
    /// `join` had not been sent, and the client gets `error`.
    pub fn join_refused(&mut self, id: u64, leaving: Option<String>, code: ErrorCode, message: String) {
        self.room = leaving;
        self.refuse(Some(id), code, message);
    }

    fn on_join(&mut self, id: u64, room: String, token: Option<String>, recent: Option<u64>) -> Option<Request> {
        if !valid_name(&room) {
            self.refuse(Some(id), ErrorCode::BadRequest, "room names are 1 to 64 characters of [A-Za-z0-9_.:-]".into());
            return None;
        }
        // One room per connection: joining another is a switch (leave, then enter).
        let leaving = self.room.take_if(|r| *r != room);
        self.room = Some(room.clone());
        Some(Request::EnterRoom { id, room, leaving, token, recent })
    }
}

#[cfg(test)]
mod tests;
