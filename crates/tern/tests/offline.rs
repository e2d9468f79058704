//! Offline delivery and resume: exactly what was missed, in order, no duplicates, via pushes or
//! gap + history.

mod common;

use common::*;
use tern_client::{ConvId, Options, Transport};

async fn offline_then_connect(resume_push_limit: u64) {
    let srv = TestServer::with(|c| c.gateway.resume_push_limit = resume_push_limit).await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    let (a, _ae) = connect(&alice, Transport::Tcp).await;
    let (c, _ce) = connect(&carol, Transport::WsBinary).await;
    // Some history bob already has.
    let mut before = Vec::new();
    for i in 0..5 {
        before.push(a.send_text(bob.user_id, format!("old{i}")).await.unwrap());
    }
    let conv = ConvId::direct(alice.user_id, bob.user_id);
    // 1,000 messages while bob is offline, sent with 50 in flight at a time.
    let mut expected = Vec::new();
    for chunk in 0..20 {
        let sends = (0..50).map(|i| a.send_text(bob.user_id, format!("m{}", chunk * 50 + i)));
        for s in futures_util::future::join_all(sends).await {
            expected.push(s.unwrap());
        }
    }
    let from_carol = c.send_text(bob.user_id, "carol too").await.unwrap();
    expected.sort_by_key(|s| s.seq);

    let opts =
        Options { transport: Transport::WsJson, watermarks: [(conv, 5)].into_iter().collect(), ..Options::default() };
    let (b, mut events) = tern_client::Client::connect(bob.clone(), opts).await.unwrap();
    let got = expect_messages(&mut events, 1001).await;
    let from_alice: Vec<_> = got.iter().filter(|m| m.conv_id == conv).collect();
    assert_eq!(from_alice.len(), 1000);
    assert_eq!(
        from_alice.iter().map(|m| (m.msg_id, m.seq)).collect::<Vec<_>>(),
        expected.iter().map(|s| (s.msg_id, s.seq)).collect::<Vec<_>>(),
        "exactly the missed messages, in seq order"
    );
    assert_eq!(from_alice.first().map(|m| m.seq), Some(6));
    let carols: Vec<_> = got.iter().filter(|m| m.conv_id != conv).collect();
    assert_eq!(carols.len(), 1);
    assert_eq!(carols[0].msg_id, from_carol.msg_id);
    assert_eq!(b.watermarks()[&conv], 1005);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_exactly_the_missed_messages_pushed() {
    offline_then_connect(5000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_gets_exactly_the_missed_messages_through_a_gap_and_history() {
    offline_then_connect(100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_client_catches_up_without_duplicates() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (a, _ae) = connect(&alice, Transport::WsJson).await;
    let (b, mut events) = connect(&bob, Transport::Tcp).await;
    for i in 0..10 {
        a.send_text(bob.user_id, format!("live{i}")).await.unwrap();
    }
    let live = expect_messages(&mut events, 10).await;
    let marks = b.watermarks();
    b.close().await;
    for i in 0..10 {
        a.send_text(bob.user_id, format!("missed{i}")).await.unwrap();
    }
    let opts = Options { transport: Transport::WsBinary, watermarks: marks, ..Options::default() };
    let (_b2, mut events2) = tern_client::Client::connect(bob.clone(), opts).await.unwrap();
    let missed = expect_messages(&mut events2, 10).await;
    assert_eq!(texts(&missed), (0..10).map(|i| format!("missed{i}")).collect::<Vec<_>>());
    assert_eq!(missed[0].seq, live[9].seq + 1);
}
