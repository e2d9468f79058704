//! The background task behind a [`crate::Client`]: owns the connection, reconnects, resends,
//! acknowledges, orders and dedups (through [`Inbox`]), and feeds the app's event stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_proto::inbox::{Fetch, Inbox, Outcome};
use tern_proto::{ClientFrame, CloseReason, ConvId, MsgId, PROTOCOL_VERSION, ServerFrame};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

use crate::conn::Conn;
use crate::{Command, Credentials, Error, Event, Options, Transport};

/// Flush ACKs at this many, or after `ACK_DELAY`, whichever comes first.
const ACK_BATCH: usize = 128;
const ACK_DELAY: Duration = Duration::from_millis(5);
const AUTH_WAIT: Duration = Duration::from_secs(10);
/// Largest history page the server serves.
const PAGE: u64 = 500;

enum Pending {
    App { frame: ClientFrame, reply: oneshot::Sender<Result<ServerFrame, Error>> },
    Fill { conv_id: ConvId, frame: ClientFrame },
    Rejoin { frame: ClientFrame },
}

impl Pending {
    fn frame(&self) -> &ClientFrame {
        match self {
            Pending::App { frame, .. } | Pending::Fill { frame, .. } | Pending::Rejoin { frame } => frame,
        }
    }
}

enum End {
    /// The app closed the client.
    Closed,
    /// The connection was lost; reconnect (after the server's hint, if any).
    Lost { reason: Option<CloseReason>, message: String, retry_after: Option<Duration> },
    /// The server refused us for good.
    Fatal(Error),
}

pub(crate) struct Driver {
    session: Credentials,
    opts: Options,
    inbox: Arc<Mutex<Inbox>>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Requests without an answer, by request id; resent in order after a reconnect.
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
    acks: Vec<MsgId>,
    /// Recently seen push ids, to drop second copies (retries, redundant paths).
    seen_pushes: RecentIds,
    /// The room to be in (re-entered after a reconnect).
    room: Option<String>,
    /// The join token the room was entered with (a private room), for re-entering it.
    room_token: Option<String>,
    /// The last push of the room seen, to ask for what came after it when re-entering.
    room_last: Option<u64>,
    /// Which of the session's endpoints to connect to.
    node: usize,
    /// With [`Transport::Auto`]: the transport that connected last, tried first next time.
    worked: Option<Transport>,
}

/// A bounded set of recent ids: the oldest are forgotten first.
struct RecentIds {
    set: std::collections::HashSet<MsgId>,
    order: std::collections::VecDeque<MsgId>,
    cap: usize,
}

impl RecentIds {
    fn new(cap: usize) -> Self {
        Self { set: Default::default(), order: Default::default(), cap }
    }

    /// True the first time an id is seen.
    fn first_time(&mut self, id: MsgId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// What [`Transport::Auto`] tries, best first: the server's order for this client (TCP then
/// WebSocket from a server that sends none), with the transport that worked last moved first.
fn auto_order(endpoints: &crate::Endpoints, worked: Option<Transport>) -> Vec<Transport> {
    let mut order: Vec<Transport> = endpoints
        .order
        .iter()
        .filter_map(|name| match name.as_str() {
            "quic" => Some(Transport::Quic),
            "tcp" => Some(Transport::Tcp),
            "ws" => Some(Transport::WsBinary),
            "sse" => Some(Transport::Sse),
            "longpoll" => Some(Transport::LongPoll),
            _ => None,
        })
        .collect();
    if order.is_empty() {
        order = vec![Transport::Tcp, Transport::WsBinary];
    }
    if let Some(w) = worked
        && let Some(at) = order.iter().position(|t| *t == w)
    {
        let w = order.remove(at);
        order.insert(0, w);
    }
    order
}

fn set_id(frame: &mut ClientFrame, new_id: u64) {
    match frame {
        ClientFrame::Send { id, .. }
        | ClientFrame::History { id, .. }
        | ClientFrame::Read { id, .. }
        | ClientFrame::Recall { id, .. }
        | ClientFrame::Join { id, .. }
        | ClientFrame::Publish { id, .. }
        | ClientFrame::FileOffer { id, .. }
        | ClientFrame::FileAnswer { id, .. }
        | ClientFrame::Leave { id } => *id = new_id,
        // Not requests: nothing answers them.
        ClientFrame::Auth { .. } | ClientFrame::Ack { .. } | ClientFrame::Ping | ClientFrame::Typing { .. } => {}
    }
}

impl Driver {
    pub(crate) fn new(
        session: Credentials,
        opts: Options,
        inbox: Arc<Mutex<Inbox>>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        Self {
            session,
            opts,
            inbox,
            commands,
            events,
            pending: BTreeMap::new(),
            next_id: 1,
            acks: Vec::new(),
            seen_pushes: RecentIds::new(16_384),
            room: None,
            room_token: None,
            room_last: None,
            node: 0,
            worked: None,
        }
    }

    async fn emit(&self, event: Event) {
        // An app that dropped its event stream no longer wants events; that is not an error.
        let _ = self.events.send(event).await;
    }

    pub(crate) async fn run(mut self, ready: oneshot::Sender<Result<(), Error>>) {
        let mut ready = Some(ready);
        let mut attempt: u32 = 0;
        loop {
            let mut hint = None;
            match self.open().await {
                Ok((conn, conn_id, heartbeat, dead_after)) => {
                    attempt = 0;
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                    self.emit(Event::Connected { conn_id }).await;
                    match self.session_loop(conn, heartbeat, dead_after).await {
                        End::Closed => return,
                        End::Fatal(e) => return self.give_up(e).await,
                        End::Lost { reason, message, retry_after } => {
                            tracing::debug!(?reason, %message, "connection lost");
                            hint = retry_after;
                            self.emit(Event::Disconnected { reason, message, reconnecting: true }).await;
                        }
                    }
                }
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                        return;
                    }
                    if matches!(&e, Error::Refused { reason, .. } if !reason.should_reconnect()) {
                        return self.give_up(e).await;
                    }
                    tracing::debug!(error = %e, attempt, "reconnect failed");
                }
            }
            attempt = attempt.saturating_add(1);
            let delay = hint.unwrap_or_else(|| self.backoff(attempt));
            if !self.wait(delay).await {
                return;
            }
        }
    }

    /// Exponential backoff with full jitter: uniform in [0, min(max, initial · 2^attempt)].
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.opts.backoff_initial.saturating_mul(1u32 << attempt.min(20)).min(self.opts.backoff_max);
        ceiling.mul_f64(rand::random::<f64>())
    }

    /// Sleeps while queueing the app's requests; false if the app closed the client.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Close) => return false,
                    Some(Command::Request { frame, reply }) => {
                        self.queue(frame, reply);
                    }
                    // Ephemeral (typing): meaningless later, dropped while disconnected.
                    Some(Command::Fire(_)) => {}
                }
            }
        }
    }

    async fn give_up(mut self, e: Error) {
        let (reason, message) = match &e {
            Error::Refused { reason, message } => (Some(*reason), message.clone()),
            other => (None, other.to_string()),
        };
        for (_, p) in std::mem::take(&mut self.pending) {
            if let Pending::App { reply, .. } = p {
                let _ = reply.send(Err(e.clone()));
            }
        }
        self.emit(Event::Disconnected { reason, message, reconnecting: false }).await;
    }

    fn queue(&mut self, mut frame: ClientFrame, reply: oneshot::Sender<Result<ServerFrame, Error>>) -> ClientFrame {
        let id = self.next_id;
        self.next_id += 1;
        set_id(&mut frame, id);
        self.pending.insert(id, Pending::App { frame: frame.clone(), reply });
        frame
    }

    async fn open(&mut self) -> Result<(Conn, u64, Duration, Duration), Error> {
        let endpoints = &self.session.endpoints[self.node % self.session.endpoints.len().max(1)];
        let opened = match self.opts.transport {
            Transport::Auto => {
                let order = auto_order(endpoints, self.worked);
                Conn::open_first(endpoints, &order).await.map(|(conn, used)| {
                    self.worked = Some(used);
                    conn
                })
            }
            fixed => Conn::open(endpoints, fixed).await,
        };
        let mut conn = match opened {
            Ok(conn) => conn,
            Err(e) => {
                // Unreachable: the next node of the cluster is tried on the next attempt.
                self.node = (self.node + 1) % self.session.endpoints.len().max(1);
                return Err(e);
            }
        };
        let resume = self.opts.resume.then(|| self.inbox.lock().map(|i| i.watermarks()).unwrap_or_default());
        let accept_compression = if self.opts.accept_brotli { vec!["br".to_owned()] } else { Vec::new() };
        let auth = ClientFrame::Auth {
            token: self.session.token.clone(),
            proto: Some(PROTOCOL_VERSION),
            resume,
            accept_compression,
        };
        conn.send(&[auth]).await?;
        match timeout(AUTH_WAIT, conn.recv()).await {
            Err(_) => Err(Error::Transport("no answer to auth".into())),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => Err(Error::Transport("connection closed during auth".into())),
            Ok(Ok(Some(ServerFrame::AuthOk { conn_id, heartbeat_ms, max_missed_heartbeats, .. }))) => {
                let heartbeat = Duration::from_millis(heartbeat_ms.max(100));
                // Declare the server dead a little after it would declare us dead.
                let dead_after = heartbeat * (max_missed_heartbeats.max(1) + 1);
                Ok((conn, conn_id.0, heartbeat, dead_after))
            }
            Ok(Ok(Some(ServerFrame::Close { reason, message, .. }))) => Err(Error::Refused { reason, message }),
            Ok(Ok(Some(other))) => Err(Error::Transport(format!("unexpected first frame: {other:?}"))),
        }
    }

    async fn session_loop(&mut self, mut conn: Conn, heartbeat: Duration, dead_after: Duration) -> End {
        let lost = |message: String| End::Lost { reason: None, message, retry_after: None };
        // Whatever was unanswered on the last connection is asked again, in order. Sends are
        // idempotent by client_msg_id, history is a read. A room post has no key: sent again it
        // could be shown twice, so it fails instead; so does a file offer (it would be offered
        // twice).
        let posts: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| matches!(p.frame(), ClientFrame::Publish { .. } | ClientFrame::FileOffer { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in posts {
            if let Some(Pending::App { reply, .. }) = self.pending.remove(&id) {
                let _ =
                    reply.send(Err(Error::Transport("the connection dropped; the post may not have been sent".into())));
            }
        }
        let mut resend: Vec<ClientFrame> = self.pending.values().map(|p| p.frame().clone()).collect();
        let join_pending = self.pending.values().any(|p| matches!(p.frame(), ClientFrame::Join { .. }));
        if let (Some(room), false) = (self.room.clone(), join_pending) {
            let id = self.next_id;
            self.next_id += 1;
            let frame = ClientFrame::Join { id, room, token: self.room_token.clone(), recent: self.room_last };
            self.pending.insert(id, Pending::Rejoin { frame: frame.clone() });
            resend.push(frame);
        }
        if !resend.is_empty()
            && let Err(e) = conn.send(&resend).await
        {
            return lost(e.to_string());
        }
        let mut last_rx = Instant::now();
        let mut ping_at = last_rx + heartbeat;
        let mut ack_at: Option<Instant> = None;
        let mut goodbye: Option<(CloseReason, String, Option<Duration>)> = None;
        loop {
            let wake =
                [Some(ping_at), Some(last_rx + dead_after), ack_at].into_iter().flatten().min().unwrap_or(ping_at);
            let step: Result<(), Error> = tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Close) => {
                        let _ = self.flush_acks(&mut conn).await;
                        conn.close().await;
                        return End::Closed;
                    }
                    Some(Command::Request { frame, reply }) => {
                        let frame = self.queue(frame, reply);
                        conn.send(&[frame]).await
                    }
                    Some(Command::Fire(frame)) => conn.send(&[frame]).await,
                },
                received = conn.recv() => match received {
                    Ok(Some(frame)) => {
                        last_rx = Instant::now();
                        if let ServerFrame::Close { reason, message, retry_after_ms } = frame {
                            goodbye = Some((reason, message, retry_after_ms.map(Duration::from_millis)));
                            Ok(())
                        } else {
                            self.on_frame(frame, &mut conn).await
                        }
                    }
                    Ok(None) => {
                        return match goodbye {
                            Some((reason, message, _)) if !reason.should_reconnect() => {
                                End::Fatal(Error::Refused { reason, message })
                            }
                            Some((reason, message, retry_after)) => End::Lost { reason: Some(reason), message, retry_after },
                            None => lost("connection closed by the server".into()),
                        };
                    }
                    Err(e) => Err(e),
                },
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= last_rx + dead_after {
                        return lost(format!("nothing from the server for {} ms", dead_after.as_millis()));
                    }
                    let mut r = Ok(());
                    if now >= ping_at {
                        ping_at = now + heartbeat;
                        r = conn.send(&[ClientFrame::Ping]).await;
                    }
                    if r.is_ok() && ack_at.is_some_and(|t| now >= t) {
                        ack_at = None;
                        r = self.flush_acks(&mut conn).await;
                    }
                    r
                }
            };
            if let Err(e) = step {
                return match goodbye {
                    Some((reason, message, retry_after)) => End::Lost { reason: Some(reason), message, retry_after },
                    None => lost(e.to_string()),
                };
            }
            if self.acks.len() >= ACK_BATCH {
                ack_at = None;
                if let Err(e) = self.flush_acks(&mut conn).await {
                    return lost(e.to_string());
                }
            } else if !self.acks.is_empty() && ack_at.is_none() {
                ack_at = Some(Instant::now() + ACK_DELAY);
            }
        }
    }

    async fn flush_acks(&mut self, conn: &mut Conn) -> Result<(), Error> {
        if self.acks.is_empty() {
            return Ok(());
        }
        let msg_ids = std::mem::take(&mut self.acks);
        conn.send(&[ClientFrame::Ack { msg_ids }]).await
    }

    async fn on_frame(&mut self, frame: ServerFrame, conn: &mut Conn) -> Result<(), Error> {
        match frame {
            ServerFrame::Msg(m) => {
                self.acks.push(m.msg_id);
                // This device's own message, whose `sent` answer was lost with a connection: the
                // resume replays it before the resent request is answered. The app has it (it
                // is still waiting for `send` to return), so it is skipped like any own send.
                let outcome = if self.is_unanswered_send(&m) {
                    self.with_inbox(|i| i.sent(m.conv_id, m.seq))
                } else {
                    self.with_inbox(|i| i.receive(m))
                };
                self.apply(outcome, conn).await?;
            }
            ServerFrame::Sent { id, conv_id, seq, .. } => {
                if let Some(Pending::App { reply, .. }) = self.pending.remove(&id) {
                    let outcome = self.with_inbox(|i| i.sent(conv_id, seq));
                    let _ = reply.send(Ok(frame));
                    self.apply(outcome, conn).await?;
                }
            }
            ServerFrame::History { id, conv_id, ref messages, from_seq, .. } => match self.pending.remove(&id) {
                Some(Pending::App { reply, .. }) => {
                    let _ = reply.send(Ok(frame));
                }
                Some(Pending::Fill { .. }) => {
                    let page = messages.clone();
                    let outcome = self.with_inbox(|i| i.fetched(conv_id, page, from_seq.unwrap_or(1)));
                    self.apply(outcome, conn).await?;
                }
                Some(Pending::Rejoin { .. }) | None => {}
            },
            ServerFrame::Error { id: Some(id), code, message } => match self.pending.remove(&id) {
                Some(Pending::App { reply, .. }) => {
                    let _ = reply.send(Err(Error::Server { code, message }));
                }
                Some(Pending::Fill { conv_id, .. }) => {
                    tracing::warn!(%conv_id, ?code, %message, "gap fetch failed");
                    let outcome = self.with_inbox(|i| i.fetched(conv_id, Vec::new(), 1));
                    self.apply(outcome, conn).await?;
                }
                Some(Pending::Rejoin { .. }) => {
                    tracing::warn!(?code, %message, "re-entering the room failed");
                    self.room = None;
                }
                None => {}
            },
            ServerFrame::Error { id: None, code, message } => {
                tracing::warn!(?code, %message, "server reported an error")
            }
            ServerFrame::Gap { conv_id, to_seq, .. } => {
                if let Some(fetch) = self.with_inbox(|i| i.gap(conv_id, to_seq)) {
                    self.fetch(fetch, conn).await?;
                }
            }
            ServerFrame::Synced { .. } => self.emit(Event::Synced).await,
            ServerFrame::Push(p) => self.on_push(p).await,
            ServerFrame::Batch { pushes, .. } => {
                for p in pushes {
                    self.on_push(p).await;
                }
            }
            ServerFrame::Online { room, count } => self.emit(Event::Online { room, count }).await,
            ServerFrame::RoomEvents { room, entered, left, more_entered, more_left } => {
                self.emit(Event::RoomEvents { room, entered, left, more_entered, more_left }).await
            }
            ServerFrame::RoomHistory { room, pushes, gap } => {
                for p in pushes {
                    self.on_push(p).await;
                }
                if gap {
                    self.emit(Event::RoomGap { room }).await;
                }
            }
            ServerFrame::Kicked { room, reason } => {
                // Not re-entered after a reconnect: the ban refuses it.
                if self.room.as_deref() == Some(room.as_str()) {
                    self.room = None;
                }
                self.emit(Event::Kicked { room, reason }).await;
            }
            ServerFrame::Joined { id, ref room, .. } => {
                if self.room.as_ref() != Some(room) {
                    self.room_last = None;
                }
                self.room = Some(room.clone());
                if let Some(ClientFrame::Join { token, .. }) = self.pending.get(&id).map(Pending::frame) {
                    self.room_token = token.clone();
                }
                if let Some(Pending::App { reply, .. }) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(frame));
                }
            }
            ServerFrame::Ok { id } | ServerFrame::FileOffered { id, .. } => {
                if let Some(Pending::App { reply, .. }) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(frame));
                }
            }
            ServerFrame::FileOffer { transfer_id, from, name, size, sha256, candidates, ticket, expires_at } => {
                let offer =
                    crate::transfer::Offer { transfer_id, from, name, size, sha256, candidates, ticket, expires_at };
                self.emit(Event::FileOffer(offer)).await
            }
            ServerFrame::FileAnswer { transfer_id, accept } => {
                self.emit(Event::FileAnswer { transfer_id, accept }).await
            }
            ServerFrame::Typing { conv_id, user } => self.emit(Event::Typing { conv_id, user }).await,
            ServerFrame::Presence { user, online } => self.emit(Event::Presence { user, online }).await,
            ServerFrame::Left { id, .. } => {
                self.room = None;
                if let Some(Pending::App { reply, .. }) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(frame));
                }
            }
            ServerFrame::AuthOk { .. } | ServerFrame::Pong | ServerFrame::Close { .. } => {}
        }
        Ok(())
    }

    async fn on_push(&mut self, push: tern_proto::Push) {
        if push.qos >= 1 {
            // Acknowledge every copy: the server may not have seen our first ACK.
            self.acks.push(push.msg_id);
        }
        if let tern_proto::PushScope::Room { room } = &push.scope
            && self.room.as_ref() == Some(room)
        {
            self.room_last = Some(push.msg_id.0);
        }
        if self.seen_pushes.first_time(push.msg_id) {
            self.emit(Event::Push(push)).await;
        }
    }

    /// Whether `m` is one of this device's sends still waiting for its answer (same sender,
    /// same idempotency key — keys are per sender, so another user's equal key does not match).
    fn is_unanswered_send(&self, m: &tern_proto::Message) -> bool {
        self.session.user == Some(m.from)
            && self.pending.values().any(|p| {
                matches!(p, Pending::App { frame: ClientFrame::Send { client_msg_id, .. }, .. }
                    if *client_msg_id == m.client_msg_id)
            })
    }

    fn with_inbox<R: Default>(&self, f: impl FnOnce(&mut Inbox) -> R) -> R {
        self.inbox.lock().map(|mut i| f(&mut i)).unwrap_or_default()
    }

    async fn apply(&mut self, outcome: Outcome, conn: &mut Conn) -> Result<(), Error> {
        for m in outcome.deliver {
            self.emit(Event::Message(m)).await;
        }
        if let Some((conv_id, from_seq, to_seq)) = outcome.missing {
            self.emit(Event::Missing { conv_id, from_seq, to_seq }).await;
        }
        if let Some(fetch) = outcome.fetch {
            self.fetch(fetch, conn).await?;
        }
        Ok(())
    }

    async fn fetch(&mut self, f: Fetch, conn: &mut Conn) -> Result<(), Error> {
        let id = self.next_id;
        self.next_id += 1;
        let limit = (f.to_seq - f.after_seq).min(PAGE) as u32;
        let frame = ClientFrame::History {
            id,
            conv_id: f.conv_id,
            after_seq: Some(f.after_seq),
            before_seq: None,
            limit: Some(limit),
        };
        self.pending.insert(id, Pending::Fill { conv_id: f.conv_id, frame: frame.clone() });
        conn.send(&[frame]).await
    }
}
