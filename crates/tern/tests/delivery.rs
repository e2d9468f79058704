//! The delivery model: idempotent resends, ACK-driven retries, ack timeout.

mod common;

use std::time::Duration;

use common::*;
use tern_client::{Body, ConvId, Transport};
use tern_proto::{ClientFrame, CloseReason, ServerFrame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_client_msg_id_returns_the_original_and_stores_nothing() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (b, mut be) = connect(&bob, Transport::Tcp).await;
    let (a, _ae) = connect(&alice, Transport::WsJson).await;
    let body = Body::Text { text: "only once".into() };
    let first = a.send(bob.user_id, body.clone(), "key-1".into()).await.unwrap();
    // The ACK was "lost": the client sends the same key again, on another transport too.
    let again = a.send(bob.user_id, body.clone(), "key-1".into()).await.unwrap();
    let (a2, _a2e) = connect(&srv.login("alice", "laptop").await, Transport::Tcp).await;
    let third = a2.send(bob.user_id, Body::Text { text: "different text".into() }, "key-1".into()).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate && third.duplicate);
    assert_eq!((again.msg_id, again.seq), (first.msg_id, first.seq));
    assert_eq!((third.msg_id, third.seq), (first.msg_id, first.seq));

    let got = expect_messages(&mut be, 1).await;
    assert_eq!(got[0].msg_id, first.msg_id);
    let conv = ConvId::direct(alice.user_id, bob.user_id);
    let page = b.history(conv, Some(0), None, 100).await.unwrap();
    assert_eq!(page.messages.len(), 1, "one stored copy");
    assert_eq!(page.last_seq, 1);
    // A new key is a new message with the next seq.
    let next = a.send(bob.user_id, body, "key-2".into()).await.unwrap();
    assert_eq!(next.seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_pushes_are_retried_then_the_connection_is_closed_for_resume() {
    let srv = TestServer::with(|c| {
        c.gateway.retry_initial_ms = 100;
        c.gateway.retry_max_ms = 200;
        c.gateway.push_ttl_ms = 700;
    })
    .await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (a, _ae) = connect(&alice, Transport::WsJson).await;

    // An acking device gets each push once.
    let mut good = RawWs::open(&srv).await;
    good.auth(&bob).await;
    let s1 = a.send_text(bob.user_id, "acked").await.unwrap();
    let Some(ServerFrame::Msg(m)) = good.recv().await else { panic!("push expected") };
    assert_eq!(m.msg_id, s1.msg_id);
    good.send_frame(&ClientFrame::Ack { msg_ids: vec![m.msg_id] }).await;
    good.send_frame(&ClientFrame::Ping).await;
    assert_eq!(good.recv().await, Some(ServerFrame::Pong), "no resend of an acked push");
    tokio::time::sleep(Duration::from_millis(300)).await;
    good.send_frame(&ClientFrame::Ping).await;
    assert_eq!(good.recv().await, Some(ServerFrame::Pong), "still no resend");
    drop(good);

    // A device that never acks sees the same push again, with backoff, then is told to resume.
    let mut lazy = RawWs::open(&srv).await;
    lazy.auth(&srv.login("bob", "tablet").await).await;
    let s2 = a.send_text(bob.user_id, "unacked").await.unwrap();
    let mut copies = 0;
    let reason = loop {
        match lazy.recv().await {
            Some(ServerFrame::Msg(m)) => {
                assert_eq!(m.msg_id, s2.msg_id);
                copies += 1;
                lazy.send_frame(&ClientFrame::Ping).await;
            }
            Some(ServerFrame::Pong) => {}
            Some(ServerFrame::Close { reason, .. }) => break reason,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(reason, CloseReason::AckTimeout);
    // Sent at 0, retried at ~100, ~300, ~500 ms; expired at 700 ms.
    assert!((3..=5).contains(&copies), "{copies} copies");
}
