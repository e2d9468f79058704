//! Conversation history over REST, for participants only.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::{ApiState, Caller, PathParams, QueryParams};
use crate::error::Error;
use tern_proto::rest::{ErrorBody, HistoryPage};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    after_seq: Option<u64>,
    before_seq: Option<u64>,
    limit: Option<u32>,
}

/// `GET /v1/conversations/{conv_id}/messages?after_seq=&before_seq=&limit=`. A conversation the
/// caller is not in answers exactly like one that does not exist.
#[utoipa::path(get, path = "/v1/conversations/{conv_id}/messages", tag = "conversations", security(("bearer" = [])), params(("conv_id" = String, Path, description = "The conversation"), ("after_seq" = Option<u64>, Query, description = "Ascending after this seq"), ("before_seq" = Option<u64>, Query, description = "Descending before this seq"), ("limit" = Option<u32>, Query, description = "1–500, default 100")), responses((status = 200, body = HistoryPage), (status = 404, body = ErrorBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn messages(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    PathParams(conv): PathParams<String>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> Result<Json<HistoryPage>, Error> {
    let conv_id = state.logic.conversation_for(caller.user_id, &conv).await?;
    let (messages, last_seq, from) =
        state.logic.history(caller.user_id, conv_id, q.after_seq, q.before_seq, q.limit).await?;
    Ok(Json(HistoryPage { conv_id, messages, last_seq, from_seq: (from > 1).then_some(from) }))
}
