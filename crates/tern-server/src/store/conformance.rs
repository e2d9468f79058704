//! The storage conformance suite: what every [`Store`] engine must do, run against each engine
//! from its own tests. Public so a new engine (in this crate or another) can call [`run_all`].

// This is test code compiled into the library so every engine can reuse it: panicking on an
// unexpected result is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use tern_proto::{Body, ConvId, DeviceId, MsgId, UserId};

use super::encode_body;
use super::im::{Effect, Scope};
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
        {
            let mut seen = self.0.lock();
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

/// Makes a fresh, empty store wired to the given listener.
pub type Open<'a> = dyn FnMut(Arc<dyn CommitListener>) -> super::BoxFut<'a, Arc<dyn Store>> + 'a;

/// Runs every check. `open` makes a fresh, empty store wired to the given listener.
pub async fn run_all(open: &mut Open<'_>) {
    users_are_unique_case_insensitively(open(null_listener()).await).await;
    seqs_are_gap_free_and_duplicates_store_nothing(open(null_listener()).await).await;
    let recorder = Arc::new(Recorder::default());
    concurrent_senders_get_gap_free_increasing_seqs(open(recorder.clone()).await, recorder).await;
    pages_and_conversation_lists(open(null_listener()).await).await;
    api_keys_and_rooms(open(null_listener()).await).await;
    accounts_and_session_cutoffs(open(null_listener()).await).await;
    let recorder = Arc::new(Recipients::default());
    im_transactions(open(recorder.clone()).await, recorder).await;
    unreadable_rows_never_fail_a_read(open(null_listener()).await).await;
    a_failing_write_fails_alone(open(null_listener()).await).await;
    files_and_the_messages_naming_them(open(null_listener()).await).await;
}

/// File records: created, updated, counted against the owner, found expired; a reference
/// counts once its message is stored (not before, not for a failed one) and stops counting
/// when the message is recalled; deleting the file removes its references.
async fn files_and_the_messages_naming_them(store: Arc<dyn Store>) {
    let u = seed_users(&*store, 2).await;
    let (a, b) = (u[0], u[1]);
    let ab = ConvId::direct(a, b);
    let mut f = super::FileRecord {
        id: "f1".into(),
        owner: a,
        name: "n".into(),
        length: 10,
        offset: 0,
        sha256: String::new(),
        size: 0,
        mime: String::new(),
        thumbnail: String::new(),
        width: None,
        height: None,
        public: false,
        created_at: 1,
        expires_at: 100,
        metadata: "filename bg==".into(),
    };
    store.put_file(f.clone()).await.unwrap();
    store.put_file(super::FileRecord { id: "f2".into(), length: 5, expires_at: 1_000, ..f.clone() }).await.unwrap();
    assert_eq!(store.files_usage(a).await.unwrap(), 15);
    assert_eq!(store.files_usage(b).await.unwrap(), 0);
    assert_eq!(store.expired_uploads(500, 10).await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["f1"]);
    f.offset = 10;
    f.sha256 = "ab".repeat(32);
    f.size = 9;
    f.mime = "image/png".into();
    (f.width, f.height) = (Some(3), Some(4));
    f.expires_at = 0;
    store.put_file(f.clone()).await.unwrap();
    assert_eq!(store.file("f1").await.unwrap(), Some(f.clone()));
    assert!(store.expired_uploads(500, 10).await.unwrap().is_empty(), "complete uploads never expire");
    assert!(store.content_used(&f.sha256).await.unwrap());
    assert!(!store.content_used(&"cd".repeat(32)).await.unwrap());

    let file_ref =
        |cid: &str| super::FileRef { file_id: "f1".into(), conv_id: ab, sender: a, client_msg_id: cid.into() };
    store.add_file_ref(file_ref("m1")).await.unwrap();
    store.add_file_ref(file_ref("m1")).await.unwrap();
    assert!(store.file_messages("f1").await.unwrap().is_empty(), "not before the message is stored");
    append(&*store, new_message(ab, b, "other")).await.unwrap();
    append(&*store, new_message(ab, a, "m1")).await.unwrap();
    assert_eq!(store.file_messages("f1").await.unwrap(), vec![(ab, 2)]);
    store
        .transact(
            Scope::default(),
            Box::new(move |_| Ok(vec![Effect::Replace { conv: ab, seq: 2, body: Body::Recalled { by: a, at: 9 } }])),
        )
        .await
        .unwrap();
    assert!(store.file_messages("f1").await.unwrap().is_empty(), "a recalled message names nothing");
    store.add_file_ref(file_ref("m2")).await.unwrap();
    append(&*store, new_message(ab, a, "m2")).await.unwrap();
    assert_eq!(store.file_messages("f1").await.unwrap(), vec![(ab, 3)]);

    // Stickers: a user's collection, listed with the files' pixels while the files exist.
    assert!(store.add_sticker(b, "f1", 5).await.unwrap());
    assert!(!store.add_sticker(b, "f1", 6).await.unwrap(), "already there");
    assert!(store.add_sticker(b, "f2", 7).await.unwrap());
    let listed: Vec<_> =
        store.stickers(b).await.unwrap().into_iter().map(|s| (s.file_id, s.added_at, s.width)).collect();
    assert_eq!(listed, vec![("f1".to_owned(), 5, Some(3)), ("f2".to_owned(), 7, None)]);
    assert!(store.stickers(a).await.unwrap().is_empty());
    assert!(store.remove_sticker(b, "f2").await.unwrap());
    assert!(!store.remove_sticker(b, "f2").await.unwrap());
    assert!(store.delete_file("f1").await.unwrap());
    assert!(store.stickers(b).await.unwrap().is_empty(), "a deleted file leaves the collection");
    assert!(!store.delete_file("f1").await.unwrap());
    assert_eq!(store.file("f1").await.unwrap(), None);
    assert!(store.file_messages("f1").await.unwrap().is_empty());
    assert_eq!(store.files_usage(a).await.unwrap(), 5);
}

/// A body stored by an older version that today's reader cannot parse (here: nested past
/// serde_json's recursion limit) is served as `unreadable` in its place: history, the
/// conversation list and resume plans still work, and it can be recalled.
async fn unreadable_rows_never_fail_a_read(store: Arc<dyn Store>) {
    let u = seed_users(&*store, 2).await;
    let (a, b) = (u[0], u[1]);
    let ab = ConvId::direct(a, b);
    append(&*store, new_message(ab, a, "before")).await.unwrap();
    let mut poisoned = new_message(ab, a, "poisoned");
    let deep = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
    poisoned.body_json = format!("{{\"type\":\"custom\",\"data\":{deep}}}").into_bytes().into();
    append(&*store, poisoned).await.unwrap();
    let page = store.messages(ab, Page::After(0), 10).await.unwrap();
    assert_eq!(page.iter().map(|m| (m.seq, m.body.clone())).collect::<Vec<_>>()[1], (2, Body::Unreadable {}));
    let list = store.conversation_list(b).await.unwrap();
    assert_eq!(list[0].last_message.as_ref().map(|m| &m.body), Some(&Body::Unreadable {}));
    assert_eq!(list[0].unread, 2, "it was a message when it was stored");
    append(&*store, new_message(ab, b, "after")).await.unwrap();
    assert_eq!(store.messages(ab, Page::Before(u64::MAX), 10).await.unwrap().len(), 3);
    store
        .transact(
            Scope { message: Some((ab, 2)), ..Scope::default() },
            Box::new(move |snap| {
                assert_eq!(snap.message.as_ref().map(|m| &m.body), Some(&Body::Unreadable {}));
                Ok(vec![Effect::Replace { conv: ab, seq: 2, body: Body::Recalled { by: a, at: 9 } }])
            }),
        )
        .await
        .unwrap();
    assert_eq!(store.messages(ab, Page::After(1), 1).await.unwrap()[0].body, Body::Recalled { by: a, at: 9 });
}

/// A write the engine fails on (here an effect reusing a client id in another conversation,
/// which rules never produce) fails only itself: the appends queued around it commit, with
/// gap-free seqs.
async fn a_failing_write_fails_alone(store: Arc<dyn Store>) {
    let u = seed_users(&*store, 2).await;
    let (a, b) = (u[0], u[1]);
    let ab = ConvId::direct(a, b);
    append(&*store, new_message(ab, a, "taken")).await.unwrap();
    let mut tickets = Vec::new();
    for i in 0..20 {
        tickets.push(store.append(new_message(ab, b, &format!("x{i}"))).await.unwrap());
    }
    let bad = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let clash = new_message(ConvId::direct(a, a), a, "taken");
            store.transact(Scope::default(), Box::new(move |_| Ok(vec![Effect::Append(clash)]))).await
        })
    };
    tokio::task::yield_now().await;
    for i in 20..40 {
        tickets.push(store.append(new_message(ab, b, &format!("x{i}"))).await.unwrap());
    }
    assert!(bad.await.unwrap().is_err(), "the clashing write is refused");
    let mut seqs = Vec::new();
    for t in tickets {
        seqs.push(t.await.map_err(|_| StoreError::Closed).and_then(|r| r).expect("a bystander's append").message.seq);
    }
    assert_eq!(seqs, (2..42).collect::<Vec<_>>(), "every other append committed, in order, without gaps");
    assert_eq!(store.last_seq(ab).await.unwrap(), 41);

    // A message one engine may refuse (PostgreSQL text cannot hold NUL; logic refuses such ids
    // before they get here) in the middle of a batch of appends.
    let mut tickets = Vec::new();
    for i in 0..11 {
        let id = if i == 5 { "nul\0id".to_owned() } else { format!("y{i}") };
        tickets.push(store.append(new_message(ab, a, &id)).await.unwrap());
    }
    let mut stored = 0;
    for (i, t) in tickets.into_iter().enumerate() {
        match t.await.map_err(|_| StoreError::Closed).and_then(|r| r) {
            Ok(appended) => {
                stored += 1;
                assert_eq!(appended.message.seq, 41 + stored, "gap-free");
            }
            Err(e) => assert_eq!(i, 5, "only the odd one may fail, not {i}: {e}"),
        }
    }
    assert!(stored >= 10);
    assert!(store.health().failing().is_none(), "one bad write is not an unhealthy store");
}

/// Several stores over one database — the nodes of a cluster — write to one conversation at
/// once, each sender resending every message through another node as well: the conversation
/// gets gap-free seqs, each message is stored once, every resend answers with the original, and
/// each node reports its own commits once, in increasing seq order.
pub async fn nodes_share_one_gap_free_sequence(nodes: &[(Arc<dyn Store>, Arc<Recorder>)]) {
    let u = seed_users(&*nodes[0].0, 2).await;
    let conv = ConvId::direct(u[0], u[1]);
    const PER_SENDER: usize = 60;
    let mut tasks = Vec::new();
    for (n, (store, _)) in nodes.iter().enumerate() {
        for (sender, &from) in u.iter().enumerate() {
            let store = Arc::clone(store);
            let resend_via = Arc::clone(&nodes[(n + 1) % nodes.len()].0);
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..PER_SENDER {
                    let key = format!("n{n}-s{sender}-{i}");
                    let first = store.append(new_message(conv, from, &key));
                    let again = resend_via.append(new_message(conv, from, &key));
                    let (first, again) = (first.await.unwrap(), again.await.unwrap());
                    let (first, again) = (first.await.unwrap().unwrap(), again.await.unwrap().unwrap());
                    assert_eq!(first.message.seq, again.message.seq, "{key}: both answers name one message");
                    assert!(first.duplicate != again.duplicate, "{key}: exactly one of the two stored it");
                    got.push(first.message.seq);
                }
                got
            }));
        }
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one sender's seqs increase: {seqs:?}");
        all.extend(seqs);
    }
    let total = (nodes.len() * 2 * PER_SENDER) as u64;
    assert_eq!(all, (1..=total).collect(), "gap-free and unique across nodes");
    let stored = nodes[0].0.messages(conv, Page::After(0), 10_000).await.unwrap();
    assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>(), "one copy each");
    assert_eq!(nodes[1].0.last_seq(conv).await.unwrap(), total);
    let mut reported = BTreeSet::new();
    for (_, recorder) in nodes {
        let seqs: Vec<u64> = recorder.0.lock().iter().filter(|(c, _)| *c == conv).map(|(_, s)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a node reports its commits in seq order");
        for s in seqs {
            assert!(reported.insert(s), "seq {s} reported by two nodes");
        }
    }
    assert_eq!(reported, (1..=total).collect(), "every commit reported by the node that made it");
}

async fn accounts_and_session_cutoffs(store: Arc<dyn Store>) {
    use super::SessionCutoff;
    let id = store.create_user("carol", "hash-1").await.unwrap();
    let user = store.user_by_id(id).await.unwrap().unwrap();
    assert!(!user.disabled);
    assert!(store.set_password(id, "hash-2".into()).await.unwrap());
    assert!(store.set_disabled(id, true).await.unwrap());
    let user = store.user_by_name("CAROL").await.unwrap().unwrap();
    assert_eq!((user.password_hash.as_str(), user.disabled), ("hash-2", true));
    assert!(store.set_disabled(id, false).await.unwrap());
    assert!(!store.user_by_id(id).await.unwrap().unwrap().disabled);
    assert!(!store.set_password(UserId(9_999), "x".into()).await.unwrap(), "no such user");
    assert!(!store.set_disabled(UserId(9_999), true).await.unwrap(), "no such user");

    let phone = Some(DeviceId::parse("phone").unwrap());
    store.put_session_cutoff(SessionCutoff { user: id, device: phone.clone(), after_ms: 500 }).await.unwrap();
    store.put_session_cutoff(SessionCutoff { user: id, device: None, after_ms: 700 }).await.unwrap();
    // An earlier cutoff never replaces a later one.
    store.put_session_cutoff(SessionCutoff { user: id, device: None, after_ms: 600 }).await.unwrap();
    let mut cuts = store.session_cutoffs().await.unwrap();
    cuts.sort_by_key(|c| c.after_ms);
    assert_eq!(
        cuts,
        vec![
            SessionCutoff { user: id, device: phone, after_ms: 500 },
            SessionCutoff { user: id, device: None, after_ms: 700 },
        ]
    );
}

/// Records each committed message's recipients.
#[derive(Default)]
pub struct Recipients(pub Mutex<Vec<(ConvId, u64, Vec<UserId>)>>);

impl CommitListener for Recipients {
    fn committed(&self, batch: &[Committed]) {
        {
            let mut seen = self.0.lock();
            seen.extend(batch.iter().map(|c| (c.message.conv_id, c.message.seq, c.recipients.to_vec())));
        }
    }
}

fn notice(conv: ConvId, from: UserId, id: &str) -> NewMessage {
    let body = Body::Notice { notice: tern_proto::Notice::MemberLeft { user: from } };
    NewMessage { body_json: encode_body(&body), body, ..new_message(conv, from, id) }
}

async fn im_transactions(store: Arc<dyn Store>, recorder: Arc<Recipients>) {
    use tern_proto::{ErrorCode, GroupId, Role};

    use super::im::{DmPolicy, GroupRecord, JoinPolicy, MemberRecord, ProfileChange, Relation, Snapshot};

    let u = seed_users(&*store, 3).await;
    let (a, b, c) = (u[0], u[1], u[2]);
    let g = GroupId(77);
    let conv = ConvId::Group(g);
    let member = |user, role| MemberRecord { user, role, joined_seq: 1, read_seq: 0, muted_until: 0 };
    let info = GroupRecord {
        id: g,
        name: "g".into(),
        owner: a,
        join_policy: JoinPolicy::Open,
        muted_all: false,
        max_members: 10,
        created_at: 1,
        dissolved: false,
    };
    let denied = |e: StoreError| match e {
        StoreError::Denied(e) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // Create: the snapshot shows no group; effects apply in order (the member before the notice).
    let scope = Scope { group: Some(g), ..Scope::default() };
    let (i2, owner) = (info.clone(), member(a, Role::Owner));
    store
        .transact(
            scope.clone(),
            Box::new(move |snap| {
                assert!(snap.group.is_none());
                Ok(vec![Effect::PutGroup(i2), Effect::PutMember(g, owner), Effect::Append(notice(conv, a, "n1"))])
            }),
        )
        .await
        .unwrap();
    let state = store.group(g).await.unwrap().unwrap();
    assert_eq!((state.info.owner, state.members.len(), state.last_seq), (a, 1, 1));

    // A refusal changes nothing.
    let e = store
        .transact(
            scope.clone(),
            Box::new(move |_| {
                let _ = Effect::RemoveMember(g, a);
                Err(crate::error::Error::forbidden("no"))
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(denied(e), ErrorCode::Forbidden);
    assert_eq!(store.group(g).await.unwrap().unwrap().members.len(), 1);

    // Sends into the group: members only, to the members of that moment.
    assert_eq!(denied(append(&*store, new_message(conv, b, "b-early")).await.unwrap_err()), ErrorCode::NotFound);
    let first = append(&*store, new_message(conv, a, "a1")).await.unwrap();
    let mb = MemberRecord { joined_seq: 3, ..member(b, Role::Member) };
    store
        .transact(
            scope.clone(),
            Box::new(move |snap| {
                assert_eq!(snap.group.as_ref().unwrap().last_seq, 2, "the snapshot sees the group's last seq");
                Ok(vec![Effect::PutMember(g, mb), Effect::Append(notice(conv, b, "n2"))])
            }),
        )
        .await
        .unwrap();
    let second = append(&*store, new_message(conv, b, "b1")).await.unwrap();
    let seen = recorder.0.lock().clone();
    let of = |seq| seen.iter().find(|(cv, s, _)| *cv == conv && *s == seq).map(|(_, _, r)| r.clone()).unwrap();
    assert_eq!(of(first.message.seq), vec![a]);
    assert_eq!(of(second.message.seq), vec![a, b]);
    assert_eq!(store.membership(conv, b).await.unwrap().unwrap().joined_seq, 3);
    assert_eq!(store.membership(conv, c).await.unwrap(), None);

    // Mutes are checked by the send path.
    let muted = MemberRecord { muted_until: u64::MAX / 2, ..member(b, Role::Member) };
    store.transact(scope.clone(), Box::new(move |_| Ok(vec![Effect::PutMember(g, muted)]))).await.unwrap();
    assert_eq!(denied(append(&*store, new_message(conv, b, "b-muted")).await.unwrap_err()), ErrorCode::Muted);

    // Blocks and the friends-only policy are checked by the 1:1 send path, also for a pair
    // that has already talked (a store may remember what it checked; it must see every change).
    let ac = ConvId::direct(a, c);
    append(&*store, new_message(ac, c, "c-before-block")).await.unwrap();
    let pair = Scope { pair: Some((a, c)), ..Scope::default() };
    store
        .transact(
            pair.clone(),
            Box::new(move |snap| {
                let p = snap.pair.as_ref().unwrap();
                assert!(p.b_profile.is_some() && p.ab == Relation::default());
                Ok(vec![Effect::PutRelation {
                    owner: a,
                    peer: c,
                    relation: Relation { blocked: true, ..Relation::default() },
                }])
            }),
        )
        .await
        .unwrap();
    assert_eq!(denied(append(&*store, new_message(ac, c, "c-blocked")).await.unwrap_err()), ErrorCode::Blocked);
    append(&*store, new_message(ac, a, "a-to-c")).await.unwrap();
    let rel = store.relations_of(c).await.unwrap();
    assert!(rel.len() == 1 && rel[0].peer == a && rel[0].theirs.blocked && !rel[0].mine.blocked);
    assert_eq!(
        denied(append(&*store, new_message(ConvId::direct(a, UserId(987_654)), a, "x")).await.unwrap_err()),
        ErrorCode::NotFound
    );
    // Unblocked, then friends only: c (not a friend) is refused again; a profile change
    // that leaves the policy alone keeps it.
    let unblock =
        move |_: &Snapshot| Ok(vec![Effect::PutRelation { owner: a, peer: c, relation: Relation::default() }]);
    store.transact(pair.clone(), Box::new(unblock)).await.unwrap();
    append(&*store, new_message(ac, c, "c-unblocked")).await.unwrap();
    let friends_only = ProfileChange { dm_policy: Some(DmPolicy::Friends), ..ProfileChange::default() };
    store.update_profile(a, friends_only).await.unwrap();
    assert_eq!(denied(append(&*store, new_message(ac, c, "c-stranger")).await.unwrap_err()), ErrorCode::NotFriends);
    let nickname = ProfileChange { nickname: Some("ay".into()), ..ProfileChange::default() };
    store.update_profile(a, nickname).await.unwrap();
    assert_eq!(denied(append(&*store, new_message(ac, c, "c-stranger-2")).await.unwrap_err()), ErrorCode::NotFriends);
    let anyone = ProfileChange { dm_policy: Some(DmPolicy::Anyone), ..ProfileChange::default() };
    store.update_profile(a, anyone).await.unwrap();
    append(&*store, new_message(ac, c, "c-welcome")).await.unwrap();

    // Read positions, unread counts, receipts, and a replaced (recalled) body.
    let ab = ConvId::direct(a, b);
    for i in 0..3 {
        append(&*store, new_message(ab, b, &format!("ab{i}"))).await.unwrap();
    }
    let list = store.conversation_list(a).await.unwrap();
    let entry = list.iter().find(|e| e.conv_id == ab).unwrap();
    assert_eq!((entry.unread, entry.last_seq, entry.peer_read_seq), (3, 3, Some(0)));
    assert!(list.windows(2).all(|w| w[0].last_ts >= w[1].last_ts), "newest first");
    let group_entry = list.iter().find(|e| e.conv_id == conv).unwrap();
    assert_eq!((group_entry.name.as_deref(), group_entry.peer_read_seq), (Some("g"), None));
    assert_eq!(group_entry.last_message.as_ref().map(|m| m.seq), Some(group_entry.last_seq));
    assert!(list.iter().all(|e| !matches!(e.conv_id, ConvId::User(_))), "event streams are not listed");
    let read = Scope { member: Some((ab, a)), ..Scope::default() };
    store
        .transact(
            read,
            Box::new(move |snap| {
                assert_eq!((snap.member.as_ref().map(|m| m.read_seq), snap.member_conv_last_seq), (Some(0), 3));
                Ok(vec![Effect::SetRead { conv: ab, user: a, seq: 2 }])
            }),
        )
        .await
        .unwrap();
    store
        .transact(
            Scope { message: Some((ab, 3)), ..Scope::default() },
            Box::new(move |snap| {
                assert_eq!(snap.message.as_ref().map(|m| m.seq), Some(3));
                Ok(vec![Effect::Replace { conv: ab, seq: 3, body: Body::Recalled { by: b, at: 5 } }])
            }),
        )
        .await
        .unwrap();
    let entry = store.conversation_list(a).await.unwrap().into_iter().find(|e| e.conv_id == ab).unwrap();
    assert_eq!((entry.read_seq, entry.unread), (2, 0), "read up to 2, and 3 is a tombstone");
    assert_eq!(entry.last_message.map(|m| m.body), Some(Body::Recalled { by: b, at: 5 }));
    assert_eq!(store.read_count(ab, 2, b).await.unwrap(), 1);
    assert_eq!(store.read_count(ab, 3, b).await.unwrap(), 0);
    let page = store.messages(ab, Page::After(2), 10).await.unwrap();
    assert_eq!(page[0].body, Body::Recalled { by: b, at: 5 });
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

    // Room bans and mutes: one per kind per user and room, replaced, lifted.
    use crate::store::{RoomSanction, SanctionKind};
    let sanction = |user: u64, kind, until_ms, reason: &str| RoomSanction {
        room: "r1".into(),
        user_id: UserId(user),
        kind,
        until_ms,
        reason: reason.into(),
        created_at: 9,
    };
    store.put_room_sanction(sanction(1, SanctionKind::Ban, 0, "spam")).await.unwrap();
    store.put_room_sanction(sanction(1, SanctionKind::Mute, 50, "")).await.unwrap();
    store.put_room_sanction(sanction(2, SanctionKind::Ban, 10, "first")).await.unwrap();
    store.put_room_sanction(sanction(2, SanctionKind::Ban, 20, "second")).await.unwrap();
    assert!(store.lift_room_sanction("r1", UserId(1), SanctionKind::Mute).await.unwrap());
    assert!(!store.lift_room_sanction("r1", UserId(1), SanctionKind::Mute).await.unwrap());
    let mut all = store.room_sanctions().await.unwrap();
    all.sort_by_key(|s| s.user_id);
    assert_eq!(all, vec![sanction(1, SanctionKind::Ban, 0, "spam"), sanction(2, SanctionKind::Ban, 20, "second")]);

    // Room settings: one row per room, replaced.
    use crate::store::{RoomPolicy, StoredRoomSettings};
    let settings = |room: &str, slow, policy, after| StoredRoomSettings {
        room: room.into(),
        slow_mode_secs: slow,
        policy,
        tokens_after_ms: after,
        history_size: slow.map(|s| s + 1),
        anonymous_posts: after == 7,
    };
    store.put_room_settings(settings("r1", Some(30), RoomPolicy::Public, 0)).await.unwrap();
    store.put_room_settings(settings("r2", None, RoomPolicy::Token, 5)).await.unwrap();
    store.put_room_settings(settings("r1", None, RoomPolicy::Token, 7)).await.unwrap();
    let mut all = store.room_settings().await.unwrap();
    all.sort_by(|a, b| a.room.cmp(&b.room));
    assert_eq!(all, vec![settings("r1", None, RoomPolicy::Token, 7), settings("r2", None, RoomPolicy::Token, 5)]);
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
    let reported: Vec<u64> = recorder.0.lock().iter().filter(|(c, _)| *c == conv).map(|(_, s)| *s).collect();
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
