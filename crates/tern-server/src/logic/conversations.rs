//! Conversations: the list, read positions and receipts, recall, typing.

use tern_proto::{Body, ConvId, ErrorCode, Notice, Priority, Role, ServerFrame, UserId};

use super::Logic;
use crate::bus::Target;
use crate::clock::now_ms;
use crate::error::Error;
use crate::store::im::{ConvSummary, Effect, Scope};
use crate::wire::OutFrame;
pub use tern_proto::rest::ReadReceipt;
use tern_proto::rest::{ExportedConversation, UserExport};

/// Most messages one export holds (a user with more gets the newest conversations' first
/// messages up to this, and `truncated`).
pub const EXPORT_MAX_MESSAGES: usize = 200_000;

impl Logic {
    /// The user's conversations, newest first, with last message and unread count.
    pub async fn conversation_list(&self, user: UserId) -> Result<Vec<ConvSummary>, Error> {
        Ok(self.store.conversation_list(user).await?)
    }

    /// Everything the user may take away (`GET /v1/me/export`): profile, relations, and every
    /// conversation with the messages the user can read, oldest first, up to
    /// [`EXPORT_MAX_MESSAGES`] in all (then `truncated`).
    pub async fn export(&self, user: UserId) -> Result<UserExport, Error> {
        let profile = self.profile(user).await?;
        let relations = self.relations(user).await?;
        let mut conversations = Vec::new();
        let mut left = EXPORT_MAX_MESSAGES;
        let mut truncated = false;
        for summary in self.conversation_list(user).await? {
            let mut messages = Vec::new();
            let mut after = 0;
            while left > 0 {
                let limit = u32::try_from(left.min(super::MAX_PAGE as usize)).unwrap_or(super::MAX_PAGE);
                let (page, _, _) = self.history(user, summary.conv_id, Some(after), None, Some(limit)).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                left -= page.len();
                messages.extend(page);
            }
            truncated |= left == 0 && after < summary.last_seq;
            conversations.push(ExportedConversation { summary, messages });
        }
        Ok(UserExport { exported_at: now_ms(), profile, relations, conversations, truncated })
    }

    /// Moves the user's read position in `conv` forward to `seq`. The user's other devices get
    /// a `read` notice; a 1:1 peer gets `peer_read`. Reading backwards changes nothing.
    pub async fn mark_read(&self, user: UserId, conv: ConvId, seq: u64) -> Result<(), Error> {
        if matches!(conv, ConvId::User(_)) {
            return Err(Error::bad_request("event streams have no read position"));
        }
        if conv.has_participant(user) == Some(false) {
            return Err(Error::not_found("conversation not found"));
        }
        let n = self.notices();
        let scope = Scope { member: Some((conv, user)), ..Scope::default() };
        self.transact(scope, move |snap| {
            let read_seq = match (&snap.member, conv) {
                (Some(m), _) => m.read_seq,
                (None, ConvId::Group(_)) => return Err(Error::not_found("conversation not found")),
                (None, _) => 0,
            };
            if seq > snap.member_conv_last_seq {
                return Err(Error::bad_request(format!(
                    "seq {seq} is past the conversation's last seq {}",
                    snap.member_conv_last_seq
                )));
            }
            if seq <= read_seq {
                return Ok((Vec::new(), ()));
            }
            let mut effects = vec![
                Effect::SetRead { conv, user, seq },
                n.append(ConvId::User(user), user, Notice::Read { conv_id: conv, seq }),
            ];
            if let Some(peer) = conv.peer_of(user).filter(|p| *p != user) {
                effects.push(n.append(ConvId::User(peer), user, Notice::PeerRead { conv_id: conv, user, seq }));
            }
            Ok((effects, ()))
        })
        .await
    }

    /// Recalls the message at `seq`: its sender, or a group owner/admin over a member of a lower
    /// role, within the recall window. The content is overwritten in storage by a tombstone and
    /// a `recall` notice goes to the conversation.
    pub async fn recall(&self, user: UserId, conv: ConvId, seq: u64) -> Result<(), Error> {
        if matches!(conv, ConvId::User(_)) || conv.has_participant(user) == Some(false) {
            return Err(Error::not_found("conversation not found"));
        }
        let window = self.recall_window_ms;
        let n = self.notices();
        let scope = Scope { message: Some((conv, seq)), group: conv.group(), ..Scope::default() };
        self.transact(scope, move |snap| {
            let my_role = match &snap.group {
                Some(g) if !g.info.dissolved => {
                    Some(g.role_of(user).ok_or_else(|| Error::not_found("conversation not found"))?)
                }
                Some(_) => return Err(Error::not_found("conversation not found")),
                None if conv.group().is_some() => return Err(Error::not_found("conversation not found")),
                None => None,
            };
            let msg = snap.message.as_ref().ok_or_else(|| Error::not_found(format!("no message {seq} here")))?;
            match msg.body {
                Body::Recalled { .. } => return Err(Error::new(ErrorCode::Conflict, "already recalled")),
                Body::Notice { .. } => return Err(Error::bad_request("notices cannot be recalled")),
                _ => {}
            }
            if msg.from != user {
                let sender_role = snap.group.as_ref().and_then(|g| g.role_of(msg.from)).unwrap_or(Role::Member);
                match my_role {
                    Some(r) if r >= Role::Admin && r > sender_role => {}
                    _ => return Err(Error::forbidden("you may only recall your own messages")),
                }
            }
            let now = now_ms();
            if now.saturating_sub(msg.ts) > window {
                return Err(Error::new(
                    ErrorCode::RecallExpired,
                    format!("messages can be recalled for {} seconds after sending", window / 1000),
                ));
            }
            let effects = vec![
                Effect::Replace { conv, seq, body: Body::Recalled { by: user, at: now } },
                n.append(conv, user, Notice::Recall { seq, msg_id: msg.msg_id, by: user }),
            ];
            Ok((effects, ()))
        })
        .await
    }

    /// Who has read the message at `seq` (members only).
    pub async fn read_receipt(&self, user: UserId, conv: ConvId, seq: u64) -> Result<ReadReceipt, Error> {
        let joined = self.readable_from(user, conv).await?;
        let page = self.store.messages(conv, crate::store::Page::After(seq.saturating_sub(1)), 1).await?;
        let msg = page
            .into_iter()
            .find(|m| m.seq == seq && seq >= joined)
            .ok_or_else(|| Error::not_found(format!("no message {seq} here")))?;
        // Who could see it: the members other than the sender who had joined by then (a later
        // joiner neither read it nor left it unread).
        let others =
            match conv {
                ConvId::Group(g) => self.store.group(g).await?.map_or(0, |g| {
                    g.members.values().filter(|m| m.user != msg.from && m.joined_seq <= seq).count() as u64
                }),
                c => c.participants().filter(|u| *u != msg.from).count() as u64,
            };
        let read = self.store.read_count(conv, seq, msg.from).await?.min(others);
        Ok(ReadReceipt { read, unread: others - read })
    }

    /// Relays "typing" to the peer of a 1:1 conversation (never stored).
    pub fn typing(&self, user: UserId, conv: ConvId) -> Result<(), Error> {
        let peer = match conv {
            ConvId::Direct(..) => conv.peer_of(user).ok_or_else(|| Error::not_found("conversation not found"))?,
            _ => return Err(Error::bad_request("typing is relayed in 1:1 conversations only")),
        };
        if peer == user {
            return Ok(());
        }
        let frame = OutFrame::new(ServerFrame::Typing { conv_id: conv, user });
        self.dispatcher.publish(Target::Users { users: [peer].into(), skip: None }, frame, Priority::Low);
        Ok(())
    }
}
