//! 1:1 chat through the SDK: transports, devices, history.

mod common;

use std::collections::HashSet;

use common::*;
use tern_client::{ConvId, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_and_tcp_clients_chat_both_ways() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "desktop").await;
    let (a, mut a_events) = connect(&alice, Transport::WsJson).await;
    let (b, mut b_events) = connect(&bob, Transport::Tcp).await;

    let s1 = a.send_text(bob.user_id, "hi bob, from websocket").await.unwrap();
    let s2 = b.send_text(alice.user_id, "hi alice, from tcp").await.unwrap();
    let s3 = a.send_text(bob.user_id, "how are you?").await.unwrap();
    assert_eq!((s1.seq, s2.seq, s3.seq), (1, 2, 3), "one conversation, one seq");
    assert_eq!(s1.conv_id, ConvId::direct(alice.user_id, bob.user_id));

    let at_bob = expect_messages(&mut b_events, 2).await;
    assert_eq!(texts(&at_bob), ["hi bob, from websocket", "how are you?"]);
    assert_eq!(at_bob[0].msg_id, s1.msg_id);
    assert_eq!(at_bob[0].from, alice.user_id);
    let at_alice = expect_messages(&mut a_events, 1).await;
    assert_eq!(texts(&at_alice), ["hi alice, from tcp"]);
    assert_eq!(at_alice[0].seq, 2);
    assert_eq!(a.watermarks()[&s1.conv_id], 3, "own sends count towards the watermark");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_the_recipient_and_the_senders_other_devices_receive_once() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let alice_laptop = srv.login("alice", "laptop").await;
    let bob_sessions =
        [srv.login("bob", "phone").await, srv.login("bob", "tablet").await, srv.login("bob", "desktop").await];
    let transports = [Transport::WsJson, Transport::WsBinary, Transport::Tcp];
    let mut bobs = Vec::new();
    for (s, t) in bob_sessions.iter().zip(transports) {
        bobs.push(connect(s, t).await);
    }
    let (a, mut a_events) = connect(&alice, Transport::WsJson).await;
    let (_al, mut laptop_events) = connect(&alice_laptop, Transport::Tcp).await;

    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(a.send_text(bob_sessions[0].user_id, format!("m{i}")).await.unwrap().msg_id);
    }
    for (_, events) in &mut bobs {
        let got = expect_messages(events, 20).await;
        assert_eq!(
            got.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
            sent,
            "each device gets each message once, in order"
        );
        assert_eq!(got.iter().map(|m| m.msg_id).collect::<HashSet<_>>().len(), 20);
    }
    let mirrored = expect_messages(&mut laptop_events, 20).await;
    assert_eq!(mirrored.iter().map(|m| m.msg_id).collect::<Vec<_>>(), sent, "the sender's other device gets a copy");
    expect_quiet(&mut a_events, std::time::Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_both_ways_for_participants() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (a, _ae) = connect(&alice, Transport::WsJson).await;
    for i in 1..=25 {
        a.send_text(bob.user_id, format!("n{i}")).await.unwrap();
    }
    let conv = ConvId::direct(alice.user_id, bob.user_id);
    let page = tern_client::http::history(&bob, conv, Some(10), 5).await.unwrap();
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [11, 12, 13, 14, 15]);
    assert_eq!(page.last_seq, 25);
    let newest = a.history(conv, None, None, 3).await.unwrap();
    assert_eq!(newest.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [25, 24, 23]);
    let older = a.history(conv, None, Some(3), 10).await.unwrap();
    assert_eq!(texts(&older.messages), ["n2", "n1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_the_same_device_replaces_the_first() {
    let srv = TestServer::start().await;
    let bob = srv.login("bob", "phone").await;
    let mut first = RawWs::open(&srv).await;
    assert!(matches!(first.auth(&bob).await, tern_proto::ServerFrame::AuthOk { .. }));
    let (_second, _events) = connect(&bob, Transport::Tcp).await;
    let (reason, _) = first.expect_close().await;
    assert_eq!(reason, tern_proto::CloseReason::Replaced);
}
