//! Client-side ordering and dedup, per conversation.
//!
//! A device hands the app each message exactly once and in seq order. Pushes can arrive twice
//! (server retry, resume overlapping a live push) or early (a push overtaking a retried one);
//! [`Inbox`] turns that into an in-order stream and says which ranges to fetch with `history`
//! when something is missing — so a gap is always filled or reported, never silently skipped.
//!
//! Per conversation it keeps the highest contiguous seq handed over (`upto`, the watermark sent
//! in `auth.resume`), messages that arrived early (held until the gap before them is filled),
//! seqs this device sent itself (acknowledged by `sent`, never pushed back to it) and the end of
//! the range being fetched, so one gap is fetched once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::frame::Message;
use crate::ids::ConvId;

/// Fetch `after_seq + 1 ..= to_seq` of a conversation with `history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// The conversation.
    pub conv_id: ConvId,
    /// Fetch messages after this seq.
    pub after_seq: u64,
    /// Up to and including this seq.
    pub to_seq: u64,
}

/// What to do after the inbox took something in.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Hand these to the app, in this order.
    pub deliver: Vec<Message>,
    /// Ask the server for this range.
    pub fetch: Option<Fetch>,
    /// The server had none of this range although it should have; it is skipped and reported
    /// instead of held forever.
    pub missing: Option<(ConvId, u64, u64)>,
}

#[derive(Debug, Default)]
struct ConvState {
    upto: u64,
    held: BTreeMap<u64, Message>,
    own: BTreeSet<u64>,
    fetching_to: u64,
}

impl ConvState {
    fn has(&self, seq: u64) -> bool {
        seq <= self.upto || self.held.contains_key(&seq) || self.own.contains(&seq)
    }

    /// Moves `upto` over everything now contiguous, collecting held messages to deliver.
    fn advance(&mut self, out: &mut Vec<Message>) {
        loop {
            let next = self.upto + 1;
            if let Some(m) = self.held.remove(&next) {
                out.push(m);
            } else if !self.own.remove(&next) {
                break;
            }
            self.upto = next;
        }
    }

    /// A fetch for everything missing below `to`, unless one is already under way.
    fn fetch_below(&mut self, conv_id: ConvId, to: u64) -> Option<Fetch> {
        if to <= self.upto || to <= self.fetching_to {
            return None;
        }
        let after_seq = self.upto.max(self.fetching_to);
        self.fetching_to = to;
        Some(Fetch { conv_id, after_seq, to_seq: to })
    }
}

/// Per-conversation ordering state of one device.
#[derive(Debug, Default)]
pub struct Inbox {
    convs: HashMap<ConvId, ConvState>,
}

impl Inbox {
    /// An inbox that already holds everything up to these seqs.
    pub fn with_watermarks(marks: &BTreeMap<ConvId, u64>) -> Self {
        let convs = marks.iter().map(|(c, &upto)| (*c, ConvState { upto, ..ConvState::default() })).collect();
        Self { convs }
    }

    /// The highest contiguous seq handed over, per conversation: what to send in `auth.resume`.
    pub fn watermarks(&self) -> BTreeMap<ConvId, u64> {
        self.convs.iter().map(|(c, s)| (*c, s.upto)).collect()
    }

    /// The watermark of one conversation.
    pub fn watermark(&self, conv: ConvId) -> u64 {
        self.convs.get(&conv).map_or(0, |s| s.upto)
    }

    /// A message arrived (push, resume or history page).
    pub fn receive(&mut self, msg: Message) -> Outcome {
        let conv_id = msg.conv_id;
        let state = self.convs.entry(conv_id).or_default();
        let mut out = Outcome::default();
        let seq = msg.seq;
        if state.has(seq) {
            return out;
        }
        state.held.insert(seq, msg);
        state.advance(&mut out.deliver);
        if state.upto < seq {
            // Everything between `upto` and this message is missing, except what is held
            // directly below it.
            let mut to = seq - 1;
            while to > state.upto && state.has(to) {
                to -= 1;
            }
            out.fetch = state.fetch_below(conv_id, to);
        }
        out
    }

    /// This device's own message was stored at `seq` (the `sent` answer).
    pub fn sent(&mut self, conv_id: ConvId, seq: u64) -> Outcome {
        let state = self.convs.entry(conv_id).or_default();
        let mut out = Outcome::default();
        if !state.has(seq) {
            state.own.insert(seq);
            state.advance(&mut out.deliver);
        }
        out
    }

    /// The server announced `from..=to` missing (resume `gap`).
    pub fn gap(&mut self, conv_id: ConvId, to_seq: u64) -> Option<Fetch> {
        self.convs.entry(conv_id).or_default().fetch_below(conv_id, to_seq)
    }

    /// A `history` page for a fetch arrived (ascending). Delivers what it fills and asks for the
    /// next page while the fetched range is not complete.
    ///
    /// `from_seq` is the first seq this user may read (a group joined later): everything below
    /// it counts as had, so the device never waits for what it is not entitled to.
    pub fn fetched(&mut self, conv_id: ConvId, page: Vec<Message>, from_seq: u64) -> Outcome {
        let mut out = Outcome::default();
        let state = self.convs.entry(conv_id).or_default();
        if from_seq > state.upto + 1 {
            state.upto = from_seq - 1;
            let upto = state.upto;
            state.held.retain(|s, _| *s > upto);
            state.own.retain(|s| *s > upto);
            state.advance(&mut out.deliver);
        }
        let empty = page.is_empty();
        for m in page.into_iter().filter(|m| m.conv_id == conv_id) {
            let o = self.receive(m);
            out.deliver.extend(o.deliver);
        }
        let state = self.convs.entry(conv_id).or_default();
        let target = state.fetching_to;
        if state.upto >= target {
            state.fetching_to = 0;
            return out;
        }
        if empty {
            // The server returned nothing for a range it told us exists. Report the hole and move
            // on rather than hold later messages forever.
            let from = state.upto + 1;
            out.missing = Some((conv_id, from, target));
            state.upto = target;
            state.fetching_to = 0;
            state.advance(&mut out.deliver);
            return out;
        }
        state.fetching_to = 0;
        out.fetch = state.fetch_below(conv_id, target);
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::frame::Body;
    use crate::ids::{MsgId, UserId};

    fn conv() -> ConvId {
        ConvId::direct(UserId(1), UserId(2))
    }

    fn msg(seq: u64) -> Message {
        Message {
            msg_id: MsgId(1000 + seq),
            conv_id: conv(),
            seq,
            from: UserId(1),
            client_msg_id: format!("c{seq}"),
            ts: 0,
            body: Body::Text { text: seq.to_string() },
        }
    }

    fn seqs(ms: &[Message]) -> Vec<u64> {
        ms.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn a_late_joiner_skips_what_is_before_its_first_readable_seq() {
        let mut inbox = Inbox::default();
        // Joined at 5: the first push is 5, the fetch for 1..=4 answers from 5 with from_seq 5.
        let o = inbox.receive(msg(5));
        assert_eq!(o.fetch, Some(Fetch { conv_id: conv(), after_seq: 0, to_seq: 4 }));
        let o = inbox.fetched(conv(), vec![msg(5), msg(6)], 5);
        assert_eq!(seqs(&o.deliver), vec![5, 6]);
        assert_eq!((o.fetch, o.missing), (None, None));
        assert_eq!(inbox.watermark(conv()), 6);
    }

    #[test]
    fn in_order_messages_pass_and_duplicates_are_dropped() {
        let mut inbox = Inbox::default();
        assert_eq!(seqs(&inbox.receive(msg(1)).deliver), vec![1]);
        assert_eq!(seqs(&inbox.receive(msg(2)).deliver), vec![2]);
        assert_eq!(inbox.receive(msg(1)), Outcome::default());
        assert_eq!(inbox.watermark(conv()), 2);
    }

    #[test]
    fn early_message_is_held_and_the_gap_fetched_once() {
        let mut inbox = Inbox::default();
        let o = inbox.receive(msg(4));
        assert!(o.deliver.is_empty());
        assert_eq!(o.fetch, Some(Fetch { conv_id: conv(), after_seq: 0, to_seq: 3 }));
        assert_eq!(inbox.receive(msg(5)).fetch, None, "range 1..=3 already being fetched");
        let o = inbox.fetched(conv(), vec![msg(1), msg(2)], 1);
        assert_eq!(seqs(&o.deliver), vec![1, 2]);
        assert_eq!(o.fetch, Some(Fetch { conv_id: conv(), after_seq: 2, to_seq: 3 }));
        let o = inbox.fetched(conv(), vec![msg(3)], 1);
        assert_eq!(seqs(&o.deliver), vec![3, 4, 5]);
        assert_eq!(o.fetch, None);
    }

    #[test]
    fn own_sends_are_skipped_in_order() {
        let mut inbox = Inbox::default();
        inbox.sent(conv(), 2);
        assert_eq!(inbox.watermark(conv()), 0);
        assert_eq!(seqs(&inbox.receive(msg(1)).deliver), vec![1]);
        assert_eq!(inbox.watermark(conv()), 2);
        let o = inbox.receive(msg(2));
        assert!(o.deliver.is_empty(), "own message is not handed back");
    }

    #[test]
    fn resume_gap_asks_for_the_range() {
        let mut inbox = Inbox::with_watermarks(&[(conv(), 10)].into_iter().collect());
        assert_eq!(inbox.gap(conv(), 900), Some(Fetch { conv_id: conv(), after_seq: 10, to_seq: 900 }));
        assert_eq!(inbox.gap(conv(), 900), None);
        assert_eq!(inbox.gap(conv(), 5), None);
    }

    #[test]
    fn an_empty_page_for_a_missing_range_is_reported_not_hidden() {
        let mut inbox = Inbox::default();
        inbox.receive(msg(3));
        let o = inbox.fetched(conv(), vec![], 1);
        assert_eq!(o.missing, Some((conv(), 1, 2)));
        assert_eq!(seqs(&o.deliver), vec![3]);
    }

    proptest! {
        /// Whatever order and duplication pushes arrive in, with fetches answered from the full
        /// log, the app sees 1..=n exactly once, in order.
        #[test]
        fn any_arrival_order_yields_each_message_once_in_order(
            n in 1u64..60,
            order in proptest::collection::vec(any::<prop::sample::Index>(), 1..120),
        ) {
            let mut inbox = Inbox::default();
            let mut seen = Vec::new();
            let mut fetches = Vec::new();
            for idx in order {
                let seq = idx.index(n as usize) as u64 + 1;
                let o = inbox.receive(msg(seq));
                seen.extend(seqs(&o.deliver));
                fetches.extend(o.fetch);
            }
            // Then the last message arrives, and every fetch is answered a page (of 7) at a time.
            let o = inbox.receive(msg(n));
            seen.extend(seqs(&o.deliver));
            fetches.extend(o.fetch);
            while let Some(f) = fetches.pop() {
                let page: Vec<_> = (f.after_seq + 1..=f.to_seq).take(7).map(msg).collect();
                let o = inbox.fetched(f.conv_id, page, 1);
                prop_assert_eq!(o.missing, None);
                seen.extend(seqs(&o.deliver));
                fetches.extend(o.fetch);
            }
            prop_assert_eq!(seen, (1..=n).collect::<Vec<_>>());
        }
    }
}
