//! `GET /v1/relay/{transfer_id}`: the relay for file transfers between two clients, on the HTTP
//! port (an HTTP/1.1 upgrade to `tern-relay`, then raw bytes). The pairing and pacing are in
//! `files/relay.rs`; the ticket rules in `logic/transfers.rs`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tern_proto::UserId;
use tern_proto::rest::ErrorBody;

use super::{ApiState, Caller, PathParams, QueryParams};
use crate::error::Error;
use crate::files::relay::Side;

/// The upgrade token.
const PROTOCOL: &str = "tern-relay";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RelayQuery {
    ticket: String,
    side: String,
}

/// `GET /v1/relay/{transfer_id}?ticket=…&side=sender|receiver` with `Upgrade: tern-relay`:
/// after `101`, the connection carries the transfer's bytes to and from the other side.
#[utoipa::path(get, path = "/v1/relay/{transfer_id}", tag = "files", security(("bearer" = [])),
    params(("transfer_id" = String, Path, description = "The transfer"), ("ticket" = String, Query, description = "The offer's ticket"),
        ("side" = String, Query, description = "`sender` or `receiver`: the caller's end")),
    responses((status = 101, description = "Upgraded: raw bytes to and from the other side"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "No such transfer for the caller (a forged or expired ticket, another user)", body = ErrorBody),
        (status = 409, description = "This side is already connected", body = ErrorBody)))]
pub(super) async fn relay(
    State(s): State<ApiState>,
    Caller(caller): Caller,
    PathParams(transfer_id): PathParams<String>,
    QueryParams(q): QueryParams<RelayQuery>,
    mut req: Request,
) -> Result<Response, Error> {
    let upgrade_asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !upgrade_asked {
        return Err(Error::bad_request(format!("the relay needs Connection: Upgrade and Upgrade: {PROTOCOL}")));
    }
    let ticket = s.logic.transfer_ticket(&q.ticket)?;
    let side = match q.side.as_str() {
        "sender" => Side::Sender,
        "receiver" => Side::Receiver,
        _ => return Err(Error::bad_request("side must be sender or receiver")),
    };
    let owner = if side == Side::Sender { ticket.from } else { ticket.to };
    if ticket.sub != transfer_id || owner != caller.user_id.0 {
        return Err(Error::not_found("no such file offer (or it expired)"));
    }
    s.relay.may_join(&transfer_id, side)?;
    let upgrade = hyper::upgrade::on(&mut req);
    let relay = s.relay.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => relay.join(transfer_id, side, UserId(ticket.from), TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "relay upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    Ok(resp)
}
