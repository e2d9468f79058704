//! Live rooms and the push service, end to end through the SDK and raw peers.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;
use tern_client::{Event, Options, Priority, PushScope, Transport};
use tern_proto::{ClientFrame, CloseReason, ServerFrame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_of_a_1000_connection_room_gets_every_push_once_in_order_per_lane() {
    let srv = TestServer::with(|c| c.push.aggregate_window_ms = 50).await;
    let mut members = Vec::new();
    for i in 0..1000 {
        let transport = if i % 2 == 0 { Transport::Tcp } else { Transport::WsBinary };
        let (client, events) = connect_device(&srv.device().await, transport).await;
        client.join("hot").await.unwrap();
        members.push((client, events));
    }
    assert_eq!(srv.room_online("hot").await, 1000);

    let (mut low, mut high) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let prio = if i % 4 == 0 { "high" } else { "low" };
        let id = srv.push("/v1/push/rooms/hot", json!({ "data": { "n": i }, "priority": prio })).await;
        if prio == "high" { high.push(id) } else { low.push(id) }
    }
    let tasks: Vec<_> = members
        .into_iter()
        .map(|(client, mut events)| {
            tokio::spawn(async move {
                let got = expect_pushes(&mut events, 40).await;
                drop(client);
                got
            })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap();
        let ids = |p: Priority| got.iter().filter(|x| x.priority == p).map(|x| x.msg_id.0).collect::<Vec<_>>();
        assert_eq!(ids(Priority::Low), low, "low lane: each once, in order");
        assert_eq!(ids(Priority::High), high, "high lane: each once, in order");
        assert!(got.iter().all(|p| p.scope == PushScope::Room { room: "hot".into() }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_device_area_and_global_pushes_reach_exactly_the_right_connections() {
    let srv = TestServer::with(|c| c.push.aggregate_window_ms = 20).await;
    let alice_phone = srv.login("alice", "phone").await;
    let alice_laptop = srv.login("alice", "laptop").await;
    let bob = srv.login("bob", "phone").await;
    let anon = srv.device().await;
    let lurker = srv.device().await; // connected, in no room
    let (_a1, mut a1) = connect(&alice_phone, Transport::Tcp).await;
    let (_a2, mut a2) = connect(&alice_laptop, Transport::WsJson).await;
    let (b_client, mut b) = connect(&bob, Transport::WsBinary).await;
    let (d_client, mut d) = connect_device(&anon, Transport::Tcp).await;
    let (_l, mut l) = connect_device(&lurker, Transport::WsJson).await;
    let put = |room: &str, area: &str| {
        let body = json!({ "area": area });
        let url = format!("{}/v1/rooms/{room}", srv.url());
        async move {
            let r = reqwest::Client::new().put(url).bearer_auth(PUSH_KEY).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    put("g1", "games").await;
    put("m1", "music").await;
    b_client.join("g1").await.unwrap();
    let joined = d_client.join("m1").await.unwrap();
    assert_eq!(joined.area, "music");

    let alice = alice_phone.user_id.0;
    srv.push("/v1/push/users", json!({ "users": [alice], "data": "to alice" })).await;
    srv.push(
        "/v1/push/devices",
        json!({ "devices": [{ "user_id": alice, "device_id": "laptop" }], "data": "to laptop" }),
    )
    .await;
    srv.push("/v1/push/devices", json!({ "devices": [{ "device_id": anon.device_id.0 }], "data": "to anon" })).await;
    srv.push("/v1/push/areas/games", json!({ "data": "to games" })).await;
    srv.push("/v1/push/all", json!({ "data": "to all" })).await;

    let data =
        |ps: Vec<tern_client::Push>| ps.into_iter().map(|p| p.data.as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(data(expect_pushes(&mut a1, 2).await), ["to alice", "to all"]);
    assert_eq!(data(expect_pushes(&mut a2, 3).await), ["to alice", "to laptop", "to all"]);
    assert_eq!(data(expect_pushes(&mut b, 2).await), ["to games", "to all"]);
    assert_eq!(data(expect_pushes(&mut d, 2).await), ["to anon", "to all"]);
    assert_eq!(data(expect_pushes(&mut l, 1).await), ["to all"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enter_and_leave_are_idempotent_and_online_counts_follow_switch_close_and_silent_death() {
    let srv = TestServer::with(|c| {
        c.rooms.online_interval_ms = 150;
        c.gateway.heartbeat_ms = 200;
        c.gateway.max_missed_heartbeats = 2;
    })
    .await;
    let (a, mut a_events) = connect_device(&srv.device().await, Transport::Tcp).await;
    assert_eq!(a.join("r1").await.unwrap().online, 1);
    assert_eq!(a.join("r1").await.unwrap().online, 1, "a second enter is not counted");
    let (b, _be) = connect_device(&srv.device().await, Transport::WsJson).await;
    assert_eq!(b.join("r1").await.unwrap().online, 2);
    // The room is told its count periodically.
    let online = wait_event(&mut a_events, |e| matches!(e, Event::Online { count: 2, .. })).await;
    assert_eq!(online, Event::Online { room: "r1".into(), count: 2 });

    // Switching rooms without reconnecting.
    assert_eq!(b.join("r2").await.unwrap().online, 1);
    assert_eq!((srv.room_online("r1").await, srv.room_online("r2").await), (1, 1));
    assert_eq!(b.leave().await.unwrap().as_deref(), Some("r2"));
    assert_eq!(b.leave().await.unwrap(), None);
    assert_eq!(srv.room_online("r2").await, 0);

    // A connection that dies silently leaves when its heartbeat runs out.
    let device = srv.device().await;
    let mut raw = RawTcp::open(&srv).await;
    assert!(matches!(raw.auth_with(&device.token).await, ServerFrame::AuthOk { user_id: None, .. }));
    raw.send_frame(&ClientFrame::Join { id: 1, room: "r1".into(), token: None, recent: None }).await;
    assert!(matches!(raw.recv().await, Some(ServerFrame::Joined { online: 2, .. })));
    let mut waited = 0;
    while srv.room_online("r1").await != 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        assert!(waited < 100, "silent member never left");
    }
    // A closed connection leaves at once.
    a.close().await;
    let mut waited = 0;
    while srv.room_online("r1").await != 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
        assert!(waited < 100, "closed member never left");
    }
    let stats = srv.server.gateway().registry().stats();
    use std::sync::atomic::Ordering::Relaxed;
    // Enters: a→r1, b→r1, b→r2, raw→r1. Leaves: b←r1 (switch), b←r2, raw←r1, a←r1.
    assert_eq!((stats.room_enters.load(Relaxed), stats.room_leaves.load(Relaxed)), (4, 4));
    let total: serde_json::Value =
        reqwest::get(format!("{}/v1/online", srv.url())).await.unwrap().json().await.unwrap();
    assert_eq!(total["online"], 1, "only b is still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_batches_are_compressed_once_for_clients_that_accept_brotli() {
    let srv = TestServer::with(|c| {
        c.push.aggregate_window_ms = 300;
        c.push.aggregate_max = 1000;
        c.push.compress_over_bytes = 256;
    })
    .await;
    let mut raw_br = RawTcp::open(&srv).await;
    let mut raw_plain = RawTcp::open(&srv).await;
    for (raw, accept) in [(&mut raw_br, vec!["br".to_owned()]), (&mut raw_plain, vec![])] {
        let device = srv.device().await;
        raw.send_frame(&ClientFrame::Auth {
            token: device.token,
            proto: None,
            resume: None,
            accept_compression: accept,
        })
        .await;
        assert!(matches!(raw.recv().await, Some(ServerFrame::AuthOk { .. })));
        raw.send_frame(&ClientFrame::Join { id: 1, room: "live".into(), token: None, recent: None }).await;
        assert!(matches!(raw.recv().await, Some(ServerFrame::Joined { .. })));
    }
    let sdk_opts = |transport, accept_brotli| Options { transport, accept_brotli, resume: false, ..Options::default() };
    let mut sdk = Vec::new();
    for (t, br) in [(Transport::WsJson, true), (Transport::WsBinary, true), (Transport::Tcp, false)] {
        let (c, e) = tern_client::Client::connect_device(srv.device().await, sdk_opts(t, br)).await.unwrap();
        c.join("live").await.unwrap();
        sdk.push((c, e));
    }
    let mut sent = Vec::new();
    for i in 0..50 {
        let data = json!({ "user": format!("viewer{}", i % 7), "text": "666666 what a play!!", "color": "#ffffff" });
        sent.push((srv.push("/v1/push/rooms/live", json!({ "data": data })).await, data));
    }
    // The compressed client gets one compressed frame holding the batch.
    let payload = raw_br.recv_payload().await;
    assert_eq!(&payload[..2], &[0x00, 0x01], "a brotli frame");
    let opened = tern_proto::codec::compression::open(&payload, 1 << 20).unwrap();
    let batch: ServerFrame = tern_proto::Codec::MsgPack.decode(&opened).unwrap();
    let plain_payload = raw_plain.recv_payload().await;
    assert!(plain_payload.len() > payload.len() * 3, "{} vs {}", plain_payload.len(), payload.len());
    let plain: ServerFrame = tern_proto::Codec::MsgPack.decode(&plain_payload).unwrap();
    assert_eq!(batch, plain, "the same batch, compressed or not");
    let ServerFrame::Batch { pushes, .. } = batch else { panic!("expected a batch") };
    let pairs: Vec<_> = pushes.iter().map(|p| (p.msg_id.0, p.data.clone())).collect();
    assert_eq!(pairs, sent);
    for (_c, events) in &mut sdk {
        let got = expect_pushes(events, 50).await;
        assert_eq!(got.iter().map(|p| (p.msg_id.0, p.data.clone())).collect::<Vec<_>>(), sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_loses_only_low_pushes_and_is_cut_off_past_the_limit_without_delaying_others() {
    let srv = TestServer::with(|c| {
        c.push.aggregate = false;
        c.push.max_payload_bytes = 64 * 1024;
        c.gateway.low_queue = 16;
        c.gateway.slow_consumer_ms = 8000;
        c.gateway.heartbeat_ms = 10_000;
    })
    .await;
    let (fast, mut fast_events) = connect_device(&srv.device().await, Transport::Tcp).await;
    fast.join("r").await.unwrap();
    let mut stalled = RawTcp::open(&srv).await;
    let device = srv.device().await;
    stalled
        .send_frame(&ClientFrame::Auth { token: device.token, proto: None, resume: None, accept_compression: vec![] })
        .await;
    assert!(matches!(stalled.recv().await, Some(ServerFrame::AuthOk { .. })));
    stalled.send_frame(&ClientFrame::Join { id: 1, room: "r".into(), token: None, recent: None }).await;
    assert!(matches!(stalled.recv().await, Some(ServerFrame::Joined { .. })));
    // Shrink what the kernel buffers for the stalled reader, so its socket fills quickly.
    let blob = "x".repeat(60_000);
    let mut high = Vec::new();
    let mut low = Vec::new();
    // Paced by the reading member (ten at a time), so only the stalled one falls behind even on
    // a loaded machine: the reading member gets everything while the other one is stalled.
    let mut got = Vec::new();
    for i in 0..300u64 {
        let prio = if i % 50 == 0 { "high" } else { "low" };
        let id = srv.push("/v1/push/rooms/r", json!({ "data": { "i": i, "blob": blob }, "priority": prio })).await;
        if prio == "high" {
            high.push(id)
        } else {
            low.push(id)
        }
        while i % 10 == 9 && (got.len() as u64) <= i {
            let p = tokio::time::timeout(WAIT, fast_events.next_push()).await.expect("the reading member keeps up");
            got.push(p.unwrap().data["i"].as_u64().unwrap());
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..300).collect::<Vec<_>>(), "each once, none dropped");
    let dropped = srv.server.gateway().registry().stats().low_dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped > 0, "the stalled member's low lane overflowed");

    // The stalled member resumes reading before the cut-off: every high push is there, low ones
    // arrive in order with gaps, nothing twice.
    let mut seen_high = Vec::new();
    let mut seen_low = Vec::new();
    while seen_high.len() < high.len() {
        match stalled.recv().await {
            Some(ServerFrame::Push(p)) if p.priority == Priority::High => seen_high.push(p.msg_id.0),
            Some(ServerFrame::Push(p)) => seen_low.push(p.msg_id.0),
            Some(ServerFrame::Online { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen_high, high);
    assert!(seen_low.len() < low.len());
    assert!(seen_low.windows(2).all(|w| w[0] < w[1]));
    assert!(seen_low.iter().all(|id| low.contains(id)));

    // A member that stops reading again is cut off once the limit passes, and when it reads
    // again its last frame says why: the cut drops the backlog not yet begun, so the `close`
    // frame is not stuck behind it.
    for i in 0..200 {
        srv.push("/v1/push/rooms/r", json!({ "data": { "i": i, "blob": blob } })).await;
    }
    let mut waited = 0;
    while srv.server.gateway().close_counts().get(&CloseReason::SlowConsumer) != Some(&1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        srv.push("/v1/push/rooms/r", json!({ "data": "tick" })).await;
        waited += 1;
        assert!(waited < 200, "the stalled member was never cut off");
    }
    assert_eq!(srv.room_online("r").await, 1, "only the reading member is left");
    let mut last = None;
    while let Some(frame) = stalled.recv().await {
        last = Some(frame);
    }
    match last {
        Some(ServerFrame::Close { reason: CloseReason::SlowConsumer, retry_after_ms: Some(_), .. }) => {}
        other => panic!("the stream should end with a slow_consumer close, ended with {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_api_refuses_bad_keys_scopes_rates_sizes_and_bodies_and_nothing_reaches_clients() {
    let srv = TestServer::start().await;
    let (client, mut events) = connect_device(&srv.device().await, Transport::Tcp).await;
    client.join("r").await.unwrap();
    let bob = srv.login("bob", "phone").await;
    let (_b, mut bob_events) = connect(&bob, Transport::WsJson).await;

    let (s, created) = srv
        .push_api(
            PUSH_KEY,
            "/v1/admin/keys",
            json!({ "name": "rooms only", "scopes": ["rooms"], "rate_per_sec": 1, "burst": 2 }),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let rooms_key = created["key"].as_str().unwrap().to_owned();
    let (_, revoked) = srv.push_api(PUSH_KEY, "/v1/admin/keys", json!({ "name": "old", "scopes": ["all"] })).await;
    let revoked_key = revoked["key"].as_str().unwrap().to_owned();
    let del = reqwest::Client::new()
        .delete(format!("{}/v1/admin/keys/{}", srv.url(), revoked["key_id"].as_str().unwrap()))
        .bearer_auth(PUSH_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);

    let room = |data: serde_json::Value| json!({ "data": data });
    let cases: Vec<(&str, &str, serde_json::Value, u16, &str)> = vec![
        ("nope", "/v1/push/rooms/r", room(json!(1)), 401, "unauthorized"),
        ("tk_000000000000_0000", "/v1/push/rooms/r", room(json!(1)), 401, "unauthorized"),
        (&revoked_key, "/v1/push/all", room(json!(1)), 401, "unauthorized"),
        (&rooms_key, "/v1/push/users", json!({ "users": [bob.user_id.0], "data": 1 }), 403, "forbidden"),
        (&rooms_key, "/v1/push/all", room(json!(1)), 403, "forbidden"),
        (&rooms_key, "/v1/admin/keys", json!({ "name": "x", "scopes": ["all"] }), 429, "rate_limited"),
        (PUSH_KEY, "/v1/push/rooms/r", room(json!("x".repeat(5000))), 413, "body_too_large"),
        (PUSH_KEY, "/v1/push/rooms/r", json!({ "dta": 1 }), 400, "bad_request"),
        (PUSH_KEY, "/v1/push/rooms/r", json!({ "data": 1, "qos": 7 }), 400, "bad_request"),
        (PUSH_KEY, "/v1/push/rooms/bad%20room", room(json!(1)), 400, "bad_request"),
        (PUSH_KEY, "/v1/push/users", json!({ "users": [], "data": 1 }), 400, "bad_request"),
        (PUSH_KEY, "/v1/admin/keys", json!({ "name": "x", "scopes": ["root"] }), 400, "bad_request"),
    ];
    for (key, path, body, status, code) in cases {
        let (s, v) = srv.push_api(key, path, body.clone()).await;
        assert_eq!((s, v["error"]["code"].as_str()), (status, Some(code)), "{path} {body}: {v}");
    }
    // The rate limit answers with Retry-After.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/push/rooms/r", srv.url()))
        .bearer_auth(&rooms_key)
        .json(&room(json!(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).is_some_and(|v| v.parse::<u64>().unwrap() >= 1)
    );
    let malformed = reqwest::Client::new()
        .post(format!("{}/v1/push/all", srv.url()))
        .bearer_auth(PUSH_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    // None of that reached anyone; a valid push still does.
    srv.push("/v1/push/all", json!({ "data": "only this" })).await;
    let got = expect_pushes(&mut events, 1).await;
    assert_eq!(got[0].data, json!("only this"));
    let got = expect_pushes(&mut bob_events, 1).await;
    assert_eq!(got[0].data, json!("only this"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_devices_cannot_chat_and_device_tokens_refresh_to_the_same_device() {
    let srv = TestServer::start().await;
    let bob = srv.login("bob", "phone").await;
    let device = srv.device().await;
    let mut ws = RawWs::open(&srv).await;
    assert!(matches!(ws.auth_with(&device.token).await, ServerFrame::AuthOk { user_id: None, .. }));
    ws.send_frame(&ClientFrame::Send {
        id: 1,
        to: Some(bob.user_id),
        conv_id: None,
        client_msg_id: "x".into(),
        body: tern_proto::Body::Text { text: "hi".into() },
    })
    .await;
    assert!(matches!(
        ws.recv().await,
        Some(ServerFrame::Error { id: Some(1), code: tern_proto::ErrorCode::Forbidden, .. })
    ));
    // A device token is not a user login for REST either.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/users/by-name/bob", srv.url()))
        .bearer_auth(&device.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Refreshing keeps the device id; a fresh request makes a new one.
    let refreshed: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/devices", srv.url()))
        .bearer_auth(&device.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["device_id"], device.device_id.0.as_str());
    let other = srv.device().await;
    assert_ne!(other.device_id, device.device_id);
    let ids: HashSet<_> = [device.device_id.0.clone(), other.device_id.0.clone()].into_iter().collect();
    assert_eq!(ids.len(), 2);
}
