//! The IM REST API: profiles, friends, blocks, groups, conversations. Every call acts as the
//! logged-in user of its bearer token; the rules live in `logic`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tern_proto::rest::{
    ErrorBody, FriendRequest, GroupMute, JoinGroup, MemberMute, NewGroup, ReadUpTo, RoleChange, Status, UserExport,
    UserRef,
};
use tern_proto::{ConvId, GroupId, UserId};

use super::{ApiState, Caller, JsonBody, PathParams, QueryParams};
use crate::error::Error;
use crate::logic::conversations::ReadReceipt;
use crate::logic::groups::{GroupView, JoinOutcome};
use crate::logic::social::{Relations, RequestOutcome};
use crate::store::im::{ConvSummary, Profile, ProfileChange, PublicProfile};

type Done = StatusCode;
const DONE: Done = StatusCode::NO_CONTENT;

/// `GET /v1/me`
#[utoipa::path(get, path = "/v1/me", tag = "profiles", security(("bearer" = [])),
    responses((status = 200, description = "The caller's profile", body = Profile), (status = 401, body = ErrorBody)))]
pub(super) async fn me(State(s): State<ApiState>, Caller(c): Caller) -> Result<Json<Profile>, Error> {
    Ok(Json(s.logic.profile(c.user_id).await?))
}

/// `GET /v1/me/export`
#[utoipa::path(get, path = "/v1/me/export", tag = "profiles", security(("bearer" = [])),
    responses((status = 200, description = "The caller's data as one JSON archive: profile, relations, conversations with the messages they can read", body = UserExport), (status = 401, body = ErrorBody)))]
pub(super) async fn export(
    State(s): State<ApiState>,
    Caller(c): Caller,
) -> Result<impl axum::response::IntoResponse, Error> {
    let export = s.logic.export(c.user_id).await?;
    let name = format!("attachment; filename=\"tern-export-{}.json\"", c.user_id);
    Ok(([(axum::http::header::CONTENT_DISPOSITION, name)], Json(export)))
}

/// `PATCH /v1/me`
#[utoipa::path(patch, path = "/v1/me", tag = "profiles", security(("bearer" = [])), request_body = ProfileChange,
    responses((status = 200, body = Profile), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn update_me(
    State(s): State<ApiState>,
    Caller(c): Caller,
    JsonBody(b): JsonBody<ProfileChange>,
) -> Result<Json<Profile>, Error> {
    Ok(Json(s.logic.update_profile(c.user_id, b).await?))
}

/// `GET /v1/users/{user_id}`
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "profiles", security(("bearer" = [])),
    params(("user_id" = u64, Path, description = "The user")),
    responses((status = 200, description = "The public profile; the caller's own is the full `Profile`, with `dm_policy`", body = PublicProfile), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn profile(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(user): PathParams<u64>,
) -> Result<axum::response::Response, Error> {
    use axum::response::IntoResponse;
    let profile = s.logic.profile(UserId(user)).await?;
    // Settings are shown to their owner only.
    Ok(if profile.user_id == c.user_id {
        Json(profile).into_response()
    } else {
        Json(PublicProfile::from(profile)).into_response()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    prefix: String,
    limit: Option<u32>,
}

/// `GET /v1/users?prefix=&limit=`
#[utoipa::path(get, path = "/v1/users", tag = "profiles", security(("bearer" = [])),
    params(("prefix" = String, Query, description = "Start of the username (1–32 characters)"),
           ("limit" = Option<u32>, Query, description = "1–100, default 20")),
    responses((status = 200, body = Vec<PublicProfile>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn search(
    State(s): State<ApiState>,
    Caller(_): Caller,
    QueryParams(q): QueryParams<SearchQuery>,
) -> Result<Json<Vec<PublicProfile>>, Error> {
    Ok(Json(s.logic.search_users(&q.prefix, q.limit).await?.into_iter().map(PublicProfile::from).collect()))
}

/// `GET /v1/friends`
#[utoipa::path(get, path = "/v1/friends", tag = "friends", security(("bearer" = [])),
    responses((status = 200, body = Relations), (status = 401, body = ErrorBody)))]
pub(super) async fn friends(State(s): State<ApiState>, Caller(c): Caller) -> Result<Json<Relations>, Error> {
    Ok(Json(s.logic.relations(c.user_id).await?))
}

/// `POST /v1/friends/requests`
#[utoipa::path(post, path = "/v1/friends/requests", tag = "friends", security(("bearer" = [])), request_body = FriendRequest,
    responses((status = 200, description = "`requested`, or `friends` when the other side had asked too", body = Status<RequestOutcome>),
              (status = 403, description = "`blocked`", body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn request_friend(
    State(s): State<ApiState>,
    Caller(c): Caller,
    JsonBody(b): JsonBody<FriendRequest>,
) -> Result<Json<Status<RequestOutcome>>, Error> {
    let status = s.logic.request_friend(c.user_id, b.user_id, b.message).await?;
    Ok(Json(Status { status }))
}

/// `POST /v1/friends/requests/{user_id}/accept`
#[utoipa::path(post, path = "/v1/friends/requests/{user_id}/accept", tag = "friends", security(("bearer" = [])),
    params(("user_id" = u64, Path, description = "The requester")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn accept_friend(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(user): PathParams<u64>,
) -> Result<Done, Error> {
    s.logic.accept_friend(c.user_id, UserId(user)).await.map(|()| DONE)
}

/// `POST /v1/friends/requests/{user_id}/decline`
#[utoipa::path(post, path = "/v1/friends/requests/{user_id}/decline", tag = "friends", security(("bearer" = [])),
    params(("user_id" = u64, Path, description = "The requester")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn decline_friend(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(user): PathParams<u64>,
) -> Result<Done, Error> {
    s.logic.decline_friend(c.user_id, UserId(user)).await.map(|()| DONE)
}

/// `DELETE /v1/friends/{user_id}`
#[utoipa::path(delete, path = "/v1/friends/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = u64, Path, description = "The friend")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn remove_friend(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(user): PathParams<u64>,
) -> Result<Done, Error> {
    s.logic.remove_friend(c.user_id, UserId(user)).await.map(|()| DONE)
}

/// `PUT /v1/blocks/{user_id}`
#[utoipa::path(put, path = "/v1/blocks/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = u64, Path, description = "Who to block")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn block(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(user): PathParams<u64>,
) -> Result<Done, Error> {
    s.logic.block(c.user_id, UserId(user)).await.map(|()| DONE)
}

/// `DELETE /v1/blocks/{user_id}`
#[utoipa::path(delete, path = "/v1/blocks/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = u64, Path, description = "Who to unblock")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn unblock(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(user): PathParams<u64>,
) -> Result<Done, Error> {
    s.logic.unblock(c.user_id, UserId(user)).await.map(|()| DONE)
}

/// `POST /v1/groups`
#[utoipa::path(post, path = "/v1/groups", tag = "groups", security(("bearer" = [])), request_body = NewGroup,
    responses((status = 201, body = GroupView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn create_group(
    State(s): State<ApiState>,
    Caller(c): Caller,
    JsonBody(b): JsonBody<NewGroup>,
) -> Result<(StatusCode, Json<GroupView>), Error> {
    let view = s.logic.create_group(c.user_id, b.name, b.join_policy).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /v1/groups/{group_id}`
#[utoipa::path(get, path = "/v1/groups/{group_id}", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path, description = "The group")),
    responses((status = 200, body = GroupView), (status = 404, description = "No such group, or not a member", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn group(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(g): PathParams<u64>,
) -> Result<Json<GroupView>, Error> {
    Ok(Json(s.logic.group_view(c.user_id, GroupId(g)).await?))
}

/// `POST /v1/groups/{group_id}/members`
#[utoipa::path(post, path = "/v1/groups/{group_id}/members", tag = "groups", security(("bearer" = [])), request_body = UserRef,
    params(("group_id" = u64, Path, description = "The group")),
    responses((status = 204), (status = 403, description = "`forbidden` or `blocked`", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "`conflict` or `group_full`", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn invite(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(g): PathParams<u64>,
    JsonBody(b): JsonBody<UserRef>,
) -> Result<Done, Error> {
    s.logic.invite(c.user_id, GroupId(g), b.user_id).await.map(|()| DONE)
}

/// `POST /v1/groups/{group_id}/join`
#[utoipa::path(post, path = "/v1/groups/{group_id}/join", tag = "groups", security(("bearer" = [])), request_body = JoinGroup,
    params(("group_id" = u64, Path, description = "The group")),
    responses((status = 200, description = "`joined` or `requested`", body = Status<JoinOutcome>), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn join(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(g): PathParams<u64>,
    JsonBody(b): JsonBody<JoinGroup>,
) -> Result<Json<Status<JoinOutcome>>, Error> {
    let status = s.logic.join_group(c.user_id, GroupId(g), b.message).await?;
    Ok(Json(Status { status }))
}

/// `POST /v1/groups/{group_id}/requests/{user_id}/approve`
#[utoipa::path(post, path = "/v1/groups/{group_id}/requests/{user_id}/approve", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path, description = "The group"), ("user_id" = u64, Path, description = "The asker")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn approve(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams((g, user)): PathParams<(u64, u64)>,
) -> Result<Done, Error> {
    s.logic.approve_join(c.user_id, GroupId(g), UserId(user)).await.map(|()| DONE)
}

/// `POST /v1/groups/{group_id}/requests/{user_id}/decline`
#[utoipa::path(post, path = "/v1/groups/{group_id}/requests/{user_id}/decline", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path, description = "The group"), ("user_id" = u64, Path, description = "The asker")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn decline_join(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams((g, user)): PathParams<(u64, u64)>,
) -> Result<Done, Error> {
    s.logic.decline_join(c.user_id, GroupId(g), UserId(user)).await.map(|()| DONE)
}

/// `POST /v1/groups/{group_id}/leave`
#[utoipa::path(post, path = "/v1/groups/{group_id}/leave", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path, description = "The group")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, description = "The owner must transfer first", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn leave(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(g): PathParams<u64>,
) -> Result<Done, Error> {
    s.logic.leave_group(c.user_id, GroupId(g)).await.map(|()| DONE)
}

/// `DELETE /v1/groups/{group_id}/members/{user_id}`
#[utoipa::path(delete, path = "/v1/groups/{group_id}/members/{user_id}", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path, description = "The group"), ("user_id" = u64, Path, description = "The member")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn kick(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams((g, user)): PathParams<(u64, u64)>,
) -> Result<Done, Error> {
    s.logic.kick(c.user_id, GroupId(g), UserId(user)).await.map(|()| DONE)
}

/// `PUT /v1/groups/{group_id}/members/{user_id}/role`
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{user_id}/role", tag = "groups", security(("bearer" = [])),
    request_body = RoleChange,
    params(("group_id" = u64, Path, description = "The group"), ("user_id" = u64, Path, description = "The member")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn set_role(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams((g, user)): PathParams<(u64, u64)>,
    JsonBody(b): JsonBody<RoleChange>,
) -> Result<Done, Error> {
    s.logic.set_role(c.user_id, GroupId(g), UserId(user), b.role).await.map(|()| DONE)
}

/// `POST /v1/groups/{group_id}/transfer`
#[utoipa::path(post, path = "/v1/groups/{group_id}/transfer", tag = "groups", security(("bearer" = [])), request_body = UserRef,
    params(("group_id" = u64, Path, description = "The group")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn transfer(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(g): PathParams<u64>,
    JsonBody(b): JsonBody<UserRef>,
) -> Result<Done, Error> {
    s.logic.transfer(c.user_id, GroupId(g), b.user_id).await.map(|()| DONE)
}

/// `PUT /v1/groups/{group_id}/members/{user_id}/mute`
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{user_id}/mute", tag = "groups", security(("bearer" = [])),
    request_body = MemberMute,
    params(("group_id" = u64, Path, description = "The group"), ("user_id" = u64, Path, description = "The member")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn mute_member(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams((g, user)): PathParams<(u64, u64)>,
    JsonBody(b): JsonBody<MemberMute>,
) -> Result<Done, Error> {
    s.logic.mute_member(c.user_id, GroupId(g), UserId(user), b.duration_secs).await.map(|()| DONE)
}

/// `PUT /v1/groups/{group_id}/mute`
#[utoipa::path(put, path = "/v1/groups/{group_id}/mute", tag = "groups", security(("bearer" = [])), request_body = GroupMute,
    params(("group_id" = u64, Path, description = "The group")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn mute_group(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(g): PathParams<u64>,
    JsonBody(b): JsonBody<GroupMute>,
) -> Result<Done, Error> {
    s.logic.mute_group(c.user_id, GroupId(g), b.muted).await.map(|()| DONE)
}

/// `DELETE /v1/groups/{group_id}`
#[utoipa::path(delete, path = "/v1/groups/{group_id}", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path, description = "The group")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn dissolve(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(g): PathParams<u64>,
) -> Result<Done, Error> {
    s.logic.dissolve_group(c.user_id, GroupId(g)).await.map(|()| DONE)
}

/// `GET /v1/conversations`
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    responses((status = 200, description = "Newest first", body = Vec<ConvSummary>), (status = 401, body = ErrorBody)))]
pub(super) async fn conversations(
    State(s): State<ApiState>,
    Caller(c): Caller,
) -> Result<Json<Vec<ConvSummary>>, Error> {
    Ok(Json(s.logic.conversation_list(c.user_id).await?))
}

async fn conv(s: &ApiState, user: UserId, conv: &str) -> Result<ConvId, Error> {
    s.logic.conversation_for(user, conv).await
}

/// `POST /v1/conversations/{conv_id}/read`
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/read", tag = "conversations", security(("bearer" = [])),
    request_body = ReadUpTo, params(("conv_id" = String, Path, description = "`d:<a>:<b>` or `g:<group>`")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn mark_read(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<ReadUpTo>,
) -> Result<Done, Error> {
    let conv = conv(&s, c.user_id, &id).await?;
    s.logic.mark_read(c.user_id, conv, b.seq).await.map(|()| DONE)
}

/// `POST /v1/conversations/{conv_id}/messages/{seq}/recall`
#[utoipa::path(post, path = "/v1/conversations/{conv_id}/messages/{seq}/recall", tag = "conversations", security(("bearer" = [])),
    params(("conv_id" = String, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "`recall_expired` or already recalled", body = ErrorBody),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn recall(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams((id, seq)): PathParams<(String, u64)>,
) -> Result<Done, Error> {
    let conv = conv(&s, c.user_id, &id).await?;
    s.logic.recall(c.user_id, conv, seq).await.map(|()| DONE)
}

/// `GET /v1/conversations/{conv_id}/messages/{seq}/reads`
#[utoipa::path(get, path = "/v1/conversations/{conv_id}/messages/{seq}/reads", tag = "conversations", security(("bearer" = [])),
    params(("conv_id" = String, Path, description = "The conversation"), ("seq" = u64, Path, description = "The message")),
    responses((status = 200, body = ReadReceipt), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(super) async fn reads(
    State(s): State<ApiState>,
    Caller(c): Caller,
    PathParams((id, seq)): PathParams<(String, u64)>,
) -> Result<Json<ReadReceipt>, Error> {
    let conv = conv(&s, c.user_id, &id).await?;
    Ok(Json(s.logic.read_receipt(c.user_id, conv, seq).await?))
}
