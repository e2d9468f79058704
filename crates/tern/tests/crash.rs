//! The server process is SIGKILLed in the middle of a stream of sends and restarted on the same
//! data directory: every ACKed message is delivered exactly once, in order; nothing is
//! duplicated; seqs stay gap-free — with clients on TCP and WebSocket, and on every transport
//! (TLS, QUIC, SSE, long-poll) too.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::PASSWORD;
use common::as_json;
use tern_client::{Body, Client, ConvId, Options, Sent, Transport};
use tern_proto::rest::JoinPolicy;
use tokio::process::{Child, Command};

struct Node {
    child: Child,
}

async fn start(dir: &std::path::Path, http: u16, tcp: u16) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(["serve", "--data-dir"]).arg(dir).args([
        "--http",
        &format!("127.0.0.1:{http}"),
        "--tcp",
        &format!("127.0.0.1:{tcp}"),
    ]);
    Node { child: common::spawn_serve(&mut cmd).await }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acked_message_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (common::free_port(), common::free_port());
    let url = format!("http://127.0.0.1:{http}");
    let mut node = start(dir.path(), http, tcp).await;

    tern_client::http::register(&url, "alice", PASSWORD).await.unwrap();
    tern_client::http::register(&url, "bob", PASSWORD).await.unwrap();
    let alice = tern_client::http::login(&url, "alice", PASSWORD, "phone").await.unwrap();
    let bob = tern_client::http::login(&url, "bob", PASSWORD, "phone").await.unwrap();
    let fast_reconnect = |transport| Options {
        transport,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..Options::default()
    };
    let (a, _ae) = Client::connect(alice.clone(), fast_reconnect(Transport::Tcp)).await.unwrap();
    let (_b, mut be) = Client::connect(bob.clone(), fast_reconnect(Transport::WsJson)).await.unwrap();

    const TOTAL: usize = 600;
    const WINDOW: usize = 16;
    // (client_msg_id, ack) in the order acks arrived; and which acks came before each kill.
    let acked = common::Acked::default();
    let sender = common::spawn_windowed_sends(
        a.clone(),
        bob.user_id,
        TOTAL,
        WINDOW,
        Duration::from_millis(2),
        Arc::clone(&acked),
    );

    let mut acked_before_kills = Vec::new();
    for cycle in 0..2 {
        let threshold = (cycle + 1) * TOTAL / 3;
        while acked.lock().unwrap().len() < threshold {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node.child.kill().await.unwrap(); // SIGKILL
        let snapshot = acked.lock().unwrap().clone();
        acked_before_kills.push(snapshot);
        node = start(dir.path(), http, tcp).await;
    }
    tokio::time::timeout(Duration::from_secs(60), sender).await.expect("all sends acknowledged").unwrap();

    // Bob receives every message exactly once, in seq order.
    let mut received = Vec::new();
    while received.len() < TOTAL {
        let m = tokio::time::timeout(Duration::from_secs(30), be.next_message())
            .await
            .unwrap_or_else(|_| panic!("bob has {} of {TOTAL}", received.len()))
            .unwrap();
        received.push(m);
    }
    common::expect_quiet(&mut be, Duration::from_millis(500)).await;
    let seqs: Vec<u64> = received.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=TOTAL as u64).collect::<Vec<_>>(), "in order, gap-free, once each");
    let keys: HashSet<&str> = received.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(keys.len(), TOTAL, "no client_msg_id delivered twice");

    // Every ACK given before a kill still holds: same msg_id and seq after the restarts.
    let by_key: BTreeMap<&str, (u64, u64)> =
        received.iter().map(|m| (m.client_msg_id.as_str(), (m.msg_id.0, m.seq))).collect();
    for snapshot in &acked_before_kills {
        assert!(!snapshot.is_empty());
        for (key, sent) in snapshot {
            assert_eq!(by_key.get(key.as_str()), Some(&(sent.msg_id.0, sent.seq)), "{key} changed or vanished");
        }
    }
    // Every final ACK matches what was delivered.
    for (key, sent) in acked.lock().unwrap().iter() {
        assert_eq!(by_key.get(key.as_str()), Some(&(sent.msg_id.0, sent.seq)));
    }
    // And the store holds exactly one copy of each.
    let conv = ConvId::direct(alice.user_id, bob.user_id);
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = tern_client::http::history(&bob, conv, Some(after), 500).await.unwrap();
        let Some(last) = page.messages.last() else {
            break;
        };
        after = last.seq;
        stored.extend(page.messages);
    }
    assert_eq!(stored.len(), TOTAL);
}

/// One stream of sends with a window; records each ACK as it arrives.
fn spawn_sender(
    client: Client,
    to: tern_client::ConvId,
    prefix: &'static str,
    total: usize,
    acked: Arc<Mutex<Vec<(String, Sent)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sem = Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = Vec::new();
        for i in 0..total {
            let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
            let (client, acked) = (client.clone(), Arc::clone(&acked));
            tasks.push(tokio::spawn(async move {
                let key = format!("{prefix}{i}");
                let body = Body::Text { text: format!("{prefix} {i}") };
                let sent = client.send_to(to, body, key.clone()).await.unwrap();
                acked.lock().unwrap().push((key, sent));
                drop(permit);
            }));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
}

/// The text messages a device receives, per conversation, until it has `want` of each; then
/// checks nothing more arrives (no duplicate reached the app), nothing arrived in other
/// conversations, no range was reported missing, and each conversation's messages came in
/// strictly increasing seq order. A failure prints the
/// device's whole event log (messages as seq/key, connects, missing ranges) to explain itself.
async fn receive_all(events: &mut tern_client::Events, want: &[(ConvId, usize)]) {
    use tern_client::Event;
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut log: Vec<String> = Vec::new();
    let done =
        |got: &BTreeMap<String, Vec<u64>>| want.iter().all(|(c, n)| got.get(&c.to_string()).map_or(0, Vec::len) >= *n);
    let mut quiet_from = None;
    loop {
        let wait = if quiet_from.is_some() { Duration::from_millis(500) } else { Duration::from_secs(60) };
        let event = match tokio::time::timeout(wait, events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("event stream ended\n{}", log.join("\n")),
            Err(_) if quiet_from.is_some() => break,
            Err(_) => panic!("still missing messages: {:?}\n{}", counts(&got), log.join("\n")),
        };
        match event {
            Event::Message(m) if matches!(m.body, Body::Text { .. }) => {
                log.push(format!("msg {} seq {} key {} id {}", m.conv_id, m.seq, m.client_msg_id, m.msg_id.0));
                if quiet_from.is_some() {
                    panic!("unexpected extra message {m:?}\n{}", log.join("\n"));
                }
                got.entry(m.conv_id.to_string()).or_default().push(m.seq);
            }
            Event::Missing { conv_id, from_seq, to_seq } => {
                panic!("{conv_id}: {from_seq}..={to_seq} reported missing\n{}", log.join("\n"))
            }
            Event::Connected { conn_id } => log.push(format!("connected {conn_id}")),
            Event::Disconnected { reason, .. } => log.push(format!("disconnected {reason:?}")),
            Event::Synced => log.push("synced".into()),
            _ => {}
        }
        if quiet_from.is_none() && done(&got) {
            quiet_from = Some(());
        }
    }
    let wanted: HashSet<String> = want.iter().map(|(c, _)| c.to_string()).collect();
    for conv in got.keys() {
        // The sender's own messages never come back to its device, not even when the answer to
        // a send was lost in a crash and the resume replays the stored message first.
        assert!(wanted.contains(conv), "{conv}: messages this device did not expect\n{}", log.join("\n"));
    }
    for (conv, n) in want {
        let seqs = &got[&conv.to_string()];
        assert_eq!(seqs.len(), *n, "{conv}: each message once\n{}", log.join("\n"));
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{conv}: in seq order\n{}", log.join("\n"));
    }
}

fn counts(got: &BTreeMap<String, Vec<u64>>) -> Vec<(&String, usize)> {
    got.iter().map(|(c, v)| (c, v.len())).collect()
}

// This test found that a sender's device got its own message back once when a crash lost the
// answer to a send and the resume replayed the stored message before the resend was answered
// (7 of 30 local runs); the SDK now recognises its unanswered sends (`Driver::is_unanswered_send`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_and_restarts_under_one_to_one_and_group_load_lose_nothing_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (http, tcp) = (common::free_port(), common::free_port());
    let url = format!("http://127.0.0.1:{http}");
    let mut node = start(dir.path(), http, tcp).await;
    for name in ["alice", "bob", "carol"] {
        tern_client::http::register(&url, name, PASSWORD).await.unwrap();
    }
    let alice = tern_client::http::login(&url, "alice", PASSWORD, "phone").await.unwrap();
    let bob = tern_client::http::login(&url, "bob", PASSWORD, "phone").await.unwrap();
    let carol = tern_client::http::login(&url, "carol", PASSWORD, "laptop").await.unwrap();
    let group = as_json(tern_client::http::im::create_group(&alice, "crash", JoinPolicy::Open).await.unwrap());
    let gid = tern_client::GroupId(group["group_id"].as_u64().unwrap());
    for u in [bob.user_id, carol.user_id] {
        tern_client::http::im::invite(&alice, gid, u).await.unwrap();
    }
    let fast = |transport| Options {
        transport,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..Options::default()
    };
    let (a, mut a_events) = Client::connect(alice.clone(), fast(Transport::Tcp)).await.unwrap();
    let (_b, mut b_events) = Client::connect(bob.clone(), fast(Transport::WsJson)).await.unwrap();
    let (c, _c_events) = Client::connect(carol.clone(), fast(Transport::WsBinary)).await.unwrap();

    const DIRECT: usize = 700;
    const IN_GROUP: usize = 700;
    const CYCLES: usize = 20;
    let direct = ConvId::direct(alice.user_id, bob.user_id);
    let in_group = ConvId::Group(gid);
    let acked: Arc<Mutex<Vec<(String, Sent)>>> = Arc::default();
    let senders = [
        spawn_sender(a.clone(), direct, "d", DIRECT, Arc::clone(&acked)),
        spawn_sender(c.clone(), in_group, "g", IN_GROUP, Arc::clone(&acked)),
    ];

    // 20 crashes spread over the run; every fifth stop is a SIGTERM (graceful) instead.
    let mut acked_before = Vec::new();
    for cycle in 1..=CYCLES {
        let threshold = cycle * (DIRECT + IN_GROUP) / (CYCLES + 2);
        while acked.lock().unwrap().len() < threshold {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if cycle % 5 == 0 {
            let pid = node.child.id().unwrap().to_string();
            Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
            tokio::time::timeout(Duration::from_secs(10), node.child.wait()).await.expect("exits on SIGTERM").unwrap();
        } else {
            node.child.kill().await.unwrap(); // SIGKILL
        }
        acked_before.push(acked.lock().unwrap().clone());
        node = start(dir.path(), http, tcp).await;
    }
    for s in senders {
        tokio::time::timeout(Duration::from_secs(120), s).await.expect("every send acknowledged").unwrap();
    }

    // Bob: every 1:1 and group message once, in seq order; alice: every group message.
    receive_all(&mut b_events, &[(direct, DIRECT), (in_group, IN_GROUP)]).await;
    receive_all(&mut a_events, &[(in_group, IN_GROUP)]).await;

    // The stores: each stream holds exactly its messages, gap-free, one copy per key, and every
    // ACK ever given (before any of the kills, and at the end) names the stored msg_id and seq.
    let mut stored = BTreeMap::new();
    for (conv, reader) in [(direct, &bob), (in_group, &bob)] {
        let mut after = 0;
        let mut seqs = Vec::new();
        loop {
            let page = tern_client::http::history(reader, conv, Some(after), 500).await.unwrap();
            let Some(last) = page.messages.last() else { break };
            after = last.seq;
            for m in page.messages {
                seqs.push(m.seq);
                if !m.client_msg_id.is_empty() && matches!(m.body, Body::Text { .. }) {
                    assert!(
                        stored.insert(m.client_msg_id.clone(), (m.msg_id.0, m.seq)).is_none(),
                        "a key stored twice"
                    );
                }
            }
        }
        let first = seqs[0];
        assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>(), "{conv}: gap-free");
    }
    assert_eq!(stored.len(), DIRECT + IN_GROUP);
    for snapshot in acked_before.iter().chain(std::iter::once(&acked.lock().unwrap().clone())) {
        for (key, sent) in snapshot {
            assert_eq!(stored.get(key), Some(&(sent.msg_id.0, sent.seq)), "{key} lost or changed");
        }
    }
    assert!(acked_before.iter().all(|s| !s.is_empty()));
}

/// The crash test with a client on every transport (TCP and WebSocket over TLS, QUIC, SSE,
/// long-poll): six users in a ring, each sending to the next on its own transport while the
/// server is SIGKILLed twice. Every ACK holds, every receiver gets each message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_with_clients_on_every_transport_lose_nothing_acked() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) =
        common::pki::write_pair(certs.path(), &common::pki::leaf(&["localhost", "127.0.0.1"], "localhost", true));
    let (http, tcp) = (common::free_port(), common::free_port());
    let url = format!("https://127.0.0.1:{http}");
    let start_tls = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.args(["serve", "--data-dir"]).arg(dir.path());
        cmd.args(["--http", &format!("127.0.0.1:{http}"), "--tcp", &format!("127.0.0.1:{tcp}")]);
        cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
        async move { Node { child: common::spawn_serve(&mut cmd).await } }
    };
    let mut node = start_tls().await;

    const TRANSPORTS: [Transport; 6] =
        [Transport::Tcp, Transport::WsJson, Transport::WsBinary, Transport::Quic, Transport::Sse, Transport::LongPoll];
    const PREFIXES: [&str; 6] = ["tcp", "wsj", "wsb", "quic", "sse", "lp"];
    const EACH: usize = 150;
    let mut sessions = Vec::new();
    for i in 0..TRANSPORTS.len() {
        let name = format!("ring{i}");
        tern_client::http::register(&url, &name, PASSWORD).await.unwrap();
        sessions.push(tern_client::http::login(&url, &name, PASSWORD, "dev").await.unwrap());
    }
    let mut clients = Vec::new();
    for (s, transport) in sessions.iter().zip(TRANSPORTS) {
        let opts = Options {
            transport,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            ..Options::default()
        };
        clients.push(Client::connect(s.clone(), opts).await.unwrap());
    }
    let ring = |i: usize| ConvId::direct(sessions[i].user_id, sessions[(i + 1) % sessions.len()].user_id);
    let acked: Arc<Mutex<Vec<(String, Sent)>>> = Arc::default();
    let senders: Vec<_> = (0..TRANSPORTS.len())
        .map(|i| spawn_sender(clients[i].0.clone(), ring(i), PREFIXES[i], EACH, Arc::clone(&acked)))
        .collect();
    let total = EACH * TRANSPORTS.len();
    let mut acked_before = Vec::new();
    for cycle in 1..=2 {
        while acked.lock().unwrap().len() < cycle * total / 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        node.child.kill().await.unwrap(); // SIGKILL
        acked_before.push(acked.lock().unwrap().clone());
        node = start_tls().await;
    }
    for s in senders {
        tokio::time::timeout(Duration::from_secs(120), s).await.expect("every send acknowledged").unwrap();
    }
    // Each user gets the previous one's messages: once each, in order, on its own transport.
    for (i, (_, events)) in clients.iter_mut().enumerate() {
        let from = (i + TRANSPORTS.len() - 1) % TRANSPORTS.len();
        receive_all(events, &[(ring(from), EACH)]).await;
    }
    // Every ACK ever given names the stored message.
    let mut stored = BTreeMap::new();
    for i in 0..TRANSPORTS.len() {
        let mut after = 0;
        loop {
            let page = tern_client::http::history(&sessions[i], ring(i), Some(after), 500).await.unwrap();
            let Some(last) = page.messages.last() else { break };
            after = last.seq;
            for m in page.messages {
                assert!(stored.insert(m.client_msg_id.clone(), (m.msg_id.0, m.seq)).is_none(), "a key stored twice");
            }
        }
        assert_eq!(after, EACH as u64, "{}: gap-free, one copy each", PREFIXES[i]);
    }
    for snapshot in acked_before.iter().chain(std::iter::once(&acked.lock().unwrap().clone())) {
        assert!(!snapshot.is_empty());
        for (key, sent) in snapshot {
            assert_eq!(stored.get(key), Some(&(sent.msg_id.0, sent.seq)), "{key} lost or changed");
        }
    }
    drop(node);
}
