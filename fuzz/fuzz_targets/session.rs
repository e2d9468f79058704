//! The server session state machine driven by arbitrary event sequences (frames of every kind,
//! bad frames, auth results, time passing): its invariants hold whatever the order.
//! - It is `Active` only after an `auth` frame was answered `Authenticate` and then succeeded.
//! - Once closed it stays closed with its first reason, and every later event says so.
//! - A timeout fires only at or after the deadline it announced; a closed session has none.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tern_proto::session::{Phase, ServerSession, SessionConfig, Verdict};
use tern_proto::ClientFrame;

fuzz_target!(|data: &[u8]| {
    let config = SessionConfig {
        auth_timeout: Duration::from_millis(1000),
        heartbeat: Duration::from_millis(500),
        max_missed_heartbeats: 2,
    };
    let mut now = Instant::now();
    let mut s = ServerSession::new(now, &config);
    let mut authenticate_answered = false;
    let mut closed_with = None;
    for pair in data.chunks(2) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        let before = s.phase();
        let deadline = s.poll_timeout(&config);
        let verdict = match op % 7 {
            0 => Some(s.on_frame(now, &ClientFrame::Auth {
                token: String::new(),
                proto: (arg % 3 != 0).then_some(u32::from(arg % 3)),
                resume: None,
                accept_compression: vec![],
            })),
            1 => Some(s.on_frame(now, &ClientFrame::Ping)),
            2 => Some(s.on_frame(now, &ClientFrame::Ack { msg_ids: vec![] })),
            3 => Some(s.on_bad_frame(now)),
            4 => {
                s.auth_succeeded(now);
                None
            }
            5 => {
                now += Duration::from_millis(u64::from(arg) * 10);
                let fired = s.handle_timeout(&config, now);
                if let Some(reason) = fired {
                    assert!(deadline.is_some_and(|d| now >= d), "timeout {reason:?} before its deadline");
                } else if let (Some(d), Phase::AwaitingAuth | Phase::Authenticating | Phase::Active) = (deadline, before) {
                    assert!(now < d, "deadline passed without a timeout");
                }
                None
            }
            _ => {
                s.on_activity(now);
                None
            }
        };
        if verdict == Some(Verdict::Authenticate) {
            assert_eq!(before, Phase::AwaitingAuth);
            authenticate_answered = true;
        }
        match s.phase() {
            Phase::Active => assert!(authenticate_answered, "active without authenticating"),
            Phase::Closed(reason) => {
                assert_eq!(*closed_with.get_or_insert(reason), reason, "the close reason changed");
                assert!(s.poll_timeout(&config).is_none());
                if let Some(v) = verdict {
                    assert_eq!(v, Verdict::Close(reason));
                }
            }
            _ => assert!(closed_with.is_none(), "reopened after close"),
        }
    }
});
