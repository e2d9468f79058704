//! The connection core driven by arbitrary event sequences — client frames of every kind (and
//! bytes that are no frame), pushes taken from the lanes, answers to requests, time passing —
//! in virtual time. What must hold whatever the order:
//! - Nothing is processed before authentication: the only request before it is `Authenticate`.
//! - Requests counted in flight never exceed the cap while the driver stops reading at it.
//! - A stored message covered by the catch-up is never sent twice; an acked one never again.
//! - A timeout closes the connection only at or after the deadline it announced.
//! - Once a handler returns a close, the driver stops (so does this target).
#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tern_proto::conn::{ConnConfig, Connection, Outbound, Request, RetryPolicy};
use tern_proto::session::SessionConfig;
use tern_proto::{Body, ClientFrame, Codec, ConnId, ConvId, DeviceId, Message, MsgId, ServerFrame, UserId};

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
            _ => None,
        }
    }
}

fn message(conv: ConvId, seq: u64) -> Message {
    Message {
        msg_id: MsgId(seq << 8 | conv_tag(conv)),
        conv_id: conv,
        seq,
        from: UserId(2),
        client_msg_id: String::new(),
        ts: 0,
        body: Body::Text { text: String::new() },
    }
}

fn conv_tag(conv: ConvId) -> u64 {
    match conv {
        ConvId::Direct(_, b) => b.0,
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = ConnConfig {
        session: SessionConfig {
            auth_timeout: Duration::from_millis(1000),
            heartbeat: Duration::from_millis(500),
            max_missed_heartbeats: 2,
        },
        retry: RetryPolicy { initial: Duration::from_millis(100), max: Duration::from_millis(400) },
        max_unacked: 8,
        push_ttl: Duration::from_millis(2000),
        qos1_ttl: Duration::from_millis(500),
        max_inflight: 3,
        max_sends_per_sec: 5,
        max_history_per_sec: 300,
        default_history_page: 100,
        max_frame_bytes: 4096,
    };
    let mut now = Instant::now();
    let mut c: Connection<Frame> = Connection::new(&cfg, now);
    let mut authenticated = false;
    let mut inflight = 0usize;
    let mut caught_up: BTreeMap<ConvId, u64> = BTreeMap::new();
    let mut sent: HashSet<MsgId> = HashSet::new();
    let mut acked: HashSet<MsgId> = HashSet::new();
    let convs = [ConvId::direct(UserId(1), UserId(2)), ConvId::direct(UserId(1), UserId(3))];
    for pair in data.chunks(2) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        let conv = convs[usize::from(arg & 1)];
        let deadline = c.poll_timeout(&cfg);
        let mut acking = Vec::new();
        let frame = match op % 12 {
            0 => Some(ClientFrame::Auth { token: String::new(), proto: None, resume: None, accept_compression: vec![] }),
            1 => Some(ClientFrame::Ping),
            2 => Some(ClientFrame::Send {
                id: u64::from(arg),
                to: Some(UserId(2)),
                conv_id: (arg & 2 != 0).then_some(conv),
                client_msg_id: "k".into(),
                body: Body::Text { text: "x".into() },
            }),
            3 => Some(ClientFrame::History { id: 1, conv_id: conv, after_seq: None, before_seq: None, limit: Some(u32::from(arg)) }),
            4 => Some(ClientFrame::Join { id: 2, room: if arg & 2 == 0 { "a".into() } else { "b c".into() } }),
            5 => Some(ClientFrame::Leave { id: 3 }),
            6 => {
                let ids: Vec<MsgId> = sent.iter().copied().filter(|id| id.0 % 2 == u64::from(arg & 1)).collect();
                acking = ids.clone();
                Some(ClientFrame::Ack { msg_ids: ids })
            }
            _ => None,
        };
        let result = match (op % 12, frame) {
            (_, Some(frame)) => {
                if !c.wants_input(&cfg) {
                    continue; // the driver is not reading
                }
                let bytes = Codec::Json.encode(&frame);
                c.handle_frame(&cfg, now, Codec::Json, &bytes)
            }
            (7, None) => c.handle_frame(&cfg, now, Codec::Json, &pair[1..]),
            (8, None) if authenticated => {
                let seq = u64::from(arg >> 1) + 1; // seqs start at 1
                let covered = caught_up.get(&conv).is_some_and(|&upto| seq <= upto);
                let before = c.outbound().len();
                acked.remove(&message(conv, seq).msg_id); // pushed again: may be retried again
                let pushed = c.handle_push(&cfg, now, Frame::from_frame(ServerFrame::Msg(message(conv, seq))));
                if pushed.is_ok() && covered {
                    assert_eq!(c.outbound().len(), before, "a message covered by the catch-up went out again");
                }
                pushed.map(|()| None)
            }
            (9, None) if authenticated && inflight > 0 => {
                inflight -= 1;
                c.answered(Frame::from_frame(ServerFrame::Ok { id: 0 }));
                Ok(None)
            }
            (10, None) => {
                now += Duration::from_millis(u64::from(arg) * 5);
                c.handle_timeout(&cfg, now).map(|_| None)
            }
            (11, None) if authenticated => {
                let upto = u64::from(arg >> 1);
                c.resume_messages((1..=upto).map(|seq| message(conv, seq)).collect());
                if upto > 0 {
                    let held = caught_up.entry(conv).or_default();
                    *held = (*held).max(upto);
                }
                Ok(None)
            }
            _ => continue,
        };
        let request = match result {
            Ok(r) => {
                acked.extend(acking);
                r
            }
            Err(close) => {
                if op % 12 == 10 {
                    assert!(deadline.is_some_and(|d| now >= d), "closed by a timeout before its deadline: {close:?}");
                }
                return;
            }
        };
        match request {
            Some(Request::Authenticate { resume, .. }) => {
                assert!(!authenticated, "authenticate asked twice");
                authenticated = true;
                let _ = c.authenticated(&cfg, now, Some(UserId(1)), DeviceId("d".into()), ConnId(1), resume);
            }
            Some(other) => {
                assert!(authenticated, "{other:?} asked before authentication");
                if matches!(other, Request::Send { .. } | Request::History { .. } | Request::Read { .. } | Request::Recall { .. }) {
                    inflight += 1;
                    assert!(inflight <= cfg.max_inflight, "more requests in flight than the cap");
                }
            }
            None => {}
        }
        for f in c.outbound() {
            if let ServerFrame::Msg(m) = &f.0 {
                if op % 12 == 10 {
                    assert!(!acked.contains(&m.msg_id), "an acknowledged message was sent again");
                }
                sent.insert(m.msg_id);
            }
        }
        c.clear_outbound();
    }
});
