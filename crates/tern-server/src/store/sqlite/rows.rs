//! Reads and row mapping shared by the writer and the reader pool.

use super::*;

pub(super) fn member_from_row(r: &rusqlite::Row<'_>) -> Result<MemberRecord, rusqlite::Error> {
    let role: String = r.get(1)?;
    Ok(MemberRecord {
        user: UserId(r.get::<_, i64>(0)? as u64),
        role: parse_role(&role),
        joined_seq: r.get::<_, i64>(2)? as u64,
        read_seq: r.get::<_, i64>(3)? as u64,
        muted_until: r.get::<_, i64>(4)? as u64,
    })
}

pub(super) const MEMBER_COLUMNS: &str = "user_id, role, joined_seq, read_seq, muted_until";

pub(super) fn load_member(
    conn: &Connection,
    conv: ConvId,
    user: UserId,
) -> Result<Option<MemberRecord>, rusqlite::Error> {
    conn.prepare_cached(&format!("SELECT {MEMBER_COLUMNS} FROM conv_members WHERE conv_id = ?1 AND user_id = ?2"))?
        .query_row(params![conv.to_string(), user.0 as i64], member_from_row)
        .optional()
}

pub(super) fn load_group(conn: &Connection, g: GroupId, last_seq: u64) -> Result<Option<GroupState>, rusqlite::Error> {
    let info = conn
        .prepare_cached(
            "SELECT id, name, owner, join_policy, muted_all, max_members, created_at, dissolved FROM groups WHERE id = ?1",
        )?
        .query_row([g.0 as i64], |r| {
            let policy: String = r.get(3)?;
            Ok(GroupRecord {
                id: GroupId(r.get::<_, i64>(0)? as u64),
                name: r.get(1)?,
                owner: UserId(r.get::<_, i64>(2)? as u64),
                join_policy: JoinPolicy::parse(&policy),
                muted_all: r.get(4)?,
                max_members: r.get(5)?,
                created_at: r.get::<_, i64>(6)? as u64,
                dissolved: r.get(7)?,
            })
        })
        .optional()?;
    let Some(info) = info else { return Ok(None) };
    let mut members = BTreeMap::new();
    let mut stmt = conn.prepare_cached(&format!("SELECT {MEMBER_COLUMNS} FROM conv_members WHERE conv_id = ?1"))?;
    for m in stmt.query_map([ConvId::Group(g).to_string()], member_from_row)? {
        let m = m?;
        members.insert(m.user, m);
    }
    let mut requests = BTreeMap::new();
    let mut stmt = conn.prepare_cached("SELECT user_id, message, ts FROM join_requests WHERE group_id = ?1")?;
    for r in stmt.query_map([g.0 as i64], |r| {
        Ok(JoinRequest { user: UserId(r.get::<_, i64>(0)? as u64), message: r.get(1)?, ts: r.get::<_, i64>(2)? as u64 })
    })? {
        let r = r?;
        requests.insert(r.user, r);
    }
    Ok(Some(GroupState { info, members, requests, last_seq }))
}

pub(super) const PROFILE_COLUMNS: &str = "id, username, nickname, avatar, signature, dm_policy";

pub(super) fn profile_from_row(r: &rusqlite::Row<'_>) -> Result<Profile, rusqlite::Error> {
    let policy: String = r.get(5)?;
    Ok(Profile {
        user_id: UserId(r.get::<_, i64>(0)? as u64),
        username: r.get(1)?,
        nickname: r.get(2)?,
        avatar: r.get(3)?,
        signature: r.get(4)?,
        dm_policy: DmPolicy::parse(&policy),
    })
}

pub(super) fn load_profile(conn: &Connection, user: UserId) -> Result<Option<Profile>, rusqlite::Error> {
    conn.prepare_cached(&format!("SELECT {PROFILE_COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([user.0 as i64], profile_from_row)
        .optional()
}

pub(super) fn relation_from_row(r: &rusqlite::Row<'_>, at: usize) -> Result<Relation, rusqlite::Error> {
    let msg: Option<String> = r.get(at + 2)?;
    let ts: Option<i64> = r.get(at + 3)?;
    Ok(Relation { friend: r.get(at)?, blocked: r.get(at + 1)?, requested: msg.map(|m| (m, ts.unwrap_or(0) as u64)) })
}

pub(super) fn load_relation(conn: &Connection, owner: UserId, peer: UserId) -> Result<Relation, rusqlite::Error> {
    Ok(conn
        .prepare_cached(
            "SELECT friend, blocked, request_msg, request_ts FROM relations WHERE owner = ?1 AND peer = ?2",
        )?
        .query_row(params![owner.0 as i64, peer.0 as i64], |r| relation_from_row(r, 0))
        .optional()?
        .unwrap_or_default())
}

pub(super) fn message_at(conn: &Connection, conv: ConvId, seq: u64) -> Result<Option<Message>, rusqlite::Error> {
    conn.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv_id = ?1 AND seq = ?2"))?
        .query_row(params![conv.to_string(), seq as i64], row_to_message)
        .optional()
}

pub(super) fn conversation_list(c: &Connection, user: UserId) -> Result<Vec<ConvSummary>, rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "SELECT m.conv_id, m.read_seq, c.last_seq, c.last_ts FROM conv_members m \
         JOIN conversations c ON c.conv_id = m.conv_id \
         WHERE m.user_id = ?1 AND m.conv_id NOT LIKE 'u:%' ORDER BY c.last_ts DESC, c.conv_id",
    )?;
    let rows = stmt
        .query_map([user.0 as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (conv, read_seq, last_seq, last_ts) in rows {
        let Ok(conv_id) = conv.parse::<ConvId>() else { continue };
        let unread: i64 = c
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE conv_id = ?1 AND seq > ?2 AND counted = 1 \
                 AND sender <> ?3 LIMIT ?4)",
            )?
            .query_row(params![conv, read_seq as i64, user.0 as i64, UNREAD_CAP as i64], |r| r.get(0))?;
        let peer_read_seq = match conv_id.peer_of(user) {
            Some(peer) if peer != user => Some(load_member(c, conv_id, peer)?.map_or(0, |m| m.read_seq)),
            _ => None,
        };
        let name = match conv_id {
            ConvId::Group(g) => c
                .prepare_cached("SELECT name FROM groups WHERE id = ?1")?
                .query_row([g.0 as i64], |r| r.get(0))
                .optional()?,
            _ => None,
        };
        out.push(ConvSummary {
            conv_id,
            last_seq,
            last_ts: last_ts as u64,
            last_message: message_at(c, conv_id, last_seq)?,
            read_seq,
            unread: unread as u64,
            peer_read_seq,
            name,
        });
    }
    Ok(out)
}

pub(super) fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

pub(super) fn last_seq(conn: &Connection, conv: ConvId) -> Result<u64, rusqlite::Error> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT last_seq FROM conversations WHERE conv_id = ?1")?
        .query_row([conv.to_string()], |r| r.get(0))
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

pub(super) const MESSAGE_COLUMNS: &str = "conv_id, seq, msg_id, sender, client_msg_id, ts, body";

pub(super) fn row_to_message(row: &rusqlite::Row<'_>) -> Result<Message, rusqlite::Error> {
    let conv: String = row.get(0)?;
    let conv_id = conv
        .parse::<ConvId>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
    let seq = row.get::<_, i64>(1)? as u64;
    let body = crate::store::decode_body(row.get_ref(6)?.as_blob()?, conv_id, seq);
    Ok(Message {
        conv_id,
        seq,
        msg_id: MsgId(row.get::<_, i64>(2)? as u64),
        from: UserId(row.get::<_, i64>(3)? as u64),
        client_msg_id: row.get(4)?,
        ts: row.get::<_, i64>(5)? as u64,
        body,
    })
}

pub(super) fn find_by_client_id(
    conn: &Connection,
    sender: UserId,
    client_msg_id: &str,
) -> Result<Option<Message>, rusqlite::Error> {
    conn.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender = ?1 AND client_msg_id = ?2"))?
        .query_row(params![sender.0 as i64, client_msg_id], row_to_message)
        .optional()
}

pub(super) fn user_from_row(row: &rusqlite::Row<'_>) -> Result<UserRecord, rusqlite::Error> {
    Ok(UserRecord {
        id: UserId(row.get::<_, i64>(0)? as u64),
        username: row.get(1)?,
        password_hash: row.get(2)?,
        disabled: row.get(3)?,
    })
}
