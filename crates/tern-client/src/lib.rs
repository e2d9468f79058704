//! The tern client SDK.
//!
//! [`http`] registers and logs in (REST); [`Client::connect`] opens a long connection over
//! WebSocket or TCP and keeps it: it authenticates, resumes from what this device already has,
//! acknowledges pushes, drops duplicates, fetches gaps, reconnects with exponential backoff and
//! full jitter, and resends unanswered requests (sends are idempotent by `client_msg_id`). The
//! app sees one ordered [`Event`] stream: every message exactly once, in seq order per
//! conversation.
//!
//! Layout: [`http`] (REST calls), `conn` (one transport connection), `driver` (the background
//! task that owns the connection and the ordering state).

mod conn;
mod driver;
pub mod http;
mod httpconn;
pub mod tls;
pub mod transfer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_proto::inbox::Inbox;
pub use tern_proto::{
    Body, CloseReason, ConvId, DeviceId, ErrorCode, GroupId, Message, MsgId, Notice, Priority, Push, PushScope,
    RoomUser, UserId,
};
use tern_proto::{ClientFrame, ServerFrame};
use tokio::sync::{mpsc, oneshot};

pub use tern_proto::rest::{Endpoints, HistoryPage};

/// A logged-in device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// HTTP base URL of the server (`http://127.0.0.1:7070`).
    pub server: String,
    /// The user.
    pub user_id: UserId,
    /// This device.
    pub device_id: DeviceId,
    /// The login token.
    pub token: String,
    /// Token expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Where to connect.
    pub endpoints: Endpoints,
    /// Other nodes of a cluster, least loaded first: tried in turn when `endpoints` cannot be
    /// reached.
    #[serde(default)]
    pub alternates: Vec<Endpoints>,
}

/// An anonymous device (no user login): can join rooms and receive pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSession {
    /// HTTP base URL of the server.
    pub server: String,
    /// The device id the server assigned.
    pub device_id: DeviceId,
    /// The device token.
    pub token: String,
    /// Token expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Where to connect.
    pub endpoints: Endpoints,
    /// Other nodes of a cluster, least loaded first: tried in turn when `endpoints` cannot be
    /// reached.
    #[serde(default)]
    pub alternates: Vec<Endpoints>,
}

/// What a connection needs to authenticate.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) token: String,
    /// The account (`None` for an anonymous device): tells this device's own messages apart.
    pub(crate) user: Option<UserId>,
    /// Where to connect, in order of preference: a node that cannot be reached is skipped for
    /// the next.
    pub(crate) endpoints: Vec<Endpoints>,
}

/// What can go wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{}: {message}", code.as_str())]
    Server {
        /// Stable code.
        code: ErrorCode,
        /// The server's sentence.
        message: String,
    },
    /// The server closed the connection and reconnecting would not help.
    #[error("connection refused by the server ({}): {message}", reason.as_str())]
    Refused {
        /// The close reason.
        reason: CloseReason,
        /// The server's sentence.
        message: String,
    },
    /// The server could not be reached or spoke nonsense.
    #[error("{0}")]
    Transport(String),
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

impl Error {
    /// The server error code, if this is a server error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket with JSON text frames.
    WsJson,
    /// WebSocket with MessagePack binary frames.
    WsBinary,
    /// Raw TCP with length-prefixed MessagePack.
    Tcp,
    /// Server-Sent Events downstream, frames POSTed upstream (JSON), over HTTP(S): for
    /// networks that pass only HTTP.
    Sse,
    /// Long polls downstream, frames POSTed upstream (JSON), over HTTP(S).
    LongPoll,
    /// QUIC (UDP, TLS 1.3), one stream of length-prefixed MessagePack frames.
    Quic,
    /// Whichever works, in the order the server's login answer prefers (`Endpoints::order`):
    /// each transport gets a short head start before the next is tried alongside it, the
    /// first to connect is used, and it is tried first again on the next reconnect.
    Auto,
}

/// Connection behaviour.
#[derive(Debug, Clone)]
pub struct Options {
    /// The transport.
    pub transport: Transport,
    /// Catch up on connect (send watermarks in `auth.resume`). Off for send-only clients.
    pub resume: bool,
    /// What this device already has, per conversation (e.g. loaded from disk).
    pub watermarks: BTreeMap<ConvId, u64>,
    /// First reconnect delay ceiling; doubles per failed attempt (full jitter).
    pub backoff_initial: Duration,
    /// Largest reconnect delay ceiling.
    pub backoff_max: Duration,
    /// Events buffered for the app before the connection stops reading.
    pub event_buffer: usize,
    /// Ask for brotli-compressed batches (smaller on the wire; costs a decompression).
    pub accept_brotli: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            transport: Transport::WsJson,
            resume: true,
            watermarks: BTreeMap::new(),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            event_buffer: 4096,
            accept_brotli: true,
        }
    }
}

/// What the app receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Authenticated (again).
    Connected {
        /// Server connection id.
        conn_id: u64,
    },
    /// A message, exactly once, in seq order within its conversation.
    Message(Message),
    /// The catch-up after (re)connecting is complete.
    Synced,
    /// The server had none of a range it should have had. Never expected; reported instead of
    /// waited on forever.
    Missing {
        /// The conversation.
        conv_id: ConvId,
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
    },
    /// A push from a business server, exactly once (a batch arrives as its pushes, in order).
    Push(Push),
    /// A peer is typing (ephemeral).
    Typing {
        /// The conversation.
        conv_id: ConvId,
        /// Who.
        user: UserId,
    },
    /// A friend came online or went offline.
    Presence {
        /// The friend.
        user: UserId,
        /// Online now.
        online: bool,
    },
    /// Who entered and left the joined room over the server's last window; past the names,
    /// counted.
    RoomEvents {
        /// The room.
        room: String,
        /// Who entered.
        entered: Vec<RoomUser>,
        /// Who left.
        left: Vec<RoomUser>,
        /// Others who entered.
        more_entered: u64,
        /// Others who left.
        more_left: u64,
    },
    /// Some recent pushes of the joined room were missed while disconnected and are no longer
    /// kept by the server.
    RoomGap {
        /// The room.
        room: String,
    },
    /// The room's moderators took this connection out of `room` (a ban); joining it again is
    /// refused while the ban lasts.
    Kicked {
        /// The room.
        room: String,
        /// Why, as the moderator gave it.
        reason: String,
    },
    /// Someone offers this user a file ([`transfer`] receives it).
    FileOffer(transfer::Offer),
    /// The recipient of this user's offer accepted or declined it.
    FileAnswer {
        /// The transfer.
        transfer_id: String,
        /// Accepted.
        accept: bool,
    },
    /// The online count of the joined room.
    Online {
        /// The room.
        room: String,
        /// Connections in it.
        count: u64,
    },
    /// The connection dropped.
    Disconnected {
        /// The server's reason, if it gave one.
        reason: Option<CloseReason>,
        /// Details.
        message: String,
        /// Whether the client will reconnect by itself.
        reconnecting: bool,
    },
}

/// The answer to a send: the message is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Server message id.
    pub msg_id: MsgId,
    /// Conversation.
    pub conv_id: ConvId,
    /// Seq in the conversation.
    pub seq: u64,
    /// Server time, ms.
    pub ts: u64,
    /// The client_msg_id had been stored before.
    pub duplicate: bool,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The room.
    pub room: String,
    /// Its area.
    pub area: String,
    /// Connections in it when joined.
    pub online: u64,
}

enum Command {
    Request {
        frame: ClientFrame,
        reply: oneshot::Sender<Result<ServerFrame, Error>>,
    },
    /// Sent if connected, never retried.
    Fire(ClientFrame),
    Close,
}

/// A connected client. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    inbox: Arc<Mutex<Inbox>>,
}

/// The app's event stream.
pub struct Events(mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` once the client is closed for good.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// The next message, skipping other events.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            if let Event::Message(m) = self.0.recv().await? {
                return Some(m);
            }
        }
    }

    /// The next push, skipping other events.
    pub async fn next_push(&mut self) -> Option<Push> {
        loop {
            if let Event::Push(p) = self.0.recv().await? {
                return Some(p);
            }
        }
    }
}

impl Client {
    /// Connects and authenticates. Fails if the first attempt fails; afterwards the client
    /// reconnects by itself.
    pub async fn connect(session: Session, options: Options) -> Result<(Client, Events), Error> {
        Self::start(
            Credentials {
                token: session.token,
                user: Some(session.user_id),
                endpoints: std::iter::once(session.endpoints).chain(session.alternates).collect(),
            },
            options,
        )
        .await
    }

    /// Connects an anonymous device (rooms and pushes only; no chat). `resume` is ignored.
    pub async fn connect_device(device: DeviceSession, options: Options) -> Result<(Client, Events), Error> {
        let options = Options { resume: false, ..options };
        let endpoints = std::iter::once(device.endpoints).chain(device.alternates).collect();
        Self::start(Credentials { token: device.token, user: None, endpoints }, options).await
    }

    async fn start(credentials: Credentials, options: Options) -> Result<(Client, Events), Error> {
        let inbox = Arc::new(Mutex::new(Inbox::with_watermarks(&options.watermarks)));
        let (commands, command_rx) = mpsc::channel(1024);
        let (events_tx, events_rx) = mpsc::channel(options.event_buffer);
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = driver::Driver::new(credentials, options, Arc::clone(&inbox), command_rx, events_tx);
        tokio::spawn(driver.run(ready_tx));
        ready_rx.await.map_err(|_| Error::Closed)??;
        Ok((Client { commands, inbox }, Events(events_rx)))
    }

    /// Enters a live room (leaving the current one). The client re-enters it after a reconnect.
    pub async fn join(&self, room: impl Into<String>) -> Result<Joined, Error> {
        self.join_room(room.into(), None, None).await
    }

    /// Enters a live room and gets its recent pushes (as `Event::Push`, before the live ones;
    /// duplicates are dropped). After a reconnect the client asks for those it missed, and
    /// reports `Event::RoomGap` when some are no longer kept.
    pub async fn join_with_history(&self, room: impl Into<String>) -> Result<Joined, Error> {
        self.join_room(room.into(), None, Some(0)).await
    }

    /// Enters a private room with a join token from its owner (a business server); the token is
    /// used again to re-enter after a reconnect.
    pub async fn join_with_token(&self, room: impl Into<String>, token: impl Into<String>) -> Result<Joined, Error> {
        self.join_room(room.into(), Some(token.into()), None).await
    }

    async fn join_room(&self, room: String, token: Option<String>, recent: Option<u64>) -> Result<Joined, Error> {
        match self.request(ClientFrame::Join { id: 0, room, token, recent }).await? {
            ServerFrame::Joined { room, area, online, .. } => Ok(Joined { room, area, online }),
            other => Err(Error::Transport(format!("unexpected answer to join: {other:?}"))),
        }
    }

    /// Posts into the joined room (danmaku, a like, a gift): every member gets it as a push with
    /// `from` set to this user, this connection too (once). Refused with `rate_limited`
    /// (connection rate or slow mode), `muted`, `forbidden` (not in the room, banned, anonymous
    /// where the room takes only logged-in posters, a filtered word) or `body_too_large`.
    pub async fn publish(
        &self,
        room: impl Into<String>,
        data: serde_json::Value,
        priority: Priority,
    ) -> Result<(), Error> {
        match self.request(ClientFrame::Publish { id: 0, room: room.into(), data, priority }).await? {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(Error::Transport(format!("unexpected answer to publish: {other:?}"))),
        }
    }

    /// Offers a file to `to` for a direct transfer ([`transfer::send`] does the rest).
    pub async fn offer_file(
        &self,
        to: UserId,
        name: impl Into<String>,
        size: u64,
        sha256: impl Into<String>,
        candidates: Vec<String>,
    ) -> Result<transfer::Offered, Error> {
        let frame = ClientFrame::FileOffer { id: 0, to, name: name.into(), size, sha256: sha256.into(), candidates };
        match self.request(frame).await? {
            ServerFrame::FileOffered { transfer_id, ticket, observed, expires_at, .. } => {
                Ok(transfer::Offered { transfer_id, ticket, observed, expires_at })
            }
            other => Err(Error::Transport(format!("unexpected answer to file_offer: {other:?}"))),
        }
    }

    /// Accepts or declines a file offer.
    pub async fn answer_file(&self, ticket: impl Into<String>, accept: bool) -> Result<(), Error> {
        self.expect_ok(ClientFrame::FileAnswer { id: 0, ticket: ticket.into(), accept }).await
    }

    /// Leaves the current room; returns it, if there was one.
    pub async fn leave(&self) -> Result<Option<String>, Error> {
        match self.request(ClientFrame::Leave { id: 0 }).await? {
            ServerFrame::Left { room, .. } => Ok(room),
            other => Err(Error::Transport(format!("unexpected answer to leave: {other:?}"))),
        }
    }

    /// What this device has, per conversation: persist it to resume from there next time.
    pub fn watermarks(&self) -> BTreeMap<ConvId, u64> {
        self.inbox.lock().map(|i| i.watermarks()).unwrap_or_default()
    }

    async fn request(&self, frame: ClientFrame) -> Result<ServerFrame, Error> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Request { frame, reply }).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Sends a text message with a fresh client_msg_id.
    pub async fn send_text(&self, to: UserId, text: impl Into<String>) -> Result<Sent, Error> {
        self.send(to, Body::Text { text: text.into() }, new_client_msg_id()).await
    }

    /// Sends a message with the given idempotency key. Safe to call again with the same key:
    /// the answer is the original message. The request survives reconnects.
    pub async fn send(&self, to: UserId, body: Body, client_msg_id: String) -> Result<Sent, Error> {
        self.send_frame(ClientFrame::Send { id: 0, to: Some(to), conv_id: None, client_msg_id, body }).await
    }

    /// Sends a text message into a conversation (a group, or a 1:1 conversation).
    pub async fn send_text_to(&self, conv: ConvId, text: impl Into<String>) -> Result<Sent, Error> {
        self.send_to(conv, Body::Text { text: text.into() }, new_client_msg_id()).await
    }

    /// Sends a message into a conversation with the given idempotency key.
    pub async fn send_to(&self, conv: ConvId, body: Body, client_msg_id: String) -> Result<Sent, Error> {
        self.send_frame(ClientFrame::Send { id: 0, to: None, conv_id: Some(conv), client_msg_id, body }).await
    }

    /// Reports that this device has read `conv` up to `seq`.
    pub async fn read(&self, conv_id: ConvId, seq: u64) -> Result<(), Error> {
        self.expect_ok(ClientFrame::Read { id: 0, conv_id, seq }).await
    }

    /// Recalls the message at `seq` of `conv_id`.
    pub async fn recall(&self, conv_id: ConvId, seq: u64) -> Result<(), Error> {
        self.expect_ok(ClientFrame::Recall { id: 0, conv_id, seq }).await
    }

    /// Tells the peer of a 1:1 conversation that this user is typing (dropped if disconnected).
    pub async fn typing(&self, conv_id: ConvId) -> Result<(), Error> {
        self.commands.send(Command::Fire(ClientFrame::Typing { conv_id })).await.map_err(|_| Error::Closed)
    }

    async fn expect_ok(&self, frame: ClientFrame) -> Result<(), Error> {
        match self.request(frame).await? {
            ServerFrame::Ok { .. } => Ok(()),
            other => Err(Error::Transport(format!("unexpected answer: {other:?}"))),
        }
    }

    async fn send_frame(&self, frame: ClientFrame) -> Result<Sent, Error> {
        match self.request(frame).await? {
            ServerFrame::Sent { msg_id, conv_id, seq, ts, duplicate, .. } => {
                Ok(Sent { msg_id, conv_id, seq, ts, duplicate })
            }
            other => Err(Error::Transport(format!("unexpected answer to send: {other:?}"))),
        }
    }

    /// A page of history over the connection: `after_seq` ascending, else `before_seq`
    /// descending (newest first when both are `None`).
    pub async fn history(
        &self,
        conv_id: ConvId,
        after_seq: Option<u64>,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, Error> {
        let frame = ClientFrame::History { id: 0, conv_id, after_seq, before_seq, limit: Some(limit) };
        match self.request(frame).await? {
            ServerFrame::History { conv_id, messages, last_seq, from_seq, .. } => {
                Ok(HistoryPage { conv_id, messages, last_seq, from_seq })
            }
            other => Err(Error::Transport(format!("unexpected answer to history: {other:?}"))),
        }
    }

    /// Closes the connection; the event stream ends.
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close).await;
    }
}

/// A fresh client_msg_id: milliseconds, a per-process counter and random bits. Time-ordered on
/// purpose: the server's dedup index is keyed by (sender, client_msg_id), and ids that grow keep
/// its inserts at the end of the sender's range instead of scattering them over the index.
pub fn new_client_msg_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{ms:011x}{n:08x}{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}
