use super::*;
use crate::store::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(&mut |listener| {
        let path = dir.path().join(format!("db-{}", rand::random::<u32>()));
        let store = SqliteStore::open(&path, &StoreConfig::default(), listener, crate::logic::rules::ImRules::shared())
            .unwrap();
        Box::pin(async move { Arc::new(store) as Arc<dyn Store> })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_data_directory_is_migrated_with_its_conversations() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Connection::open(dir.path().join("tern.db")).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES (1, 'a', 'h', 0), (2, 'b', 'h', 0);
             INSERT INTO conversations (conv_id, user_a, user_b, last_seq) VALUES ('d:1:2', 1, 2, 1);
             INSERT INTO messages (conv_id, seq, msg_id, sender, sender_device, client_msg_id, ts, body)
               VALUES ('d:1:2', 1, 9, 1, 'p', 'c1', 5, CAST('{\"type\":\"text\",\"text\":\"old\"}' AS BLOB));
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(
        dir.path(),
        &StoreConfig::default(),
        conformance::null_listener(),
        crate::logic::rules::ImRules::shared(),
    )
    .unwrap();
    let conv = ConvId::direct(UserId(1), UserId(2));
    assert_eq!(store.conversations_of(UserId(2)).await.unwrap(), vec![(conv, 1, 1)]);
    let list = store.conversation_list(UserId(2)).await.unwrap();
    assert_eq!((list.len(), list[0].unread), (1, 1), "old messages count as content");
    assert_eq!(store.profiles(vec![UserId(1)]).await.unwrap()[0].nickname, "");
    let next = store.append(conformance::new_message(conv, UserId(2), "c2")).await.unwrap().await.unwrap().unwrap();
    assert_eq!(next.message.seq, 2);
    let resent = store.append(conformance::new_message(conv, UserId(1), "c1")).await.unwrap().await.unwrap().unwrap();
    assert!(resent.duplicate && resent.message.seq == 1, "a resend of a message stored before the upgrade");
    let c = Connection::open(dir.path().join("tern.db")).unwrap();
    let indexes: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, vec!["messages_client_key"], "the sender-first index is gone");
}

/// The WAL's length in frames (a passive checkpoint reports it).
/// A full disk (here: the database's page limit) answers `unavailable` and marks the store
/// unhealthy; the next write that commits makes it healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_unavailable_and_unhealthy_until_writes_succeed_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        dir.path(),
        &StoreConfig::default(),
        conformance::null_listener(),
        crate::logic::rules::ImRules::shared(),
    )
    .unwrap();
    let users = conformance::seed_users(&store, 2).await;
    let conv = ConvId::direct(users[0], users[1]);
    let pages: i64 = store.readers.run(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0))).await.unwrap();
    store
        .apply(Box::new(move |tx| tx.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(0))))
        .await
        .unwrap();
    let big = |id: &str| {
        let body = tern_proto::Body::Text { text: "x".repeat(8000) };
        NewMessage { body_json: crate::store::encode_body(&body), body, ..conformance::new_message(conv, users[0], id) }
    };
    let refused = store.append(big("full")).await.unwrap().await.unwrap();
    assert!(matches!(refused, Err(StoreError::Unavailable(ref why)) if why.contains("full")), "{refused:?}");
    let (_, why) = store.health().failing().expect("unhealthy");
    assert!(why.contains("full"), "{why}");
    let answer = crate::error::Error::from(refused.unwrap_err());
    assert_eq!((answer.code, answer.retry_after_secs), (tern_proto::ErrorCode::Unavailable, Some(5)));
    assert!(!answer.message.contains("shutting down"), "{}", answer.message);

    store.apply(Box::new(|tx| tx.query_row("PRAGMA max_page_count = 1000000", [], |_| Ok(0)))).await.unwrap();
    store.append(big("room again")).await.unwrap().await.unwrap().unwrap();
    assert!(store.health().failing().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_messages_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let conv = ConvId::direct(UserId(1), UserId(2));
    {
        let store = SqliteStore::open(
            dir.path(),
            &StoreConfig::default(),
            conformance::null_listener(),
            crate::logic::rules::ImRules::shared(),
        )
        .unwrap();
        assert_eq!(conformance::seed_users(&store, 2).await, vec![UserId(1), UserId(2)]);
        for i in 0..3 {
            let t = store.append(conformance::new_message(conv, UserId(1), &format!("c{i}"))).await.unwrap();
            t.await.unwrap().unwrap();
        }
    }
    let store = SqliteStore::open(
        dir.path(),
        &StoreConfig::default(),
        conformance::null_listener(),
        crate::logic::rules::ImRules::shared(),
    )
    .unwrap();
    let t = store.append(conformance::new_message(conv, UserId(2), "next")).await.unwrap();
    assert_eq!(t.await.unwrap().unwrap().message.seq, 4, "seq continues after reopen");
    let dup = store.append(conformance::new_message(conv, UserId(1), "c1")).await.unwrap();
    let dup = dup.await.unwrap().unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.message.seq, 2);
}
