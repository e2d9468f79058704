//! The HTTP transports' requests: `/v1/sse` and `/v1/longpoll` (docs/PROTOCOL.md, "HTTP
//! transports"). The session itself — buffers, event ids, acknowledgements, the idle cut — is
//! `gateway::transport::http`; this file turns requests into calls on it.
//!
//! - `POST /v1/{sse|longpoll}` opens a session; its body is the `auth` frame, whose token must be
//!   valid (answered 401 otherwise). `201 {"session": id}`; `auth_ok` then comes downstream.
//! - `GET /v1/sse/{session}` is the event stream, from after `Last-Event-ID`;
//!   `GET /v1/longpoll/{session}?ack=N` answers frames after `N` as soon as there are any.
//! - `POST /v1/{mode}/{session}[?ack=N]` carries frames upstream: JSON, one per line.
//! - `DELETE /v1/{mode}/{session}` ends it.
//!
//! Every request after the first carries `Authorization: Bearer <token>` of the session's owner:
//! a session id alone (stolen, guessed) gets `404`, as if it did not exist.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tern_proto::rest::HttpSessionOpened;
use tern_proto::{ClientFrame, Codec, ErrorCode};

use super::{ApiState, PathParams, QueryParams};
use crate::error::Error;
use crate::gateway::transport::http::{Mode, Ready, Refused, Session, SessionOwner};

/// `?ack=N`: the last event id the client holds.
#[derive(Debug, Deserialize)]
pub struct AckQuery {
    ack: Option<u64>,
}

fn mode(name: &str) -> Result<Mode, Error> {
    match name {
        "sse" => Ok(Mode::Sse),
        "longpoll" => Ok(Mode::LongPoll),
        _ => Err(Error::not_found("no such endpoint")),
    }
}

/// The upstream body limit: a batch of frames, each at most `max_frame_bytes`.
fn body_limit(state: &ApiState) -> usize {
    state.max_frame_bytes.saturating_mul(8).max(64 * 1024)
}

/// `POST /v1/sse` and `POST /v1/longpoll`: opens a session with the `auth` frame.
#[utoipa::path(post, path = "/v1/{transport}", tag = "socket",
    params(("transport" = String, Path, description = "`sse` or `longpoll`")),
    request_body(content = String, content_type = "application/json", description = "The `auth` frame (docs/PROTOCOL.md)"),
    responses((status = 201, body = HttpSessionOpened, description = "The session; `auth_ok` (or the close) comes downstream"),
        (status = 400, description = "Not an auth frame"), (status = 401, description = "The token is not valid"),
        (status = 404, description = "No such transport"), (status = 413, description = "The body is too large"),
        (status = 503, description = "The server admits no more connections now; retry after the Retry-After header")))]
pub async fn open(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PathParams(transport): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let mode = mode(&transport)?;
    let body = read_body(body, state.max_frame_bytes).await?;
    let frame: ClientFrame = Codec::Json
        .decode(&body)
        .map_err(|e| Error::bad_request(format!("the body must be the auth frame in JSON: {e}")))?;
    let ClientFrame::Auth { token, .. } = &frame else {
        return Err(Error::bad_request("the first frame of a session must be auth"));
    };
    let principal = state.logic.authenticate(token).await?;
    let admitted = state.gateway.admit(state.proxies.client_ip(peer, &headers)).map_err(|refusal| {
        Error::new(ErrorCode::Unavailable, refusal.message()).retry_after(refusal.retry_after_ms().div_ceil(1000))
    })?;
    let (session, io) = state.gateway.open_http_session(SessionOwner::of(&principal), mode, body);
    tokio::spawn(admitted.serve(io, peer));
    let mut answer = axum::Json(HttpSessionOpened { session: session.id.clone() }).into_response();
    *answer.status_mut() = StatusCode::CREATED;
    Ok(answer)
}

/// The session, if the request's token is its owner's.
async fn owned(state: &ApiState, headers: &HeaderMap, id: &str) -> Result<Arc<Session>, Error> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Error::unauthorized("missing Authorization: Bearer <token> header"))?;
    let principal = state.logic.authenticate(token.trim()).await?;
    match state.gateway.http_session(id) {
        Some(s) if s.owner == SessionOwner::of(&principal) => Ok(s),
        _ => Err(Error::not_found("no such session (it ended long ago, or was never yours)")),
    }
}

/// `POST /v1/{transport}/{session}`: frames upstream, one JSON frame per line.
#[utoipa::path(post, path = "/v1/{transport}/{session}", tag = "socket",
    params(("transport" = String, Path, description = "`sse` or `longpoll`"), ("session" = String, Path),
        ("ack" = Option<u64>, Query, description = "The last event id received")),
    request_body(content = String, content_type = "application/x-ndjson", description = "Frames, one JSON object per line"),
    responses((status = 204, description = "Taken"), (status = 400, description = "A bad `ack`"),
        (status = 401, description = "No token"), (status = 404, description = "No such session of yours"),
        (status = 410, description = "The session has ended"), (status = 413, description = "A frame or the body is too large"),
        (status = 429, description = "The connection has not read what came before; retry")))]
pub async fn upstream(
    State(state): State<ApiState>,
    PathParams((transport, id)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<AckQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    mode(&transport)?;
    let session = owned(&state, &headers, &id).await?;
    let body = read_body(body, body_limit(&state)).await?;
    let limit = state.gateway.http_buffer_bytes();
    if let Some(ack) = q.ack {
        session.ack(ack, limit);
    }
    let mut frames = Vec::new();
    for line in body.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if line.len() > state.max_frame_bytes {
            return Err(Error::new(
                ErrorCode::FrameTooLarge,
                format!("a frame of {} bytes exceeds the limit of {} bytes", line.len(), state.max_frame_bytes),
            ));
        }
        frames.push(body.slice_ref(line));
    }
    if frames.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    match session.push_inbound(frames, body_limit(&state)) {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(Refused::Ended) => Ok(ended()),
        Err(Refused::Full) => Err(Error::new(
            ErrorCode::RateLimited,
            "the connection has not yet read the frames sent before; retry shortly",
        )
        .retry_after(1)),
    }
}

/// `410 Gone`: the session ended (its last frames, the `close` with the reason among them,
/// are still downstream for a while).
fn ended() -> Response {
    let mut gone = Error::not_found("the session has ended; its close frame says why; open a new one").into_response();
    *gone.status_mut() = StatusCode::GONE;
    gone
}

/// `DELETE /v1/{transport}/{session}`: the client ends the session.
#[utoipa::path(delete, path = "/v1/{transport}/{session}", tag = "socket",
    params(("transport" = String, Path, description = "`sse` or `longpoll`"), ("session" = String, Path)),
    responses((status = 204, description = "Ending"), (status = 401, description = "No token"),
        (status = 404, description = "No such session of yours")))]
pub async fn close(
    State(state): State<ApiState>,
    PathParams((transport, id)): PathParams<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, Error> {
    mode(&transport)?;
    owned(&state, &headers, &id).await?.close_by_client();
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/{transport}/{session}`: the downstream — an event stream (`sse`) or one poll.
#[utoipa::path(get, path = "/v1/{transport}/{session}", tag = "socket",
    params(("transport" = String, Path, description = "`sse` or `longpoll`"), ("session" = String, Path),
        ("ack" = Option<u64>, Query, description = "Long-poll: the last event id received (SSE: the Last-Event-ID header)")),
    responses((status = 200, description = "`text/event-stream` (sse), or `{\"last_event_id\", \"frames\", \"closed\"}` (longpoll)"),
        (status = 400, description = "A bad `ack` or Last-Event-ID, or the other transport's session"),
        (status = 401, description = "No token"), (status = 404, description = "No such session of yours")))]
pub async fn downstream(
    State(state): State<ApiState>,
    PathParams((transport, id)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<AckQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let mode = mode(&transport)?;
    let session = owned(&state, &headers, &id).await?;
    if session.mode != mode {
        return Err(Error::bad_request(format!("this is a {} session", session.mode.name())));
    }
    let limit = state.gateway.http_buffer_bytes();
    let hold = state.gateway.http_hold();
    match mode {
        Mode::LongPoll => {
            let ack = q.ack.unwrap_or(0);
            let generation = session.begin_downstream(ack, limit);
            let ready = session.wait(ack, generation, hold).await;
            session.end_downstream(generation);
            Ok(poll_answer(ack, ready))
        }
        Mode::Sse => {
            let last = headers
                .get("last-event-id")
                .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()))
                .map(|v| v.ok_or_else(|| Error::bad_request("Last-Event-ID must be an event id from this session")))
                .transpose()?
                .or(q.ack)
                .unwrap_or(0);
            let generation = session.begin_downstream(last, limit);
            Ok(event_stream(session, generation, last, hold))
        }
    }
}

/// A poll's answer: `{"last_event_id": N, "frames": [...], "closed": bool}`, written from the
/// frames' shared JSON encodings.
fn poll_answer(ack: u64, ready: Ready) -> Response {
    let (last, frames, closed) = match ready {
        Ready::Frames(frames) => (frames.last().map_or(ack, |(id, _)| *id), frames, false),
        Ready::Ended => (ack, Vec::new(), true),
        Ready::Nothing | Ready::Superseded => (ack, Vec::new(), false),
    };
    let mut body = Vec::with_capacity(64 + frames.iter().map(|(_, f)| f.len() + 1).sum::<usize>());
    body.extend_from_slice(format!("{{\"last_event_id\":{last},\"frames\":[").as_bytes());
    for (i, (_, f)) in frames.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(f);
    }
    body.extend_from_slice(format!("],\"closed\":{closed}}}").as_bytes());
    let mut answer = Response::new(Body::from(body));
    answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// Ends the downstream request however its stream ends (the client going away drops it).
struct Downstream {
    session: Arc<Session>,
    generation: u64,
    cursor: u64,
    hold: Duration,
    done: bool,
}

impl Drop for Downstream {
    fn drop(&mut self) {
        self.session.end_downstream(self.generation);
    }
}

/// The event stream: `retry`, then one event per frame (`id:` its event id, `data:` its JSON),
/// a comment when nothing came for a while, and the end when the session ends or a newer
/// request takes over.
fn event_stream(session: Arc<Session>, generation: u64, last: u64, hold: Duration) -> Response {
    let keepalive = hold.min(Duration::from_secs(15));
    let start = Downstream { session, generation, cursor: last, hold: keepalive, done: false };
    let first =
        futures_util::stream::once(async { Ok::<_, std::convert::Infallible>(Bytes::from_static(b"retry: 1000\n\n")) });
    let events = futures_util::stream::unfold(start, |mut d| async move {
        if d.done {
            return None;
        }
        let chunk = match d.session.wait(d.cursor, d.generation, d.hold).await {
            Ready::Frames(frames) => {
                let mut out = Vec::new();
                for (id, f) in &frames {
                    out.extend_from_slice(format!("id: {id}\ndata: ").as_bytes());
                    out.extend_from_slice(f);
                    out.extend_from_slice(b"\n\n");
                }
                d.cursor = frames.last().map_or(d.cursor, |(id, _)| *id);
                Bytes::from(out)
            }
            Ready::Nothing => Bytes::from_static(b": keepalive\n\n"),
            Ready::Ended | Ready::Superseded => {
                d.done = true;
                Bytes::new()
            }
        };
        Some((Ok::<_, std::convert::Infallible>(chunk), d))
    });
    use futures_util::StreamExt;
    let mut answer = Response::new(Body::from_stream(first.chain(events)));
    let h = answer.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    answer
}

/// Reads a body of at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Error> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        Error::new(ErrorCode::BodyTooLarge, format!("the body is larger than {limit} bytes, or was cut short"))
    })
}
