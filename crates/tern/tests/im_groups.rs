//! Groups, the conversation list, read receipts, recall, the authorization matrix, concurrency
//! and sync — end to end through the SDK, with several users and two devices of one user.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::json;
use tern_client::http::im;
use tern_client::{Body, Client, ConvId, ErrorCode, Events, Options, Session, Transport};
use tern_proto::rest::JoinPolicy;
use tern_proto::{ClientFrame, GroupId, LeaveReason, Notice, Role, ServerFrame};

fn gid(v: &serde_json::Value) -> GroupId {
    GroupId(v["group_id"].as_u64().unwrap())
}

/// Waits for the next chat (non-notice) message.
async fn next_chat(events: &mut Events) -> tern_client::Message {
    loop {
        let m = tokio::time::timeout(WAIT, events.next_message()).await.expect("timed out").expect("stream ended");
        if notice_of(&m).is_none() {
            return m;
        }
    }
}

/// Waits until a notice equal to `want` arrives.
async fn wait_notice(events: &mut Events, want: &Notice) {
    loop {
        if &next_notice(events).await == want {
            return;
        }
    }
}

fn members(v: &serde_json::Value) -> Vec<(u64, String)> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user_id"].as_u64().unwrap(), m["role"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_use_the_groups_seq_and_reach_every_member_device() {
    let srv = TestServer::start().await;
    let alice_phone = srv.login("alice", "phone").await;
    let alice_laptop = srv.login("alice", "laptop").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    let (ac, mut ap) = connect(&alice_phone, Transport::WsJson).await;
    let (_al, mut al) = connect(&alice_laptop, Transport::Tcp).await;
    let (bc, mut be) = connect(&bob, Transport::WsBinary).await;

    let g = as_json(im::create_group(&alice_phone, "team", JoinPolicy::Open).await.unwrap());
    let (id, conv) = (gid(&g), ConvId::Group(gid(&g)));
    assert_eq!(g["conv_id"], json!(conv.to_string()));
    assert_eq!(members(&g), vec![(alice_phone.user_id.0, "owner".into())]);
    im::invite(&alice_phone, id, bob.user_id).await.unwrap();
    let joined = next_notice(&mut be).await;
    assert!(matches!(joined, Notice::GroupJoined { group, from_seq: 2, .. } if group == id), "{joined:?}");

    let s1 = bc.send_text_to(conv, "hello team").await.unwrap();
    let s2 = ac.send_text_to(conv, "hi bob").await.unwrap();
    assert_eq!((s1.conv_id, s1.seq, s2.seq), (conv, 3, 4), "created=1, bob joined=2, then the messages");
    assert_eq!(texts(&[next_chat(&mut ap).await]), vec!["hello team"]);
    let on_laptop = [next_chat(&mut al).await, next_chat(&mut al).await];
    assert_eq!(texts(&on_laptop), vec!["hello team", "hi bob"], "the sender's other device gets its own message too");
    assert_eq!(texts(&[next_chat(&mut be).await]), vec!["hi bob"]);

    // Carol joins later (open group): she reads from her join on, not before.
    assert_eq!(as_json(im::join_group(&carol, id, "").await.unwrap())["status"], "joined");
    let page = tern_client::http::history(&carol, conv, Some(0), 100).await.unwrap();
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![5], "only her own join notice");
    assert!(
        matches!(notice_of(&page.messages[0]), Some(Notice::MemberJoined { user, by: None }) if *user == carol.user_id)
    );
    let older = tern_client::http::history(&alice_phone, conv, Some(0), 100).await.unwrap();
    assert_eq!(older.messages.len(), 5, "the owner sees everything from creation");
    // A new device of bob sees the full history he is entitled to.
    let bob_tablet = srv.login("bob", "tablet").await;
    let roamed = tern_client::http::history(&bob_tablet, conv, Some(0), 100).await.unwrap();
    assert_eq!(roamed.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_kicks_mutes_transfer_approval_limits_and_dissolve() {
    let srv = TestServer::with(|c| c.messages.max_group_members = 4).await;
    let owner = srv.login("owner", "phone").await;
    let admin = srv.login("admin", "phone").await;
    let m1 = srv.login("member1", "phone").await;
    let m2 = srv.login("member2", "phone").await;
    let late = srv.login("late", "phone").await;
    let (oc, _oe) = connect(&owner, Transport::WsJson).await;
    let (ac, _ae) = connect(&admin, Transport::WsJson).await;
    let (m1c, mut m1e) = connect(&m1, Transport::WsJson).await;
    let (m2c, _m2e) = connect(&m2, Transport::WsJson).await;

    let g = as_json(im::create_group(&owner, "ops", JoinPolicy::Approval).await.unwrap());
    let (id, conv) = (gid(&g), ConvId::Group(gid(&g)));
    im::invite(&owner, id, admin.user_id).await.unwrap();
    im::set_role(&owner, id, admin.user_id, Role::Admin).await.unwrap();
    im::invite(&admin, id, m1.user_id).await.unwrap();
    assert_eq!(
        code(im::invite(&m1, id, m2.user_id).await),
        ErrorCode::Forbidden,
        "members may not invite in approval groups"
    );
    assert_eq!(
        code(im::set_role(&admin, id, m1.user_id, Role::Admin).await),
        ErrorCode::Forbidden,
        "only the owner sets roles"
    );

    // Asking to join an approval group waits for an admin; the admins are told.
    assert_eq!(as_json(im::join_group(&m2, id, "let me in").await.unwrap())["status"], "requested");
    let view = as_json(im::group(&admin, id).await.unwrap());
    assert_eq!(view["requests"][0]["user_id"], json!(m2.user_id.0));
    assert!(
        as_json(im::group(&m1, id).await.unwrap())["requests"].as_array().unwrap().is_empty(),
        "members do not see requests"
    );
    assert_eq!(code(im::approve(&m1, id, m2.user_id).await), ErrorCode::Forbidden);
    im::approve(&admin, id, m2.user_id).await.unwrap();
    // The member limit (4) holds.
    assert_eq!(code(im::invite(&owner, id, late.user_id).await), ErrorCode::GroupFull);

    // Admins kick members, not the owner or other admins.
    assert_eq!(code(im::kick(&admin, id, owner.user_id).await), ErrorCode::Forbidden);
    assert_eq!(code(im::kick(&m1, id, m2.user_id).await), ErrorCode::Forbidden);
    im::kick(&admin, id, m2.user_id).await.unwrap();
    assert_eq!(code(m2c.send_text_to(conv, "still here?").await), ErrorCode::NotFound, "a kicked member cannot send");

    // Member mute, then whole-group mute (admins may still speak).
    im::mute_member(&admin, id, m1.user_id, 60).await.unwrap();
    assert_eq!(code(m1c.send_text_to(conv, "muted?").await), ErrorCode::Muted);
    im::mute_member(&admin, id, m1.user_id, 0).await.unwrap();
    m1c.send_text_to(conv, "unmuted").await.unwrap();
    im::mute_group(&owner, id, true).await.unwrap();
    assert_eq!(code(m1c.send_text_to(conv, "all muted?").await), ErrorCode::Muted);
    ac.send_text_to(conv, "admins may talk").await.unwrap();
    assert_eq!(code(im::mute_group(&m1, id, false).await), ErrorCode::Forbidden);
    im::mute_group(&admin, id, false).await.unwrap();

    // Transfer: the old owner becomes an admin; only then may they leave.
    assert_eq!(code(im::leave_group(&owner, id).await), ErrorCode::Conflict);
    assert_eq!(code(im::transfer(&admin, id, m1.user_id).await), ErrorCode::Forbidden);
    im::transfer(&owner, id, admin.user_id).await.unwrap();
    let roles: Vec<(u64, String)> = members(&as_json(im::group(&m1, id).await.unwrap()));
    assert!(
        roles.contains(&(admin.user_id.0, "owner".into())) && roles.contains(&(owner.user_id.0, "admin".into())),
        "{roles:?}"
    );
    im::leave_group(&owner, id).await.unwrap();
    assert_eq!(code(oc.send_text_to(conv, "gone").await), ErrorCode::NotFound);

    // The group's own notices tell members what happened, in seq order.
    let page = tern_client::http::history(&admin, conv, Some(0), 100).await.unwrap();
    let kinds: Vec<Notice> = page.messages.iter().filter_map(|m| notice_of(m).cloned()).collect();
    assert!(kinds.contains(&Notice::MemberKicked { user: m2.user_id, by: admin.user_id }));
    assert!(kinds.contains(&Notice::OwnerChanged { from: owner.user_id, to: admin.user_id }));
    assert!(kinds.contains(&Notice::MemberLeft { user: owner.user_id }));
    assert!(kinds.contains(&Notice::RoleChanged { user: admin.user_id, role: Role::Admin }));

    // Dissolve: every member is told in their own stream; the group is gone.
    assert_eq!(code(im::dissolve(&m1, id).await), ErrorCode::Forbidden);
    im::dissolve(&admin, id).await.unwrap();
    wait_notice(&mut m1e, &Notice::GroupLeft { group: id, reason: LeaveReason::Dissolved }).await;
    assert_eq!(code(im::group(&admin, id).await), ErrorCode::NotFound);
    assert_eq!(code(ac.send_text_to(conv, "anyone?").await), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_list_unread_counts_and_read_receipts_are_the_same_on_every_device() {
    let srv = TestServer::start().await;
    let alice_phone = srv.login("alice", "phone").await;
    let alice_laptop = srv.login("alice", "laptop").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    let (apc, mut ap) = connect(&alice_phone, Transport::WsJson).await;
    let (_alc, mut al) = connect(&alice_laptop, Transport::Tcp).await;
    let (bc, mut be) = connect(&bob, Transport::WsJson).await;
    let (cc, _ce) = connect(&carol, Transport::WsJson).await;
    let direct = ConvId::direct(alice_phone.user_id, bob.user_id);

    for t in ["one", "two", "three"] {
        bc.send_text(alice_phone.user_id, t).await.unwrap();
    }
    // The list orders by last message time in ms; a tie within one millisecond is ambiguous
    // (ordered by conv id), so carol's message is sent in a later millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    cc.send_text(alice_phone.user_id, "from carol").await.unwrap();
    let list = as_json(im::conversations(&alice_laptop).await.unwrap());
    assert_eq!(list, as_json(im::conversations(&alice_phone).await.unwrap()), "the same list on every device");
    let convs: Vec<&str> = list.as_array().unwrap().iter().map(|c| c["conv_id"].as_str().unwrap()).collect();
    assert_eq!(convs[0], ConvId::direct(alice_phone.user_id, carol.user_id).to_string(), "newest first");
    assert_eq!(list[1]["unread"], 3);
    assert_eq!(list[1]["last_message"]["body"]["text"], "three");

    // The phone reads up to 2: the laptop is told, bob sees "read".
    apc.read(direct, 2).await.unwrap();
    wait_notice(&mut al, &Notice::Read { conv_id: direct, seq: 2 }).await;
    wait_notice(&mut be, &Notice::PeerRead { conv_id: direct, user: alice_phone.user_id, seq: 2 }).await;
    let list = as_json(im::conversations(&alice_laptop).await.unwrap());
    let entry = list.as_array().unwrap().iter().find(|c| c["conv_id"] == json!(direct.to_string())).unwrap().clone();
    assert_eq!((entry["unread"].as_u64(), entry["read_seq"].as_u64()), (Some(1), Some(2)));
    let bobs = as_json(im::conversations(&bob).await.unwrap());
    assert_eq!(bobs[0]["peer_read_seq"], 2);
    assert_eq!(bobs[0]["unread"], 0, "one's own messages are never unread");
    // Reading backwards changes nothing; past the end is refused.
    apc.read(direct, 1).await.unwrap();
    assert_eq!(code(apc.read(direct, 99).await), ErrorCode::BadRequest);
    let _ = drain_messages(&mut ap, Duration::from_millis(100)).await;

    // Group read counts.
    let g = as_json(im::create_group(&alice_phone, "g", JoinPolicy::Open).await.unwrap());
    let conv = ConvId::Group(gid(&g));
    im::invite(&alice_phone, gid(&g), bob.user_id).await.unwrap();
    im::invite(&alice_phone, gid(&g), carol.user_id).await.unwrap();
    let sent = apc.send_text_to(conv, "did you read this?").await.unwrap();
    assert_eq!(as_json(im::reads(&bob, conv, sent.seq).await.unwrap()), json!({ "read": 0, "unread": 2 }));
    im::mark_read(&bob, conv, sent.seq).await.unwrap();
    assert_eq!(as_json(im::reads(&carol, conv, sent.seq).await.unwrap()), json!({ "read": 1, "unread": 1 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_leaves_a_tombstone_everywhere_within_the_window_for_the_sender_or_a_higher_role() {
    let srv = TestServer::with(|c| c.messages.recall_window_secs = 2).await;
    let alice = srv.login("alice", "phone").await;
    let bob_phone = srv.login("bob", "phone").await;
    let bob_laptop = srv.login("bob", "laptop").await;
    let carol = srv.login("carol", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::WsJson).await;
    let (_bpc, mut bp) = connect(&bob_phone, Transport::WsJson).await;
    let (blc, mut bl) = connect(&bob_laptop, Transport::WsJson).await;
    let direct = ConvId::direct(alice.user_id, bob_phone.user_id);

    let sent = ac.send_text(bob_phone.user_id, "oops, wrong chat").await.unwrap();
    assert_eq!(code(blc.recall(direct, sent.seq).await), ErrorCode::Forbidden, "not one's own message");
    ac.recall(direct, sent.seq).await.unwrap();
    for events in [&mut bp, &mut bl] {
        wait_notice(events, &Notice::Recall { seq: sent.seq, msg_id: sent.msg_id, by: alice.user_id }).await;
    }
    let page = tern_client::http::history(&bob_laptop, direct, Some(0), 10).await.unwrap();
    assert!(matches!(page.messages[0].body, Body::Recalled { by, .. } if by == alice.user_id));
    assert!(!serde_json::to_string(&page.messages).unwrap().contains("wrong chat"), "the content is gone");
    assert_eq!(code(ac.recall(direct, sent.seq).await), ErrorCode::Conflict, "already recalled");
    assert_eq!(code(ac.recall(direct, sent.seq + 1).await), ErrorCode::BadRequest, "a notice cannot be recalled");
    let list = as_json(im::conversations(&bob_phone).await.unwrap());
    assert_eq!(list[0]["unread"], 0, "a recalled message is not unread");

    // In a group an admin recalls a member's message; a member cannot recall an admin's.
    let g = as_json(im::create_group(&alice, "g", JoinPolicy::Open).await.unwrap());
    let conv = ConvId::Group(gid(&g));
    im::invite(&alice, gid(&g), bob_phone.user_id).await.unwrap();
    im::invite(&alice, gid(&g), carol.user_id).await.unwrap();
    let by_bob = blc.send_text_to(conv, "spam").await.unwrap();
    let by_owner = ac.send_text_to(conv, "rules").await.unwrap();
    let (cc, _ce) = connect(&carol, Transport::WsJson).await;
    assert_eq!(code(cc.recall(conv, by_bob.seq).await), ErrorCode::Forbidden);
    assert_eq!(code(blc.recall(conv, by_owner.seq).await), ErrorCode::Forbidden);
    ac.recall(conv, by_bob.seq).await.unwrap();

    // After the window, not even the sender.
    let late = ac.send_text(bob_phone.user_id, "too late to take back").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(code(ac.recall(direct, late.seq).await), ErrorCode::RecallExpired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_every_row_is_denied_with_the_right_code_and_leaks_nothing() {
    let srv = TestServer::with(|c| {
        c.gateway.retry_initial_ms = 150;
        c.gateway.retry_max_ms = 300;
    })
    .await;
    let alice = srv.login("alice", "phone").await;
    let bob = srv.login("bob", "phone").await;
    let eve = srv.login("eve", "phone").await;
    let (ac, _ae) = connect(&alice, Transport::WsJson).await;
    let (bc, _be) = connect(&bob, Transport::WsJson).await;
    let (ec, mut ee) = connect(&eve, Transport::WsJson).await;
    let g = as_json(im::create_group(&alice, "private", JoinPolicy::Approval).await.unwrap());
    let (id, conv) = (gid(&g), ConvId::Group(gid(&g)));
    im::invite(&alice, id, bob.user_id).await.unwrap();
    let sent = ac.send_text_to(conv, "members only").await.unwrap();
    let direct = ConvId::direct(alice.user_id, bob.user_id);
    let dm = ac.send_text(bob.user_id, "just for bob").await.unwrap();

    // A non-member: history (REST and socket), send, member list, read, recall, receipts.
    assert_eq!(code(tern_client::http::history(&eve, conv, None, 10).await), ErrorCode::NotFound);
    assert_eq!(code(ec.history(conv, Some(0), None, 10).await), ErrorCode::NotFound);
    assert_eq!(code(ec.send_text_to(conv, "let me in").await), ErrorCode::NotFound);
    assert_eq!(code(im::group(&eve, id).await), ErrorCode::NotFound);
    assert_eq!(code(im::group(&eve, GroupId(424242)).await), ErrorCode::NotFound, "same answer as no group at all");
    assert_eq!(code(ec.read(conv, sent.seq).await), ErrorCode::NotFound);
    assert_eq!(code(ec.recall(conv, sent.seq).await), ErrorCode::NotFound);
    assert_eq!(code(im::reads(&eve, conv, sent.seq).await), ErrorCode::NotFound);
    assert_eq!(code(im::invite(&eve, id, eve.user_id).await), ErrorCode::NotFound);
    assert_eq!(code(im::kick(&eve, id, bob.user_id).await), ErrorCode::NotFound);
    // Someone else's 1:1 conversation: read it, mark it read, recall in it, send into it.
    assert_eq!(code(tern_client::http::history(&eve, direct, None, 10).await), ErrorCode::NotFound);
    assert_eq!(code(ec.read(direct, dm.seq).await), ErrorCode::NotFound);
    assert_eq!(code(im::mark_read(&eve, direct, dm.seq).await), ErrorCode::NotFound);
    assert_eq!(code(ec.recall(direct, dm.seq).await), ErrorCode::NotFound);
    assert_eq!(code(ec.send_text_to(direct, "hi both").await), ErrorCode::NotFound);
    // Someone else's event stream.
    assert_eq!(
        code(tern_client::http::history(&eve, ConvId::User(alice.user_id), None, 10).await),
        ErrorCode::NotFound
    );
    // The conversation list is always the caller's own.
    let eves = as_json(im::conversations(&eve).await.unwrap());
    assert!(eves.as_array().unwrap().is_empty(), "{eves}");

    // A kicked member stops receiving at once.
    im::kick(&alice, id, bob.user_id).await.unwrap();
    let bob_tablet = srv.login("bob", "tablet").await;
    let (_bc2, mut be2) = connect(&bob_tablet, Transport::Tcp).await;
    ac.send_text_to(conv, "after the kick").await.unwrap();
    let seen = drain_messages(&mut be2, Duration::from_millis(600)).await;
    assert!(seen.iter().all(|m| m.conv_id != conv), "kicked member got {seen:?}");
    assert_eq!(code(bc.send_text_to(conv, "still in?").await), ErrorCode::NotFound);

    // ACKing someone else's message does not stop its delivery to them: eve's ACK is hers only.
    let mut raw = RawWs::open(&srv).await;
    assert!(matches!(raw.auth(&bob).await, ServerFrame::AuthOk { .. }));
    let pushed = ac.send_text(bob.user_id, "ack me yourself").await.unwrap();
    let mut eve_raw = RawWs::open(&srv).await;
    assert!(matches!(eve_raw.auth(&eve).await, ServerFrame::AuthOk { .. }));
    eve_raw.send_frame(&ClientFrame::Ack { msg_ids: vec![pushed.msg_id] }).await;
    let mut copies = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, raw.recv()).await {
        if matches!(&frame, ServerFrame::Msg(m) if m.msg_id == pushed.msg_id) {
            copies += 1;
        }
    }
    assert!(copies >= 2, "bob's unacked message kept being retried ({copies} copies)");
    expect_quiet(&mut ee, Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admins_leave_a_consistent_member_list_and_a_racing_message_is_all_or_nothing() {
    let srv = TestServer::start().await;
    let owner = srv.login("owner", "phone").await;
    let admin = srv.login("admin", "phone").await;
    let target = srv.login("target", "phone").await;
    let witness = srv.login("witness", "phone").await;
    let g = as_json(im::create_group(&owner, "race", JoinPolicy::Open).await.unwrap());
    let (id, conv) = (gid(&g), ConvId::Group(gid(&g)));
    for u in [&admin, &witness] {
        im::invite(&owner, id, u.user_id).await.unwrap();
    }
    im::set_role(&owner, id, admin.user_id, Role::Admin).await.unwrap();
    let (tc, _te) = connect(&target, Transport::WsJson).await;
    let (_wc, mut we) = connect(&witness, Transport::WsJson).await;

    for round in 0..15 {
        // Two admins invite at once: one wins, the other is told it is done already.
        let (a, b) = tokio::join!(im::invite(&owner, id, target.user_id), im::invite(&admin, id, target.user_id));
        let outcomes = [a.is_ok(), b.is_ok()];
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "round {round}: {a:?} {b:?}");
        let loser = if a.is_ok() { b } else { a };
        assert_eq!(loser.unwrap_err().code(), Some(ErrorCode::Conflict));
        let listed = members(&as_json(im::group(&owner, id).await.unwrap()));
        assert_eq!(listed.iter().filter(|(u, _)| *u == target.user_id.0).count(), 1);

        // The target sends while two admins kick it.
        let text = format!("race {round}");
        let (sent, k1, k2) = tokio::join!(
            tc.send_text_to(conv, text.clone()),
            im::kick(&owner, id, target.user_id),
            im::kick(&admin, id, target.user_id)
        );
        assert_eq!([k1.is_ok(), k2.is_ok()].iter().filter(|ok| **ok).count(), 1, "exactly one kick applies");
        let listed = members(&as_json(im::group(&owner, id).await.unwrap()));
        assert!(listed.iter().all(|(u, _)| *u != target.user_id.0));
        let history = tern_client::http::history(&witness, conv, None, 20).await.unwrap();
        let stored = history.messages.iter().find(|m| matches!(&m.body, Body::Text { text: t } if *t == text));
        let kicked_at = history
            .messages
            .iter()
            .find(|m| matches!(notice_of(m), Some(Notice::MemberKicked { user, .. }) if *user == target.user_id))
            .map(|m| m.seq)
            .unwrap();
        match sent {
            Ok(s) => {
                assert_eq!(stored.map(|m| m.seq), Some(s.seq), "accepted means stored");
                assert!(s.seq < kicked_at, "accepted before the kick");
                // …and delivered to the members.
                loop {
                    let m = next_chat(&mut we).await;
                    if m.seq == s.seq {
                        break;
                    }
                }
            }
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::NotFound), "refused as a non-member");
                assert!(stored.is_none(), "refused means not stored");
            }
        }
    }
}

async fn connect_with(session: &Session, watermarks: std::collections::BTreeMap<ConvId, u64>) -> (Client, Events) {
    let opts = Options { transport: Transport::WsJson, watermarks, ..Options::default() };
    Client::connect(session.clone(), opts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_through_requests_joins_kicks_recalls_and_reads_catches_up_to_the_online_ones_state() {
    let srv = TestServer::start().await;
    let phone = srv.login("alice", "phone").await;
    let laptop = srv.login("alice", "laptop").await;
    let bob = srv.login("bob", "phone").await;
    let carol = srv.login("carol", "phone").await;
    let (pc, mut pe) = connect(&phone, Transport::WsJson).await;
    let (lc, mut le) = connect_with(&laptop, Default::default()).await;
    let (bc, _be) = connect(&bob, Transport::WsJson).await;
    bc.send_text(phone.user_id, "before").await.unwrap();
    let _ = expect_messages(&mut le, 1).await;
    let _ = expect_messages(&mut pe, 1).await;
    let watermarks = lc.watermarks();
    lc.close().await;

    // While the laptop is away: a friend request and accept, a group join and a kick, a chat,
    // a recall, and the phone reading.
    im::request_friend(&bob, phone.user_id, "friends?").await.unwrap();
    im::accept_friend(&phone, bob.user_id).await.unwrap();
    let g = as_json(im::create_group(&carol, "club", JoinPolicy::Open).await.unwrap());
    im::invite(&carol, gid(&g), phone.user_id).await.unwrap();
    let (cc, _ce) = connect(&carol, Transport::WsJson).await;
    cc.send_text_to(ConvId::Group(gid(&g)), "welcome").await.unwrap();
    let g2 = as_json(im::create_group(&carol, "brief", JoinPolicy::Open).await.unwrap());
    im::invite(&carol, gid(&g2), phone.user_id).await.unwrap();
    im::kick(&carol, gid(&g2), phone.user_id).await.unwrap();
    let oops = bc.send_text(phone.user_id, "oops").await.unwrap();
    bc.recall(oops.conv_id, oops.seq).await.unwrap();
    pc.read(oops.conv_id, oops.seq).await.unwrap();
    bc.send_text(phone.user_id, "after").await.unwrap();

    // The phone saw the short-lived group's join live; after the kick that conversation is no
    // longer hers, so a device catching up later is not given it (it gets the kick notice).
    let gone = ConvId::Group(gid(&g2));
    let online: BTreeSet<(ConvId, u64)> = drain_messages(&mut pe, Duration::from_millis(800))
        .await
        .iter()
        .map(|m| (m.conv_id, m.seq))
        .filter(|(c, _)| *c != gone)
        .collect();
    let (_lc2, mut le2) = connect_with(&laptop, watermarks).await;
    let caught_up: BTreeSet<(ConvId, u64)> =
        drain_messages(&mut le2, Duration::from_millis(1500)).await.iter().map(|m| (m.conv_id, m.seq)).collect();
    assert_eq!(caught_up, online, "the laptop caught up on exactly what the phone saw live");
    assert!(online.iter().any(|(c, _)| *c == ConvId::User(phone.user_id)), "notices are part of it");
    assert!(online.iter().any(|(c, _)| *c == ConvId::Group(gid(&g))), "group messages are part of it");
    // And the state views agree.
    assert_eq!(as_json(im::conversations(&laptop).await.unwrap()), as_json(im::conversations(&phone).await.unwrap()));
    assert_eq!(as_json(im::friends(&laptop).await.unwrap())["friends"][0]["user_id"], json!(bob.user_id.0));
}
