//! File transfers between two clients: direct on loopback, through the relay when direct is
//! impossible (relay only, or addresses nobody answers on), resuming from what the receiver
//! holds, verified by SHA-256 end to end; declines, blocks, and tickets in the wrong hands; the
//! CLI's `tern file send` / `tern file receive` with the real binary.

mod common;

use std::path::Path;

use common::*;
use tern_client::transfer::{self, Offer, Route};
use tern_client::{Client, Event, Events, Session, Transport};

fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as u8).collect()
}

async fn next_offer(events: &mut Events) -> Offer {
    match wait_event(events, |e| matches!(e, Event::FileOffer(_))).await {
        Event::FileOffer(o) => o,
        _ => unreachable!(),
    }
}

async fn next_answer(events: &mut Events) -> bool {
    match wait_event(events, |e| matches!(e, Event::FileAnswer { .. })).await {
        Event::FileAnswer { accept, .. } => accept,
        _ => unreachable!(),
    }
}

struct Pair {
    srv: TestServer,
    alice: Session,
    bob: Session,
    ac: Client,
    ae: Events,
    bc: Client,
    be: Events,
}

async fn pair() -> Pair {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "laptop").await;
    let bob = srv.login("bob", "laptop").await;
    let (ac, ae) = connect(&alice, Transport::WsJson).await;
    let (bc, be) = connect(&bob, Transport::Tcp).await;
    Pair { srv, alice, bob, ac, ae, bc, be }
}

/// Alice sends `bytes` (as a file in `dir`) to bob; bob accepts and receives into `dir`.
/// `listen`: alice takes direct connections; `candidates`: the addresses offered (default: the
/// listener's); `relay_only`: bob skips direct. Returns (alice's route, bob's route, bob's
/// received bytes).
async fn transfer_once(
    p: &mut Pair,
    dir: &Path,
    bytes: &[u8],
    listen: bool,
    candidates: Option<Vec<String>>,
    relay_only: bool,
) -> (Route, Route, Vec<u8>) {
    let src = dir.join("src.bin");
    std::fs::write(&src, bytes).unwrap();
    let sha = transfer::sha256_of(&src).await.unwrap();
    let listener = if listen { Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()) } else { None };
    let offered_at =
        candidates.unwrap_or_else(|| listener.iter().map(|l| l.local_addr().unwrap().to_string()).collect::<Vec<_>>());
    let offered = p.ac.offer_file(p.bob.user_id, "src.bin", bytes.len() as u64, &sha, offered_at).await.unwrap();
    let offer = next_offer(&mut p.be).await;
    assert_eq!(
        (offer.transfer_id.as_str(), offer.name.as_str(), offer.size),
        (offered.transfer_id.as_str(), "src.bin", bytes.len() as u64)
    );
    assert_eq!(offer.ticket, offered.ticket);
    p.bc.answer_file(offer.ticket.clone(), true).await.unwrap();
    assert!(next_answer(&mut p.ae).await);
    let part = dir.join("received.part");
    let (alice, bob) = (p.alice.clone(), p.bob.clone());
    let send = async { transfer::send(&alice, &offered, listener, &src, bytes.len() as u64, &|_| {}).await };
    let receive = async { transfer::receive(&bob, &offer, &part, relay_only, &|_| {}).await };
    let (sent, received) =
        tokio::time::timeout(WAIT * 3, async { tokio::join!(send, receive) }).await.expect("the transfer ended");
    (sent.unwrap(), received.unwrap(), std::fs::read(&part).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_on_loopback_and_through_the_relay_when_direct_is_impossible() {
    let mut p = pair().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(3_000_000, 1);

    let (a, b, got) = transfer_once(&mut p, dir.path(), &bytes, true, None, false).await;
    assert_eq!((a, b), (Route::Direct, Route::Direct));
    assert!(got == bytes, "direct: the bytes arrived exactly");

    std::fs::remove_file(dir.path().join("received.part")).unwrap();
    let (a, b, got) = transfer_once(&mut p, dir.path(), &bytes, false, Some(Vec::new()), true).await;
    assert_eq!((a, b), (Route::Relay, Route::Relay), "relay only");
    assert!(got == bytes, "relayed: the bytes arrived exactly");

    // The offered address answers nothing (a port nobody listens on): the relay carries it.
    std::fs::remove_file(dir.path().join("received.part")).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (a, b, got) = transfer_once(&mut p, dir.path(), &bytes, false, Some(vec![closed]), false).await;
    assert_eq!((a, b), (Route::Relay, Route::Relay), "unreachable addresses");
    assert!(got == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_transfer_resumes_from_what_the_receiver_holds_and_a_wrong_copy_is_dropped() {
    let mut p = pair().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(1_000_000, 7);
    // Bob already holds the first 400,000 bytes of an earlier attempt at this transfer.
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &bytes).unwrap();
    let sha = transfer::sha256_of(&src).await.unwrap();
    let offered = p.ac.offer_file(p.bob.user_id, "src.bin", bytes.len() as u64, &sha, Vec::new()).await.unwrap();
    let offer = next_offer(&mut p.be).await;
    p.bc.answer_file(offer.ticket.clone(), true).await.unwrap();
    let part = dir.path().join("resume.part");
    std::fs::write(&part, &bytes[..400_000]).unwrap();
    let first_sent = std::sync::Mutex::new(None);
    let (alice, bob) = (p.alice.clone(), p.bob.clone());
    let note_first = |n: u64| {
        first_sent.lock().unwrap().get_or_insert(n);
    };
    let (sent, received) = tokio::join!(
        transfer::send(&alice, &offered, None, &src, bytes.len() as u64, &note_first),
        transfer::receive(&bob, &offer, &part, true, &|_| {})
    );
    assert_eq!((sent.unwrap(), received.unwrap()), (Route::Relay, Route::Relay));
    assert!(std::fs::read(&part).unwrap() == bytes);
    let first = first_sent.lock().unwrap().unwrap();
    assert!(first > 400_000 && first <= 400_000 + 256 * 1024, "sending started at the receiver's offset: {first}");

    // A receiver whose partial copy is wrong ends with the SHA-256 check failing, and drops it.
    let offered = p.ac.offer_file(p.bob.user_id, "src.bin", bytes.len() as u64, &sha, Vec::new()).await.unwrap();
    let offer = next_offer(&mut p.be).await;
    p.bc.answer_file(offer.ticket.clone(), true).await.unwrap();
    let part = dir.path().join("wrong.part");
    std::fs::write(&part, vec![0u8; 400_000]).unwrap();
    let (sent, received) = tokio::join!(
        transfer::send(&alice, &offered, None, &src, bytes.len() as u64, &|_| {}),
        transfer::receive(&bob, &offer, &part, true, &|_| {})
    );
    assert!(received.unwrap_err().to_string().contains("SHA-256"));
    assert!(sent.unwrap_err().to_string().contains("SHA-256"));
    assert!(!part.exists(), "the wrong copy is dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_blocks_and_tickets_in_the_wrong_hands() {
    let mut p = pair().await;
    let mallory = p.srv.login("mallory", "laptop").await;
    let (mc, mut me) = connect(&mallory, Transport::WsJson).await;
    let sha = "ab".repeat(32);

    // Declined: the sender is told.
    p.ac.offer_file(p.bob.user_id, "a.txt", 10, &sha, Vec::new()).await.unwrap();
    let offer = next_offer(&mut p.be).await;
    p.bc.answer_file(offer.ticket.clone(), false).await.unwrap();
    assert!(!next_answer(&mut p.ae).await);

    // Bad offers.
    for (name, size, sha256, candidates) in [
        ("../etc/passwd", 10, sha.clone(), vec![]),
        ("a.txt", 10, "not-a-hash".to_owned(), vec![]),
        ("a.txt", 10, sha.clone(), vec!["not an address".to_owned()]),
        ("a.txt", 10, sha.clone(), vec!["127.0.0.1:1".to_owned(); 9]),
    ] {
        let e = p.ac.offer_file(p.bob.user_id, name, size, sha256, candidates).await;
        assert_eq!(code(e), tern_client::ErrorCode::BadRequest);
    }
    let e = p.ac.offer_file(tern_client::UserId(987_654), "a.txt", 10, &sha, vec![]).await;
    assert_eq!(code(e), tern_client::ErrorCode::NotFound);

    // Mallory holds bob's ticket: she can neither answer for him nor use the relay as either side.
    p.ac.offer_file(p.bob.user_id, "b.txt", 10, &sha, Vec::new()).await.unwrap();
    let offer = next_offer(&mut p.be).await;
    assert_eq!(code(mc.answer_file(offer.ticket.clone(), true).await), tern_client::ErrorCode::NotFound);
    let relay = |s: &Session, ticket: &str, side: &str| {
        let url = format!("{}/v1/relay/{}", p.srv.url(), offer.transfer_id);
        tern_client::http::shared_client()
            .get(url)
            .query(&[("ticket", ticket), ("side", side)])
            .bearer_auth(&s.token)
            .header("Connection", "Upgrade")
            .header("Upgrade", "tern-relay")
            .send()
    };
    for side in ["sender", "receiver"] {
        assert_eq!(relay(&mallory, &offer.ticket, side).await.unwrap().status(), 404, "{side}");
    }
    // A forged ticket, and bob claiming the sender's side, get nothing either.
    let forged = format!("{}x", offer.ticket);
    assert_eq!(relay(&p.bob, &forged, "receiver").await.unwrap().status(), 404);
    assert_eq!(relay(&p.bob, &offer.ticket, "sender").await.unwrap().status(), 404);
    // Mallory was offered nothing.
    expect_no_offer(&mut me).await;

    // Bob blocks alice: her offers are refused.
    tern_client::http::im::block(&p.bob, p.alice.user_id).await.unwrap();
    let e = p.ac.offer_file(p.bob.user_id, "c.txt", 10, &sha, Vec::new()).await;
    assert_eq!(code(e), tern_client::ErrorCode::Blocked);
}

async fn expect_no_offer(events: &mut Events) {
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), async {
        loop {
            if let Some(Event::FileOffer(_)) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "an offer reached a third party");
}

/// `tern file send` and `tern file receive` as a user runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_and_receives_directly_and_relay_only() {
    let srv = TestServer::start().await;
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tern = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.args(args).current_dir(d).env_remove("TERN_PROFILE").env_remove("TERN_URL").env("TERN_PASSWORD", PASSWORD);
        cmd.kill_on_drop(true);
        cmd
    };
    for user in ["alice", "bob"] {
        for args in [
            vec!["register", user, "--server", &url],
            vec!["login", user, "--server", &url, "--profile", &format!("{user}.json")],
        ] {
            let o = tern(args.into_iter().map(String::from).collect()).output().await.unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let bytes = data(2_500_000, 3);
    std::fs::write(d.join("holiday.mov"), &bytes).unwrap();
    for (relay_only, route) in [(false, "direct"), (true, "relay")] {
        let inbox = d.join(format!("inbox-{route}"));
        let mut receive = vec!["file", "receive", "--profile", "bob.json", "--accept-all", "--count", "1", "--dir"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        receive.push(inbox.to_string_lossy().into_owned());
        let mut receiver =
            tern(receive).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        // An offer reaches the devices connected when it is made: wait until the receiver says
        // it is (then keep draining its stderr).
        let mut lines = tokio::io::BufReader::new(receiver.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("waiting for files") {
            line.clear();
            let n = tokio::time::timeout(WAIT, tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the receiver ended before connecting");
        }
        tokio::spawn(async move { tokio::io::copy(&mut lines, &mut tokio::io::sink()).await });
        let mut send = vec!["file", "send", "--profile", "alice.json", "--to", "bob", "holiday.mov"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        if relay_only {
            send.push("--relay-only".into());
        }
        let sent = tokio::time::timeout(WAIT * 3, tern(send).output()).await.unwrap().unwrap();
        assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
        let got = tokio::time::timeout(WAIT * 3, receiver.wait_with_output()).await.unwrap().unwrap();
        assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
        let line: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
        assert_eq!(line["route"], route);
        let line: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
        assert_eq!(line["route"], route);
        assert!(std::fs::read(inbox.join("holiday.mov")).unwrap() == bytes, "{route}: the file arrived exactly");
    }
}
