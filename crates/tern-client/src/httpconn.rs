//! The HTTP transports (docs/PROTOCOL.md, "HTTP transports"): a session opened with the `auth`
//! frame, frames POSTed upstream, and downstream an event stream (SSE) or repeated long polls.
//! A downstream request that drops is made again from the last event id received, so nothing
//! is lost or seen twice; a session the server no longer knows is the end of the connection.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_proto::rest::{HttpSessionOpened, Polled};
use tern_proto::{ClientFrame, Codec, ServerFrame};

use crate::Error;

/// The downstream style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Sse,
    LongPoll,
}

type Poll = Pin<Box<dyn Future<Output = Result<Polled, Failure>> + Send>>;

/// How a request failed: worth another try, or the session is gone.
enum Failure {
    Retry(String),
    Gone(String),
}

enum Downstream {
    /// Not asked yet (or the last request ended).
    Idle,
    /// An event stream being read, with its unparsed tail.
    Stream(reqwest::Response, BytesMut),
    /// A long poll in flight.
    Poll(Poll),
}

pub(crate) struct HttpConn {
    http: reqwest::Client,
    /// `…/v1/sse` or `…/v1/longpoll`.
    url: String,
    mode: Mode,
    /// Set by the first send (the `auth` frame opens the session).
    session: Option<(String, String)>,
    /// The last event id received: what the next requests acknowledge.
    last_event_id: u64,
    received: VecDeque<ServerFrame>,
    downstream: Downstream,
    /// The server said the session ended.
    ended: bool,
    /// Consecutive failed downstream requests (a pause grows with them).
    failures: u32,
}

fn decode(json: &[u8]) -> Option<ServerFrame> {
    match Codec::Json.decode::<ServerFrame>(json) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::debug!(error = %e, "skipping undecodable server frame");
            None
        }
    }
}

impl HttpConn {
    pub(crate) fn new(url: &str, mode: Mode) -> Result<Self, Error> {
        if url.is_empty() {
            return Err(Error::Transport("the server offered no URL for this transport".into()));
        }
        Ok(Self {
            http: crate::http::shared_client(),
            url: url.to_owned(),
            mode,
            session: None,
            last_event_id: 0,
            received: VecDeque::new(),
            downstream: Downstream::Idle,
            ended: false,
            failures: 0,
        })
    }

    fn session_url(&self) -> Result<(String, String), Error> {
        let (id, token) = self.session.as_ref().ok_or_else(|| Error::Transport("no session yet".into()))?;
        Ok((format!("{}/{id}", self.url), token.clone()))
    }

    /// Sends frames; the first call's first frame must be `auth`, which opens the session.
    pub(crate) async fn send(&mut self, frames: &[ClientFrame]) -> Result<(), Error> {
        let mut frames = frames;
        if self.session.is_none() {
            let Some((ClientFrame::Auth { token, .. }, rest)) = frames.split_first() else {
                return Err(Error::Transport("an HTTP session opens with the auth frame".into()));
            };
            let body = Codec::Json.encode(&frames[0]);
            let answer =
                self.http
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| Error::Transport(format!("opening an HTTP session at {} failed: {e}", self.url)))?;
            if !answer.status().is_success() {
                let status = answer.status();
                let text = answer.text().await.unwrap_or_default();
                return Err(Error::Transport(format!("the server refused the session ({status}): {text}")));
            }
            let opened: HttpSessionOpened =
                answer.json().await.map_err(|e| Error::Transport(format!("bad session answer: {e}")))?;
            self.session = Some((opened.session, token.clone()));
            frames = rest;
        }
        if frames.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for f in frames {
            body.extend_from_slice(&Codec::Json.encode(f));
            body.push(b'\n');
        }
        let (url, token) = self.session_url()?;
        for attempt in 0u32.. {
            let answer = self
                .http
                .post(&url)
                .query(&[("ack", self.last_event_id)])
                .bearer_auth(&token)
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| Error::Transport(format!("sending frames failed: {e}")))?;
            match answer.status().as_u16() {
                200..=299 => return Ok(()),
                // The connection has not read what came before: give it a moment.
                429 if attempt < 50 => tokio::time::sleep(Duration::from_millis(100)).await,
                status => {
                    let text = answer.text().await.unwrap_or_default();
                    return Err(Error::Transport(format!("the server refused frames ({status}): {text}")));
                }
            }
        }
        Ok(())
    }

    /// The next frame; `Ok(None)` when the session ended. Cancel-safe: a request in flight is
    /// kept for the next call.
    pub(crate) async fn recv(&mut self) -> Result<Option<ServerFrame>, Error> {
        loop {
            if let Some(frame) = self.received.pop_front() {
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            match self.step().await {
                Ok(()) => self.failures = 0,
                Err(Failure::Gone(why)) => {
                    tracing::debug!(%why, "HTTP session ended");
                    self.ended = true;
                }
                Err(Failure::Retry(why)) => {
                    self.downstream = Downstream::Idle;
                    self.failures += 1;
                    if self.failures > 5 {
                        return Err(Error::Transport(format!("the downstream keeps failing: {why}")));
                    }
                    tracing::debug!(%why, "downstream request failed; asking again");
                    tokio::time::sleep(Duration::from_millis(50 << self.failures.min(5))).await;
                }
            }
        }
    }

    /// One step of the downstream: start a request, or take what its answer brought.
    async fn step(&mut self) -> Result<(), Failure> {
        match &mut self.downstream {
            Downstream::Idle => {
                let (url, token) = self.session_url().map_err(|e| Failure::Gone(e.to_string()))?;
                match self.mode {
                    Mode::Sse => {
                        let answer = self
                            .http
                            .get(&url)
                            .bearer_auth(&token)
                            .header("accept", "text/event-stream")
                            .header("last-event-id", self.last_event_id.to_string())
                            .send()
                            .await
                            .map_err(|e| Failure::Retry(e.to_string()))?;
                        let answer = check(answer).await?;
                        self.downstream = Downstream::Stream(answer, BytesMut::new());
                    }
                    Mode::LongPoll => {
                        let request = self.http.get(&url).bearer_auth(&token).query(&[("ack", self.last_event_id)]);
                        self.downstream = Downstream::Poll(Box::pin(async move {
                            let answer = request.send().await.map_err(|e| Failure::Retry(e.to_string()))?;
                            check(answer).await?.json::<Polled>().await.map_err(|e| Failure::Retry(e.to_string()))
                        }));
                    }
                }
                Ok(())
            }
            Downstream::Poll(poll) => {
                let polled = poll.await;
                self.downstream = Downstream::Idle;
                let polled = polled?;
                self.last_event_id = polled.last_event_id;
                self.received.extend(polled.frames.iter().filter_map(|f| decode(f.get().as_bytes())));
                if polled.closed {
                    self.ended = true;
                }
                Ok(())
            }
            Downstream::Stream(answer, buf) => match answer.chunk().await {
                Ok(Some(chunk)) => {
                    buf.extend_from_slice(&chunk);
                    while let Some(end) = find_event_end(buf) {
                        let event = buf.split_to(end).freeze();
                        if let Some((id, frame)) = parse_event(&event) {
                            self.last_event_id = id;
                            self.received.extend(frame);
                        }
                    }
                    Ok(())
                }
                // The stream ended: the session is over, or a proxy cut it; the next request
                // tells which.
                Ok(None) => {
                    self.downstream = Downstream::Idle;
                    Ok(())
                }
                Err(e) => Err(Failure::Retry(e.to_string())),
            },
        }
    }

    /// Ends the session.
    pub(crate) async fn close(&mut self) {
        if let Ok((url, token)) = self.session_url() {
            let _ = self.http.delete(&url).bearer_auth(&token).send().await;
        }
    }
}

/// A downstream answer that is not 2xx: gone (404/410: the session no longer exists for us) or
/// worth a retry.
async fn check(answer: reqwest::Response) -> Result<reqwest::Response, Failure> {
    let status = answer.status();
    if status.is_success() {
        return Ok(answer);
    }
    let text = answer.text().await.unwrap_or_default();
    match status.as_u16() {
        401 | 403 | 404 | 410 => Err(Failure::Gone(format!("{status}: {text}"))),
        _ => Err(Failure::Retry(format!("{status}: {text}"))),
    }
}

/// Where the first event in `buf` ends (after its blank line), if it is complete.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// An event's id and frame (comments and `retry:` give `None`).
fn parse_event(event: &Bytes) -> Option<(u64, Option<ServerFrame>)> {
    let mut id = None;
    let mut data = Vec::new();
    for line in event.split(|b| *b == b'\n') {
        if let Some(v) = line.strip_prefix(b"id:") {
            id = std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u64>().ok());
        } else if let Some(v) = line.strip_prefix(b"data:") {
            data.extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
        }
    }
    Some((id?, decode(&data)))
}
