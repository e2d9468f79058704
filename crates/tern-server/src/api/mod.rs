//! The HTTP side: REST API (control and history) and the WebSocket upgrade, on one port.
//!
//! Every error body is `{"error":{"code","message"}}` from [`crate::error::Error`], including
//! malformed JSON, unknown routes and missing credentials.

mod admin;
mod control;
mod conversations;
mod error;
mod files;
mod http_transport;
mod im;
mod openapi;
mod push;
mod relay;
mod rooms;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use serde::de::DeserializeOwned;
use tern_proto::ErrorCode;

use crate::auth::Identity;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::gateway::transport::ws;
use crate::logic::Logic;
use crate::logic::push::PushService;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Logic layer.
    pub logic: Arc<Logic>,
    /// Connections.
    pub gateway: Arc<Gateway>,
    /// The push service.
    pub push: Arc<PushService>,
    /// Largest inbound WebSocket frame.
    pub max_frame_bytes: usize,
    /// Advertised WebSocket URL (empty: derive from the Host header).
    pub advertise_ws: String,
    /// Advertised TCP address (empty: derive from the Host header).
    pub advertise_tcp: String,
    /// The bound TCP port, for derived TCP endpoints.
    pub tcp_addr: SocketAddr,
    /// Whose `X-Forwarded-For` is believed (client addresses for caps and throttling).
    pub proxies: Arc<crate::net::TrustedProxies>,
    /// `GET /metrics` needs no key.
    pub metrics_public: bool,
    /// TLS on both listeners: endpoints are handed out as `wss://` and TLS TCP.
    pub tls: bool,
    /// The bound QUIC address, when QUIC runs.
    pub quic_addr: Option<SocketAddr>,
    /// `server.transport_order`.
    pub transport_order: Arc<[String]>,
    /// Uploads and file content.
    pub files: Arc<crate::files::Files>,
    /// The file transfer relay.
    pub relay: Arc<crate::files::relay::Relay>,
}

/// The routes, as one table: it builds the router and tells the OpenAPI test what is routed.
struct Routes {
    router: Router<ApiState>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn at(mut self, path: &'static str, methods: MethodRouter<ApiState>) -> Self {
        self.paths.push(path);
        self.router = self.router.route(path, methods);
        self
    }
}

fn routes() -> Routes {
    Routes { router: Router::new(), paths: Vec::new() }
        .at("/healthz", get(control::healthz))
        .at("/metrics", get(control::metrics))
        .at("/openapi.json", get(openapi::serve))
        .at("/v1/users", post(control::register).get(im::search))
        .at("/v1/users/by-name/{username}", get(control::user_by_name))
        .at("/v1/users/{user_id}", get(im::profile))
        .at("/v1/sessions", post(control::login).delete(control::logout_everywhere))
        .at("/v1/sessions/current", delete(control::logout))
        .at("/v1/me/password", put(control::change_password))
        .at("/v1/me", get(im::me).patch(im::update_me))
        .at("/v1/me/export", get(im::export))
        .at("/v1/me/stickers", get(files::stickers))
        .at("/v1/me/stickers/{file_id}", put(files::add_sticker).delete(files::remove_sticker))
        .at("/v1/friends", get(im::friends))
        .at("/v1/friends/requests", post(im::request_friend))
        .at("/v1/friends/requests/{user_id}/accept", post(im::accept_friend))
        .at("/v1/friends/requests/{user_id}/decline", post(im::decline_friend))
        .at("/v1/friends/{user_id}", delete(im::remove_friend))
        .at("/v1/blocks/{user_id}", put(im::block).delete(im::unblock))
        .at("/v1/groups", post(im::create_group))
        .at("/v1/groups/{group_id}", get(im::group).delete(im::dissolve))
        .at("/v1/groups/{group_id}/members", post(im::invite))
        .at("/v1/groups/{group_id}/join", post(im::join))
        .at("/v1/groups/{group_id}/leave", post(im::leave))
        .at("/v1/groups/{group_id}/transfer", post(im::transfer))
        .at("/v1/groups/{group_id}/mute", put(im::mute_group))
        .at("/v1/groups/{group_id}/requests/{user_id}/approve", post(im::approve))
        .at("/v1/groups/{group_id}/requests/{user_id}/decline", post(im::decline_join))
        .at("/v1/groups/{group_id}/members/{user_id}", delete(im::kick))
        .at("/v1/groups/{group_id}/members/{user_id}/role", put(im::set_role))
        .at("/v1/groups/{group_id}/members/{user_id}/mute", put(im::mute_member))
        .at("/v1/conversations", get(im::conversations))
        .at("/v1/conversations/{conv_id}/messages", get(conversations::messages))
        .at("/v1/conversations/{conv_id}/read", post(im::mark_read))
        .at("/v1/conversations/{conv_id}/messages/{seq}/recall", post(im::recall))
        .at("/v1/conversations/{conv_id}/messages/{seq}/reads", get(im::reads))
        .at("/v1/ws", get(websocket))
        .at("/v1/{transport}", post(http_transport::open))
        .at(
            "/v1/{transport}/{session}",
            get(http_transport::downstream).post(http_transport::upstream).delete(http_transport::close),
        )
        .at("/v1/files", post(files::create).options(files::discover))
        .at("/v1/files/{file_id}", get(files::download).head(files::head).patch(files::append).delete(files::terminate))
        .at("/v1/files/{file_id}/info", get(files::file_info))
        .at("/v1/files/{file_id}/url", post(files::signed_url))
        .at("/v1/relay/{transfer_id}", get(relay::relay))
        .at("/v1/devices", post(push::device_token))
        .at("/v1/push/users", post(push::to_users))
        .at("/v1/push/devices", post(push::to_devices))
        .at("/v1/push/rooms/{room}", post(push::to_room))
        .at("/v1/push/areas/{area}", post(push::to_area))
        .at("/v1/push/all", post(push::to_all))
        .at("/v1/rooms/{room}", put(push::set_room))
        .at("/v1/rooms/{room}/online", get(push::room_online))
        .at("/v1/rooms/{room}/bans", get(rooms::bans).post(rooms::ban))
        .at("/v1/rooms/{room}/bans/{user_id}", delete(rooms::unban))
        .at("/v1/rooms/{room}/mutes", get(rooms::mutes).post(rooms::mute))
        .at("/v1/rooms/{room}/mutes/{user_id}", delete(rooms::unmute))
        .at("/v1/rooms/{room}/settings", get(rooms::settings).put(rooms::set_settings))
        .at("/v1/rooms/{room}/tokens", post(rooms::issue_token).delete(rooms::void_tokens))
        .at("/v1/rooms/{room}/members", get(rooms::members))
        .at("/v1/areas/{area}/online", get(push::area_online))
        .at("/v1/online", get(push::total_online))
        .at("/v1/admin/keys", post(push::create_key).get(push::list_keys))
        .at("/v1/admin/backup", get(admin::backup))
        .at("/v1/admin/keys/{key_id}", delete(push::revoke_key))
        .at("/v1/admin/users/{user_id}/disabled", put(control::set_disabled))
}

/// Builds the router: the API table plus the embedded web client at `/` and `/app/`.
pub fn router(state: ApiState) -> Router {
    routes()
        .router
        .route("/", get(web::serve))
        .route("/app/{*file}", get(web::serve))
        // The tus endpoint as tus clients are usually configured: with the trailing slash.
        .route("/v1/files/", post(files::create).options(files::discover))
        .fallback(|| async { Error::not_found("no such endpoint") })
        .with_state(state)
}

/// Every routed path (for the check that `/openapi.json` documents each one).
pub fn routed_paths() -> Vec<&'static str> {
    routes().paths
}

/// The OpenAPI document.
pub use openapi::document as openapi_document;

/// `GET /v1/ws`: the WebSocket upgrade (the socket protocol is in docs/PROTOCOL.md).
#[utoipa::path(get, path = "/v1/ws", tag = "socket",
    responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 400, description = "Not a WebSocket upgrade"),
        (status = 503, description = "The server admits no more connections now; retry after the Retry-After header")))]
async fn websocket(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let accept = match ws::handshake(req.version(), req.headers()) {
        Ok(accept) => accept,
        Err(why) => {
            let mut refused = Error::bad_request(why).into_response();
            refused.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            return refused;
        }
    };
    // Admission before the upgrade: a refused client gets a plain 503 and costs no WebSocket.
    let admitted = match state.gateway.admit(state.proxies.client_ip(peer, req.headers())) {
        Ok(a) => a,
        Err(refusal) => {
            let secs = refusal.retry_after_ms().div_ceil(1000);
            return Error::new(ErrorCode::Unavailable, refusal.message()).retry_after(secs).into_response();
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let max = state.max_frame_bytes;
    // hyper hands the socket over once the 101 below is written. The connection then runs as a
    // task of its own, like a TCP one, and this small one ends: awaited inside it, the
    // connection would also keep this task's state for its whole life.
    tokio::spawn(async move {
        match upgrade.await.map_err(|e| e.to_string()).and_then(|u| ws::WsIo::upgraded(u, max)) {
            Ok(io) => drop(tokio::spawn(admitted.serve(io, peer))),
            Err(e) => tracing::debug!(error = %e, %peer, "websocket upgrade failed"),
        }
    });
    let mut switching = Response::new(axum::body::Body::empty());
    *switching.status_mut() = axum::http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = switching.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    switching
}

/// A JSON request body whose parse errors answer in tern's error format.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(Error::bad_request("expected a JSON body with Content-Type: application/json"))
            }
            Err(r) if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::new(tern_proto::ErrorCode::BodyTooLarge, r.body_text()))
            }
            Err(r) => Err(Error::bad_request(r.body_text())),
        }
    }
}

/// Path parameters whose parse errors (`/v1/groups/abc`) answer in tern's error format.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(r) => Err(Error::bad_request(r.body_text())),
        }
    }
}

/// Query parameters whose parse errors answer in tern's error format.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(r @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(Error::bad_request(r.body_text())),
            Err(r) => Err(Error::bad_request(r.body_text())),
        }
    }
}

pub(crate) use control::connect_endpoints;

/// The caller, from `Authorization: Bearer <token>`.
pub struct Caller(pub Identity);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Error> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::unauthorized("missing Authorization: Bearer <token> header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Error::unauthorized("Authorization header must be \"Bearer <token>\""))?;
        Ok(Caller(state.logic.authenticate_user(token.trim()).await?))
    }
}

/// A business server, from its API key.
pub struct KeyCaller(pub crate::logic::push::Caller);

pub(super) fn bearer(parts: &Parts) -> Option<&str> {
    parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

impl FromRequestParts<ApiState> for KeyCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Error> {
        let key = bearer(parts).ok_or_else(|| Error::unauthorized("missing Authorization: Bearer <API key> header"))?;
        Ok(KeyCaller(state.push.authenticate(key)?))
    }
}
