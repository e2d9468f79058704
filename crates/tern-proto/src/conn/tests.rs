//! The connection core in virtual time: no sockets, no runtime, `Instant`s made up.

use super::*;
use crate::frame::{Priority, Push, PushScope};

/// A test's outbound frame.
#[derive(Debug)]
struct Frame(ServerFrame);

impl Outbound for Frame {
    fn from_frame(frame: ServerFrame) -> Arc<Self> {
        Arc::new(Frame(frame))
    }
    fn frame(&self) -> &ServerFrame {
        &self.0
    }
    fn ack_id(&self) -> Option<MsgId> {
        match &self.0 {
            ServerFrame::Msg(m) => Some(m.msg_id),
            ServerFrame::Push(p) if p.qos >= 1 => Some(p.msg_id),
            _ => None,
        }
    }
}

fn cfg() -> ConnConfig {
    ConnConfig {
        session: SessionConfig {
            auth_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(30),
            max_missed_heartbeats: 2,
        },
        retry: RetryPolicy { initial: Duration::from_secs(2), max: Duration::from_secs(8) },
        max_unacked: 3,
        push_ttl: Duration::from_secs(20),
        qos1_ttl: Duration::from_secs(5),
        max_inflight: 2,
        max_sends_per_sec: 2,
        max_history_per_sec: 1000,
        default_history_page: 100,
        max_frame_bytes: 65_536,
        max_publishes_per_sec: 2,
        max_publish_bytes: 64,
    }
}

fn json(frame: &ClientFrame) -> Vec<u8> {
    Codec::Json.encode(frame)
}

fn auth_frame(resume: Option<BTreeMap<ConvId, u64>>) -> ClientFrame {
    ClientFrame::Auth { token: "t".into(), proto: None, resume, accept_compression: vec!["br".into()] }
}

/// A connection authenticated as user 7 at `t0`, its `auth_ok` taken.
fn logged_in(cfg: &ConnConfig, t0: Instant) -> Connection<Frame> {
    let mut c = Connection::new(cfg, t0);
    let asked = c.handle_frame(cfg, t0, Codec::Json, &json(&auth_frame(None))).unwrap();
    assert_eq!(asked, Some(Request::Authenticate { token: "t".into(), resume: None }));
    assert!(c.brotli());
    let next = c.authenticated(cfg, t0, Some(UserId(7)), DeviceId("d".into()), ConnId(1), None);
    assert_eq!(next, None, "no catch-up was asked for");
    assert!(matches!(taken(&mut c)[..], [ServerFrame::AuthOk { user_id: Some(UserId(7)), .. }]));
    c
}

fn taken(c: &mut Connection<Frame>) -> Vec<ServerFrame> {
    let frames = c.outbound().iter().map(|f| f.0.clone()).collect();
    c.clear_outbound();
    frames
}

fn message(conv: ConvId, seq: u64) -> Arc<Frame> {
    Frame::from_frame(ServerFrame::Msg(Message {
        msg_id: MsgId(1000 + seq),
        conv_id: conv,
        seq,
        from: UserId(8),
        client_msg_id: format!("c{seq}"),
        ts: 0,
        body: Body::Text { text: "hi".into() },
    }))
}

fn qos1_push(id: u64) -> Arc<Frame> {
    Frame::from_frame(ServerFrame::Push(Push {
        msg_id: MsgId(id),
        priority: Priority::High,
        qos: 1,
        scope: PushScope::User,
        ts: 0,
        data: serde_json::json!({ "n": id }),
        from: None,
    }))
}

#[test]
fn the_first_frame_must_be_auth_and_must_come_before_the_deadline() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c: Connection<Frame> = Connection::new(&cfg, t0);
    let refused = c.handle_frame(&cfg, t0, Codec::Json, &json(&ClientFrame::Ping)).unwrap_err();
    assert_eq!(refused.reason, CloseReason::AuthRequired);

    let mut c: Connection<Frame> = Connection::new(&cfg, t0);
    let garbage = c.handle_frame(&cfg, t0, Codec::Json, b"{").unwrap_err();
    assert_eq!(garbage.reason, CloseReason::AuthFailed);
    assert!(garbage.message.starts_with("the first frame must be auth"), "{}", garbage.message);

    let mut c: Connection<Frame> = Connection::new(&cfg, t0);
    let old = ClientFrame::Auth { token: "t".into(), proto: Some(99), resume: None, accept_compression: vec![] };
    assert_eq!(c.handle_frame(&cfg, t0, Codec::Json, &json(&old)).unwrap_err().reason, CloseReason::UnsupportedVersion);

    let mut c: Connection<Frame> = Connection::new(&cfg, t0);
    assert_eq!(c.poll_timeout(&cfg), Some(t0 + Duration::from_secs(10)));
    assert_eq!(c.handle_timeout(&cfg, t0 + Duration::from_millis(9_999)), Ok(Retried::default()));
    let late = c.handle_timeout(&cfg, t0 + Duration::from_secs(10)).unwrap_err();
    assert_eq!(late, Close::new(CloseReason::AuthTimeout, "no valid auth frame within 10000 ms"));
}

#[test]
fn the_codec_of_the_auth_frame_is_the_connection_s_and_resume_is_asked_for_users_only() {
    let cfg = cfg();
    let t0 = Instant::now();
    let have: BTreeMap<ConvId, u64> = [(ConvId::direct(UserId(7), UserId(8)), 4)].into();
    let mut c: Connection<Frame> = Connection::new(&cfg, t0);
    let bytes = Codec::MsgPack.encode(&auth_frame(Some(have.clone())));
    let Some(Request::Authenticate { resume, .. }) = c.handle_frame(&cfg, t0, Codec::MsgPack, &bytes).unwrap() else {
        panic!("auth asks to authenticate");
    };
    assert_eq!(c.codec(), Codec::MsgPack);
    let device = c.authenticated(&cfg, t0, None, DeviceId("anon".into()), ConnId(2), resume.clone());
    assert_eq!(device, None, "an anonymous device has no stored conversations");
    let mut c: Connection<Frame> = Connection::new(&cfg, t0);
    c.handle_frame(&cfg, t0, Codec::MsgPack, &bytes).unwrap();
    let user = c.authenticated(&cfg, t0, Some(UserId(7)), DeviceId("d".into()), ConnId(3), resume);
    assert_eq!(user, Some(Request::Resume { user: UserId(7), have }));
}

#[test]
fn a_silent_connection_dies_after_the_missed_heartbeats_and_any_frame_keeps_it_alive() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    assert_eq!(c.poll_timeout(&cfg), Some(t0 + Duration::from_secs(60)));
    let t1 = t0 + Duration::from_secs(50);
    c.handle_frame(&cfg, t1, Codec::Json, &json(&ClientFrame::Ping)).unwrap();
    assert!(matches!(taken(&mut c)[..], [ServerFrame::Pong]));
    assert_eq!(c.poll_timeout(&cfg), Some(t1 + Duration::from_secs(60)), "the ping moved the deadline");
    assert_eq!(c.handle_timeout(&cfg, t0 + Duration::from_secs(60)), Ok(Retried::default()));
    let dead = c.handle_timeout(&cfg, t1 + Duration::from_secs(60)).unwrap_err();
    assert_eq!(dead, Close::new(CloseReason::HeartbeatTimeout, "nothing received for 60000 ms"));
}

#[test]
fn unacknowledged_pushes_are_retried_with_backoff_then_dropped_or_the_connection_closed() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    let conv = ConvId::direct(UserId(7), UserId(8));
    c.handle_push(&cfg, t0, message(conv, 1)).unwrap();
    c.handle_push(&cfg, t0, qos1_push(50)).unwrap();
    assert_eq!(taken(&mut c).len(), 2);
    assert_eq!(c.unacked(), 2);
    // Retries at 2 s, then 4 s later, then 8 s (capped) later.
    let mut resent_at = Vec::new();
    let mut now = t0;
    let end = loop {
        let Some(next) = c.poll_timeout(&cfg).filter(|&t| t < t0 + Duration::from_secs(40)) else { break None };
        now = next;
        match c.handle_timeout(&cfg, now) {
            Ok(r) => {
                if r.resent > 0 {
                    resent_at.push(((now - t0).as_secs(), r.resent, taken(&mut c).len()));
                }
                if r.dropped > 0 {
                    resent_at.push(((now - t0).as_secs(), 0, r.dropped as usize));
                }
            }
            Err(close) => break Some(close),
        }
    };
    // The must-arrive push (5 s TTL) is resent at 2 s, given up at 6 s; the stored message is
    // resent at 2, 6, 14 s and closes the connection at 22 s (20 s TTL).
    assert_eq!(resent_at, vec![(2, 2, 2), (6, 1, 1), (6, 0, 1), (14, 1, 1)]);
    let close = end.expect("the stored message's TTL ends the connection");
    assert_eq!(close.reason, CloseReason::AckTimeout);
    assert_eq!((now - t0).as_secs(), 22);
}

#[test]
fn an_ack_stops_the_retries() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    c.handle_push(&cfg, t0, message(ConvId::direct(UserId(7), UserId(8)), 1)).unwrap();
    c.handle_frame(&cfg, t0, Codec::Json, &json(&ClientFrame::Ack { msg_ids: vec![MsgId(1001)] })).unwrap();
    assert_eq!(c.unacked(), 0);
    assert_eq!(c.poll_timeout(&cfg), Some(t0 + Duration::from_secs(60)), "only the heartbeat is left");
    assert_eq!(c.handle_timeout(&cfg, t0 + Duration::from_secs(30)), Ok(Retried::default()));
}

#[test]
fn too_many_unacknowledged_pushes_cut_the_connection() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    for id in 1..=3 {
        c.handle_push(&cfg, t0, qos1_push(id)).unwrap();
    }
    let cut = c.handle_push(&cfg, t0, qos1_push(4)).unwrap_err();
    assert_eq!(cut, Close::new(CloseReason::SlowConsumer, "more than 3 pushed messages unacknowledged"));
}

#[test]
fn live_pushes_already_covered_by_the_catch_up_are_dropped_once_each() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    let (a, b) = (ConvId::direct(UserId(7), UserId(8)), ConvId::direct(UserId(7), UserId(9)));
    let caught_up: Vec<Message> = (1..=3)
        .map(|seq| match message(a, seq).frame() {
            ServerFrame::Msg(m) => m.clone(),
            _ => unreachable!(),
        })
        .collect();
    c.resume_messages(caught_up);
    c.resume_gap(b, 1, 40);
    c.resume_done(2);
    let sent = taken(&mut c);
    assert_eq!(sent.len(), 5);
    assert!(matches!(sent[4], ServerFrame::Synced { conversations: 2 }));
    // The same messages queued live while the catch-up ran, and newer ones.
    for seq in 2..=4 {
        c.handle_push(&cfg, t0, message(a, seq)).unwrap();
    }
    c.handle_push(&cfg, t0, message(b, 40)).unwrap();
    c.handle_push(&cfg, t0, message(b, 41)).unwrap();
    let live: Vec<(ConvId, u64)> = taken(&mut c)
        .into_iter()
        .map(|f| match f {
            ServerFrame::Msg(m) => (m.conv_id, m.seq),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(live, vec![(a, 4), (b, 41)]);
}

#[test]
fn sends_are_rate_limited_per_connection_and_need_a_user() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    let send = |id: u64| ClientFrame::Send {
        id,
        to: Some(UserId(8)),
        conv_id: None,
        client_msg_id: format!("m{id}"),
        body: Body::Text { text: "hi".into() },
    };
    for id in 1..=2 {
        let asked = c.handle_frame(&cfg, t0, Codec::Json, &json(&send(id))).unwrap();
        assert!(matches!(asked, Some(Request::Send { id: got, to: SendTo::User(UserId(8)), .. }) if got == id));
    }
    assert_eq!(c.handle_frame(&cfg, t0, Codec::Json, &json(&send(3))).unwrap(), None);
    match &taken(&mut c)[..] {
        [ServerFrame::Error { id: Some(3), code: ErrorCode::RateLimited, message }] => {
            assert_eq!(message, "over 2 messages per second on this connection; retry in 1 s")
        }
        other => panic!("{other:?}"),
    }
    // Half a second later one token is back.
    let later = t0 + Duration::from_millis(500);
    assert!(c.handle_frame(&cfg, later, Codec::Json, &json(&send(4))).unwrap().is_some());

    let mut device: Connection<Frame> = Connection::new(&cfg, t0);
    device.handle_frame(&cfg, t0, Codec::Json, &json(&auth_frame(None))).unwrap();
    device.authenticated(&cfg, t0, None, DeviceId("anon".into()), ConnId(9), None);
    taken(&mut device);
    assert_eq!(device.handle_frame(&cfg, t0, Codec::Json, &json(&send(1))).unwrap(), None);
    assert!(matches!(taken(&mut device)[..], [ServerFrame::Error { id: Some(1), code: ErrorCode::Forbidden, .. }]));
}

#[test]
fn history_is_budgeted_by_messages_asked_for() {
    let cfg = ConnConfig { max_history_per_sec: 500, ..cfg() };
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    let conv = ConvId::direct(UserId(7), UserId(8));
    let page = |id: u64, limit: u32| ClientFrame::History {
        id,
        conv_id: conv,
        after_seq: None,
        before_seq: None,
        limit: Some(limit),
    };
    assert!(c.handle_frame(&cfg, t0, Codec::Json, &json(&page(1, 500))).unwrap().is_some());
    assert_eq!(c.handle_frame(&cfg, t0, Codec::Json, &json(&page(2, 100))).unwrap(), None);
    assert!(matches!(taken(&mut c)[..], [ServerFrame::Error { id: Some(2), code: ErrorCode::RateLimited, .. }]));
    assert!(
        c.handle_frame(&cfg, t0 + Duration::from_millis(200), Codec::Json, &json(&page(3, 100))).unwrap().is_some()
    );
}

#[test]
fn requests_in_flight_pause_input_until_answered() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    let read = |id: u64| ClientFrame::Read { id, conv_id: ConvId::direct(UserId(7), UserId(8)), seq: 1 };
    assert!(c.wants_input(&cfg));
    c.handle_frame(&cfg, t0, Codec::Json, &json(&read(1))).unwrap();
    c.handle_frame(&cfg, t0, Codec::Json, &json(&read(2))).unwrap();
    assert!(!c.wants_input(&cfg), "two in flight: the cap");
    c.answered(Frame::from_frame(ServerFrame::Ok { id: 1 }));
    assert!(c.wants_input(&cfg));
    assert!(matches!(taken(&mut c)[..], [ServerFrame::Ok { id: 1 }]));
}

#[test]
fn a_join_switches_rooms_and_a_leave_answers_which_room_was_left() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    let join = |id: u64, room: &str| ClientFrame::Join { id, room: room.into(), token: None, recent: None };
    let asked = c.handle_frame(&cfg, t0, Codec::Json, &json(&join(1, "a"))).unwrap();
    assert_eq!(asked, Some(Request::EnterRoom { id: 1, room: "a".into(), leaving: None, token: None, recent: None }));
    let again = c.handle_frame(&cfg, t0, Codec::Json, &json(&join(2, "a"))).unwrap();
    assert_eq!(
        again,
        Some(Request::EnterRoom { id: 2, room: "a".into(), leaving: None, token: None, recent: None }),
        "a rejoin leaves nothing"
    );
    let switch = c.handle_frame(&cfg, t0, Codec::Json, &json(&join(3, "b"))).unwrap();
    assert_eq!(
        switch,
        Some(Request::EnterRoom { id: 3, room: "b".into(), leaving: Some("a".into()), token: None, recent: None })
    );
    assert_eq!(c.room(), Some("b"));
    assert_eq!(c.handle_frame(&cfg, t0, Codec::Json, &json(&join(4, "no spaces"))).unwrap(), None);
    assert!(matches!(taken(&mut c)[..], [ServerFrame::Error { id: Some(4), code: ErrorCode::BadRequest, .. }]));
    let leave = c.handle_frame(&cfg, t0, Codec::Json, &json(&ClientFrame::Leave { id: 5 })).unwrap();
    assert_eq!(leave, Some(Request::LeaveRoom { room: "b".into() }));
    assert!(matches!(&taken(&mut c)[..], [ServerFrame::Left { id: 5, room: Some(r) }] if r == "b"));
    assert_eq!(c.handle_frame(&cfg, t0, Codec::Json, &json(&ClientFrame::Leave { id: 6 })).unwrap(), None);
    assert!(matches!(taken(&mut c)[..], [ServerFrame::Left { id: 6, room: None }]));
}

#[test]
fn after_auth_a_bad_frame_is_answered_and_a_second_auth_ends_the_connection() {
    let cfg = cfg();
    let t0 = Instant::now();
    let mut c = logged_in(&cfg, t0);
    assert_eq!(c.handle_frame(&cfg, t0, Codec::Json, br#"{"op":"send","id":9}"#).unwrap(), None);
    assert!(matches!(taken(&mut c)[..], [ServerFrame::Error { id: Some(9), code: ErrorCode::BadRequest, .. }]));
    let twice = c.handle_frame(&cfg, t0, Codec::Json, &json(&auth_frame(None))).unwrap_err();
    assert_eq!(twice, Close::new(CloseReason::ProtocolError, "auth was already done on this connection"));
}
