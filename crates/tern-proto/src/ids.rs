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

/// A conversation: the unit that owns a seq.
///
/// On the wire a conversation id is a string: `d:<low user id>:<high user id>` for a 1:1
/// conversation. The pair is ordered so both participants name the same conversation without a
/// lookup, and the participants can be read off the id without touching the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConvId {
    /// A 1:1 conversation between two users (the same user twice is a note-to-self).
    Direct(UserId, UserId),
}

impl ConvId {
    /// The 1:1 conversation of `a` and `b`, in either order.
    pub fn direct(a: UserId, b: UserId) -> Self {
        if a <= b { ConvId::Direct(a, b) } else { ConvId::Direct(b, a) }
    }

    /// Whether `user` takes part in this conversation.
    pub fn has_participant(&self, user: UserId) -> bool {
        match *self {
            ConvId::Direct(a, b) => a == user || b == user,
        }
    }

    /// The participants (one entry for a note-to-self).
    pub fn participants(&self) -> impl Iterator<Item = UserId> {
        let ConvId::Direct(a, b) = *self;
        std::iter::once(a).chain((a != b).then_some(b))
    }
}

impl fmt::Display for ConvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvId::Direct(a, b) => write!(f, "d:{a}:{b}"),
        }
    }
}

/// Why a string is not a conversation id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a conversation id (expected \"d:<user>:<user>\" with the lower id first)")]
pub struct BadConvId;

impl FromStr for ConvId {
    type Err = BadConvId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("d:").ok_or(BadConvId)?;
        let (a, b) = rest.split_once(':').ok_or(BadConvId)?;
        let parse = |p: &str| {
            // Only canonical decimal: no sign, no leading zeros, so one conversation has one name.
            if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                return Err(BadConvId);
            }
            p.parse::<u64>().map(UserId).map_err(|_| BadConvId)
        };
        let (a, b) = (parse(a)?, parse(b)?);
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
        assert!(c.has_participant(UserId(9)));
        assert!(!c.has_participant(UserId(4)));
        assert_eq!(c.participants().collect::<Vec<_>>(), vec![UserId(3), UserId(9)]);
        let me = ConvId::direct(UserId(5), UserId(5));
        assert_eq!(me.participants().collect::<Vec<_>>(), vec![UserId(5)]);
    }

    #[test]
    fn non_canonical_conversation_ids_are_rejected() {
        for bad in ["", "d:", "d:1", "d:9:3", "d:01:3", "d:-1:3", "x:1:2", "d:1:2:3", "d:1:"] {
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
