//! The control endpoints: health, accounts, login (which names where to connect).

use axum::Json;
use axum::response::IntoResponse;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use tern_proto::{DeviceId, UserId};

use super::{ApiState, Caller, JsonBody, KeyCaller, PathParams};
use crate::auth::Identity;
use crate::error::Error;
use crate::logic::push::Scope;
use tern_proto::CloseReason;
use tern_proto::rest::{
    Disabled, Endpoints, ErrorBody, Health, Login, NewToken, NewUser, PasswordChange, SessionToken, StoreFailure,
    UserView,
};

#[utoipa::path(get, path = "/healthz", tag = "control", responses((status = 200, description = "`{\"status\":\"ok\"}`", body = Health), (status = 503, description = "`failing`: the store cannot take writes (disk full, database down); reads may still work", body = Health)))]
pub(super) async fn healthz(State(state): State<ApiState>) -> (StatusCode, Json<Health>) {
    match state.logic.store_failing() {
        None => (StatusCode::OK, Json(Health { status: "ok".into(), store: None })),
        Some((failing_since_ms, error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status: "failing".into(), store: Some(StoreFailure { failing_since_ms, error }) }),
        ),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "control", security(("bearer" = [])), responses((status = 200, description = "Prometheus text exposition: connections, frames, deliveries, drops, retries, closes by reason, send-ACK / delivery / store-commit latency, batch sizes, process memory, CPU and open files", content_type = "text/plain"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Result<impl IntoResponse, Error> {
    if !state.metrics_public {
        let key = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Error::unauthorized(
                    "an API key with the metrics (or admin) scope is required (or server.metrics_public)",
                )
            })?;
        state.push.authenticate(key.trim())?.require_any(&[Scope::Metrics, Scope::Admin])?;
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::telemetry::render()))
}

#[utoipa::path(post, path = "/v1/users", tag = "control", request_body = NewUser, responses((status = 201, body = UserView), (status = 400, description = "`bad_request` or `weak_password`", body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn register(
    State(state): State<ApiState>,
    JsonBody(req): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<UserView>), Error> {
    let user_id = state.logic.register(&req.username, &req.password).await?;
    tracing::info!(user_id = user_id.0, username = %req.username, "user registered");
    Ok((StatusCode::CREATED, Json(UserView { user_id, username: req.username })))
}

#[utoipa::path(post, path = "/v1/sessions", tag = "control", request_body = Login, responses((status = 200, body = SessionToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn login(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<Login>,
) -> Result<Json<SessionToken>, Error> {
    let device_id = DeviceId::parse(&req.device_id).map_err(Error::bad_request)?;
    let user_id = state.logic.login(&req.username, &req.password, state.proxies.client_ip(peer, &headers)).await?;
    let issued = state.logic.auth().issue(&Identity { user_id, device_id: device_id.clone() });
    let (endpoints, alternates) = connect_endpoints(&state, &headers);
    Ok(Json(SessionToken {
        user_id: Some(user_id),
        device_id,
        token: issued.token,
        expires_at: issued.expires_at,
        endpoints,
        alternates,
    }))
}

/// Where a login (or a new anonymous device) should connect: the least-loaded live node of the
/// cluster — this one unless another holds fewer connections, or this one is draining — and the
/// other live nodes, least loaded first, to try when that one cannot be reached.
pub(crate) fn connect_endpoints(state: &ApiState, headers: &HeaderMap) -> (Endpoints, Vec<Endpoints>) {
    let registry = state.gateway.registry();
    let here = endpoints(state, headers);
    let mut nodes: Vec<(u64, Endpoints)> = registry
        .peers()
        .available()
        .into_iter()
        .map(|s| (s.connections, complete(state, headers, s.ws, s.tcp, s.quic)))
        .collect();
    if !registry.draining() {
        // This node goes before any peer that is not strictly less loaded.
        let mine = registry.local_total();
        let at = nodes.iter().position(|(load, _)| *load >= mine).unwrap_or(nodes.len());
        nodes.insert(at, (mine, here.clone()));
    }
    let mut nodes = nodes.into_iter().map(|(_, e)| e);
    let first = nodes.next().unwrap_or(here);
    (first, nodes.collect())
}

/// Where to connect: configured addresses, else this node as the client reached it.
pub(crate) fn endpoints(state: &ApiState, headers: &HeaderMap) -> Endpoints {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("127.0.0.1");
    let scheme = if state.tls { "wss" } else { "ws" };
    let ws =
        if state.advertise_ws.is_empty() { format!("{scheme}://{host}/v1/ws") } else { state.advertise_ws.clone() };
    // Strip the HTTP port (IPv6 literals keep their brackets).
    let hostname = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let tcp = if state.advertise_tcp.is_empty() {
        format!("{hostname}:{}", state.tcp_addr.port())
    } else {
        state.advertise_tcp.clone()
    };
    let quic = state.quic_addr.map(|q| format!("{hostname}:{}", q.port())).unwrap_or_default();
    complete(state, headers, ws, tcp, quic)
}

/// A node's endpoints from its WebSocket URL, TCP and QUIC addresses: the HTTP transports'
/// URLs beside the WebSocket's, and the transports in the order this client should try them —
/// `server.transport_order`, without QUIC where it does not run, and for a browser (a request
/// with an `Origin` header) only what a browser can open.
fn complete(state: &ApiState, headers: &HeaderMap, ws: String, tcp: String, quic: String) -> Endpoints {
    let http = ws.replacen("wss://", "https://", 1).replacen("ws://", "http://", 1);
    let base = http.strip_suffix("/v1/ws").unwrap_or(&http);
    let (sse, longpoll) = (format!("{base}/v1/sse"), format!("{base}/v1/longpoll"));
    let browser = headers.contains_key(axum::http::header::ORIGIN);
    let order = state
        .transport_order
        .iter()
        .filter(|t| match t.as_str() {
            "quic" => !quic.is_empty() && !browser,
            "tcp" => !browser,
            _ => true,
        })
        .cloned()
        .collect();
    Endpoints { ws, tcp, tls: state.tls, sse, longpoll, quic, order }
}

#[utoipa::path(get, path = "/v1/users/by-name/{username}", tag = "control", security(("bearer" = [])), params(("username" = String, Path, description = "The name")), responses((status = 200, body = UserView), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn user_by_name(
    State(state): State<ApiState>,
    _caller: Caller,
    PathParams(username): PathParams<String>,
) -> Result<Json<UserView>, Error> {
    let (user_id, username) = state.logic.user_by_name(&username).await?;
    Ok(Json(UserView { user_id, username }))
}

/// Closes the live sockets of ended sessions on this node (in a cluster, every node does).
fn close_sockets(state: &ApiState, user: UserId, device: Option<&DeviceId>) {
    let closed = state.gateway.registry().kick_user(user, device, CloseReason::AuthFailed);
    tracing::info!(user_id = user.0, device = ?device.map(|d| &d.0), closed, "sessions ended");
}

#[utoipa::path(delete, path = "/v1/sessions/current", tag = "control", security(("bearer" = [])), responses((status = 204, description = "This device is logged out: its token is refused and its sockets are closed"), (status = 401, body = ErrorBody)))]
pub(super) async fn logout(State(state): State<ApiState>, Caller(me): Caller) -> Result<StatusCode, Error> {
    state.logic.end_sessions(me.user_id, Some(me.device_id.clone())).await?;
    close_sockets(&state, me.user_id, Some(&me.device_id));
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/sessions", tag = "control", security(("bearer" = [])), responses((status = 204, description = "Every device of the user is logged out"), (status = 401, body = ErrorBody)))]
pub(super) async fn logout_everywhere(State(state): State<ApiState>, Caller(me): Caller) -> Result<StatusCode, Error> {
    state.logic.end_sessions(me.user_id, None).await?;
    close_sockets(&state, me.user_id, None);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/me/password", tag = "control", security(("bearer" = [])), request_body = PasswordChange, responses((status = 200, description = "A new token for this device; every other session has ended", body = NewToken), (status = 400, description = "`bad_request` or `weak_password`", body = ErrorBody), (status = 401, description = "bad token or wrong current password", body = ErrorBody)))]
pub(super) async fn change_password(
    State(state): State<ApiState>,
    Caller(me): Caller,
    JsonBody(req): JsonBody<PasswordChange>,
) -> Result<Json<NewToken>, Error> {
    let issued = state.logic.change_password(&me, &req.current_password, &req.new_password).await?;
    close_sockets(&state, me.user_id, None);
    Ok(Json(NewToken { token: issued.token, expires_at: issued.expires_at }))
}

#[utoipa::path(put, path = "/v1/admin/users/{user_id}/disabled", tag = "admin", security(("bearer" = [])), params(("user_id" = u64, Path, description = "The user")), request_body = Disabled, responses((status = 204, description = "Disabled (every session ended, login refused with `forbidden`) or enabled again"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn set_disabled(
    State(state): State<ApiState>,
    KeyCaller(key): KeyCaller,
    PathParams(user_id): PathParams<u64>,
    JsonBody(req): JsonBody<Disabled>,
) -> Result<StatusCode, Error> {
    key.require(Scope::Admin)?;
    let user = UserId(user_id);
    state.logic.set_disabled(user, req.disabled).await?;
    if req.disabled {
        close_sockets(&state, user, None);
    }
    tracing::info!(user_id, disabled = req.disabled, by = %key.key_id, "account state changed");
    Ok(StatusCode::NO_CONTENT)
}
