//! `/openapi.json`: the REST API described by the handlers' own annotations (utoipa), so the
//! document is built from the code that serves it. A test checks that every routed path is
//! documented and every documented operation is routed.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, control, conversations, files, http_transport, im, push, relay, rooms};

#[derive(OpenApi)]
#[openapi(
    info(title = "tern", description = "tern's REST API. The socket protocol is in docs/PROTOCOL.md."),
    paths(
        control::healthz, control::metrics, control::register, control::login, control::user_by_name, control::logout,
        control::logout_everywhere, control::change_password, control::set_disabled,
        serve, super::websocket, http_transport::open, http_transport::upstream, http_transport::downstream,
        http_transport::close,
        im::me, im::update_me, im::export, im::profile, im::search,
        im::friends, im::request_friend, im::accept_friend, im::decline_friend, im::remove_friend,
        im::block, im::unblock,
        im::create_group, im::group, im::invite, im::join, im::approve, im::decline_join, im::leave, im::kick,
        im::set_role, im::transfer, im::mute_member, im::mute_group, im::dissolve,
        im::conversations, conversations::messages, im::mark_read, im::recall, im::reads,
        push::device_token, push::to_users, push::to_devices, push::to_room, push::to_area, push::to_all,
        push::set_room, push::room_online, push::area_online, push::total_online,
        push::create_key, push::list_keys, push::revoke_key,
        rooms::bans, rooms::ban, rooms::unban, rooms::mutes, rooms::mute, rooms::unmute, rooms::settings,
        rooms::set_settings, rooms::issue_token, rooms::void_tokens, rooms::members, admin::backup,
        files::discover, files::create, files::head, files::append, files::terminate, files::download,
        files::file_info, files::signed_url, relay::relay, files::stickers, files::add_sticker, files::remove_sticker,
    ),
    modifiers(&Bearer)
)]
struct Doc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A login token (POST /v1/sessions) or, for push and admin calls, an API key"))
                    .build(),
            ),
        );
    }
}

/// The document, built once.
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(Doc::openapi()).unwrap_or_default())
}

/// `GET /openapi.json`
#[utoipa::path(get, path = "/openapi.json", tag = "control", responses((status = 200, description = "This document", body = Object)))]
pub(super) async fn serve() -> Json<&'static serde_json::Value> {
    Json(document())
}
