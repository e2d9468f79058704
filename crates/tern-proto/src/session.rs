//! The server side of one connection as a state machine, without I/O.
//!
//! The connection core ([`crate::conn`]) feeds it what happened (a frame arrived,
//! authentication finished, time passed) and asks it what to do. It owns the two timers every
//! connection has — the auth deadline and the heartbeat deadline — so they are tested in virtual
//! time and behave the same on every transport. The settings are passed in where they are needed
//! rather than kept: every connection has one of these.

use std::time::{Duration, Instant};

use crate::frame::{ClientFrame, CloseReason, PROTOCOL_VERSION};

/// Timer settings for a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// How long a new connection may take to send a valid `auth` frame.
    pub auth_timeout: Duration,
    /// The heartbeat interval advertised to the client.
    pub heartbeat: Duration,
    /// How many silent intervals are tolerated before the connection is closed.
    pub max_missed_heartbeats: u32,
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the `auth` frame.
    AwaitingAuth,
    /// `auth` arrived and is being verified; other frames are refused until it finishes.
    Authenticating,
    /// Authenticated; frames are processed.
    Active,
    /// Closed; nothing more is processed.
    Closed(CloseReason),
}

/// What the gateway must do with an inbound frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Verify this token, then call [`ServerSession::auth_succeeded`] or `close`.
    Authenticate,
    /// Process the frame.
    Process,
    /// Close the connection with this reason.
    Close(CloseReason),
}

/// The per-connection protocol state.
#[derive(Debug)]
pub struct ServerSession {
    phase: Phase,
    auth_deadline: Instant,
    last_seen: Instant,
}

impl ServerSession {
    /// A session for a connection accepted at `now`.
    pub fn new(now: Instant, config: &SessionConfig) -> Self {
        Self { phase: Phase::AwaitingAuth, auth_deadline: now + config.auth_timeout, last_seen: now }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Bytes arrived: the peer is alive, whatever they turn out to be.
    pub fn on_activity(&mut self, now: Instant) {
        self.last_seen = now;
    }

    /// A decoded frame arrived at `now`.
    pub fn on_frame(&mut self, now: Instant, frame: &ClientFrame) -> Verdict {
        self.on_activity(now);
        match (self.phase, frame) {
            (Phase::Closed(reason), _) => Verdict::Close(reason),
            (Phase::AwaitingAuth, ClientFrame::Auth { proto, .. }) => {
                if proto.unwrap_or(PROTOCOL_VERSION) != PROTOCOL_VERSION {
                    return self.close(CloseReason::UnsupportedVersion);
                }
                self.phase = Phase::Authenticating;
                Verdict::Authenticate
            }
            (Phase::AwaitingAuth | Phase::Authenticating, _) => self.close(CloseReason::AuthRequired),
            // A second `auth` on an authenticated connection is a client bug; refusing it keeps
            // one identity per connection.
            (Phase::Active, ClientFrame::Auth { .. }) => self.close(CloseReason::ProtocolError),
            (Phase::Active, _) => Verdict::Process,
        }
    }

    /// A frame that could not be decoded arrived. Before authentication that ends the
    /// connection; afterwards the gateway answers with an error and carries on.
    pub fn on_bad_frame(&mut self, now: Instant) -> Verdict {
        self.on_activity(now);
        match self.phase {
            Phase::Active => Verdict::Process,
            Phase::Closed(reason) => Verdict::Close(reason),
            Phase::AwaitingAuth | Phase::Authenticating => self.close(CloseReason::AuthFailed),
        }
    }

    /// The token was verified.
    pub fn auth_succeeded(&mut self, now: Instant) {
        if self.phase == Phase::Authenticating {
            self.phase = Phase::Active;
            self.last_seen = now;
        }
    }

    /// Records that the connection is closed for `reason` (the first reason wins).
    pub fn close(&mut self, reason: CloseReason) -> Verdict {
        if let Phase::Closed(first) = self.phase {
            return Verdict::Close(first);
        }
        self.phase = Phase::Closed(reason);
        Verdict::Close(reason)
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self, config: &SessionConfig) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingAuth | Phase::Authenticating => Some(self.auth_deadline),
            Phase::Active => Some(self.last_seen + silence_limit(config)),
            Phase::Closed(_) => None,
        }
    }

    /// Time passed; returns the close reason if a deadline expired.
    pub fn handle_timeout(&mut self, config: &SessionConfig, now: Instant) -> Option<CloseReason> {
        let reason = match self.phase {
            Phase::AwaitingAuth | Phase::Authenticating if now >= self.auth_deadline => CloseReason::AuthTimeout,
            Phase::Active if now >= self.last_seen + silence_limit(config) => CloseReason::HeartbeatTimeout,
            _ => return None,
        };
        self.close(reason);
        Some(reason)
    }
}

/// How long an active connection may stay silent.
fn silence_limit(config: &SessionConfig) -> Duration {
    config.heartbeat * config.max_missed_heartbeats.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: SessionConfig = SessionConfig {
        auth_timeout: Duration::from_secs(5),
        heartbeat: Duration::from_secs(10),
        max_missed_heartbeats: 3,
    };

    fn auth() -> ClientFrame {
        ClientFrame::Auth { token: "t".into(), proto: None, resume: None, accept_compression: vec![] }
    }

    #[test]
    fn silent_new_connection_times_out_at_the_auth_deadline() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(t0, &CFG);
        assert_eq!(s.poll_timeout(&CFG), Some(t0 + Duration::from_secs(5)));
        assert_eq!(s.handle_timeout(&CFG, t0 + Duration::from_millis(4999)), None);
        assert_eq!(s.handle_timeout(&CFG, t0 + Duration::from_secs(5)), Some(CloseReason::AuthTimeout));
        assert_eq!(s.phase(), Phase::Closed(CloseReason::AuthTimeout));
        assert_eq!(s.poll_timeout(&CFG), None);
    }

    #[test]
    fn bytes_without_auth_do_not_extend_the_auth_deadline() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(t0, &CFG);
        s.on_activity(t0 + Duration::from_secs(4));
        assert_eq!(s.handle_timeout(&CFG, t0 + Duration::from_secs(5)), Some(CloseReason::AuthTimeout));
    }

    #[test]
    fn slow_token_verification_still_hits_the_auth_deadline() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(t0, &CFG);
        assert_eq!(s.on_frame(t0, &auth()), Verdict::Authenticate);
        assert_eq!(s.handle_timeout(&CFG, t0 + Duration::from_secs(6)), Some(CloseReason::AuthTimeout));
        s.auth_succeeded(t0 + Duration::from_secs(7));
        assert_eq!(s.phase(), Phase::Closed(CloseReason::AuthTimeout));
    }

    #[test]
    fn frames_before_auth_close_the_connection() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(t0, &CFG);
        assert_eq!(s.on_frame(t0, &ClientFrame::Ping), Verdict::Close(CloseReason::AuthRequired));
        let mut s = ServerSession::new(t0, &CFG);
        assert_eq!(s.on_bad_frame(t0), Verdict::Close(CloseReason::AuthFailed));
        let mut s = ServerSession::new(t0, &CFG);
        let v2 = ClientFrame::Auth { token: "t".into(), proto: Some(2), resume: None, accept_compression: vec![] };
        assert_eq!(s.on_frame(t0, &v2), Verdict::Close(CloseReason::UnsupportedVersion));
    }

    #[test]
    fn heartbeat_keeps_an_active_session_alive_and_silence_closes_it() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(t0, &CFG);
        s.on_frame(t0, &auth());
        s.auth_succeeded(t0);
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_secs(29);
            assert_eq!(s.handle_timeout(&CFG, now), None);
            assert_eq!(s.on_frame(now, &ClientFrame::Ping), Verdict::Process);
        }
        assert_eq!(s.poll_timeout(&CFG), Some(now + Duration::from_secs(30)));
        assert_eq!(s.handle_timeout(&CFG, now + Duration::from_secs(30)), Some(CloseReason::HeartbeatTimeout));
        assert_eq!(s.on_frame(now, &ClientFrame::Ping), Verdict::Close(CloseReason::HeartbeatTimeout));
    }

    #[test]
    fn bad_frames_after_auth_keep_the_session_and_a_second_auth_closes_it() {
        let t0 = Instant::now();
        let mut s = ServerSession::new(t0, &CFG);
        s.on_frame(t0, &auth());
        s.auth_succeeded(t0);
        assert_eq!(s.on_bad_frame(t0), Verdict::Process);
        assert_eq!(s.on_frame(t0, &auth()), Verdict::Close(CloseReason::ProtocolError));
    }
}
