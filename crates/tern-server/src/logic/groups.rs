//! Groups: create, invite, join (open or by approval), leave, kick, roles, transfer, mutes,
//! dissolve.
//!
//! Each operation is one [`Store::transact`](crate::store::Store::transact) over the group, so
//! concurrent operations serialize: two admins kicking the same member leave one kick, and a
//! message racing its sender's kick is either in before the kick (delivered to every member) or
//! refused. Membership changes are notices in the group conversation (with the group's own
//! seq); the affected user also gets one in their event stream, since a new or removed member
//! does not receive the group's messages around that point.

use tern_proto::{ConvId, ErrorCode, GroupId, LeaveReason, Notice, Role, UserId};

use super::social::MAX_NOTE;
use super::{Logic, Notices};
use crate::clock::now_ms;
use crate::error::Error;
use crate::store::im::{Effect, GroupRecord, GroupState, JoinPolicy, JoinRequest, MemberRecord, Scope, Snapshot};
pub use tern_proto::rest::{GroupView, JoinOutcome, MemberView, PendingRequest};

/// A live group, or `not_found` (also for dissolved groups).
fn live(snap: &Snapshot) -> Result<&GroupState, Error> {
    snap.group.as_ref().filter(|g| !g.info.dissolved).ok_or_else(|| Error::not_found("group not found"))
}

/// The caller's membership; a non-member learns nothing about the group.
fn member(g: &GroupState, user: UserId) -> Result<&MemberRecord, Error> {
    g.members.get(&user).ok_or_else(|| Error::not_found("group not found"))
}

fn require_admin(g: &GroupState, user: UserId) -> Result<Role, Error> {
    let role = member(g, user)?.role;
    if role < Role::Admin {
        return Err(Error::forbidden("only the owner and admins may do this"));
    }
    Ok(role)
}

/// The actor's role must outrank the target's (owner > admin > member).
fn require_outranks(g: &GroupState, actor: UserId, target: UserId) -> Result<&MemberRecord, Error> {
    let actor_role = require_admin(g, actor)?;
    let t = g.members.get(&target).ok_or_else(|| Error::not_found(format!("user {target} is not a member")))?;
    if actor_role <= t.role {
        return Err(Error::forbidden("you may only do this to members of a lower role"));
    }
    Ok(t)
}

/// Effects of `user` entering the group (`by`: who let them in): the member row from the join
/// notice's seq on, the notice to the group, and one to the new member's stream.
fn admit(g: &GroupState, n: &Notices, user: UserId, by: Option<UserId>) -> Result<Vec<Effect>, Error> {
    if g.members.len() >= g.info.max_members as usize {
        return Err(Error::new(
            ErrorCode::GroupFull,
            format!("the group has reached its limit of {} members", g.info.max_members),
        ));
    }
    let id = g.info.id;
    // The notice below is the group's next message: the new member may read from it on.
    let from_seq = g.last_seq + 1;
    let row = MemberRecord { user, role: Role::Member, joined_seq: from_seq, read_seq: g.last_seq, muted_until: 0 };
    Ok(vec![
        Effect::RemoveJoinRequest(id, user),
        Effect::PutMember(id, row),
        n.append(ConvId::Group(id), by.unwrap_or(user), Notice::MemberJoined { user, by }),
        n.append(
            ConvId::User(user),
            by.unwrap_or(user),
            Notice::GroupJoined { group: id, name: g.info.name.clone(), from_seq },
        ),
    ])
}

impl Logic {
    async fn group_txn<T: Send + 'static>(
        &self,
        group: GroupId,
        pair: Option<(UserId, UserId)>,
        decide: impl FnOnce(&Snapshot, &Notices) -> Result<(Vec<Effect>, T), Error> + Send + 'static,
    ) -> Result<T, Error> {
        let notices = self.notices();
        let scope = Scope { group: Some(group), pair, ..Scope::default() };
        self.transact(scope, move |snap| decide(snap, &notices)).await
    }

    /// Creates a group owned by `owner`.
    pub async fn create_group(&self, owner: UserId, name: String, join_policy: JoinPolicy) -> Result<GroupView, Error> {
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::bad_request("group name must be 1 to 64 characters, no control characters"));
        }
        let max_members = self.max_group_members;
        // Ids are random below 2^48 (exact in JavaScript numbers); a collision is refused by
        // the transaction and retried.
        for _ in 0..3 {
            let id = GroupId(rand::random::<u64>() % ((1 << 48) - 1) + 1);
            let name = name.clone();
            let created = self
                .group_txn(id, None, move |snap, n| {
                    if snap.group.is_some() {
                        return Err(Error::new(ErrorCode::Conflict, "group id taken"));
                    }
                    let info = GroupRecord {
                        id,
                        name: name.clone(),
                        owner,
                        join_policy,
                        muted_all: false,
                        max_members,
                        created_at: now_ms(),
                        dissolved: false,
                    };
                    let row =
                        MemberRecord { user: owner, role: Role::Owner, joined_seq: 1, read_seq: 0, muted_until: 0 };
                    let effects = vec![
                        Effect::PutGroup(info),
                        Effect::PutMember(id, row),
                        n.append(ConvId::Group(id), owner, Notice::GroupCreated { name: name.clone(), owner }),
                        n.append(ConvId::User(owner), owner, Notice::GroupJoined { group: id, name, from_seq: 1 }),
                    ];
                    Ok((effects, ()))
                })
                .await;
            match created {
                Ok(()) => return self.group_view(owner, id).await,
                Err(e) if e.code == ErrorCode::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(ErrorCode::Internal, "could not allocate a group id; retry"))
    }

    /// The group as `user` (a member) sees it.
    pub async fn group_view(&self, user: UserId, group: GroupId) -> Result<GroupView, Error> {
        let g = self.store.group(group).await?.filter(|g| !g.info.dissolved);
        let g = g.as_ref().ok_or_else(|| Error::not_found("group not found"))?;
        let me = member(g, user)?;
        let now = now_ms();
        let members = g
            .members
            .values()
            .map(|m| MemberView {
                user_id: m.user,
                role: m.role,
                muted_until: (m.muted_until > now).then_some(m.muted_until),
            })
            .collect();
        let requests = if me.role >= Role::Admin {
            g.requests
                .values()
                .map(|r| PendingRequest { user_id: r.user, message: r.message.clone(), ts: r.ts })
                .collect()
        } else {
            Vec::new()
        };
        Ok(GroupView {
            group_id: g.info.id,
            conv_id: ConvId::Group(g.info.id),
            name: g.info.name.clone(),
            owner: g.info.owner,
            join_policy: g.info.join_policy,
            muted_all: g.info.muted_all,
            max_members: g.info.max_members,
            members,
            requests,
        })
    }

    /// Adds `user` to the group. In an open group any member may invite; in an approval group
    /// only the owner and admins. Refused with `blocked` if `user` blocked the inviter.
    pub async fn invite(&self, me: UserId, group: GroupId, user: UserId) -> Result<(), Error> {
        self.group_txn(group, Some((me, user)), move |snap, n| {
            let g = live(snap)?;
            let my_role = member(g, me)?.role;
            if g.info.join_policy == JoinPolicy::Approval && my_role < Role::Admin {
                return Err(Error::forbidden("in this group only the owner and admins may invite"));
            }
            let pair = snap.pair.as_ref().ok_or_else(|| Error::new(ErrorCode::Internal, "pair not loaded"))?;
            if pair.b_profile.is_none() {
                return Err(Error::not_found(format!("user {user} does not exist")));
            }
            if pair.ba.blocked {
                return Err(Error::new(ErrorCode::Blocked, "this user does not accept your invitations"));
            }
            if g.members.contains_key(&user) {
                return Err(Error::new(ErrorCode::Conflict, format!("user {user} is already a member")));
            }
            Ok((admit(g, n, user, Some(me))?, ()))
        })
        .await
    }

    /// Joins an open group, or asks to join an approval group.
    pub async fn join_group(&self, me: UserId, group: GroupId, message: String) -> Result<JoinOutcome, Error> {
        if message.chars().count() > MAX_NOTE {
            return Err(Error::bad_request(format!("message is longer than {MAX_NOTE} characters")));
        }
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            if g.members.contains_key(&me) {
                return Err(Error::new(ErrorCode::Conflict, "you are already a member"));
            }
            match g.info.join_policy {
                JoinPolicy::Open => Ok((admit(g, n, me, None)?, JoinOutcome::Joined)),
                JoinPolicy::Approval => {
                    let id = g.info.id;
                    let req = JoinRequest { user: me, message: message.clone(), ts: now_ms() };
                    let notice = Notice::JoinRequested { group: id, user: me, message };
                    let mut effects = vec![Effect::PutJoinRequest(id, req)];
                    let deciders = g.members.values().filter(|m| m.role >= Role::Admin).map(|m| m.user);
                    for u in deciders.chain([me]) {
                        effects.push(n.append(ConvId::User(u), me, notice.clone()));
                    }
                    Ok((effects, JoinOutcome::Requested))
                }
            }
        })
        .await
    }

    /// Approves a join request (owner and admins).
    pub async fn approve_join(&self, me: UserId, group: GroupId, user: UserId) -> Result<(), Error> {
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            require_admin(g, me)?;
            if !g.requests.contains_key(&user) {
                return Err(Error::not_found("no pending join request from this user"));
            }
            Ok((admit(g, n, user, Some(me))?, ()))
        })
        .await
    }

    /// Declines a join request (owner and admins).
    pub async fn decline_join(&self, me: UserId, group: GroupId, user: UserId) -> Result<(), Error> {
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            require_admin(g, me)?;
            if !g.requests.contains_key(&user) {
                return Err(Error::not_found("no pending join request from this user"));
            }
            let id = g.info.id;
            let effects = vec![
                Effect::RemoveJoinRequest(id, user),
                n.append(ConvId::User(user), me, Notice::JoinDeclined { group: id }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Leaves a group. The owner must transfer ownership first, unless they are the last
    /// member: then the group is dissolved.
    pub async fn leave_group(&self, me: UserId, group: GroupId) -> Result<(), Error> {
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            if member(g, me)?.role == Role::Owner {
                if g.members.len() > 1 {
                    return Err(Error::new(ErrorCode::Conflict, "transfer ownership before leaving the group"));
                }
                return Ok((dissolve(g, n, me), ()));
            }
            let id = g.info.id;
            let effects = vec![
                Effect::RemoveMember(id, me),
                n.append(ConvId::Group(id), me, Notice::MemberLeft { user: me }),
                n.append(ConvId::User(me), me, Notice::GroupLeft { group: id, reason: LeaveReason::Left }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Removes a member of a lower role.
    pub async fn kick(&self, me: UserId, group: GroupId, user: UserId) -> Result<(), Error> {
        if me == user {
            return Err(Error::bad_request("use leave to leave a group"));
        }
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            require_outranks(g, me, user)?;
            let id = g.info.id;
            // Removed before the notice, so the kicked user does not get the group's notice;
            // they learn it from their own stream.
            let effects = vec![
                Effect::RemoveMember(id, user),
                n.append(ConvId::Group(id), me, Notice::MemberKicked { user, by: me }),
                n.append(ConvId::User(user), me, Notice::GroupLeft { group: id, reason: LeaveReason::Kicked }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Makes a member an admin or an admin a member (owner only).
    pub async fn set_role(&self, me: UserId, group: GroupId, user: UserId, role: Role) -> Result<(), Error> {
        if role == Role::Owner {
            return Err(Error::bad_request("use transfer to hand over ownership"));
        }
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            if member(g, me)?.role != Role::Owner {
                return Err(Error::forbidden("only the owner may change roles"));
            }
            let target = require_outranks(g, me, user)?;
            if target.role == role {
                return Ok((Vec::new(), ()));
            }
            let id = g.info.id;
            let effects = vec![
                Effect::PutMember(id, MemberRecord { role, ..target.clone() }),
                n.append(ConvId::Group(id), me, Notice::RoleChanged { user, role }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Hands ownership to another member; the previous owner becomes an admin.
    pub async fn transfer(&self, me: UserId, group: GroupId, user: UserId) -> Result<(), Error> {
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            let mine = member(g, me)?;
            if mine.role != Role::Owner {
                return Err(Error::forbidden("only the owner may transfer the group"));
            }
            if me == user {
                return Err(Error::bad_request("you already own the group"));
            }
            let target =
                g.members.get(&user).ok_or_else(|| Error::not_found(format!("user {user} is not a member")))?;
            let id = g.info.id;
            let effects = vec![
                Effect::PutMember(id, MemberRecord { role: Role::Owner, muted_until: 0, ..target.clone() }),
                Effect::PutMember(id, MemberRecord { role: Role::Admin, ..mine.clone() }),
                Effect::PutGroup(GroupRecord { owner: user, ..g.info.clone() }),
                n.append(ConvId::Group(id), me, Notice::OwnerChanged { from: me, to: user }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Mutes a member of a lower role for `duration_secs` (0 unmutes).
    pub async fn mute_member(&self, me: UserId, group: GroupId, user: UserId, duration_secs: u64) -> Result<(), Error> {
        if duration_secs > 366 * 86_400 {
            return Err(Error::bad_request("duration_secs must be at most one year"));
        }
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            let target = require_outranks(g, me, user)?;
            let until = if duration_secs == 0 { 0 } else { now_ms() + duration_secs * 1000 };
            let id = g.info.id;
            let effects = vec![
                Effect::PutMember(id, MemberRecord { muted_until: until, ..target.clone() }),
                n.append(ConvId::Group(id), me, Notice::MemberMuted { user, until, by: me }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Mutes or unmutes the whole group (owner and admins).
    pub async fn mute_group(&self, me: UserId, group: GroupId, muted: bool) -> Result<(), Error> {
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            require_admin(g, me)?;
            if g.info.muted_all == muted {
                return Ok((Vec::new(), ()));
            }
            let id = g.info.id;
            let effects = vec![
                Effect::PutGroup(GroupRecord { muted_all: muted, ..g.info.clone() }),
                n.append(ConvId::Group(id), me, Notice::GroupMuted { muted, by: me }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Dissolves the group (owner only): every member is removed and told.
    pub async fn dissolve_group(&self, me: UserId, group: GroupId) -> Result<(), Error> {
        self.group_txn(group, None, move |snap, n| {
            let g = live(snap)?;
            if member(g, me)?.role != Role::Owner {
                return Err(Error::forbidden("only the owner may dissolve the group"));
            }
            Ok((dissolve(g, n, me), ()))
        })
        .await
    }
}

fn dissolve(g: &GroupState, n: &Notices, by: UserId) -> Vec<Effect> {
    let id = g.info.id;
    let mut effects = Vec::new();
    for user in g.members.keys() {
        effects.push(n.append(
            ConvId::User(*user),
            by,
            Notice::GroupLeft { group: id, reason: LeaveReason::Dissolved },
        ));
        effects.push(Effect::RemoveMember(id, *user));
    }
    for user in g.requests.keys() {
        effects.push(Effect::RemoveJoinRequest(id, *user));
    }
    effects.push(Effect::PutGroup(GroupRecord { dissolved: true, muted_all: false, ..g.info.clone() }));
    effects
}
