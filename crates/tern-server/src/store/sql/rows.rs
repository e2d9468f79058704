//! Row mapping: one function per record, over [`Columns`](super::Columns), for both engines.
//! Each function reads the columns of its `…_COLUMNS` list, in that order.

use tern_proto::{ConvId, GroupId, Message, MsgId, UserId};

use super::Row;
use crate::store::UserRecord;
use crate::store::im::{DmPolicy, GroupRecord, JoinPolicy, JoinRequest, MemberRecord, Profile, Relation, parse_role};

/// Expands to the message columns, for `concat!` in statements.
macro_rules! message_columns {
    () => {
        "conv_id, seq, msg_id, sender, client_msg_id, ts, body"
    };
}
/// Expands to the member columns.
macro_rules! member_columns {
    () => {
        "user_id, role, joined_seq, read_seq, muted_until"
    };
}
/// Expands to the profile columns.
macro_rules! profile_columns {
    () => {
        "id, username, nickname, avatar, signature, dm_policy"
    };
}
/// Expands to the group columns.
macro_rules! group_columns {
    () => {
        "id, name, owner, join_policy, muted_all, max_members, created_at, dissolved"
    };
}
pub(crate) use {group_columns, member_columns, message_columns, profile_columns};

/// What [`message_from`] reads.
pub(crate) const MESSAGE_COLUMNS: &str = message_columns!();
/// What [`profile_from`] reads.
pub(crate) const PROFILE_COLUMNS: &str = profile_columns!();
/// What [`user_from`] reads.
pub(crate) const USER_COLUMNS: &str = "id, username, password_hash, disabled";

/// A stored unsigned number (ids, seqs, times).
pub(crate) fn num<E>(r: &Row<'_, E>, i: usize) -> Result<u64, E> {
    Ok(r.int(i)? as u64)
}

/// A message from the message columns starting at `at`.
pub(crate) fn message_from<E>(r: &Row<'_, E>, at: usize) -> Result<Message, E> {
    let conv_id = r.text(at)?.parse::<ConvId>().map_err(|e| r.corrupt(at, format!("stored conversation id: {e}")))?;
    let seq = num(r, at + 1)?;
    Ok(Message {
        conv_id,
        seq,
        msg_id: MsgId(num(r, at + 2)?),
        from: UserId(num(r, at + 3)?),
        client_msg_id: r.text(at + 4)?.to_owned(),
        ts: num(r, at + 5)?,
        body: crate::store::decode_body(r.blob(at + 6)?, conv_id, seq),
    })
}

/// A member from the member columns.
pub(crate) fn member_from<E>(r: &Row<'_, E>) -> Result<MemberRecord, E> {
    Ok(MemberRecord {
        user: UserId(num(r, 0)?),
        role: parse_role(r.text(1)?),
        joined_seq: num(r, 2)?,
        read_seq: num(r, 3)?,
        muted_until: num(r, 4)?,
    })
}

/// A group's settings from the group columns.
pub(crate) fn group_from<E>(r: &Row<'_, E>) -> Result<GroupRecord, E> {
    Ok(GroupRecord {
        id: GroupId(num(r, 0)?),
        name: r.text(1)?.to_owned(),
        owner: UserId(num(r, 2)?),
        join_policy: JoinPolicy::parse(r.text(3)?),
        muted_all: r.boolean(4)?,
        max_members: r.int(5)?.clamp(0, i64::from(u32::MAX)) as u32,
        created_at: num(r, 6)?,
        dissolved: r.boolean(7)?,
    })
}

/// A join request from `user_id, message, ts`.
pub(crate) fn join_request_from<E>(r: &Row<'_, E>) -> Result<JoinRequest, E> {
    Ok(JoinRequest { user: UserId(num(r, 0)?), message: r.text(1)?.to_owned(), ts: num(r, 2)? })
}

/// A profile from the profile columns.
pub(crate) fn profile_from<E>(r: &Row<'_, E>) -> Result<Profile, E> {
    Ok(Profile {
        user_id: UserId(num(r, 0)?),
        username: r.text(1)?.to_owned(),
        nickname: r.text(2)?.to_owned(),
        avatar: r.opt_text(3)?.map(str::to_owned),
        signature: r.text(4)?.to_owned(),
        dm_policy: DmPolicy::parse(r.text(5)?),
    })
}

/// A relation from `friend, blocked, request_msg, request_ts` starting at `at` (all NULL from
/// an outer join: no relation).
pub(crate) fn relation_from<E>(r: &Row<'_, E>, at: usize) -> Result<Relation, E> {
    let requested = match r.opt_text(at + 2)? {
        Some(note) => Some((note.to_owned(), r.opt_int(at + 3)?.unwrap_or(0) as u64)),
        None => None,
    };
    Ok(Relation { friend: r.opt_bool(at)?.unwrap_or(false), blocked: r.opt_bool(at + 1)?.unwrap_or(false), requested })
}

/// A user's login record from [`USER_COLUMNS`].
pub(crate) fn user_from<E>(r: &Row<'_, E>) -> Result<UserRecord, E> {
    Ok(UserRecord {
        id: UserId(num(r, 0)?),
        username: r.text(1)?.to_owned(),
        password_hash: r.text(2)?.to_owned(),
        disabled: r.boolean(3)?,
    })
}

/// What [`sanction_from`] reads.
pub(crate) const SANCTION_COLUMNS: &str = "room, user_id, kind, until_ms, reason, created_at";

/// A room ban or mute.
pub(crate) fn sanction_from<E>(r: &Row<'_, E>) -> Result<crate::store::RoomSanction, E> {
    let kind =
        crate::store::SanctionKind::parse(r.text(2)?).ok_or_else(|| r.corrupt(2, "stored sanction kind".into()))?;
    Ok(crate::store::RoomSanction {
        room: r.text(0)?.to_owned(),
        user_id: UserId(num(r, 1)?),
        kind,
        until_ms: num(r, 3)?,
        reason: r.text(4)?.to_owned(),
        created_at: num(r, 5)?,
    })
}

/// What [`room_settings_from`] reads.
pub(crate) const ROOM_SETTINGS_COLUMNS: &str =
    "room, slow_mode_secs, policy, tokens_after_ms, history_size, anonymous_posts";

/// A room's stored settings.
pub(crate) fn room_settings_from<E>(r: &Row<'_, E>) -> Result<crate::store::StoredRoomSettings, E> {
    let policy =
        crate::store::RoomPolicy::parse(r.text(2)?).ok_or_else(|| r.corrupt(2, "stored room policy".into()))?;
    let small = |v: Option<i64>| v.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
    Ok(crate::store::StoredRoomSettings {
        room: r.text(0)?.to_owned(),
        slow_mode_secs: small(r.opt_int(1)?),
        policy,
        tokens_after_ms: num(r, 3)?,
        history_size: small(r.opt_int(4)?),
        anonymous_posts: r.boolean(5)?,
    })
}
