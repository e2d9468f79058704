//! An IM transaction's two halves in SQL: load what its [`Scope`] names, apply its [`Effect`]s.

use tern_proto::ConvId;

use super::reads::{load_member, load_profile, load_relation, message_at};
use super::{ImTx, Value};
use crate::store::im::{Effect, PairState, Relation, Scope, Snapshot, role_str};

/// Loads what a transaction's scope names.
pub(crate) async fn snapshot<T: ImTx>(tx: &mut T, scope: &Scope) -> Result<Snapshot, T::Error> {
    let mut snap = Snapshot::default();
    if let Some(g) = scope.group {
        let last = tx.last_seq(ConvId::Group(g)).await?;
        snap.group = tx.group(g).await?.map(|mut state| {
            state.last_seq = last;
            state
        });
    }
    if let Some((a, b)) = scope.pair {
        snap.pair = Some(PairState {
            a,
            b,
            b_profile: load_profile(tx, b).await?,
            ab: load_relation(tx, a, b).await?,
            ba: load_relation(tx, b, a).await?,
        });
    }
    if let Some((conv, seq)) = scope.message {
        snap.message = message_at(tx, conv, seq).await?;
    }
    if let Some((conv, user)) = scope.member {
        snap.member = load_member(tx, conv, user).await?;
        snap.member_conv_last_seq = tx.last_seq(conv).await?;
    }
    Ok(snap)
}

/// Writes one effect.
pub(crate) async fn apply_effect<T: ImTx>(tx: &mut T, effect: Effect) -> Result<(), T::Error> {
    match &effect {
        Effect::PutGroup(info) => {
            tx.execute(
                "INSERT INTO groups (id, name, owner, join_policy, muted_all, max_members, created_at, dissolved) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 owner = excluded.owner, join_policy = excluded.join_policy, muted_all = excluded.muted_all, \
                 max_members = excluded.max_members, dissolved = excluded.dissolved",
                &[
                    Value::id(info.id.0),
                    Value::Text(&info.name),
                    Value::id(info.owner.0),
                    Value::Text(info.join_policy.as_str()),
                    Value::Bool(info.muted_all),
                    Value::Int(i64::from(info.max_members)),
                    Value::num(info.created_at),
                    Value::Bool(info.dissolved),
                ],
            )
            .await?;
        }
        Effect::PutMember(g, member) => {
            let conv = ConvId::Group(*g).to_string();
            tx.execute(
                "INSERT INTO conv_members (conv_id, user_id, role, joined_seq, read_seq, muted_until) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conv_id, user_id) DO UPDATE SET role = excluded.role, \
                 joined_seq = excluded.joined_seq, muted_until = excluded.muted_until",
                &[
                    Value::Text(&conv),
                    Value::id(member.user.0),
                    Value::Text(role_str(member.role)),
                    Value::num(member.joined_seq),
                    Value::num(member.read_seq),
                    Value::num(member.muted_until),
                ],
            )
            .await?;
        }
        Effect::RemoveMember(g, user) => {
            let conv = ConvId::Group(*g).to_string();
            tx.execute(
                "DELETE FROM conv_members WHERE conv_id = $1 AND user_id = $2",
                &[Value::Text(&conv), Value::id(user.0)],
            )
            .await?;
        }
        Effect::PutJoinRequest(g, req) => {
            tx.execute(
                "INSERT INTO join_requests (group_id, user_id, message, ts) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (group_id, user_id) DO UPDATE SET message = excluded.message, ts = excluded.ts",
                &[Value::id(g.0), Value::id(req.user.0), Value::Text(&req.message), Value::num(req.ts)],
            )
            .await?;
        }
        Effect::RemoveJoinRequest(g, user) => {
            tx.execute(
                "DELETE FROM join_requests WHERE group_id = $1 AND user_id = $2",
                &[Value::id(g.0), Value::id(user.0)],
            )
            .await?;
        }
        Effect::PutRelation { owner, peer, relation } if *relation == Relation::default() => {
            // Nothing set either way is no row.
            tx.execute(
                "DELETE FROM relations WHERE owner = $1 AND peer = $2",
                &[Value::id(owner.0), Value::id(peer.0)],
            )
            .await?;
        }
        Effect::PutRelation { owner, peer, relation } => {
            let (note, ts) = match &relation.requested {
                Some((note, ts)) => (Some(note.as_str()), Some(*ts as i64)),
                None => (None, None),
            };
            tx.execute(
                "INSERT INTO relations (owner, peer, friend, blocked, request_msg, request_ts) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (owner, peer) DO UPDATE SET \
                 friend = excluded.friend, blocked = excluded.blocked, request_msg = excluded.request_msg, \
                 request_ts = excluded.request_ts",
                &[
                    Value::id(owner.0),
                    Value::id(peer.0),
                    Value::Bool(relation.friend),
                    Value::Bool(relation.blocked),
                    Value::OptText(note),
                    Value::OptInt(ts),
                ],
            )
            .await?;
        }
        Effect::SetRead { conv, user, seq } => {
            // Read positions only move forward, whatever order two devices report them in.
            let conv = conv.to_string();
            tx.execute(
                "INSERT INTO conv_members (conv_id, user_id, read_seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (conv_id, user_id) DO UPDATE SET read_seq = CASE \
                 WHEN excluded.read_seq > conv_members.read_seq THEN excluded.read_seq ELSE conv_members.read_seq END",
                &[Value::Text(&conv), Value::id(user.0), Value::num(*seq)],
            )
            .await?;
        }
        Effect::Replace { conv, seq, body } => {
            let conv = conv.to_string();
            let json = crate::store::encode_body(body);
            tx.execute(
                "UPDATE messages SET body = $3, counted = $4 WHERE conv_id = $1 AND seq = $2",
                &[Value::Text(&conv), Value::num(*seq), Value::Blob(&json), Value::Bool(body.is_content())],
            )
            .await?;
        }
        Effect::Append(_) => {}
    }
    match effect {
        Effect::Append(msg) => tx.append(msg).await,
        other => {
            tx.wrote(&other);
            Ok(())
        }
    }
}
