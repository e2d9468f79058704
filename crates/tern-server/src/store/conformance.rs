//! The storage conformance suite: what every [`Store`] engine must do, run against each engine
//! from its own tests. Public so a new engine (in this crate or another) can call [`run_all`].

// This is test code compiled into the library so every engine can reuse it: panicking on an
// unexpected result is how it reports a failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tern_proto::{Body, ConvId, DeviceId, MsgId, UserId};

use super::encode_body;
use super::{CommitListener, Committed, NewMessage, Page, Store, StoreError};

/// A listener that ignores commits.
pub fn null_listener() -> Arc<dyn CommitListener> {
    Arc::new(Recorder::default())
}

/// Records every committed message (conversation, seq), in the order the store reported them.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<(ConvId, u64)>>);

impl CommitListener for Recorder {
    fn committed(&self, batch: &[Committed]) {
        if let Ok(mut seen) = self.0.lock() {
            seen.extend(batch.iter().map(|c| (c.message.conv_id, c.message.seq)));
        }
    }
}

/// A text message from `from` in `conv` with the given client id.
pub fn new_message(conv: ConvId, from: UserId, client_msg_id: &str) -> NewMessage {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NewMessage {
        msg_id: MsgId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        conv_id: conv,
        from,
        from_device: DeviceId("dev".into()),
        client_msg_id: client_msg_id.to_owned(),
        ts: 1,
        body_json: encode_body(&Body::Text { text: client_msg_id.to_owned() }),
        body: Body::Text { text: client_msg_id.to_owned() },
    }
}

/// Creates `n` users (the 1:1 send path checks that the recipient exists); their ids.
pub async fn seed_users(store: &dyn Store, n: usize) -> Vec<UserId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(store.create_user(&format!("seed{i}-{}", rand::random::<u32>()), "h").await.unwrap());
    }
    ids
}

async fn append(store: &dyn Store, msg: NewMessage) -> Result<super::Appended, StoreError> {
    store.append(msg).await?.await.map_err(|_| StoreError::Closed)?
}

/// Runs every check. `open` makes a fresh, empty store wired to the given listener.
pub async fn run_all(mut open: impl FnMut(Arc<dyn CommitListener>) -> Arc<dyn Store>) {
    users_are_unique_case_insensitively(open(null_listener())).await;
    seqs_are_gap_free_and_duplicates_store_nothing(open(null_listener())).await;
    let recorder = Arc::new(Recorder::default());
    concurrent_senders_get_gap_free_increasing_seqs(open(recorder.clone()), recorder).await;
    pages_and_conversation_lists(open(null_listener())).await;
    api_keys_and_rooms(open(null_listener())).await;
}

async fn api_keys_and_rooms(store: Arc<dyn Store>) {
    let key = |id: &str| super::ApiKeyRecord {
        id: id.into(),
        name: format!("key {id}"),
        secret_hash: vec![1, 2, 3],
        scopes: vec!["rooms".into(), "users".into()],
        rate_per_sec: 12.5,
        burst: 7,
        created_at: 5,
        revoked: false,
    };
    store.create_api_key(key("a")).await.unwrap();
    store.create_api_key(key("b")).await.unwrap();
    assert!(matches!(store.create_api_key(key("a")).await, Err(StoreError::Conflict(_))));
    assert!(store.revoke_api_key("b").await.unwrap());
    assert!(!store.revoke_api_key("zzz").await.unwrap());
    let keys = store.api_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], key("a"));
    assert!(keys[1].revoked);

    store.set_room_area("r1", "games").await.unwrap();
    store.set_room_area("r2", "music").await.unwrap();
    store.set_room_area("r1", "sports").await.unwrap();
    let mut rooms = store.room_areas().await.unwrap();
    rooms.sort();
    assert_eq!(rooms, vec![("r1".into(), "sports".into()), ("r2".into(), "music".into())]);
}

async fn users_are_unique_case_insensitively(store: Arc<dyn Store>) {
    let alice = store.create_user("Alice", "h1").await.unwrap();
    assert_eq!(store.create_user("alice", "h2").await, Err(StoreError::Conflict("username \"alice\" is taken".into())));
    let bob = store.create_user("bob", "h3").await.unwrap();
    assert_ne!(alice, bob);
    let rec = store.user_by_name("ALICE").await.unwrap().unwrap();
    assert_eq!((rec.id, rec.username.as_str(), rec.password_hash.as_str()), (alice, "Alice", "h1"));
    assert_eq!(store.user_by_id(bob).await.unwrap().unwrap().username, "bob");
    assert_eq!(store.user_by_id(UserId(9_999_999)).await.unwrap(), None);
    assert_eq!(store.user_by_name("carol").await.unwrap(), None);
}

async fn seqs_are_gap_free_and_duplicates_store_nothing(store: Arc<dyn Store>) {
    let u = seed_users(&*store, 3).await;
    let (a, b, c) = (u[0], u[1], u[2]);
    let ab = ConvId::direct(a, b);
    let ac = ConvId::direct(a, c);
    let m1 = append(&*store, new_message(ab, a, "x1")).await.unwrap();
    let m2 = append(&*store, new_message(ab, b, "y1")).await.unwrap();
    let other = append(&*store, new_message(ac, a, "x2")).await.unwrap();
    assert_eq!((m1.message.seq, m2.message.seq, other.message.seq), (1, 2, 1), "seq is per conversation");

    let again = append(&*store, new_message(ab, a, "x1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, m1.message, "a resend returns the original message");
    // The same key from another sender is another message.
    let b_x1 = append(&*store, new_message(ab, b, "x1")).await.unwrap();
    assert_eq!((b_x1.duplicate, b_x1.message.seq), (false, 3));
    // The same key in another conversation is refused.
    assert!(matches!(append(&*store, new_message(ac, a, "x1")).await, Err(StoreError::Conflict(_))));

    let all = store.messages(ab, Page::After(0), 100).await.unwrap();
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3], "one stored copy each");
    assert_eq!(store.last_seq(ab).await.unwrap(), 3);
    assert_eq!(store.last_seq(ConvId::direct(b, c)).await.unwrap(), 0);
}

async fn concurrent_senders_get_gap_free_increasing_seqs(store: Arc<dyn Store>, recorder: Arc<Recorder>) {
    let u = seed_users(&*store, 2).await;
    let conv = ConvId::direct(u[0], u[1]);
    let mut tasks = Vec::new();
    for sender in 0..6u64 {
        let store = Arc::clone(&store);
        let from = u[(sender % 2) as usize];
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                let ticket = store.append(new_message(conv, from, &format!("s{sender}-{i}"))).await.unwrap();
                seqs.push(ticket.await.unwrap().unwrap().message.seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one sender's seqs increase: {seqs:?}");
        all.extend(seqs);
    }
    assert_eq!(all, (1..=300).collect(), "gap-free and unique");
    let reported: Vec<u64> = recorder.0.lock().unwrap().iter().filter(|(c, _)| *c == conv).map(|(_, s)| *s).collect();
    assert_eq!(reported, (1..=300).collect::<Vec<_>>(), "commits reported once each, in seq order");
}

async fn pages_and_conversation_lists(store: Arc<dyn Store>) {
    let u = seed_users(&*store, 3).await;
    let (a, b, c) = (u[0], u[1], u[2]);
    let ab = ConvId::direct(a, b);
    for i in 0..10 {
        append(&*store, new_message(ab, a, &format!("p{i}"))).await.unwrap();
    }
    append(&*store, new_message(ConvId::direct(c, a), c, "q")).await.unwrap();
    append(&*store, new_message(ConvId::direct(a, a), a, "self")).await.unwrap();

    let after = store.messages(ab, Page::After(3), 4).await.unwrap();
    assert_eq!(after.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
    assert_eq!(after[0].body, Body::Text { text: "p3".into() });
    let before = store.messages(ab, Page::Before(4), 10).await.unwrap();
    assert_eq!(before.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert!(store.messages(ab, Page::After(10), 10).await.unwrap().is_empty());

    let mut convs = store.conversations_of(a).await.unwrap();
    convs.sort();
    let mut expected = vec![(ab, 10, 1), (ConvId::direct(a, c), 1, 1), (ConvId::direct(a, a), 1, 1)];
    expected.sort();
    assert_eq!(convs, expected);
    assert_eq!(store.conversations_of(b).await.unwrap(), vec![(ab, 10, 1)]);
}
