//! Regressions for what outside testing found (the smaller items; the larger ones live beside
//! their subject: bad_input.rs, sessions.rs, cli.rs and the store's conformance suite).

mod common;

use common::*;
use tern_client::http::im;
use tern_client::{ConvId, ErrorCode, Transport};
use tern_proto::rest::JoinPolicy;
use tern_proto::{ClientFrame, GroupId, ServerFrame};

/// A stranger sees a profile without its owner's settings; the owner sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_s_message_policy_is_shown_to_its_owner_only() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    // On the wire, as any client reads it: the typed SDK would hide an extra field.
    let get = |who: &tern_client::Session, path: String| {
        let req = reqwest::Client::new().get(format!("{}{path}", srv.url())).bearer_auth(&who.token);
        async move { req.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let seen_by_bob = get(&bob, format!("/v1/users/{}", alice.user_id)).await;
    assert_eq!(seen_by_bob["username"], "alice");
    assert!(seen_by_bob.get("dm_policy").is_none(), "{seen_by_bob}");
    let found = get(&bob, "/v1/users?prefix=ali".into()).await;
    assert!(found[0].get("dm_policy").is_none(), "{found}");
    let own = get(&alice, format!("/v1/users/{}", alice.user_id)).await;
    assert_eq!(own["dm_policy"], "anyone");
    assert_eq!(as_json(im::me(&alice).await.unwrap())["dm_policy"], "anyone");
}

/// A member who is not the owner is told they may not transfer — not that they own the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_owner_transferring_a_group_to_themselves_is_forbidden() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let g = as_json(im::create_group(&alice, "team", JoinPolicy::Open).await.unwrap());
    let id = GroupId(g["group_id"].as_u64().unwrap());
    im::join_group(&bob, id, "").await.unwrap();
    let e = im::transfer(&bob, id, bob.user_id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    let e = im::transfer(&alice, id, alice.user_id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    assert!(e.to_string().contains("already own"), "{e}");
}

/// A member who joined after a message neither read it nor left it unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_read_counts_leave_out_members_who_joined_later() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    let g = as_json(im::create_group(&alice, "team", JoinPolicy::Open).await.unwrap());
    let id = GroupId(g["group_id"].as_u64().unwrap());
    let conv = ConvId::Group(id);
    im::join_group(&bob, id, "").await.unwrap();
    let (a, _ae) = connect(&alice, Transport::Tcp).await;
    let sent = a.send_text_to(conv, "before carol").await.unwrap();
    im::join_group(&carol, id, "").await.unwrap();
    let later = a.send_text_to(conv, "carol is here").await.unwrap();
    // Carol reads everything she can, bob nothing yet.
    im::mark_read(&carol, conv, later.seq).await.unwrap();
    let before = as_json(im::reads(&alice, conv, sent.seq).await.unwrap());
    assert_eq!((before["read"].as_u64(), before["unread"].as_u64()), (Some(0), Some(1)), "only bob could see it");
    let after = as_json(im::reads(&alice, conv, later.seq).await.unwrap());
    assert_eq!((after["read"].as_u64(), after["unread"].as_u64()), (Some(1), Some(1)));
}

/// Reads cost a connection too: history requests are charged by the messages they ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_requests_are_bounded_per_connection() {
    let srv = TestServer::with(|c| c.gateway.max_history_per_sec = 1000).await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let conv = ConvId::direct(alice.user_id, bob.user_id);
    let mut tcp = RawTcp::open(&srv).await;
    assert!(matches!(tcp.auth_with(&alice.token).await, ServerFrame::AuthOk { .. }));
    for id in 1..=40 {
        tcp.send(&ClientFrame::History { id, conv_id: conv, after_seq: Some(0), before_seq: None, limit: Some(500) })
            .await;
    }
    let (mut served, mut limited) = (0, 0);
    for _ in 1..=40 {
        match tcp.recv().await {
            Some(ServerFrame::History { .. }) => served += 1,
            Some(ServerFrame::Error { code: ErrorCode::RateLimited, message, .. }) => {
                assert!(message.contains("1000 messages of history per second"), "{message}");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A burst of 1,000 messages is two requests of 500 (a third may refill in between).
    assert!((2..=3).contains(&served), "served {served}");
    assert_eq!(served + limited, 40);
    // Another connection has its own budget.
    let mut other = RawTcp::open(&srv).await;
    assert!(matches!(other.auth_with(&bob.token).await, ServerFrame::AuthOk { .. }));
    other
        .send(&ClientFrame::History { id: 1, conv_id: conv, after_seq: None, before_seq: None, limit: Some(500) })
        .await;
    assert!(matches!(other.recv().await, Some(ServerFrame::History { .. })));
}
