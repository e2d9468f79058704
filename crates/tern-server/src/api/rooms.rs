//! Live-room moderation for business servers (`/v1/rooms/{room}/bans`, `/mutes`, `/settings`),
//! with an API key of the `rooms` scope. A ban takes the user out of the room on every node at
//! once (`kicked`) and refuses their `join` until it ends; a mute refuses their posts.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tern_proto::UserId;
use tern_proto::rest::{
    ErrorBody, JoinToken, NewJoinToken, NewSanction, RoomMembers, RoomPolicy, RoomSanction, RoomSettings, SanctionKind,
    Sanctions,
};

use super::{ApiState, JsonBody, KeyCaller, PathParams, QueryParams};
use crate::error::Error;
use crate::logic::push::{Caller, Scope};

fn room_ok(room: &str) -> Result<(), Error> {
    if tern_proto::frame::valid_name(room) {
        Ok(())
    } else {
        Err(Error::not_found("no such room: room names are 1 to 64 characters of [A-Za-z0-9_.:-]"))
    }
}

fn list(s: &ApiState, c: &Caller, room: &str, kind: SanctionKind) -> Result<Json<Sanctions>, Error> {
    c.require(Scope::Rooms)?;
    room_ok(room)?;
    Ok(Json(Sanctions { sanctions: s.logic.live().sanctions(room, kind) }))
}

async fn impose(
    s: &ApiState,
    c: &Caller,
    room: &str,
    kind: SanctionKind,
    new: NewSanction,
) -> Result<Json<RoomSanction>, Error> {
    c.require(Scope::Rooms)?;
    room_ok(room)?;
    let sanction = s.logic.live().sanction(room, kind, new).await?;
    if kind == SanctionKind::Ban {
        let kicked = s.gateway.router().kick_from_room(room, sanction.user_id, &sanction.reason);
        s.logic.live().left(room, sanction.user_id, kicked);
        tracing::info!(room, user_id = sanction.user_id.0, kicked, by = %c.key_id, "room ban");
    } else {
        tracing::info!(room, user_id = sanction.user_id.0, by = %c.key_id, "room mute");
    }
    Ok(Json(sanction))
}

async fn lift(s: &ApiState, c: &Caller, room: &str, user: u64, kind: SanctionKind) -> Result<StatusCode, Error> {
    c.require(Scope::Rooms)?;
    room_ok(room)?;
    s.logic.live().lift(room, UserId(user), kind).await?;
    tracing::info!(room, user_id = user, kind = kind.as_str(), by = %c.key_id, "room sanction lifted");
    Ok(StatusCode::NO_CONTENT)
}

/// Who asks for a room's members: a business server's key, or a logged-in user.
pub(super) enum Asker {
    Key(Caller),
    User,
}

impl axum::extract::FromRequestParts<ApiState> for Asker {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &ApiState) -> Result<Self, Error> {
        let token = super::bearer(parts)
            .ok_or_else(|| Error::unauthorized("missing Authorization: Bearer <token or API key> header"))?;
        if let Ok(key) = state.push.authenticate(token) {
            return Ok(Asker::Key(key));
        }
        state.logic.authenticate_user(token).await?;
        Ok(Asker::User)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MembersQuery {
    after: Option<u64>,
    limit: Option<u32>,
}

/// `GET /v1/rooms/{room}/members?after=&limit=`: for a public room any logged-in user may ask,
/// for a private one only a key with the rooms scope. Rooms too large to list are refused
/// (their counts are at `/online`).
#[utoipa::path(get, path = "/v1/rooms/{room}/members", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room"), ("after" = Option<u64>, Query, description = "Users after this user id"), ("limit" = Option<u32>, Query, description = "1–200, default 100")), responses((status = 200, body = RoomMembers), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn members(
    State(s): State<ApiState>,
    asker: Asker,
    PathParams(room): PathParams<String>,
    QueryParams(q): QueryParams<MembersQuery>,
) -> Result<Json<RoomMembers>, Error> {
    room_ok(&room)?;
    let live = s.logic.live();
    match &asker {
        Asker::Key(c) => c.require(Scope::Rooms)?,
        Asker::User if live.settings(&room).policy == Some(RoomPolicy::Token) => {
            return Err(Error::forbidden(format!(
                "room {room:?} is private: its members are listed to its owner only"
            )));
        }
        Asker::User => {}
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=200).contains(&limit) {
        return Err(Error::bad_request("limit must be 1 to 200"));
    }
    let max = s.logic.live().members_list_max();
    let registry = s.gateway.registry();
    let too_many = || {
        Error::bad_request(format!(
            "room {room:?} has more than {max} users on a node; large rooms are counted, not listed (GET /v1/rooms/{room}/online)"
        ))
    };
    let mut users: std::collections::BTreeSet<UserId> = registry.peers().room_users(&room).ok_or_else(too_many)?;
    users.extend(registry.room_users(&room, max).ok_or_else(too_many)?);
    let total = users.len() as u64;
    let after = UserId(q.after.unwrap_or(0));
    let page: Vec<UserId> =
        users.range(UserId(after.0.saturating_add(1))..).take(limit as usize + 1).copied().collect();
    let next_after = (page.len() > limit as usize).then(|| page[limit as usize - 1]);
    let page = &page[..page.len().min(limit as usize)];
    let members = live.room_users(page).await?;
    Ok(Json(RoomMembers { room: room.clone(), online: registry.room_online(&room), users: total, members, next_after }))
}

/// `GET /v1/rooms/{room}/bans`
#[utoipa::path(get, path = "/v1/rooms/{room}/bans", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), responses((status = 200, body = Sanctions), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn bans(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
) -> Result<Json<Sanctions>, Error> {
    list(&s, &c, &room, SanctionKind::Ban)
}

/// `POST /v1/rooms/{room}/bans`
#[utoipa::path(post, path = "/v1/rooms/{room}/bans", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), request_body = NewSanction, responses((status = 200, body = RoomSanction), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn ban(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
    JsonBody(b): JsonBody<NewSanction>,
) -> Result<Json<RoomSanction>, Error> {
    impose(&s, &c, &room, SanctionKind::Ban, b).await
}

/// `DELETE /v1/rooms/{room}/bans/{user_id}`
#[utoipa::path(delete, path = "/v1/rooms/{room}/bans/{user_id}", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room"), ("user_id" = u64, Path, description = "The user")), responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn unban(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams((room, user)): PathParams<(String, u64)>,
) -> Result<StatusCode, Error> {
    lift(&s, &c, &room, user, SanctionKind::Ban).await
}

/// `GET /v1/rooms/{room}/mutes`
#[utoipa::path(get, path = "/v1/rooms/{room}/mutes", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), responses((status = 200, body = Sanctions), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn mutes(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
) -> Result<Json<Sanctions>, Error> {
    list(&s, &c, &room, SanctionKind::Mute)
}

/// `POST /v1/rooms/{room}/mutes`
#[utoipa::path(post, path = "/v1/rooms/{room}/mutes", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), request_body = NewSanction, responses((status = 200, body = RoomSanction), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn mute(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
    JsonBody(b): JsonBody<NewSanction>,
) -> Result<Json<RoomSanction>, Error> {
    impose(&s, &c, &room, SanctionKind::Mute, b).await
}

/// `DELETE /v1/rooms/{room}/mutes/{user_id}`
#[utoipa::path(delete, path = "/v1/rooms/{room}/mutes/{user_id}", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room"), ("user_id" = u64, Path, description = "The user")), responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn unmute(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams((room, user)): PathParams<(String, u64)>,
) -> Result<StatusCode, Error> {
    lift(&s, &c, &room, user, SanctionKind::Mute).await
}

/// `GET /v1/rooms/{room}/settings`
#[utoipa::path(get, path = "/v1/rooms/{room}/settings", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), responses((status = 200, body = RoomSettings), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn settings(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
) -> Result<Json<RoomSettings>, Error> {
    c.require(Scope::Rooms)?;
    room_ok(&room)?;
    Ok(Json(s.logic.live().settings(&room)))
}

/// `PUT /v1/rooms/{room}/settings`
#[utoipa::path(put, path = "/v1/rooms/{room}/settings", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), request_body = RoomSettings, responses((status = 200, body = RoomSettings), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn set_settings(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
    JsonBody(b): JsonBody<RoomSettings>,
) -> Result<Json<RoomSettings>, Error> {
    c.require(Scope::Rooms)?;
    room_ok(&room)?;
    Ok(Json(s.logic.live().set_settings(&room, b).await?))
}

/// `POST /v1/rooms/{room}/tokens`
#[utoipa::path(post, path = "/v1/rooms/{room}/tokens", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), request_body = NewJoinToken, responses((status = 200, body = JoinToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn issue_token(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
    JsonBody(b): JsonBody<NewJoinToken>,
) -> Result<Json<JoinToken>, Error> {
    c.require(Scope::Rooms)?;
    room_ok(&room)?;
    Ok(Json(s.logic.live().join_token(s.logic.auth(), &room, b.user_id, b.ttl_secs)?))
}

/// `DELETE /v1/rooms/{room}/tokens`
#[utoipa::path(delete, path = "/v1/rooms/{room}/tokens", tag = "rooms", security(("bearer" = [])), params(("room" = String, Path, description = "The room")), responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn void_tokens(
    State(s): State<ApiState>,
    KeyCaller(c): KeyCaller,
    PathParams(room): PathParams<String>,
) -> Result<StatusCode, Error> {
    c.require(Scope::Rooms)?;
    room_ok(&room)?;
    s.logic.live().void_tokens(&room).await?;
    tracing::info!(room, by = %c.key_id, "room join tokens voided");
    Ok(StatusCode::NO_CONTENT)
}
