//! Profiles, friends, blacklist and the message policy.
//!
//! Every change is one [`Store::transact`](crate::store::Store::transact) over the pair of users,
//! so a request crossing a block, or two users requesting each other at once, has one outcome.
//! Both sides learn of a change through notices in their event streams (`u:<id>`), delivered
//! live and on resume; a blocked user's attempts leave no trace on the blocker's side.

use tern_proto::{ConvId, ErrorCode, Notice, UserId};

use super::{Logic, Notices};
use crate::clock::now_ms;
use crate::error::Error;
use crate::store::im::{Effect, PairState, Profile, ProfileChange, Relation, Scope, Snapshot};
pub use tern_proto::rest::{Friend, PendingRequest, Relations, RequestOutcome};

/// Longest nickname, in characters.
pub const MAX_NICKNAME: usize = 64;
/// Longest signature, in characters.
pub const MAX_SIGNATURE: usize = 256;
/// Longest friend-request or join-request note, in characters.
pub const MAX_NOTE: usize = 256;
/// Longest file id, in bytes.
pub const MAX_FILE_ID: usize = 128;

fn pair(snap: &Snapshot) -> Result<&PairState, Error> {
    let pair = snap.pair.as_ref().ok_or_else(|| Error::new(ErrorCode::Internal, "pair not loaded"))?;
    if pair.b_profile.is_none() {
        return Err(Error::not_found(format!("user {} does not exist", pair.b)));
    }
    Ok(pair)
}

fn put(owner: UserId, peer: UserId, relation: Relation) -> Effect {
    Effect::PutRelation { owner, peer, relation }
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), Error> {
    if s.chars().count() > max {
        return Err(Error::bad_request(format!("{what} is longer than {max} characters")));
    }
    Ok(())
}

impl Logic {
    /// Public profiles; unknown ids are left out.
    pub async fn profiles(&self, users: Vec<UserId>) -> Result<Vec<Profile>, Error> {
        Ok(self.store.profiles(users).await?)
    }

    /// One profile.
    pub async fn profile(&self, user: UserId) -> Result<Profile, Error> {
        self.store
            .profiles(vec![user])
            .await?
            .pop()
            .ok_or_else(|| Error::not_found(format!("user {user} does not exist")))
    }

    /// Users whose name starts with `prefix`.
    pub async fn search_users(&self, prefix: &str, limit: Option<u32>) -> Result<Vec<Profile>, Error> {
        let prefix = prefix.trim();
        if prefix.is_empty() || prefix.len() > 32 {
            return Err(Error::bad_request("prefix must be 1 to 32 characters"));
        }
        let limit = limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(Error::bad_request("limit must be 1 to 100"));
        }
        Ok(self.store.search_users(prefix.to_owned(), limit).await?)
    }

    /// Changes the caller's own profile.
    pub async fn update_profile(&self, user: UserId, update: ProfileChange) -> Result<Profile, Error> {
        if let Some(n) = &update.nickname {
            check_len("nickname", n, MAX_NICKNAME)?;
            if n.chars().any(char::is_control) {
                return Err(Error::bad_request("nickname must not contain control characters"));
            }
        }
        if let Some(s) = &update.signature {
            check_len("signature", s, MAX_SIGNATURE)?;
        }
        if let Some(a) = &update.avatar
            && a.len() > MAX_FILE_ID
        {
            return Err(Error::bad_request(format!("avatar must be a file id of at most {MAX_FILE_ID} bytes")));
        }
        if let Some(a) = update.avatar.as_deref().filter(|a| !a.is_empty()) {
            self.adopt_avatar(user, a).await?;
        }
        self.store.update_profile(user, update).await?;
        self.live.forget_nickname(user);
        self.profile(user).await
    }

    /// Friends (with presence), pending requests both ways, and blocks.
    pub async fn relations(&self, user: UserId) -> Result<Relations, Error> {
        let rows = self.store.relations_of(user).await?;
        let friend_ids: Vec<UserId> = rows.iter().filter(|r| r.mine.friend).map(|r| r.peer).collect();
        let mut out = Relations::default();
        for profile in self.store.profiles(friend_ids).await? {
            let online = self.presence.is_online(profile.user_id);
            out.friends.push(Friend { profile, online });
        }
        for r in rows {
            if let Some((message, ts)) = r.theirs.requested {
                out.incoming.push(PendingRequest { user_id: r.peer, message, ts });
            }
            if let Some((message, ts)) = r.mine.requested {
                out.outgoing.push(PendingRequest { user_id: r.peer, message, ts });
            }
            if r.mine.blocked {
                out.blocked.push(r.peer);
            }
        }
        Ok(out)
    }

    /// The ids of a user's friends.
    pub async fn friend_ids(&self, user: UserId) -> Result<Vec<UserId>, Error> {
        Ok(self.store.relations_of(user).await?.into_iter().filter(|r| r.mine.friend).map(|r| r.peer).collect())
    }

    async fn pair_txn<T: Send + 'static>(
        &self,
        me: UserId,
        other: UserId,
        decide: impl FnOnce(&PairState, &Notices) -> Result<(Vec<Effect>, T), Error> + Send + 'static,
    ) -> Result<T, Error> {
        if me == other {
            return Err(Error::bad_request("that is yourself"));
        }
        let notices = self.notices();
        let scope = Scope { pair: Some((me, other)), ..Scope::default() };
        self.transact(scope, move |snap| decide(pair(snap)?, &notices)).await
    }

    /// Asks `other` to be friends. If `other` had asked the caller, they become friends.
    pub async fn request_friend(&self, me: UserId, other: UserId, message: String) -> Result<RequestOutcome, Error> {
        check_len("message", &message, MAX_NOTE)?;
        self.pair_txn(me, other, move |p, n| {
            if p.ba.blocked {
                // The blocker is not told: no notice, nothing stored on their side.
                return Err(Error::new(ErrorCode::Blocked, "this user does not accept your requests"));
            }
            if p.ab.friend {
                return Err(Error::new(ErrorCode::Conflict, "you are already friends"));
            }
            if p.ba.requested.is_some() {
                return Ok((befriend(p, n), RequestOutcome::Friends));
            }
            if p.ab.requested.is_some() {
                return Err(Error::new(ErrorCode::Conflict, "a request to this user is already pending"));
            }
            let ab = Relation { requested: Some((message.clone(), now_ms())), ..p.ab.clone() };
            let notice = Notice::FriendRequest { from: p.a, to: p.b, message };
            let effects = vec![
                put(p.a, p.b, ab),
                n.append(ConvId::User(p.b), p.a, notice.clone()),
                n.append(ConvId::User(p.a), p.a, notice),
            ];
            Ok((effects, RequestOutcome::Requested))
        })
        .await
    }

    /// Accepts `requester`'s pending request.
    pub async fn accept_friend(&self, me: UserId, requester: UserId) -> Result<(), Error> {
        self.pair_txn(me, requester, |p, n| {
            if p.ba.requested.is_none() {
                return Err(Error::not_found("no pending friend request from this user"));
            }
            Ok((befriend(p, n), ()))
        })
        .await
    }

    /// Declines `requester`'s pending request.
    pub async fn decline_friend(&self, me: UserId, requester: UserId) -> Result<(), Error> {
        self.pair_txn(me, requester, |p, n| {
            if p.ba.requested.is_none() {
                return Err(Error::not_found("no pending friend request from this user"));
            }
            let notice = Notice::FriendDeclined { from: p.b, to: p.a };
            let effects = vec![
                put(p.b, p.a, Relation { requested: None, ..p.ba.clone() }),
                n.append(ConvId::User(p.a), p.a, notice.clone()),
                n.append(ConvId::User(p.b), p.a, notice),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Ends a friendship (both sides).
    pub async fn remove_friend(&self, me: UserId, other: UserId) -> Result<(), Error> {
        self.pair_txn(me, other, |p, n| {
            if !p.ab.friend {
                return Err(Error::not_found("you are not friends with this user"));
            }
            let effects = vec![
                put(p.a, p.b, Relation { friend: false, ..p.ab.clone() }),
                put(p.b, p.a, Relation { friend: false, ..p.ba.clone() }),
                n.append(ConvId::User(p.a), p.a, Notice::FriendRemoved { user: p.b }),
                n.append(ConvId::User(p.b), p.a, Notice::FriendRemoved { user: p.a }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Blocks `other`: their messages, friend requests and group invites to the caller are
    /// refused with `blocked`, and their pending request to the caller is dropped. Idempotent.
    pub async fn block(&self, me: UserId, other: UserId) -> Result<(), Error> {
        self.pair_txn(me, other, |p, n| {
            if p.ab.blocked {
                return Ok((Vec::new(), ()));
            }
            let effects = vec![
                put(p.a, p.b, Relation { blocked: true, ..p.ab.clone() }),
                put(p.b, p.a, Relation { requested: None, ..p.ba.clone() }),
                n.append(ConvId::User(p.a), p.a, Notice::Blocked { user: p.b }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Unblocks `other`. Idempotent.
    pub async fn unblock(&self, me: UserId, other: UserId) -> Result<(), Error> {
        self.pair_txn(me, other, |p, n| {
            if !p.ab.blocked {
                return Ok((Vec::new(), ()));
            }
            let effects = vec![
                put(p.a, p.b, Relation { blocked: false, ..p.ab.clone() }),
                n.append(ConvId::User(p.a), p.a, Notice::Unblocked { user: p.b }),
            ];
            Ok((effects, ()))
        })
        .await
    }
}

/// Makes `a` and `b` friends, clearing requests both ways, and tells both.
fn befriend(p: &PairState, n: &Notices) -> Vec<Effect> {
    vec![
        put(p.a, p.b, Relation { friend: true, requested: None, ..p.ab.clone() }),
        put(p.b, p.a, Relation { friend: true, requested: None, ..p.ba.clone() }),
        n.append(ConvId::User(p.a), p.a, Notice::FriendAdded { user: p.b }),
        n.append(ConvId::User(p.b), p.a, Notice::FriendAdded { user: p.a }),
    ]
}
