//! The service API for business servers (`/v1/push/...`, `/v1/rooms`, `/v1/admin/keys`), the
//! public online counts, and anonymous device tokens.
//!
//! Push and admin calls authenticate with an API key (`Authorization: Bearer <key>`); each call
//! is charged to the key's rate limit before anything else happens.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tern_proto::{DeviceId, MsgId, Priority, UserId};

#[allow(unused_imports)]
use super::im::ErrorDoc;
use super::{ApiState, JsonBody, KeyCaller, PathParams, connect_endpoints};
use crate::error::Error;
use crate::logic::push::{KeyView, PushTarget};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushBody<T> {
    #[serde(flatten)]
    to: T,
    data: serde_json::Value,
    #[serde(default)]
    priority: Priority,
    #[serde(default)]
    qos: u8,
}

#[derive(Deserialize)]
pub(super) struct ToUsers {
    users: Vec<UserId>,
}

#[derive(Deserialize)]
pub(super) struct DeviceRef {
    #[serde(default)]
    user_id: Option<UserId>,
    device_id: String,
}

#[derive(Deserialize)]
pub(super) struct ToDevices {
    devices: Vec<DeviceRef>,
}

#[derive(Deserialize)]
pub(super) struct Nobody {}

#[derive(Serialize)]
pub(super) struct Accepted {
    msg_id: MsgId,
}

fn accepted(id: MsgId) -> (StatusCode, Json<Accepted>) {
    (StatusCode::ACCEPTED, Json(Accepted { msg_id: id }))
}

type PushResult = Result<(StatusCode, Json<Accepted>), Error>;

#[utoipa::path(post, path = "/v1/push/users", tag = "push", security(("bearer" = [])), request_body(content = Object, description = "`{users, data, priority?, qos?}`"), responses((status = 202, description = "`{msg_id}`", body = Object), (status = 403, body = ErrorDoc), (status = 413, body = ErrorDoc), (status = 429, body = ErrorDoc), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn to_users(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    JsonBody(b): JsonBody<PushBody<ToUsers>>,
) -> PushResult {
    s.push.push(&c, PushTarget::Users(b.to.users), b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(post, path = "/v1/push/devices", tag = "push", security(("bearer" = [])), request_body(content = Object, description = "`{devices: [{user_id?, device_id}], data, priority?, qos?}`"), responses((status = 202, description = "`{msg_id}`", body = Object), (status = 403, body = ErrorDoc), (status = 413, body = ErrorDoc), (status = 429, body = ErrorDoc), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn to_devices(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    JsonBody(b): JsonBody<PushBody<ToDevices>>,
) -> PushResult {
    let devices =
        b.to.devices
            .into_iter()
            .map(|d| DeviceId::parse(&d.device_id).map(|id| (d.user_id, id)).map_err(Error::bad_request))
            .collect::<Result<Vec<_>, _>>()?;
    s.push.push(&c, PushTarget::Devices(devices), b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(post, path = "/v1/push/rooms/{room}", tag = "push", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), request_body(content = Object, description = "`{data, priority?, qos?}`"), responses((status = 202, description = "`{msg_id}`", body = Object), (status = 403, body = ErrorDoc), (status = 413, body = ErrorDoc), (status = 429, body = ErrorDoc), (status = 503, body = ErrorDoc), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn to_room(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
    JsonBody(b): JsonBody<PushBody<Nobody>>,
) -> PushResult {
    s.push.push(&c, PushTarget::Room(room), b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(post, path = "/v1/push/areas/{area}", tag = "push", security(("bearer" = [])), params(("area" = String, Path, description = "The area")), request_body(content = Object, description = "`{data, priority?, qos?}`"), responses((status = 202, description = "`{msg_id}`", body = Object), (status = 403, body = ErrorDoc), (status = 413, body = ErrorDoc), (status = 429, body = ErrorDoc), (status = 503, body = ErrorDoc), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn to_area(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(area): PathParams<String>,
    JsonBody(b): JsonBody<PushBody<Nobody>>,
) -> PushResult {
    s.push.push(&c, PushTarget::Area(area), b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(post, path = "/v1/push/all", tag = "push", security(("bearer" = [])), request_body(content = Object, description = "`{data, priority?, qos?}`"), responses((status = 202, description = "`{msg_id}`", body = Object), (status = 403, body = ErrorDoc), (status = 413, body = ErrorDoc), (status = 429, body = ErrorDoc), (status = 503, body = ErrorDoc), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn to_all(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    JsonBody(b): JsonBody<PushBody<Nobody>>,
) -> PushResult {
    s.push.push(&c, PushTarget::All, b.priority, b.qos, b.data).await.map(accepted)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoomArea {
    area: String,
}

#[derive(Serialize)]
pub(super) struct RoomOnline {
    room: String,
    area: String,
    online: u64,
}

#[utoipa::path(put, path = "/v1/rooms/{room}", tag = "push", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), request_body(content = Object, description = "`{area}`"), responses((status = 200, description = "`{room, area}`", body = Object), (status = 403, body = ErrorDoc), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn set_room(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
    JsonBody(b): JsonBody<RoomArea>,
) -> Result<Json<RoomOnline>, Error> {
    s.push.set_room_area(&c, &room, &b.area).await?;
    s.gateway.registry().set_area(&room, &b.area);
    let online = s.gateway.registry().room_online(&room);
    Ok(Json(RoomOnline { room, area: b.area, online }))
}

/// Online counts are public, as on a live site's room page.
#[utoipa::path(get, path = "/v1/rooms/{room}/online", tag = "push", params(("room" = String, Path, description = "The room")), responses((status = 200, description = "`{room, area, online}`", body = Object), (status = 400, body = ErrorDoc), (status = 404, description = "not a valid room name", body = ErrorDoc)))]
pub(super) async fn room_online(
    State(s): State<ApiState>,
    PathParams(room): PathParams<String>,
) -> Result<Json<RoomOnline>, Error> {
    if !tern_proto::frame::valid_name(&room) {
        return Err(Error::not_found("no such room"));
    }
    let area = s.logic.room_area(&room);
    let online = s.gateway.registry().room_online(&room);
    Ok(Json(RoomOnline { room, area, online }))
}

#[derive(Serialize)]
pub(super) struct AreaOnline {
    area: String,
    online: u64,
    rooms: u64,
}

#[utoipa::path(get, path = "/v1/areas/{area}/online", tag = "push", params(("area" = String, Path, description = "The area")), responses((status = 200, description = "`{area, online}`", body = Object), (status = 400, body = ErrorDoc), (status = 404, description = "not a valid area name", body = ErrorDoc)))]
pub(super) async fn area_online(
    State(s): State<ApiState>,
    PathParams(area): PathParams<String>,
) -> Result<Json<AreaOnline>, Error> {
    if !tern_proto::frame::valid_name(&area) {
        return Err(Error::not_found("no such area"));
    }
    let (online, rooms) = s.gateway.registry().area_online(&area);
    Ok(Json(AreaOnline { area, online, rooms }))
}

#[derive(Serialize)]
pub(super) struct TotalOnline {
    online: u64,
    rooms: u64,
}

#[utoipa::path(get, path = "/v1/online", tag = "push", responses((status = 200, description = "`{online}`", body = Object)))]
pub(super) async fn total_online(State(s): State<ApiState>) -> Json<TotalOnline> {
    let (online, rooms) = s.gateway.registry().total_online();
    Json(TotalOnline { online, rooms })
}

#[derive(Serialize)]
pub(super) struct DeviceToken {
    device_id: DeviceId,
    token: String,
    expires_at: u64,
    endpoints: super::control::Endpoints,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    alternates: Vec<super::control::Endpoints>,
}

/// `POST /v1/devices`: a token for a device without a user login. With a valid device token in
/// `Authorization`, the same device id gets a fresh token.
#[utoipa::path(post, path = "/v1/devices", tag = "push", responses((status = 200, description = "`{device_id, token, expires_at, endpoints, alternates?}`", body = Object), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn device_token(State(s): State<ApiState>, headers: HeaderMap) -> Result<Json<DeviceToken>, Error> {
    let current = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let (device_id, issued) = s.logic.device_token(current)?;
    let (endpoints, alternates) = connect_endpoints(&s, &headers);
    Ok(Json(DeviceToken { device_id, token: issued.token, expires_at: issued.expires_at, endpoints, alternates }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    name: String,
    scopes: Vec<String>,
    rate_per_sec: Option<f64>,
    burst: Option<u32>,
}

#[derive(Serialize)]
pub(super) struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The key itself; shown only here.
    key: String,
}

#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin", security(("bearer" = [])), request_body(content = Object, description = "`{name, scopes, rate_per_sec?, burst?}`"), responses((status = 201, description = "The key, with its secret shown once", body = Object), (status = 403, body = ErrorDoc), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn create_key(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    JsonBody(b): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), Error> {
    let (view, key) = s.push.create_key(&c, b.name, b.scopes, b.rate_per_sec, b.burst).await?;
    tracing::info!(key_id = %view.key_id, by = %c.key_id, "api key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { view, key })))
}

#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "Keys without secrets", body = [Object]), (status = 403, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn list_keys(State(s): State<ApiState>, KeyCaller(c): KeyCaller) -> Result<Json<Vec<KeyView>>, Error> {
    s.push.list_keys(&c).map(Json)
}

#[utoipa::path(delete, path = "/v1/admin/keys/{key_id}", tag = "admin", security(("bearer" = [])), params(("key_id" = String, Path, description = "The key id")), responses((status = 204), (status = 404, body = ErrorDoc), (status = 403, body = ErrorDoc), (status = 401, body = ErrorDoc)))]
pub(super) async fn revoke_key(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, Error> {
    s.push.revoke_key(&c, &id).await?;
    tracing::info!(key_id = %id, by = %c.key_id, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
