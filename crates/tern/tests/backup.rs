//! Backup and restore of the embedded store, as an operator runs them: `tern backup` against a
//! server under write load, `tern restore` into an empty data directory, a server started on it.

mod common;

use std::time::Duration;

use common::*;
use tern_client::{ConvId, Transport};

async fn tern(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(args).current_dir(dir).env("TERN_PUSH_KEY", PUSH_KEY).env_remove("TERN_URL");
    tokio::time::timeout(WAIT * 3, cmd.output()).await.expect("tern finished").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_write_load_restores_to_a_gap_free_prefix() {
    let srv = TestServer::start().await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let (a, _a_events) = connect(&alice, Transport::Tcp).await;
    let acked: Acked = Default::default();
    let load = spawn_windowed_sends(a, bob.user_id, 3000, 32, Duration::from_micros(500), acked.clone());
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = acked.lock().unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let out = tern(&["backup", "--out", "snap.db", "--server", &srv.url()], dir.path()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let during = acked.lock().unwrap().len();
    load.await.unwrap();
    assert!(during < 3000, "the backup was taken while messages were still being written");

    // Restored into an empty directory, refused into one that holds a store.
    let restored = dir.path().join("restored");
    let out = tern(&["restore", "snap.db", "--data-dir", "restored"], dir.path()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = tern(&["restore", "snap.db", "--data-dir", "restored"], dir.path()).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a store"));
    std::fs::write(dir.path().join("junk.db"), b"not a database").unwrap();
    let junk = tern(&["restore", "junk.db", "--data-dir", "other"], dir.path()).await;
    assert!(String::from_utf8_lossy(&junk.stderr).contains("is not a tern backup"));

    // A server on the restored store: the conversation is 1..n with no hole, n covers every
    // message acknowledged before the backup began, and each is the one sent with that key.
    let srv2 = TestServer::with(move |c| c.server.data_dir = restored).await;
    let bob2 = srv2.login("bob", "laptop").await;
    let conv = ConvId::direct(alice.user_id, bob.user_id);
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = tern_client::http::history(&bob2, conv, Some(after), 500).await.unwrap();
        if page.messages.is_empty() {
            break;
        }
        for m in &page.messages {
            let tern_client::Body::Text { text } = &m.body else { panic!("{m:?}") };
            assert_eq!(text, &format!("m{}", &m.client_msg_id[1..]), "seq {} is its key's message", m.seq);
            seqs.push(m.seq);
        }
        after = *seqs.last().unwrap();
    }
    let n = seqs.len() as u64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "gap-free");
    assert!(n as usize >= before, "{n} restored, {before} acknowledged before the backup");
    assert!(n < 3000, "a snapshot of one moment, not of the end");
    // The acknowledged messages the snapshot holds are exactly those with seq <= n.
    let acked = acked.lock().unwrap();
    assert!(acked.iter().filter(|(_, s)| s.seq <= n).count() as u64 == n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_needs_an_admin_key() {
    let srv = TestServer::start().await;
    let (_, key) =
        srv.push_api(PUSH_KEY, "/v1/admin/keys", serde_json::json!({ "name": "m", "scopes": ["metrics"] })).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.args(["backup", "--out", "x.db", "--server", &srv.url()]).current_dir(dir.path());
    cmd.env("TERN_PUSH_KEY", key["key"].as_str().unwrap());
    let out = cmd.output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("x.db").exists());
}
