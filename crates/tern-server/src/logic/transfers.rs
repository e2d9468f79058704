//! File transfers between two clients (the QQ way): the offer goes through tern to the
//! recipient's devices with the sender's addresses; the two clients try to connect directly, and
//! fall back to tern's relay (`api/relay.rs`). tern keeps no state per transfer: the offer is a
//! signed ticket that any node can check, when the recipient answers and when either side opens
//! the relay.

use std::net::{IpAddr, SocketAddr};

use tern_proto::{ErrorCode, Priority, ServerFrame, UserId};

use super::Logic;
use crate::auth::TransferTicket;
use crate::bus::Target;
use crate::error::Error;
use crate::store::SendRules;
use crate::wire::OutFrame;

/// How long an offer (and its ticket) lasts.
pub const OFFER_SECS: u64 = 600;
/// Largest file offered: the transfer never touches tern's storage, but a size is a promise.
pub const MAX_TRANSFER_BYTES: u64 = 1 << 40;

/// A file offer as the sender made it.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The sender.
    pub from: UserId,
    /// The sender's address as tern sees it.
    pub observed: IpAddr,
    /// The recipient.
    pub to: UserId,
    /// The file's name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Where the sender listens.
    pub candidates: Vec<String>,
}

impl Logic {
    /// Checks an offer, tells the recipient's devices, and answers the sender with the ticket.
    pub async fn offer_file(&self, id: u64, offer: Offer) -> Result<ServerFrame, Error> {
        let Offer { from, observed, to, name, size, sha256, candidates } = offer;
        if name.is_empty()
            || name.len() > 255
            || name.chars().any(|c| c.is_control() || c == '/' || c == '\\')
            || name == "."
            || name == ".."
        {
            return Err(Error::bad_request("name must be 1 to 255 bytes without /, \\ or control characters"));
        }
        if size > MAX_TRANSFER_BYTES {
            return Err(Error::new(
                ErrorCode::BodyTooLarge,
                format!("files up to {MAX_TRANSFER_BYTES} bytes can be offered"),
            ));
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::bad_request("sha256 must be 64 lowercase hex digits"));
        }
        if candidates.len() > 8 {
            return Err(Error::bad_request("at most 8 candidate addresses"));
        }
        let mut addrs = Vec::with_capacity(candidates.len() * 2);
        for c in &candidates {
            let addr: SocketAddr =
                c.parse().map_err(|_| Error::bad_request(format!("candidate {c:?} is not an ip:port address")))?;
            addrs.push(addr.to_string());
        }
        // Behind a NAT the sender's own addresses are private; the one tern sees may be reachable.
        for port in candidates.iter().filter_map(|c| c.parse::<SocketAddr>().ok()).map(|a| a.port()) {
            let seen = SocketAddr::new(observed, port).to_string();
            if !addrs.contains(&seen) {
                addrs.push(seen);
            }
        }
        // The same rules as a 1:1 message: a block or a "friends only" policy refuses the offer.
        let profile = self.profile(to).await?;
        let towards_sender =
            self.store.relations_of(to).await?.into_iter().find(|r| r.peer == from).map(|r| r.mine).unwrap_or_default();
        crate::logic::rules::ImRules.direct(profile.dm_policy, &towards_sender)?;

        let transfer_id = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 16]>());
        let (ticket, claims) = self.auth().issue_transfer(&transfer_id, from, to, &name, size, &sha256, OFFER_SECS);
        let frame = OutFrame::new(ServerFrame::FileOffer {
            transfer_id: transfer_id.clone(),
            from,
            name,
            size,
            sha256,
            candidates: addrs,
            ticket: ticket.clone(),
            expires_at: claims.exp,
        });
        self.dispatcher.publish(Target::Users { users: [to].into(), skip: None }, frame, Priority::High);
        Ok(ServerFrame::FileOffered { id, transfer_id, ticket, observed: observed.to_string(), expires_at: claims.exp })
    }

    /// The recipient accepts or declines; the sender's devices are told.
    pub fn answer_file(&self, user: UserId, ticket: &str, accept: bool) -> Result<(), Error> {
        let t = self.transfer_ticket(ticket)?;
        if t.to != user.0 {
            return Err(Error::not_found("no such file offer"));
        }
        let frame = OutFrame::new(ServerFrame::FileAnswer { transfer_id: t.sub, accept });
        self.dispatcher.publish(Target::Users { users: [UserId(t.from)].into(), skip: None }, frame, Priority::High);
        Ok(())
    }

    /// A valid, unexpired ticket, or `not_found` (a forged or expired one reads like no offer).
    pub fn transfer_ticket(&self, ticket: &str) -> Result<TransferTicket, Error> {
        self.auth().verify_transfer(ticket).map_err(|_| Error::not_found("no such file offer (or it expired)"))
    }
}
