//! Row mapping and single-row reads.

use super::*;

pub(super) const MEMBER_COLUMNS: &str = "user_id, role, joined_seq, read_seq, muted_until";

pub(super) fn member_from_row(r: &Row) -> MemberRecord {
    MemberRecord {
        user: UserId(r.get::<_, i64>(0) as u64),
        role: parse_role(r.get(1)),
        joined_seq: r.get::<_, i64>(2) as u64,
        read_seq: r.get::<_, i64>(3) as u64,
        muted_until: r.get::<_, i64>(4) as u64,
    }
}

pub(super) async fn load_member<C: GenericClient + Sync>(
    c: &C,
    conv: ConvId,
    user: UserId,
) -> Result<Option<MemberRecord>, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {MEMBER_COLUMNS} FROM conv_members WHERE conv_id = $1 AND user_id = $2"),
            &[&conv.to_string(), &(user.0 as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(row.as_ref().map(member_from_row))
}

pub(super) async fn load_group(
    tx: &tokio_postgres::Transaction<'_>,
    g: GroupId,
    last_seq: u64,
) -> Result<Option<GroupState>, BatchError> {
    let Some(r) = tx
        .query_opt(
            "SELECT id, name, owner, join_policy, muted_all, max_members, created_at, dissolved FROM groups WHERE id = $1",
            &[&(g.0 as i64)],
        )
        .await?
    else {
        return Ok(None);
    };
    let info = GroupRecord {
        id: GroupId(r.get::<_, i64>(0) as u64),
        name: r.get(1),
        owner: UserId(r.get::<_, i64>(2) as u64),
        join_policy: JoinPolicy::parse(r.get(3)),
        muted_all: r.get(4),
        max_members: r.get::<_, i64>(5).clamp(0, i64::from(u32::MAX)) as u32,
        created_at: r.get::<_, i64>(6) as u64,
        dissolved: r.get(7),
    };
    let members = tx
        .query(
            &format!("SELECT {MEMBER_COLUMNS} FROM conv_members WHERE conv_id = $1"),
            &[&ConvId::Group(g).to_string()],
        )
        .await?
        .iter()
        .map(|r| {
            let m = member_from_row(r);
            (m.user, m)
        })
        .collect();
    let requests = tx
        .query("SELECT user_id, message, ts FROM join_requests WHERE group_id = $1", &[&(g.0 as i64)])
        .await?
        .iter()
        .map(|r| {
            let req = JoinRequest {
                user: UserId(r.get::<_, i64>(0) as u64),
                message: r.get(1),
                ts: r.get::<_, i64>(2) as u64,
            };
            (req.user, req)
        })
        .collect();
    Ok(Some(GroupState { info, members, requests, last_seq }))
}

pub(super) const PROFILE_COLUMNS: &str = "id, username, nickname, avatar, signature, dm_policy";

pub(super) fn profile_from_row(r: &Row) -> Profile {
    Profile {
        user_id: UserId(r.get::<_, i64>(0) as u64),
        username: r.get(1),
        nickname: r.get(2),
        avatar: r.get(3),
        signature: r.get(4),
        dm_policy: DmPolicy::parse(r.get(5)),
    }
}

pub(super) async fn load_profile<C: GenericClient + Sync>(c: &C, user: UserId) -> Result<Option<Profile>, StoreError> {
    let row = c
        .query_opt(&format!("SELECT {PROFILE_COLUMNS} FROM users WHERE id = $1"), &[&(user.0 as i64)])
        .await
        .map_err(backend)?;
    Ok(row.as_ref().map(profile_from_row))
}

pub(super) async fn load_relation<C: GenericClient + Sync>(
    c: &C,
    owner: UserId,
    peer: UserId,
) -> Result<Relation, StoreError> {
    let row = c
        .query_opt(
            "SELECT friend, blocked, request_msg, request_ts FROM relations WHERE owner = $1 AND peer = $2",
            &[&(owner.0 as i64), &(peer.0 as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(row.map(|r| relation_at(&r, 0)).unwrap_or_default())
}

pub(super) const MESSAGE_COLUMNS: &str = "conv_id, seq, msg_id, sender, client_msg_id, ts, body";

pub(super) fn row_to_message(row: &Row) -> Result<Message, StoreError> {
    message_from(row, 0)
}

/// A message from the [`MESSAGE_COLUMNS`] starting at column `at`.
pub(super) fn message_from(row: &Row, at: usize) -> Result<Message, StoreError> {
    let conv_id = row
        .get::<_, &str>(at)
        .parse::<ConvId>()
        .map_err(|e| StoreError::Backend(format!("stored conversation id: {e}")))?;
    let seq = row.get::<_, i64>(at + 1) as u64;
    let body = crate::store::decode_body(row.get::<_, &[u8]>(at + 6), conv_id, seq);
    Ok(Message {
        conv_id,
        seq,
        msg_id: MsgId(row.get::<_, i64>(at + 2) as u64),
        from: UserId(row.get::<_, i64>(at + 3) as u64),
        client_msg_id: row.get(at + 4),
        ts: row.get::<_, i64>(at + 5) as u64,
        body,
    })
}

pub(super) async fn message_at<C: GenericClient + Sync>(
    c: &C,
    conv: ConvId,
    seq: u64,
) -> Result<Option<Message>, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv_id = $1 AND seq = $2"),
            &[&conv.to_string(), &(seq.min(i64::MAX as u64) as i64)],
        )
        .await
        .map_err(backend)?;
    row.as_ref().map(row_to_message).transpose()
}

pub(super) fn user_from_row(row: &Row) -> UserRecord {
    UserRecord {
        id: UserId(row.get::<_, i64>(0) as u64),
        username: row.get(1),
        password_hash: row.get(2),
        disabled: row.get(3),
    }
}
