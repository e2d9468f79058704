//! The service API for business servers (`/v1/push/...`, `/v1/rooms`, `/v1/admin/keys`), the
//! public online counts, and anonymous device tokens.
//!
//! Push and admin calls authenticate with an API key (`Authorization: Bearer <key>`); each call
//! is charged to the key's rate limit before anything else happens.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tern_proto::{DeviceId, MsgId};

use super::{ApiState, JsonBody, KeyCaller, PathParams, connect_endpoints};
use crate::error::Error;
use crate::logic::push::{KeyView, PushTarget};
use tern_proto::rest::{
    Accepted, AreaOnline, ByPath, CreatedKey, ErrorBody, NewKey, Push, RoomArea, RoomOnline, SessionToken, ToDevices,
    ToUsers, TotalOnline,
};

fn accepted(id: MsgId) -> (StatusCode, Json<Accepted>) {
    (StatusCode::ACCEPTED, Json(Accepted { msg_id: id }))
}

type PushResult = Result<(StatusCode, Json<Accepted>), Error>;

#[utoipa::path(post, path = "/v1/push/users", tag = "push", security(("bearer" = [])), request_body = Push<ToUsers>, responses((status = 202, body = Accepted), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn to_users(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    JsonBody(b): JsonBody<Push<ToUsers>>,
) -> PushResult {
    s.push.push(&c, PushTarget::Users(b.to.users), b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(post, path = "/v1/push/devices", tag = "push", security(("bearer" = [])), request_body = Push<ToDevices>, responses((status = 202, body = Accepted), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn to_devices(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    JsonBody(b): JsonBody<Push<ToDevices>>,
) -> PushResult {
    let devices =
        b.to.devices
            .into_iter()
            .map(|d| DeviceId::parse(&d.device_id).map(|id| (d.user_id, id)).map_err(Error::bad_request))
            .collect::<Result<Vec<_>, _>>()?;
    s.push.push(&c, PushTarget::Devices(devices), b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(post, path = "/v1/push/rooms/{room}", tag = "push", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), request_body = Push<ByPath>, responses((status = 202, body = Accepted), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn to_room(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
    JsonBody(b): JsonBody<Push<ByPath>>,
) -> PushResult {
    s.push.push(&c, PushTarget::Room(room), b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(post, path = "/v1/push/areas/{area}", tag = "push", security(("bearer" = [])), params(("area" = String, Path, description = "The area")), request_body = Push<ByPath>, responses((status = 202, body = Accepted), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn to_area(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(area): PathParams<String>,
    JsonBody(b): JsonBody<Push<ByPath>>,
) -> PushResult {
    s.push.push(&c, PushTarget::Area(area), b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(post, path = "/v1/push/all", tag = "push", security(("bearer" = [])), request_body = Push<ByPath>, responses((status = 202, body = Accepted), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn to_all(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    JsonBody(b): JsonBody<Push<ByPath>>,
) -> PushResult {
    s.push.push(&c, PushTarget::All, b.priority, b.qos, b.data).await.map(accepted)
}

#[utoipa::path(put, path = "/v1/rooms/{room}", tag = "push", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), request_body = RoomArea, responses((status = 200, body = RoomOnline), (status = 403, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
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
#[utoipa::path(get, path = "/v1/rooms/{room}/online", tag = "push", params(("room" = String, Path, description = "The room")), responses((status = 200, body = RoomOnline), (status = 400, body = ErrorBody), (status = 404, description = "not a valid room name", body = ErrorBody)))]
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

#[utoipa::path(get, path = "/v1/areas/{area}/online", tag = "push", params(("area" = String, Path, description = "The area")), responses((status = 200, body = AreaOnline), (status = 400, body = ErrorBody), (status = 404, description = "not a valid area name", body = ErrorBody)))]
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

#[utoipa::path(get, path = "/v1/online", tag = "push", responses((status = 200, body = TotalOnline)))]
pub(super) async fn total_online(State(s): State<ApiState>) -> Json<TotalOnline> {
    let (online, rooms) = s.gateway.registry().total_online();
    Json(TotalOnline { online, rooms })
}

/// `POST /v1/devices`: a token for a device without a user login. With a valid device token in
/// `Authorization`, the same device id gets a fresh token.
#[utoipa::path(post, path = "/v1/devices", tag = "push", responses((status = 200, body = SessionToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn device_token(State(s): State<ApiState>, headers: HeaderMap) -> Result<Json<SessionToken>, Error> {
    let current = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let (device_id, issued) = s.logic.device_token(current)?;
    let (endpoints, alternates) = connect_endpoints(&s, &headers);
    Ok(Json(SessionToken {
        user_id: None,
        device_id,
        token: issued.token,
        expires_at: issued.expires_at,
        endpoints,
        alternates,
    }))
}

#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin", security(("bearer" = [])), request_body = NewKey, responses((status = 201, description = "The key, with its secret shown once", body = CreatedKey), (status = 403, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn create_key(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    JsonBody(b): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>), Error> {
    let (view, key) = s.push.create_key(&c, b.name, b.scopes, b.rate_per_sec, b.burst).await?;
    tracing::info!(key_id = %view.key_id, by = %c.key_id, "api key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { view, key })))
}

#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "Keys without secrets", body = [KeyView]), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn list_keys(State(s): State<ApiState>, KeyCaller(c): KeyCaller) -> Result<Json<Vec<KeyView>>, Error> {
    s.push.list_keys(&c).map(Json)
}

#[utoipa::path(delete, path = "/v1/admin/keys/{key_id}", tag = "admin", security(("bearer" = [])), params(("key_id" = String, Path, description = "The key id")), responses((status = 204), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn revoke_key(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, Error> {
    s.push.revoke_key(&c, &id).await?;
    tracing::info!(key_id = %id, by = %c.key_id, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
