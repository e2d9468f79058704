//! Who may send where: the rules the store's engines apply when they append a client's message.
//! They run inside the engines' writers (so a block, kick or mute committed a moment earlier
//! is seen), but they are logic's, written once here; the store knows them only through
//! [`SendRules`].

use tern_proto::{ErrorCode, Role, UserId};

use crate::error::Error;
use crate::store::SendRules;
use crate::store::im::{DmPolicy, GroupState, Relation};

/// tern's IM rules.
pub struct ImRules;

impl ImRules {
    /// The rules, for a store to hold.
    pub fn shared() -> &'static dyn SendRules {
        &ImRules
    }
}

impl SendRules for ImRules {
    /// A user who blocked the sender refuses them; a "friends only" user refuses strangers.
    fn direct(&self, policy: DmPolicy, towards_sender: &Relation) -> Result<(), Error> {
        if towards_sender.blocked {
            return Err(Error::new(ErrorCode::Blocked, "this user does not accept your messages"));
        }
        if policy == DmPolicy::Friends && !towards_sender.friend {
            return Err(Error::new(ErrorCode::NotFriends, "this user accepts messages from friends only"));
        }
        Ok(())
    }

    /// Members of a live group may send, unless muted themselves or the whole group is muted
    /// (which the owner and admins are not). To anyone else the group does not exist.
    fn group(&self, group: &GroupState, user: UserId, now: u64) -> Result<(), Error> {
        let Some(member) = group.members.get(&user).filter(|_| !group.info.dissolved) else {
            return Err(Error::not_found("conversation not found"));
        };
        if member.muted_until > now {
            return Err(Error::new(ErrorCode::Muted, "you are muted in this group"));
        }
        if group.info.muted_all && member.role == Role::Member {
            return Err(Error::new(ErrorCode::Muted, "this group is muted: only the owner and admins may send"));
        }
        Ok(())
    }
}
