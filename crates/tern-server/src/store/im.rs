//! The IM layer's records and its one write primitive, [`Store::transact`](super::Store::transact).
//!
//! An IM operation (befriend, kick, recall, …) must check and change state atomically: two admins
//! kicking the same member, or a message sent while its sender is being kicked, must leave one
//! consistent outcome. Every engine therefore runs an operation the same way:
//!
//! 1. lock and load the state the operation names in its [`Scope`] into a [`Snapshot`];
//! 2. call the operation's [`Decide`] function — pure logic, shared by every engine — which
//!    checks the rules and answers with a list of [`Effect`]s or a refusal;
//! 3. apply the effects (row changes and messages, which get their seqs here) and commit.
//!
//! The rules live once, in `logic`; an engine only knows how to load a scope and apply effects.

use std::collections::BTreeMap;

use tern_proto::{Body, ConvId, GroupId, Message, Role, UserId};

pub use tern_proto::rest::{ConvSummary, DmPolicy, JoinPolicy, Profile, ProfileChange, PublicProfile};

use super::NewMessage;
use crate::error::Error;

/// One direction of what links two users: what `owner` has set towards `peer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relation {
    /// Friends (always set on both directions together).
    pub friend: bool,
    /// `owner` blocked `peer`.
    pub blocked: bool,
    /// A pending friend request from `owner` to `peer`: its note and time.
    pub requested: Option<(String, u64)>,
}

/// A group's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Its id.
    pub id: GroupId,
    /// Display name.
    pub name: String,
    /// The owner.
    pub owner: UserId,
    /// How to get in.
    pub join_policy: JoinPolicy,
    /// Only the owner and admins may send.
    pub muted_all: bool,
    /// Member limit.
    pub max_members: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_at: u64,
    /// Dissolved groups keep their row (so the id is never reused) and have no members.
    pub dissolved: bool,
}

/// A member of a conversation: its role, the first seq it may read, its read position, a mute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The user.
    pub user: UserId,
    /// Role (always `member` outside groups).
    pub role: Role,
    /// First seq this member may read.
    pub joined_seq: u64,
    /// Last seq this member has read.
    pub read_seq: u64,
    /// May not send until then (ms since the Unix epoch; 0 = not muted).
    pub muted_until: u64,
}

/// A pending request to join a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Who asks.
    pub user: UserId,
    /// Their note.
    pub message: String,
    /// When, ms since the Unix epoch.
    pub ts: u64,
}

/// A group as loaded for a transaction or a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// Settings.
    pub info: GroupRecord,
    /// Members by user.
    pub members: BTreeMap<UserId, MemberRecord>,
    /// Pending join requests by user.
    pub requests: BTreeMap<UserId, JoinRequest>,
    /// The group conversation's last seq.
    pub last_seq: u64,
}

impl GroupState {
    /// The role of `user`, if a member.
    pub fn role_of(&self, user: UserId) -> Option<Role> {
        self.members.get(&user).map(|m| m.role)
    }
}

/// Two users and what each has set towards the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairState {
    /// The first user named in the scope.
    pub a: UserId,
    /// The second.
    pub b: UserId,
    /// `b`'s profile (`None`: no such user).
    pub b_profile: Option<Profile>,
    /// What `a` set towards `b`.
    pub ab: Relation,
    /// What `b` set towards `a`.
    pub ba: Relation,
}

/// What a transaction locks and loads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// A group (absent from the snapshot if it does not exist).
    pub group: Option<GroupId>,
    /// Two users (`a` acts, `b` is acted upon).
    pub pair: Option<(UserId, UserId)>,
    /// One message.
    pub message: Option<(ConvId, u64)>,
    /// One member of a conversation (its read position), with the conversation's last seq.
    pub member: Option<(ConvId, UserId)>,
}

/// What a transaction sees.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The scope's group.
    pub group: Option<GroupState>,
    /// The scope's pair.
    pub pair: Option<PairState>,
    /// The scope's message.
    pub message: Option<Message>,
    /// The scope's member (`None` if not a member) …
    pub member: Option<MemberRecord>,
    /// … and its conversation's last seq.
    pub member_conv_last_seq: u64,
}

/// One change a transaction makes.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Creates or updates a group's settings.
    PutGroup(GroupRecord),
    /// Adds or updates a group member.
    PutMember(GroupId, MemberRecord),
    /// Removes a group member.
    RemoveMember(GroupId, UserId),
    /// Adds a join request.
    PutJoinRequest(GroupId, JoinRequest),
    /// Removes a join request.
    RemoveJoinRequest(GroupId, UserId),
    /// Sets what `owner` has towards `peer`.
    PutRelation {
        /// Whose side.
        owner: UserId,
        /// Towards whom.
        peer: UserId,
        /// The new state.
        relation: Relation,
    },
    /// Moves a member's read position forward.
    SetRead {
        /// The conversation.
        conv: ConvId,
        /// The member.
        user: UserId,
        /// The new position.
        seq: u64,
    },
    /// Replaces a message's body (recall): the old content is overwritten in storage.
    Replace {
        /// The conversation.
        conv: ConvId,
        /// The message.
        seq: u64,
        /// The tombstone.
        body: Body,
    },
    /// Appends a message; it gets the next seq of its conversation and is delivered to the
    /// conversation's members as they are at that point of the transaction.
    Append(NewMessage),
}

/// The rules of one operation: given what the store loaded, the effects to apply, or a refusal.
pub type Decide = Box<dyn FnOnce(&Snapshot) -> Result<Vec<Effect>, Error> + Send>;

/// Largest unread count reported (clients show "999+").
pub const UNREAD_CAP: u64 = 999;

/// A peer as seen in a user's relation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationRow {
    /// The other user.
    pub peer: UserId,
    /// What the user set towards the peer.
    pub mine: Relation,
    /// What the peer set towards the user.
    pub theirs: Relation,
}

/// A role as stored.
pub fn role_str(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Admin => "admin",
        Role::Owner => "owner",
    }
}

/// A role from storage; unknown values read as member.
pub fn parse_role(s: &str) -> Role {
    match s {
        "owner" => Role::Owner,
        "admin" => Role::Admin,
        _ => Role::Member,
    }
}

/// Folds stored relation rows `(owner, peer, relation)` that involve `user` (either way) into
/// one [`RelationRow`] per other user, ordered by that user's id.
pub fn relation_rows(user: UserId, rows: impl IntoIterator<Item = (UserId, UserId, Relation)>) -> Vec<RelationRow> {
    let mut by_peer: BTreeMap<UserId, RelationRow> = BTreeMap::new();
    for (owner, peer, rel) in rows {
        let other = if owner == user { peer } else { owner };
        let entry = by_peer.entry(other).or_insert_with(|| RelationRow {
            peer: other,
            mine: Relation::default(),
            theirs: Relation::default(),
        });
        if owner == user {
            entry.mine = rel;
        } else {
            entry.theirs = rel;
        }
    }
    by_peer.into_values().collect()
}

/// A `LIKE … ESCAPE '\'` pattern matching names that start with `prefix` literally.
pub fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}
