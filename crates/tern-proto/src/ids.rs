//! Identifier types. Each id is its own type so a user id can never be passed where a message id
//! is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

int_id!(
    /// A registered account.
    UserId
);
int_id!(
    /// A stored message, unique across the deployment (assigned by the server).
    MsgId
);
int_id!(
    /// One live connection on one node; only meaningful for the lifetime of the connection.
    ConnId
);

/// A device of a user, chosen by the client at login (`phone`, `laptop-2`, …).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub String);

impl DeviceId {
    /// Longest accepted device id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Checks the device id rules: 1–64 characters of `[A-Za-z0-9_.-]`.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err("device_id must be 1 to 64 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
            return Err("device_id may only contain letters, digits, '_', '.' and '-'");
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

int_id!(
    /// A group (its conversation is `g:<id>`).
    GroupId
);

/// A conversation: the unit that owns a seq.
///
/// On the wire a conversation id is a string:
/// - `d:<low user id>:<high user id>` — a 1:1 conversation. The pair is ordered so both
///   participants name the same conversation without a lookup.
/// - `g:<group id>` — a group; who takes part is the group's member list.
/// - `u:<user id>` — the user's own event stream: friend requests, group joins and kicks, read
///   positions of the user's other devices. Only that user takes part. It is delivered, ACKed
///   and resumed exactly like a chat, so every notice reaches every device, online or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConvId {
    /// A 1:1 conversation between two users (the same user twice is a note-to-self).
    Direct(UserId, UserId),
    /// A group conversation.
    Group(GroupId),
    /// A user's event stream.
    User(UserId),
}

impl ConvId {
    /// The 1:1 conversation of `a` and `b`, in either order.
    pub fn direct(a: UserId, b: UserId) -> Self {
        if a <= b { ConvId::Direct(a, b) } else { ConvId::Direct(b, a) }
    }

    /// Whether `user` takes part in this conversation, when that can be read off the id
    /// (`None` for a group: ask its member list).
    pub fn has_participant(&self, user: UserId) -> Option<bool> {
        match *self {
            ConvId::Direct(a, b) => Some(a == user || b == user),
            ConvId::User(u) => Some(u == user),
            ConvId::Group(_) => None,
        }
    }

    /// The participants, when they can be read off the id (empty for a group).
    pub fn participants(&self) -> impl Iterator<Item = UserId> {
        let (a, b) = match *self {
            ConvId::Direct(a, b) => (Some(a), (a != b).then_some(b)),
            ConvId::User(u) => (Some(u), None),
            ConvId::Group(_) => (None, None),
        };
        a.into_iter().chain(b)
    }

    /// For a 1:1 conversation, the participant who is not `me`.
    pub fn peer_of(&self, me: UserId) -> Option<UserId> {
        match *self {
            ConvId::Direct(a, b) if a == me => Some(b),
            ConvId::Direct(a, b) if b == me => Some(a),
            _ => None,
        }
    }

    /// The group, for a group conversation.
    pub fn group(&self) -> Option<GroupId> {
        match *self {
            ConvId::Group(g) => Some(g),
            _ => None,
        }
    }
}

impl fmt::Display for ConvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvId::Direct(a, b) => write!(f, "d:{a}:{b}"),
            ConvId::Group(g) => write!(f, "g:{g}"),
            ConvId::User(u) => write!(f, "u:{u}"),
        }
    }
}

/// A string that is not a conversation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a conversation id (expected \"d:<low>:<high>\", \"g:<group>\" or \"u:<user>\")")]
pub struct BadConvId;

/// Only canonical decimal: no sign, no leading zeros, so one conversation has one name.
fn canonical_u64(p: &str) -> Result<u64, BadConvId> {
    if p.is_empty() || (p.len() > 1 && p.starts_with('0')) || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadConvId);
    }
    p.parse::<u64>().map_err(|_| BadConvId)
}

impl FromStr for ConvId {
    type Err = BadConvId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(g) = s.strip_prefix("g:") {
            return Ok(ConvId::Group(GroupId(canonical_u64(g)?)));
        }
        if let Some(u) = s.strip_prefix("u:") {
            return Ok(ConvId::User(UserId(canonical_u64(u)?)));
        }
        let rest = s.strip_prefix("d:").ok_or(BadConvId)?;
        let (a, b) = rest.split_once(':').ok_or(BadConvId)?;
        let (a, b) = (UserId(canonical_u64(a)?), UserId(canonical_u64(b)?));
        if a > b {
            return Err(BadConvId);
        }
        Ok(ConvId::Direct(a, b))
    }
}

impl Serialize for ConvId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConvId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ConvId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a conversation id such as \"d:1:2\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConvId, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_conversation_is_symmetric_and_round_trips() {
        let c = ConvId::direct(UserId(9), UserId(3));
        assert_eq!(c, ConvId::direct(UserId(3), UserId(9)));
        assert_eq!(c.to_string(), "d:3:9");
        assert_eq!("d:3:9".parse::<ConvId>(), Ok(c));
        assert_eq!(c.has_participant(UserId(9)), Some(true));
        assert_eq!(c.has_participant(UserId(4)), Some(false));
        assert_eq!(c.peer_of(UserId(9)), Some(UserId(3)));
        assert_eq!(c.participants().collect::<Vec<_>>(), vec![UserId(3), UserId(9)]);
        let me = ConvId::direct(UserId(5), UserId(5));
        assert_eq!(me.participants().collect::<Vec<_>>(), vec![UserId(5)]);
    }

    #[test]
    fn group_and_user_stream_ids_round_trip() {
        let g = ConvId::Group(GroupId(42));
        assert_eq!(g.to_string(), "g:42");
        assert_eq!("g:42".parse::<ConvId>(), Ok(g));
        assert_eq!(g.has_participant(UserId(1)), None);
        assert_eq!(g.participants().count(), 0);
        let u = ConvId::User(UserId(7));
        assert_eq!("u:7".parse::<ConvId>(), Ok(u));
        assert_eq!(u.participants().collect::<Vec<_>>(), vec![UserId(7)]);
    }

    #[test]
    fn non_canonical_conversation_ids_are_rejected() {
        for bad in [
            "", "d:", "d:1", "d:9:3", "d:01:3", "d:-1:3", "x:1:2", "d:1:2:3", "d:1:", "g:", "g:01", "g:+1", "u:x",
            "u:1:2",
        ] {
            assert_eq!(bad.parse::<ConvId>(), Err(BadConvId), "{bad}");
        }
    }

    #[test]
    fn device_ids_are_checked() {
        assert!(DeviceId::parse("phone-2.a_b").is_ok());
        assert!(DeviceId::parse("").is_err());
        assert!(DeviceId::parse("has space").is_err());
        assert!(DeviceId::parse(&"x".repeat(65)).is_err());
    }
}
