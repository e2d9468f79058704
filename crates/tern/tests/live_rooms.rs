//! Viewers taking part in live rooms: posts (`publish`) with the server's name on them, and
//! their moderation — rates, slow mode, the word filter, mutes and bans with a kick.

mod common;

use common::*;
use serde_json::json;
use tern_client::{Client, ErrorCode, Event, Events, Priority, Transport};

/// A service-API call with `key`: status and JSON body (null when empty).
async fn call(
    srv: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = tern_client::http::shared_client();
    let url = format!("{}{path}", srv.url());
    let mut req = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "PUT" => client.put(url),
        "DELETE" => client.delete(url),
        other => panic!("{other}"),
    };
    if !key.is_empty() {
        req = req.bearer_auth(key);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn viewer(srv: &TestServer, name: &str, transport: Transport, room: &str) -> (Client, Events, u64) {
    let session = srv.login(name, "phone").await;
    let id = session.user_id.0;
    let (client, events) = connect(&session, transport).await;
    client.join(room).await.unwrap();
    (client, events, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_s_post_reaches_every_member_once_with_the_server_s_name_on_it() {
    let srv = TestServer::with(|c| c.push.aggregate_window_ms = 20).await;
    let alice = srv.login("alice", "phone").await;
    let r = tern_client::http::shared_client()
        .patch(format!("{}/v1/me", srv.url()))
        .bearer_auth(&alice.token)
        .json(&json!({ "nickname": "Alice A" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (a, mut a_events) = connect(&alice, Transport::Tcp).await;
    a.join("live-1").await.unwrap();
    let (_b, mut b_events, bob) = viewer(&srv, "bob", Transport::WsJson, "live-1").await;
    let (anon, mut anon_events) = connect_device(&srv.device().await, Transport::WsBinary).await;
    anon.join("live-1").await.unwrap();
    let (_c, mut elsewhere, _) = viewer(&srv, "carol", Transport::Tcp, "live-2").await;

    a.publish("live-1", json!({ "danmaku": "666" }), Priority::Low).await.unwrap();
    a.publish("live-1", json!({ "gift": "rocket", "from": { "user_id": bob } }), Priority::High).await.unwrap();
    // Every member, the poster too, gets each post once; the author is who the server says.
    for events in [&mut a_events, &mut b_events, &mut anon_events] {
        let got = expect_pushes(events, 2).await;
        let low = got.iter().find(|p| p.priority == Priority::Low).unwrap();
        let high = got.iter().find(|p| p.priority == Priority::High).unwrap();
        assert_eq!(low.data, json!({ "danmaku": "666" }));
        assert_eq!(high.data["gift"], "rocket");
        for p in [low, high] {
            let from = p.from.as_ref().expect("a post names its author");
            assert_eq!((from.user_id, from.nickname.as_str()), (alice.user_id, "Alice A"));
        }
    }
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), elsewhere.next_push()).await.is_err(),
        "another room gets nothing"
    );

    // Refusals, each with its code; the connection goes on.
    let e = anon.publish("live-1", json!("hi"), Priority::Low).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "anonymous, where the room does not allow it");
    assert!(e.to_string().contains("logged-in users only"), "{e}");
    assert_eq!(code(a.publish("live-2", json!("hi"), Priority::Low).await), ErrorCode::Forbidden, "not in that room");
    let big = "x".repeat(2000);
    assert_eq!(code(a.publish("live-1", json!(big), Priority::Low).await), ErrorCode::BodyTooLarge);
    // A room that allows it takes anonymous posts, named as a guest with no user id.
    let (s, _) =
        call(&srv, PUSH_KEY, "PUT", "/v1/rooms/live-1/settings", Some(json!({ "anonymous_posts": true }))).await;
    assert_eq!(s, 200);
    anon.publish("live-1", json!("hi from a guest"), Priority::Low).await.unwrap();
    for events in [&mut b_events, &mut anon_events] {
        let got = expect_pushes(events, 1).await;
        let from = got[0].from.as_ref().unwrap();
        assert_eq!((got[0].data.as_str(), from.user_id.0), (Some("hi from a guest"), 0));
        assert!(from.nickname.starts_with("guest-") && from.nickname.len() == 12, "{from:?}");
    }
    expect_pushes(&mut a_events, 1).await;
    // The connection's rate (5 a second by default): a burst is cut, with a retry hint.
    let mut refused = None;
    for i in 0..12 {
        if let Err(e) = a.publish("live-1", json!({ "n": i }), Priority::Low).await {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("a burst of posts is limited");
    assert_eq!(e.code(), Some(ErrorCode::RateLimited));
    assert!(e.to_string().contains("posts per second on this connection; retry in"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_the_word_filter_mutes_and_bans_each_refuse_with_their_code() {
    let srv = TestServer::with(|c| {
        c.push.aggregate_window_ms = 20;
        c.rooms.word_filter = vec!["BadWord".into(), "坏词".into()];
    })
    .await;
    let (_a, mut a_events, _) = viewer(&srv, "alice", Transport::Tcp, "r").await;
    let (b, mut b_events, bob) = viewer(&srv, "bob", Transport::WsJson, "r").await;

    // The word filter masks, case-insensitively, character by character.
    b.publish("r", json!({ "text": "a badword and 坏词!" }), Priority::Low).await.unwrap();
    for events in [&mut a_events, &mut b_events] {
        assert_eq!(expect_pushes(events, 1).await[0].data["text"], "a ******* and **!");
    }

    // Slow mode, set by the business server: one post per 60 s, then off again.
    let (s, v) = call(&srv, PUSH_KEY, "PUT", "/v1/rooms/r/settings", Some(json!({ "slow_mode_secs": 60 }))).await;
    assert_eq!(
        (s, v),
        (200, json!({ "slow_mode_secs": 60, "policy": "public", "history_size": 50, "anonymous_posts": false }))
    );
    b.publish("r", json!("one"), Priority::Low).await.unwrap();
    let e = b.publish("r", json!("two"), Priority::Low).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::RateLimited));
    assert!(e.to_string().contains("slow mode: one post per 60 s"), "{e}");
    call(&srv, PUSH_KEY, "PUT", "/v1/rooms/r/settings", Some(json!({ "slow_mode_secs": 0 }))).await;
    b.publish("r", json!("three"), Priority::Low).await.unwrap();
    let texts = |ps: Vec<tern_client::Push>| ps.into_iter().map(|p| p.data).collect::<Vec<_>>();
    assert_eq!(texts(expect_pushes(&mut a_events, 2).await), vec![json!("one"), json!("three")]);
    expect_pushes(&mut b_events, 2).await;

    // A mute: in the room, hearing everything, saying nothing.
    let (s, v) =
        call(&srv, PUSH_KEY, "POST", "/v1/rooms/r/mutes", Some(json!({ "user_id": bob, "reason": "cool off" }))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["kind"].as_str(), v["until_ms"].as_u64()), (Some("mute"), Some(0)));
    let e = b.publish("r", json!("hello?"), Priority::Low).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Muted));
    assert!(e.to_string().contains("cool off"), "{e}");
    let (_, v) = call(&srv, PUSH_KEY, "GET", "/v1/rooms/r/mutes", None).await;
    assert_eq!(v["sanctions"].as_array().unwrap().len(), 1);
    assert_eq!(call(&srv, PUSH_KEY, "DELETE", &format!("/v1/rooms/r/mutes/{bob}"), None).await.0, 204);
    assert_eq!(call(&srv, PUSH_KEY, "DELETE", &format!("/v1/rooms/r/mutes/{bob}"), None).await.0, 404);
    b.publish("r", json!("back"), Priority::Low).await.unwrap();
    assert_eq!(texts(expect_pushes(&mut a_events, 1).await), vec![json!("back")]);
    expect_pushes(&mut b_events, 1).await;

    // A ban takes bob out at once, with the reason, and keeps him out on a new connection too.
    assert_eq!(srv.room_online("r").await, 2);
    let (s, _) =
        call(&srv, PUSH_KEY, "POST", "/v1/rooms/r/bans", Some(json!({ "user_id": bob, "reason": "spam" }))).await;
    assert_eq!(s, 200);
    match wait_event(&mut b_events, |e| matches!(e, Event::Kicked { .. })).await {
        Event::Kicked { room, reason } => assert_eq!((room.as_str(), reason.as_str()), ("r", "spam")),
        _ => unreachable!(),
    }
    assert_eq!(srv.room_online("r").await, 1);
    assert_eq!(code(b.publish("r", json!("still here?"), Priority::Low).await), ErrorCode::Forbidden);
    let e = b.join("r").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    assert!(e.to_string().contains("you are banned from room \"r\": spam"), "{e}");
    let (b2, _b2_events) = connect(&srv.login("bob", "laptop").await, Transport::Tcp).await;
    assert_eq!(code(b2.join("r").await), ErrorCode::Forbidden, "a new connection stays banned");
    b2.join("elsewhere").await.expect("other rooms are open to him");
    let (_, v) = call(&srv, PUSH_KEY, "GET", "/v1/rooms/r/bans", None).await;
    assert_eq!(v["sanctions"][0]["user_id"].as_u64(), Some(bob));
    // Lifted: he may come back.
    assert_eq!(call(&srv, PUSH_KEY, "DELETE", &format!("/v1/rooms/r/bans/{bob}"), None).await.0, 204);
    b.join("r").await.unwrap();
    assert_eq!(srv.room_online("r").await, 2);
    // A timed ban ends by itself.
    let body = json!({ "user_id": bob, "duration_secs": 1 });
    assert_eq!(call(&srv, PUSH_KEY, "POST", "/v1/rooms/r/bans", Some(body)).await.0, 200);
    wait_event(&mut b_events, |e| matches!(e, Event::Kicked { .. })).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    b.join("r").await.expect("the ban has run out");

    // Only a key with the rooms scope moderates; bad input is named.
    let (s, v) =
        call(&srv, PUSH_KEY, "POST", "/v1/admin/keys", Some(json!({ "name": "u", "scopes": ["users"] }))).await;
    assert_eq!(s, 201, "{v}");
    let users_only = v["key"].as_str().unwrap().to_owned();
    let ban = json!({ "user_id": bob });
    assert_eq!(call(&srv, &users_only, "POST", "/v1/rooms/r/bans", Some(ban.clone())).await.0, 403);
    assert_eq!(call(&srv, "", "POST", "/v1/rooms/r/bans", Some(ban.clone())).await.0, 401);
    assert_eq!(call(&srv, PUSH_KEY, "POST", "/v1/rooms/bad%20room/bans", Some(ban)).await.0, 404);
    let (s, v) =
        call(&srv, PUSH_KEY, "POST", "/v1/rooms/r/bans", Some(json!({ "user_id": bob, "duration_secs": 0 }))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_request")));
    let (s, _) = call(&srv, PUSH_KEY, "PUT", "/v1/rooms/r/settings", Some(json!({ "slow_mode_secs": 99999 }))).await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_word_filter_refuses_the_post_and_nobody_gets_it() {
    let srv = TestServer::with(|c| {
        c.push.aggregate_window_ms = 20;
        c.rooms.word_filter = vec!["spam".into()];
        c.rooms.word_filter_action = tern_server::config::FilterAction::Refuse;
    })
    .await;
    let (_a, mut a_events, _) = viewer(&srv, "alice", Transport::Tcp, "r").await;
    let (b, _b_events, _) = viewer(&srv, "bob", Transport::Tcp, "r").await;
    let e = b.publish("r", json!({ "nested": ["buy SPAM"] }), Priority::High).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    assert!(e.to_string().contains("does not allow"), "{e}");
    b.publish("r", json!({ "nested": ["fine"] }), Priority::High).await.unwrap();
    assert_eq!(expect_pushes(&mut a_events, 1).await[0].data, json!({ "nested": ["fine"] }));
}

/// Enter and leave events arriving within `d`: (entered ids, left ids, unnamed entries, unnamed
/// leaves), summed over frames.
async fn room_events(events: &mut Events, d: std::time::Duration) -> (Vec<u64>, Vec<u64>, u64, u64) {
    let mut out = (Vec::new(), Vec::new(), 0, 0);
    let until = tokio::time::Instant::now() + d;
    while let Ok(Some(e)) = tokio::time::timeout_at(until, events.recv()).await {
        if let Event::RoomEvents { entered, left, more_entered, more_left, .. } = e {
            assert!(entered.len() <= 2 && left.len() <= 2, "at most rooms.events_names (2) named a window");
            out.0.extend(entered.iter().map(|u| u.user_id.0));
            out.1.extend(left.iter().map(|u| u.user_id.0));
            out.2 += more_entered;
            out.3 += more_left;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_enter_and_one_leave_per_session_a_quick_reconnect_is_neither_and_crowds_are_counted() {
    let srv = TestServer::with(|c| {
        c.rooms.events_window_ms = 50;
        c.rooms.leave_grace_ms = 2000;
        c.rooms.events_names = 2;
        c.gateway.heartbeat_ms = 200;
        c.gateway.max_missed_heartbeats = 2;
    })
    .await;
    let secs = std::time::Duration::from_secs_f64;
    let quiet = secs(1.5);
    let (_a, mut watch, alice) = viewer(&srv, "alice", Transport::Tcp, "r").await;
    assert_eq!(room_events(&mut watch, std::time::Duration::from_millis(300)).await.0, vec![alice], "her own enter");

    // Bob enters once, however many of his devices join.
    let bob = srv.login("bob", "phone").await;
    let (b1, _e1) = connect(&bob, Transport::WsJson).await;
    b1.join("r").await.unwrap();
    let (b2, _e2) = connect(&srv.login("bob", "laptop").await, Transport::Tcp).await;
    b2.join("r").await.unwrap();
    b2.join("r").await.unwrap(); // the room it is in: no second enter
    b2.close().await;
    assert_eq!(room_events(&mut watch, quiet).await, (vec![bob.user_id.0], vec![], 0, 0));

    // A reconnect within the grace period is neither a leave nor an enter.
    b1.close().await;
    let (b3, _e3) = connect(&bob, Transport::Tcp).await;
    b3.join("r").await.unwrap();
    // Watched for longer than the grace period: no leave came after it either.
    assert_eq!(room_events(&mut watch, secs(3.0)).await, (vec![], vec![], 0, 0), "a reconnect");

    // Leaving for good is one leave, after the grace period.
    b3.leave().await.unwrap();
    assert_eq!(room_events(&mut watch, secs(3.5)).await, (vec![], vec![bob.user_id.0], 0, 0));

    // A connection that dies silently leaves by its heartbeat.
    let carol = srv.login("carol", "phone").await;
    let mut raw = RawWs::open(&srv).await;
    raw.auth(&carol).await;
    raw.send_frame(&tern_proto::ClientFrame::Join { id: 1, room: "r".into(), token: None, recent: None }).await;
    assert_eq!(room_events(&mut watch, secs(1.0)).await.0, vec![carol.user_id.0]);
    let (_, left, _, _) = room_events(&mut watch, secs(4.0)).await;
    assert_eq!(left, vec![carol.user_id.0], "heartbeat death is a leave");
    drop(raw);

    // A crowd: two named per window, the rest counted; everyone once.
    let mut crowd = Vec::new();
    for i in 0..7 {
        let s = srv.login(&format!("fan{i}"), "phone").await;
        let (c, e) = connect(&s, Transport::Tcp).await;
        crowd.push((c, e));
    }
    futures_util::future::join_all(crowd.iter().map(|(c, _)| c.join("r"))).await;
    let (named, _, more, _) = room_events(&mut watch, quiet).await;
    assert_eq!(named.len() as u64 + more, 7, "each fan once: {named:?} and {more} more");
    // Anonymous viewers come and go without events.
    let (anon, _) = connect_device(&srv.device().await, Transport::Tcp).await;
    anon.join("r").await.unwrap();
    anon.close().await;
    assert_eq!(room_events(&mut watch, quiet).await, (vec![], vec![], 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_room_lets_in_only_users_with_a_valid_join_token_and_the_business_can_revoke() {
    let srv = TestServer::with(|c| c.push.aggregate_window_ms = 20).await;
    let (s, v) = call(&srv, PUSH_KEY, "PUT", "/v1/rooms/vip/settings", Some(json!({ "policy": "token" }))).await;
    assert_eq!((s, v["policy"].as_str()), (200, Some("token")));
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let token = |user: u64, ttl: u64| {
        let srv = &srv;
        async move {
            let (s, v) =
                call(srv, PUSH_KEY, "POST", "/v1/rooms/vip/tokens", Some(json!({ "user_id": user, "ttl_secs": ttl })))
                    .await;
            assert_eq!(s, 200, "{v}");
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let alice_token = token(alice.user_id.0, 3600).await;
    let (a, mut a_events) = connect(&alice, Transport::Tcp).await;
    let (b, mut b_events) = connect(&bob, Transport::WsJson).await;
    let (anon, _) = connect_device(&srv.device().await, Transport::Tcp).await;

    // Without a token, with another user's token, or anonymously: refused, and nothing arrives.
    let refused = |r: Result<tern_client::Joined, tern_client::Error>| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
        e.to_string()
    };
    assert!(refused(b.join("vip").await).contains("room \"vip\" is private"));
    assert!(refused(b.join_with_token("vip", &alice_token).await).contains("not valid for you"));
    assert!(refused(anon.join("vip").await).contains("log in"));
    a.join_with_token("vip", &alice_token).await.unwrap();
    srv.push("/v1/push/rooms/vip", json!({ "data": "members only", "priority": "high" })).await;
    assert_eq!(expect_pushes(&mut a_events, 1).await[0].data, "members only");
    assert!(tokio::time::timeout(std::time::Duration::from_millis(300), b_events.next_push()).await.is_err());

    // An expired token is refused; a fresh one lets bob in.
    let short = token(bob.user_id.0, 1).await;
    // Past its second (whole seconds: up to two after issue) and the second of leeway.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert!(refused(b.join_with_token("vip", &short).await).contains("expired"));
    b.join_with_token("vip", &token(bob.user_id.0, 3600).await).await.unwrap();

    // Revoked: every token issued so far is void for new entries.
    assert_eq!(call(&srv, PUSH_KEY, "DELETE", "/v1/rooms/vip/tokens", None).await.0, 204);
    b.leave().await.unwrap();
    let (a2, _) = connect(&srv.login("alice", "laptop").await, Transport::Tcp).await;
    assert!(refused(a2.join_with_token("vip", &alice_token).await).contains("revoked"));
    a2.join_with_token("vip", &token(alice.user_id.0, 60).await).await.expect("a token issued after the revocation");

    // The room goes public again: anyone may enter.
    call(&srv, PUSH_KEY, "PUT", "/v1/rooms/vip/settings", Some(json!({ "policy": "public" }))).await;
    anon.join("vip").await.unwrap();
    let (s, _) =
        call(&srv, PUSH_KEY, "POST", "/v1/rooms/vip/tokens", Some(json!({ "user_id": 1, "ttl_secs": 0 }))).await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_is_here_pages_the_logged_in_members_and_big_or_private_rooms_are_not_listed() {
    let srv = TestServer::with(|c| c.rooms.members_list_max = 4).await;
    let mut viewers = Vec::new();
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let (c, e, id) = viewer(&srv, name, Transport::Tcp, "small").await;
        viewers.push((c, e));
        ids.push(id);
    }
    let (second, _) = connect(&srv.login("ann", "laptop").await, Transport::WsJson).await;
    second.join("small").await.unwrap(); // one user, two connections
    let (anon, _) = connect_device(&srv.device().await, Transport::Tcp).await;
    anon.join("small").await.unwrap();
    let asker = srv.login("dan", "phone").await;
    let get = |path: String, token: String| {
        let url = format!("{}{path}", srv.url());
        async move {
            let r = tern_client::http::shared_client().get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (s, v) = get("/v1/rooms/small/members?limit=2".into(), asker.token.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["online"].as_u64(), v["users"].as_u64()), (Some(5), Some(3)));
    let page: Vec<u64> = v["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_u64().unwrap()).collect();
    assert_eq!(page, ids[..2]);
    assert_eq!(v["members"][0]["nickname"], "ann");
    let after = v["next_after"].as_u64().unwrap();
    let (_, v) = get(format!("/v1/rooms/small/members?limit=2&after={after}"), PUSH_KEY.into()).await;
    assert_eq!(v["members"][0]["user_id"].as_u64(), Some(ids[2]));
    assert!(v.get("next_after").is_none(), "the last page: {v}");

    // Past rooms.members_list_max the room is counted, not listed.
    for name in ["eve", "fay"] {
        let (c, e, _) = viewer(&srv, name, Transport::Tcp, "small").await;
        viewers.push((c, e));
    }
    let (s, v) = get("/v1/rooms/small/members".into(), asker.token.clone()).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_request")));
    assert!(v["error"]["message"].as_str().unwrap().contains("counted, not listed"), "{v}");
    // A private room lists to its owner only; no credentials at all is 401.
    call(&srv, PUSH_KEY, "PUT", "/v1/rooms/vip/settings", Some(json!({ "policy": "token" }))).await;
    assert_eq!(get("/v1/rooms/vip/members".into(), asker.token.clone()).await.0, 403);
    assert_eq!(get("/v1/rooms/vip/members".into(), PUSH_KEY.into()).await.0, 200);
    assert_eq!(get("/v1/rooms/vip/members".into(), "nonsense".into()).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewers_each_post_and_everyone_gets_every_post_once() {
    const VIEWERS: usize = 200;
    let srv = TestServer::with(|c| c.push.aggregate_window_ms = 50).await;
    let srv = &srv;
    let sessions = futures_util::future::join_all(
        (0..VIEWERS).map(|i| async move { srv.login(&format!("viewer{i}"), "phone").await }),
    )
    .await;
    let mut viewers = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let transport = if i % 2 == 0 { Transport::Tcp } else { Transport::WsBinary };
        let (c, e) = connect(s, transport).await;
        c.join("hot").await.unwrap();
        viewers.push((c, e));
    }
    // Each posts one gift (high) and one danmaku (low), all at once.
    let posts = viewers.iter().enumerate().flat_map(|(i, (c, _))| {
        [
            c.publish("hot", json!({ "gift": i }), Priority::High),
            c.publish("hot", json!({ "danmaku": i }), Priority::Low),
        ]
    });
    for r in futures_util::future::join_all(posts).await {
        r.unwrap();
    }
    let everyone: Vec<u64> = (0..VIEWERS as u64).collect();
    let tasks: Vec<_> = viewers
        .into_iter()
        .map(|(c, mut e)| {
            tokio::spawn(async move {
                let got = expect_pushes(&mut e, 2 * VIEWERS).await;
                drop(c);
                got
            })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap();
        let mut gifts: Vec<u64> = got.iter().filter_map(|p| p.data["gift"].as_u64()).collect();
        let mut danmaku: Vec<u64> = got.iter().filter_map(|p| p.data["danmaku"].as_u64()).collect();
        gifts.sort_unstable();
        danmaku.sort_unstable();
        assert_eq!(gifts, everyone, "every gift once");
        // Nobody fell behind here, so the low lane dropped nothing either.
        assert_eq!(danmaku, everyone, "every danmaku once");
        assert!(got.iter().all(|p| p.from.is_some()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_catches_up_on_the_recent_posts_and_a_returning_one_on_what_it_missed() {
    let srv = TestServer::with(|c| {
        c.push.aggregate_window_ms = 20;
        c.rooms.history_size = 3;
    })
    .await;
    let (poster, mut poster_events, _) = viewer(&srv, "ann", Transport::Tcp, "r").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        poster.publish("r", json!({ "danmaku": i }), Priority::Low).await.unwrap();
        ids.push(expect_pushes(&mut poster_events, 1).await[0].msg_id.0);
    }
    // The SDK: the last three, in order, then live ones, each once.
    let (late, mut late_events) = connect(&srv.login("ben", "phone").await, Transport::WsJson).await;
    late.join_with_history("r").await.unwrap();
    poster.publish("r", json!({ "danmaku": 5 }), Priority::Low).await.unwrap();
    let got: Vec<u64> =
        expect_pushes(&mut late_events, 4).await.iter().map(|p| p.data["danmaku"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![2, 3, 4, 5]);
    let last = expect_pushes(&mut poster_events, 1).await[0].msg_id.0;

    // The protocol: after a push still kept, exactly what followed; after one gone, a gap.
    let cat = srv.login("cat", "phone").await;
    let mut raw = RawWs::open(&srv).await;
    raw.auth(&cat).await;
    for (after, want, gap) in
        [(ids[3], vec![ids[4], last], false), (last, vec![], false), (ids[0], vec![ids[3], ids[4], last], true)]
    {
        raw.send_frame(&tern_proto::ClientFrame::Join { id: 1, room: "r".into(), token: None, recent: Some(after) })
            .await;
        let joined = raw.recv().await.unwrap();
        assert!(matches!(joined, tern_proto::ServerFrame::Joined { .. }), "{joined:?}");
        match raw.recv().await.unwrap() {
            tern_proto::ServerFrame::RoomHistory { room, pushes, gap: g } => {
                assert_eq!(room, "r");
                let got: Vec<u64> = pushes.iter().map(|p| p.msg_id.0).collect();
                assert_eq!((got, g), (want, gap), "after {after}");
            }
            other => panic!("{other:?}"),
        }
        raw.send_frame(&tern_proto::ClientFrame::Leave { id: 2 }).await;
        assert!(matches!(raw.recv().await.unwrap(), tern_proto::ServerFrame::Left { .. }));
    }
    // A room of its own ring size, set by the business server.
    let (s, v) = call(&srv, PUSH_KEY, "PUT", "/v1/rooms/r/settings", Some(json!({ "history_size": 1 }))).await;
    assert_eq!((s, v["history_size"].as_u64()), (200, Some(1)));
    raw.send_frame(&tern_proto::ClientFrame::Join { id: 3, room: "r".into(), token: None, recent: Some(0) }).await;
    raw.recv().await.unwrap();
    match raw.recv().await.unwrap() {
        tern_proto::ServerFrame::RoomHistory { pushes, .. } => {
            assert_eq!(pushes.iter().map(|p| p.msg_id.0).collect::<Vec<_>>(), vec![last]);
        }
        other => panic!("{other:?}"),
    }
}
