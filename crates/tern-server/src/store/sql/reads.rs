//! The model's reads, for the engines' read connections and for their transactions alike.

use std::collections::BTreeMap;

use tern_proto::{ConvId, GroupId, Message, UserId};

use super::rows::{
    group_columns, group_from, join_request_from, member_columns, member_from, message_columns, message_from,
    profile_columns, profile_from, relation_from,
};
use super::{Sql, Value};
use crate::store::im::{
    ConvSummary, GroupState, MemberRecord, Profile, Relation, RelationRow, UNREAD_CAP, relation_rows,
};
use crate::store::{ConvPosition, Page};

/// A member of a conversation, or `None`.
pub(crate) async fn load_member<S: Sql>(
    s: &mut S,
    conv: ConvId,
    user: UserId,
) -> Result<Option<MemberRecord>, S::Error> {
    let conv = conv.to_string();
    s.query_opt(
        concat!("SELECT ", member_columns!(), " FROM conv_members WHERE conv_id = $1 AND user_id = $2"),
        &[Value::Text(&conv), Value::id(user.0)],
        member_from,
    )
    .await
}

/// A group with its members and join requests, `last_seq` as given; `None` if it never existed.
pub(crate) async fn load_group<S: Sql>(s: &mut S, g: GroupId, last_seq: u64) -> Result<Option<GroupState>, S::Error> {
    let Some(info) = s
        .query_opt(concat!("SELECT ", group_columns!(), " FROM groups WHERE id = $1"), &[Value::id(g.0)], group_from)
        .await?
    else {
        return Ok(None);
    };
    let conv = ConvId::Group(g).to_string();
    let members: BTreeMap<_, _> = s
        .query(
            concat!("SELECT ", member_columns!(), " FROM conv_members WHERE conv_id = $1"),
            &[Value::Text(&conv)],
            member_from,
        )
        .await?
        .into_iter()
        .map(|m| (m.user, m))
        .collect();
    let requests: BTreeMap<_, _> = s
        .query(
            "SELECT user_id, message, ts FROM join_requests WHERE group_id = $1",
            &[Value::id(g.0)],
            join_request_from,
        )
        .await?
        .into_iter()
        .map(|r| (r.user, r))
        .collect();
    Ok(Some(GroupState { info, members, requests, last_seq }))
}

/// A user's profile, or `None`.
pub(crate) async fn load_profile<S: Sql>(s: &mut S, user: UserId) -> Result<Option<Profile>, S::Error> {
    s.query_opt(concat!("SELECT ", profile_columns!(), " FROM users WHERE id = $1"), &[Value::id(user.0)], profile_from)
        .await
}

/// What `owner` has set towards `peer` (the default if nothing).
pub(crate) async fn load_relation<S: Sql>(s: &mut S, owner: UserId, peer: UserId) -> Result<Relation, S::Error> {
    Ok(s.query_opt(
        "SELECT friend, blocked, request_msg, request_ts FROM relations WHERE owner = $1 AND peer = $2",
        &[Value::id(owner.0), Value::id(peer.0)],
        |r| relation_from(r, 0),
    )
    .await?
    .unwrap_or_default())
}

/// One message, or `None`.
pub(crate) async fn message_at<S: Sql>(s: &mut S, conv: ConvId, seq: u64) -> Result<Option<Message>, S::Error> {
    let conv = conv.to_string();
    s.query_opt(
        concat!("SELECT ", message_columns!(), " FROM messages WHERE conv_id = $1 AND seq = $2"),
        &[Value::Text(&conv), Value::num(seq)],
        |r| message_from(r, 0),
    )
    .await
}

/// A conversation's last seq as committed (0 if it has none).
pub(crate) async fn stored_last_seq<S: Sql>(s: &mut S, conv: ConvId) -> Result<u64, S::Error> {
    let conv = conv.to_string();
    Ok(s.query_opt("SELECT last_seq FROM conversations WHERE conv_id = $1", &[Value::Text(&conv)], |r| r.int(0))
        .await?
        .map_or(0, |s| s as u64))
}

/// A page of a conversation's history.
pub(crate) async fn messages<S: Sql>(
    s: &mut S,
    conv: ConvId,
    page: Page,
    limit: u32,
) -> Result<Vec<Message>, S::Error> {
    let (sql, bound) = match page {
        Page::After(seq) => (
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE conv_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
            ),
            seq,
        ),
        Page::Before(seq) => (
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE conv_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
            ),
            seq,
        ),
    };
    let conv = conv.to_string();
    s.query(sql, &[Value::Text(&conv), Value::num(bound), Value::Int(i64::from(limit))], |r| message_from(r, 0)).await
}

/// Every conversation `user` belongs to: its last seq and the user's first readable seq.
pub(crate) async fn conversations_of<S: Sql>(s: &mut S, user: UserId) -> Result<Vec<ConvPosition>, S::Error> {
    let rows = s
        .query(
            "SELECT m.conv_id, c.last_seq, m.joined_seq FROM conv_members m \
             JOIN conversations c ON c.conv_id = m.conv_id WHERE m.user_id = $1",
            &[Value::id(user.0)],
            |r| Ok((r.text(0)?.parse::<ConvId>().ok(), r.int(1)? as u64, r.int(2)? as u64)),
        )
        .await?;
    // Rows are written only from parsed ids; an unparsable one is skipped, not fatal.
    Ok(rows.into_iter().filter_map(|(conv, last, joined)| Some((conv?, last, joined))).collect())
}

/// Everyone `user` has a relation with, either way.
pub(crate) async fn relations_of<S: Sql>(s: &mut S, user: UserId) -> Result<Vec<RelationRow>, S::Error> {
    let rows = s
        .query(
            "SELECT owner, peer, friend, blocked, request_msg, request_ts FROM relations WHERE owner = $1 \
             UNION ALL SELECT owner, peer, friend, blocked, request_msg, request_ts FROM relations WHERE peer = $1",
            &[Value::id(user.0)],
            |r| Ok((UserId(r.int(0)? as u64), UserId(r.int(1)? as u64), relation_from(r, 2)?)),
        )
        .await?;
    Ok(relation_rows(user, rows))
}

/// How many members other than `except` have read `seq` (and could: they joined before it).
pub(crate) async fn read_count<S: Sql>(s: &mut S, conv: ConvId, seq: u64, except: UserId) -> Result<u64, S::Error> {
    let conv = conv.to_string();
    Ok(s
        .query_opt(
            "SELECT COUNT(*) FROM conv_members WHERE conv_id = $1 AND read_seq >= $2 AND joined_seq <= $2 AND user_id <> $3",
            &[Value::Text(&conv), Value::num(seq), Value::id(except.0)],
            |r| r.int(0),
        )
        .await?
        .map_or(0, |n| n as u64))
}

/// A user's conversation list, newest first, in one query: per conversation its last message,
/// the unread count (capped), the peer's read position (1:1) and the name (groups).
pub(crate) async fn conversation_list<S: Sql>(s: &mut S, user: UserId) -> Result<Vec<ConvSummary>, S::Error> {
    const SQL: &str = concat!(
        "SELECT m.conv_id, m.read_seq, c.last_seq, c.last_ts, \
         (SELECT COUNT(*) FROM (SELECT 1 FROM messages x WHERE x.conv_id = m.conv_id AND x.seq > m.read_seq \
            AND x.counted AND x.sender <> $1 LIMIT $2) u), \
         (SELECT p.read_seq FROM conv_members p WHERE m.conv_id LIKE 'd:%' AND p.conv_id = m.conv_id \
            AND p.user_id <> $1 LIMIT 1), \
         CASE WHEN m.conv_id LIKE 'g:%' THEN \
            (SELECT g.name FROM groups g WHERE g.id = CAST(substr(m.conv_id, 3) AS BIGINT)) END, ",
        "lm.conv_id, lm.seq, lm.msg_id, lm.sender, lm.client_msg_id, lm.ts, lm.body \
         FROM conv_members m JOIN conversations c ON c.conv_id = m.conv_id \
         LEFT JOIN messages lm ON lm.conv_id = m.conv_id AND lm.seq = c.last_seq \
         WHERE m.user_id = $1 AND m.conv_id NOT LIKE 'u:%' ORDER BY c.last_ts DESC, c.conv_id"
    );
    let rows = s
        .query(SQL, &[Value::id(user.0), Value::Int(UNREAD_CAP as i64)], |r| {
            let Ok(conv_id) = r.text(0)?.parse::<ConvId>() else { return Ok(None) };
            let peer_read_seq = match conv_id.peer_of(user) {
                Some(peer) if peer != user => Some(r.opt_int(5)?.unwrap_or(0) as u64),
                _ => None,
            };
            Ok(Some(ConvSummary {
                conv_id,
                last_seq: r.int(2)? as u64,
                last_ts: r.int(3)? as u64,
                last_message: match r.opt_text(7)? {
                    Some(_) => Some(message_from(r, 7)?),
                    None => None,
                },
                read_seq: r.int(1)? as u64,
                unread: r.int(4)? as u64,
                peer_read_seq,
                name: r.opt_text(6)?.map(str::to_owned),
            }))
        })
        .await?;
    Ok(rows.into_iter().flatten().collect())
}
