//! Profiles, friends, blacklist, privacy, presence, typing, message kinds, and the OpenAPI
//! document — end to end through the SDK.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tern_client::http::im;
use tern_client::{Body, ConvId, ErrorCode, Event, Transport, UserId};
use tern_proto::Notice;
use tern_proto::rest::{DmPolicy, JoinPolicy, ProfileChange};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_edited_and_found_by_prefix() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    srv.login("alicia", "phone").await;
    let bob = srv.login("bob", "phone").await;
    // An avatar is an image the user uploaded; anything else is refused.
    let png = include_bytes!("fixtures/sticker.png");
    let up = |s: &tern_client::Session, data: &'static [u8]| {
        let s = s.clone();
        async move {
            tern_client::http::files::upload(&s, "a", bytes::Bytes::from_static(data), &Default::default())
                .await
                .unwrap()
        }
    };
    let (image, text, bobs) = (up(&alice, png).await, up(&alice, b"not an image").await, up(&bob, png).await);
    for bad in ["f_1", text.id.as_str(), bobs.id.as_str()] {
        let change = ProfileChange { avatar: Some(bad.into()), ..Default::default() };
        assert_eq!(code(im::update_me(&alice, &change).await), tern_client::ErrorCode::BadRequest, "{bad}");
    }
    let me = as_json(
        im::update_me(
            &alice,
            &ProfileChange {
                nickname: Some("Al".into()),
                signature: Some("hi".into()),
                avatar: Some(image.id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        (me["nickname"].as_str(), me["signature"].as_str(), me["avatar"].as_str()),
        (Some("Al"), Some("hi"), Some(image.id.as_str()))
    );
    // The avatar is public now: anyone may load it, without a header.
    let avatar =
        tern_client::http::shared_client().get(format!("{}/v1/files/{}", srv.url(), image.id)).send().await.unwrap();
    assert_eq!((avatar.status().as_u16(), avatar.bytes().await.unwrap().len() as u64), (200, image.size));
    let seen = as_json(im::profile(&alice, alice.user_id).await.unwrap());
    assert_eq!(seen["nickname"], "Al");
    let found = as_json(im::search(&alice, "ALI").await.unwrap());
    let names: Vec<&str> = found.as_array().unwrap().iter().map(|p| p["username"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["alice", "alicia"]);
    // `_` is a literal, not a wildcard.
    assert!(as_json(im::search(&alice, "a_").await.unwrap()).as_array().unwrap().is_empty());
    assert_eq!(
        code(im::update_me(&alice, &ProfileChange { nickname: Some("x".repeat(65)), ..Default::default() }).await),
        ErrorCode::BadRequest
    );
    // A policy the typed SDK cannot name, sent as raw JSON.
    let raw = reqwest::Client::new()
        .patch(format!("{}/v1/me", srv.url()))
        .bearer_auth(&alice.token)
        .json(&json!({ "dm_policy": "nobody" }))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.json::<serde_json::Value>().await.unwrap()["error"]["code"], "bad_request");
    assert_eq!(code(im::search(&alice, "").await), ErrorCode::BadRequest);
    assert_eq!(code(im::profile(&alice, UserId(999_999)).await), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_requests_reach_both_sides_live_and_friendship_follows_accept_decline_and_remove() {
    let srv = TestServer::start().await;
    let alice_phone = srv.login("alice", "phone").await;
    let alice_laptop = srv.login("alice", "laptop").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    let (_ap, mut ap) = connect(&alice_phone, Transport::WsJson).await;
    let (_al, mut al) = connect(&alice_laptop, Transport::Tcp).await;
    let (_b, mut b) = connect(&bob, Transport::WsBinary).await;
    let (_c, mut c) = connect(&carol, Transport::WsJson).await;
    let (a, bo, ca) = (alice_phone.user_id, bob.user_id, carol.user_id);

    assert_eq!(as_json(im::request_friend(&bob, a, "hi, it's bob").await.unwrap())["status"], "requested");
    let expected = Notice::FriendRequest { from: bo, to: a, message: "hi, it's bob".into() };
    assert_eq!(next_notice(&mut ap).await, expected, "the asked user's phone");
    assert_eq!(next_notice(&mut al).await, expected, "and laptop");
    assert_eq!(next_notice(&mut b).await, expected, "the asker's own devices");
    assert_eq!(code(im::request_friend(&bob, a, "again").await), ErrorCode::Conflict);
    let listed = as_json(im::friends(&alice_phone).await.unwrap());
    assert_eq!(listed["incoming"][0]["user_id"], json!(bo.0));
    assert_eq!(listed["incoming"][0]["message"], "hi, it's bob");
    assert_eq!(as_json(im::friends(&bob).await.unwrap())["outgoing"][0]["user_id"], json!(a.0));

    im::accept_friend(&alice_laptop, bo).await.unwrap();
    assert_eq!(next_notice(&mut ap).await, Notice::FriendAdded { user: bo });
    assert_eq!(next_notice(&mut al).await, Notice::FriendAdded { user: bo });
    assert_eq!(next_notice(&mut b).await, Notice::FriendAdded { user: a });
    let listed = as_json(im::friends(&alice_phone).await.unwrap());
    assert_eq!(listed["friends"][0]["user_id"], json!(bo.0));
    assert_eq!(listed["friends"][0]["online"], true);
    assert!(listed["incoming"].as_array().unwrap().is_empty());
    assert_eq!(code(im::accept_friend(&alice_phone, bo).await), ErrorCode::NotFound, "nothing pending any more");
    assert_eq!(code(im::request_friend(&alice_phone, bo, "").await), ErrorCode::Conflict, "already friends");

    // Two users asking each other become friends without an accept.
    im::request_friend(&carol, a, "").await.unwrap();
    assert_eq!(as_json(im::request_friend(&alice_phone, ca, "").await.unwrap())["status"], "friends");

    // Decline: both sides are told, nothing stays pending.
    im::request_friend(&carol, bo, "let me in").await.unwrap();
    im::decline_friend(&bob, ca).await.unwrap();
    let declined = Notice::FriendDeclined { from: ca, to: bo };
    loop {
        if next_notice(&mut c).await == declined {
            break;
        }
    }
    assert!(as_json(im::friends(&bob).await.unwrap())["incoming"].as_array().unwrap().is_empty());

    im::remove_friend(&bob, a).await.unwrap();
    loop {
        if next_notice(&mut al).await == (Notice::FriendRemoved { user: bo }) {
            break;
        }
    }
    let names: Vec<u64> = as_json(im::friends(&alice_phone).await.unwrap())["friends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["user_id"].as_u64().unwrap())
        .collect();
    assert_eq!(names, vec![ca.0]);
    assert_eq!(code(im::remove_friend(&bob, a).await), ErrorCode::NotFound);
    assert_eq!(code(im::request_friend(&bob, bo, "").await), ErrorCode::BadRequest, "not yourself");
    assert_eq!(code(im::request_friend(&bob, UserId(999_999), "").await), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_only_policy_refuses_strangers_with_not_friends() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::WsJson).await;
    let (_bc, mut be) = connect(&bob, Transport::WsJson).await;
    im::update_me(&bob, &ProfileChange { dm_policy: Some(DmPolicy::Friends), ..Default::default() }).await.unwrap();
    assert_eq!(code(ac.send_text(bob.user_id, "hello?").await), ErrorCode::NotFriends);
    im::request_friend(&alice, bob.user_id, "").await.unwrap();
    im::accept_friend(&bob, alice.user_id).await.unwrap();
    ac.send_text(bob.user_id, "now?").await.unwrap();
    let got = loop {
        let m = be.next_message().await.unwrap();
        if notice_of(&m).is_none() {
            break m;
        }
    };
    assert_eq!(texts(&[got]), vec!["now?"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_is_refused_messages_requests_and_invites_and_the_blocker_sees_no_trace() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let mallory = srv.login("mallory", "phone").await;
    let (_a, mut ae) = connect(&alice, Transport::WsJson).await;
    let (mc, _me) = connect(&mallory, Transport::WsJson).await;
    im::request_friend(&mallory, alice.user_id, "pending before the block").await.unwrap();
    assert!(matches!(next_notice(&mut ae).await, Notice::FriendRequest { .. }));

    im::block(&alice, mallory.user_id).await.unwrap();
    im::block(&alice, mallory.user_id).await.unwrap(); // idempotent
    assert_eq!(next_notice(&mut ae).await, Notice::Blocked { user: mallory.user_id });
    let listed = as_json(im::friends(&alice).await.unwrap());
    assert_eq!(listed["blocked"], json!([mallory.user_id.0]));
    assert!(listed["incoming"].as_array().unwrap().is_empty(), "the blocked user's pending request is gone");

    assert_eq!(code(mc.send_text(alice.user_id, "let me talk").await), ErrorCode::Blocked);
    assert_eq!(code(im::request_friend(&mallory, alice.user_id, "please").await), ErrorCode::Blocked);
    let group = as_json(im::create_group(&mallory, "trap", JoinPolicy::Open).await.unwrap());
    let gid = tern_proto::GroupId(group["group_id"].as_u64().unwrap());
    assert_eq!(code(im::invite(&mallory, gid, alice.user_id).await), ErrorCode::Blocked);
    // Nothing of it reached alice, and nothing of it is stored for her.
    assert!(drain_messages(&mut ae, Duration::from_millis(500)).await.is_empty());
    assert!(as_json(im::conversations(&alice).await.unwrap()).as_array().unwrap().is_empty());

    im::unblock(&alice, mallory.user_id).await.unwrap();
    assert_eq!(next_notice(&mut ae).await, Notice::Unblocked { user: mallory.user_id });
    mc.send_text(alice.user_id, "sorry").await.unwrap();
    let m = ae.next_message().await.unwrap();
    assert_eq!(texts(&[m]), vec!["sorry"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_see_presence_debounced_and_typing_reaches_only_the_peer() {
    let srv = TestServer::with(|c| c.messages.presence_debounce_ms = 300).await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let eve = srv.login("eve", "phone").await;
    im::request_friend(&alice, bob.user_id, "").await.unwrap();
    im::accept_friend(&bob, alice.user_id).await.unwrap();
    let (_a, mut ae) = connect(&alice, Transport::WsJson).await;
    let (_e, mut ee) = connect(&eve, Transport::WsJson).await;

    let (bc, _be) = connect(&bob, Transport::Tcp).await;
    let online = wait_event(&mut ae, |e| matches!(e, Event::Presence { .. })).await;
    assert_eq!(online, Event::Presence { user: bob.user_id, online: true });

    let conv = ConvId::direct(alice.user_id, bob.user_id);
    bc.typing(conv).await.unwrap();
    let typing = wait_event(&mut ae, |e| matches!(e, Event::Typing { .. })).await;
    assert_eq!(typing, Event::Typing { conv_id: conv, user: bob.user_id });
    // Typing into someone else's conversation is refused and reaches nobody.
    bc.typing(ConvId::direct(alice.user_id, eve.user_id)).await.unwrap();

    // A quick reconnect inside the debounce is not reported.
    bc.close().await;
    let (bc2, _be2) = connect(&bob, Transport::Tcp).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    bc2.close().await;
    let offline = wait_event(&mut ae, |e| matches!(e, Event::Presence { .. } | Event::Typing { .. })).await;
    assert_eq!(offline, Event::Presence { user: bob.user_id, online: false }, "no flap, then offline");
    // Eve is no friend: she heard nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, ee.recv()).await {
        assert!(!matches!(e, Event::Presence { .. } | Event::Typing { .. }), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_kind_round_trips_and_malformed_bodies_are_refused() {
    let srv = TestServer::with(|c| c.messages.max_body_bytes = 2048).await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::WsBinary).await;
    let (_bc, mut be) = connect(&bob, Transport::WsJson).await;
    // Files first: messages name uploaded files (the server writes their true size and pixels).
    let up = |data: &'static [u8]| {
        let alice = alice.clone();
        async move {
            tern_client::http::files::upload(&alice, "f", bytes::Bytes::from_static(data), &Default::default())
                .await
                .unwrap()
                .id
        }
    };
    let (img, doc, voice) =
        (up(include_bytes!("fixtures/green.webp")).await, up(&[7u8; 12345]).await, up(b"OggS voice").await);
    let bodies = vec![
        Body::Text { text: "hi".into() },
        Body::Image { file_id: img, width: Some(50), height: Some(25) },
        Body::File { file_id: doc, name: "report.pdf".into(), size: 12345 },
        Body::Voice { file_id: voice, duration_ms: 3200 },
        Body::Location { latitude: 31.23, longitude: 121.47, name: Some("Shanghai".into()) },
        Body::Custom { data: json!({ "card": { "title": "t" } }) },
    ];
    for b in &bodies {
        ac.send(bob.user_id, b.clone(), tern_client::new_client_msg_id()).await.unwrap();
    }
    let got = expect_messages(&mut be, bodies.len()).await;
    assert_eq!(got.into_iter().map(|m| m.body).collect::<Vec<_>>(), bodies);

    let bad = [
        Body::Text { text: String::new() },
        Body::Image { file_id: String::new(), width: None, height: None },
        Body::File { file_id: "f".into(), name: String::new(), size: 1 },
        Body::Location { latitude: 91.0, longitude: 0.0, name: None },
        Body::Custom { data: json!([1, 2]) },
        Body::Notice { notice: Notice::FriendAdded { user: alice.user_id } },
        Body::Recalled { by: alice.user_id, at: 1 },
    ];
    for b in bad {
        assert_eq!(
            code(ac.send(bob.user_id, b.clone(), tern_client::new_client_msg_id()).await),
            ErrorCode::BadRequest,
            "{b:?}"
        );
    }
    let big = Body::Text { text: "x".repeat(3000) };
    assert_eq!(code(ac.send(bob.user_id, big, tern_client::new_client_msg_id()).await), ErrorCode::BodyTooLarge);
    let stream = ConvId::User(bob.user_id);
    assert_eq!(code(ac.send_text_to(stream, "into bob's stream").await), ErrorCode::BadRequest);
    expect_quiet(&mut be, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_routed_path_and_every_documented_operation_is_served() {
    let srv = TestServer::start().await;
    let doc: serde_json::Value =
        reqwest::get(format!("{}/openapi.json", srv.url())).await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort();
    let mut routed = tern_server::api::routed_paths();
    routed.sort();
    assert_eq!(documented, routed, "documented paths == routed paths");
    // Every request body names its fields (derived from the types the server parses).
    let schemas = &doc["components"]["schemas"];
    let resolve = |s: &serde_json::Value| match s["$ref"].as_str() {
        Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
        None => s.clone(),
    };
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let Some(body) = op.get("requestBody") else { continue };
            // The HTTP transports carry protocol frames (docs/PROTOCOL.md), not REST bodies, and
            // tus uploads carry the file's bytes.
            if path.starts_with("/v1/{transport}") || body["content"].get("application/offset+octet-stream").is_some() {
                continue;
            }
            let schema = resolve(&body["content"]["application/json"]["schema"]);
            let parts = schema["allOf"].as_array().cloned().unwrap_or_else(|| vec![schema.clone()]);
            let fields: usize =
                parts.iter().map(|p| resolve(p)["properties"].as_object().map_or(0, serde_json::Map::len)).sum();
            assert!(fields > 0, "{method} {path}: the request body has no properties: {schema}");
        }
    }
    let http = reqwest::Client::new();
    for (path, ops) in paths {
        let concrete = path
            .replace("{conv_id}", "d:1:2")
            .replace("{seq}", "1")
            .replace("{username}", "nobody")
            .replace("{room}", "r")
            .replace("{area}", "a")
            .replace("{key_id}", "k")
            .replace("{transport}", "sse")
            .replace("{session}", "s")
            .replace(['{', '}'], "")
            .replace("user_id", "1")
            .replace("group_id", "1");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = http.request(m, format!("{}{concrete}", srv.url())).send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(!body.contains("no such endpoint"), "{method} {path} is documented but not routed");
            let declared = ops[method]["responses"].as_object().unwrap();
            assert!(
                declared.contains_key(&status.to_string()) || status == 400 || status == 415,
                "{method} {path} answered {status}, not declared in {:?}",
                declared.keys().collect::<Vec<_>>()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_exports_their_profile_relations_and_every_conversation_they_can_read() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    im::request_friend(&alice, bob.user_id, "hi").await.unwrap();
    im::accept_friend(&bob, alice.user_id).await.unwrap();
    let (a, _ae) = connect(&alice, Transport::Tcp).await;
    for t in ["one", "two", "three"] {
        a.send_text(bob.user_id, t).await.unwrap();
    }
    // A conversation alice is not in stays out of her export.
    let (c, _ce) = connect(&carol, Transport::Tcp).await;
    c.send_text(bob.user_id, "carol to bob").await.unwrap();

    let get = |token: String| {
        let url = format!("{}/v1/me/export", srv.url());
        async move { tern_client::http::shared_client().get(url).bearer_auth(token).send().await.unwrap() }
    };
    let resp = get(alice.token.clone()).await;
    assert_eq!(resp.status(), 200);
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    let export: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(export["profile"]["username"], "alice");
    assert_eq!(export["relations"]["friends"][0]["user_id"], json!(bob.user_id.0));
    let convs = export["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 1, "only alice's conversations: {export}");
    let texts: Vec<&str> =
        convs[0]["messages"].as_array().unwrap().iter().filter_map(|m| m["body"]["text"].as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert!(export.get("truncated").is_none());
    assert_eq!(get("not-a-token".into()).await.status(), 401);
}
