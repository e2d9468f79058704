//! The IM model's snapshots and effects in SQL.

use super::*;

/// A relation from columns `friend, blocked, request_msg, request_ts` starting at `at` (all
/// NULL from an outer join: no relation).
pub(super) fn relation_at(row: &Row, at: usize) -> Relation {
    let msg: Option<String> = row.get(at + 2);
    let ts: Option<i64> = row.get(at + 3);
    Relation {
        friend: row.get::<_, Option<bool>>(at).unwrap_or(false),
        blocked: row.get::<_, Option<bool>>(at + 1).unwrap_or(false),
        requested: msg.map(|m| (m, ts.unwrap_or(0) as u64)),
    }
}

pub(super) async fn snapshot(
    tx: &tokio_postgres::Transaction<'_>,
    scope: &Scope,
    seqs: &Seqs,
) -> Result<Snapshot, StoreError> {
    let mut snap = Snapshot::default();
    if let Some(g) = scope.group {
        snap.group = load_group(tx, g, seqs.last(ConvId::Group(g))).await.map_err(|e| match e {
            BatchError::Retry(why) => StoreError::Backend(why),
            BatchError::Failed(e) => e,
        })?;
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
        snap.member_conv_last_seq = seqs.last(conv);
    }
    Ok(snap)
}

pub(super) async fn apply_effect(
    tx: &tokio_postgres::Transaction<'_>,
    effect: Effect,
    seqs: &mut Seqs,
    committed: &mut Vec<Committed>,
) -> Result<(), StoreError> {
    match effect {
        Effect::PutGroup(info) => {
            tx.execute(
                "INSERT INTO groups (id, name, owner, join_policy, muted_all, max_members, created_at, dissolved) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 owner = excluded.owner, join_policy = excluded.join_policy, muted_all = excluded.muted_all, \
                 max_members = excluded.max_members, dissolved = excluded.dissolved",
                &[
                    &(info.id.0 as i64),
                    &info.name,
                    &(info.owner.0 as i64),
                    &info.join_policy.as_str(),
                    &info.muted_all,
                    &i64::from(info.max_members),
                    &(info.created_at as i64),
                    &info.dissolved,
                ],
            )
            .await
            .map_err(backend)?;
        }
        Effect::PutMember(g, member) => {
            tx.execute(
                "INSERT INTO conv_members (conv_id, user_id, role, joined_seq, read_seq, muted_until) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conv_id, user_id) DO UPDATE SET role = excluded.role, \
                 joined_seq = excluded.joined_seq, muted_until = excluded.muted_until",
                &[
                    &ConvId::Group(g).to_string(),
                    &(member.user.0 as i64),
                    &role_str(member.role),
                    &(member.joined_seq as i64),
                    &(member.read_seq as i64),
                    &(member.muted_until as i64),
                ],
            )
            .await
            .map_err(backend)?;
        }
        Effect::RemoveMember(g, user) => {
            tx.execute(
                "DELETE FROM conv_members WHERE conv_id = $1 AND user_id = $2",
                &[&ConvId::Group(g).to_string(), &(user.0 as i64)],
            )
            .await
            .map_err(backend)?;
        }
        Effect::PutJoinRequest(g, req) => {
            tx.execute(
                "INSERT INTO join_requests (group_id, user_id, message, ts) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (group_id, user_id) DO UPDATE SET message = excluded.message, ts = excluded.ts",
                &[&(g.0 as i64), &(req.user.0 as i64), &req.message, &(req.ts as i64)],
            )
            .await
            .map_err(backend)?;
        }
        Effect::RemoveJoinRequest(g, user) => {
            tx.execute(
                "DELETE FROM join_requests WHERE group_id = $1 AND user_id = $2",
                &[&(g.0 as i64), &(user.0 as i64)],
            )
            .await
            .map_err(backend)?;
        }
        Effect::PutRelation { owner, peer, relation } => {
            if relation == Relation::default() {
                tx.execute(
                    "DELETE FROM relations WHERE owner = $1 AND peer = $2",
                    &[&(owner.0 as i64), &(peer.0 as i64)],
                )
                .await
                .map_err(backend)?;
            } else {
                let (msg, ts) = match relation.requested {
                    Some((m, ts)) => (Some(m), Some(ts as i64)),
                    None => (None, None),
                };
                tx.execute(
                    "INSERT INTO relations (owner, peer, friend, blocked, request_msg, request_ts) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (owner, peer) DO UPDATE SET \
                     friend = excluded.friend, blocked = excluded.blocked, request_msg = excluded.request_msg, \
                     request_ts = excluded.request_ts",
                    &[&(owner.0 as i64), &(peer.0 as i64), &relation.friend, &relation.blocked, &msg, &ts],
                )
                .await
                .map_err(backend)?;
            }
        }
        Effect::SetRead { conv, user, seq } => {
            tx.execute(
                "INSERT INTO conv_members (conv_id, user_id, read_seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (conv_id, user_id) DO UPDATE SET read_seq = GREATEST(conv_members.read_seq, excluded.read_seq)",
                &[&conv.to_string(), &(user.0 as i64), &(seq as i64)],
            )
            .await
            .map_err(backend)?;
        }
        Effect::Replace { conv, seq, body } => {
            let json = crate::store::encode_body(&body);
            tx.execute(
                "UPDATE messages SET body = $3, counted = $4 WHERE conv_id = $1 AND seq = $2",
                &[&conv.to_string(), &(seq as i64), &&json[..], &body.is_content()],
            )
            .await
            .map_err(backend)?;
        }
        Effect::Append(msg) => {
            // Effects come from rules that already checked the operation: a key stored before
            // would be a bug, so it fails the operation (the unique index refuses it).
            let seq = seqs.next(msg.conv_id, msg.ts);
            let mut row = NewRows::default();
            row.push(&msg, seq);
            if row.insert(tx).await.map_err(backend)? != 1 {
                return Err(StoreError::Conflict(format!("client_msg_id {:?} is taken", msg.client_msg_id)));
            }
            // The members as they are now, this transaction's changes included.
            let recipients: Arc<[UserId]> = match msg.conv_id {
                ConvId::Group(g) => tx
                    .query("SELECT user_id FROM conv_members WHERE conv_id = $1", &[&ConvId::Group(g).to_string()])
                    .await
                    .map_err(backend)?
                    .iter()
                    .map(|r| UserId(r.get::<_, i64>(0) as u64))
                    .collect(),
                conv => conv.participants().collect(),
            };
            committed.push(Committed { message: message_of(&msg, seq), from_device: msg.from_device, recipients });
        }
    }
    Ok(())
}
