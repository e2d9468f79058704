//! WebSocket framing (RFC 6455), the server's side: masked client frames in, unmasked server
//! frames out. Sans-IO like the TCP framing: the gateway reads bytes into a buffer and takes
//! complete messages off its front.
//!
//! tern's own rather than tungstenite's because of what an idle connection costs: tungstenite
//! keeps a read buffer, a write buffer and its frame state per connection for the connection's
//! life (with hyper's upgrade wrapper, ~1.6 KB of an idle WebSocket's 3.55 KB, measured with
//! heaptrack), where this decoder is two words and a buffer that is empty between frames.
//!
//! No extension is negotiated, so the reserved bits must be clear. A message is bounded by the
//! decoder's limit as soon as a frame header announces its length, before any of its payload
//! is buffered, fragmented messages included.

use bytes::{Buf, Bytes, BytesMut};

use crate::codec::Codec;

/// What a client's frames amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete message: text (JSON) or binary (MessagePack, or compressed).
    Message(Codec, Bytes),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Bytes),
    /// The client's close frame, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why a client's frames were refused; the connection cannot go on after any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A message longer than the limit was announced.
    #[error("message of {announced} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced size so far (the fragments before, plus this frame's).
        announced: u64,
        /// The limit.
        limit: usize,
    },
    /// Frames that break RFC 6455.
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message (or close reason) that is not UTF-8; found as soon as a fragment shows it.
    #[error("websocket protocol error: {0} is not UTF-8")]
    InvalidUtf8(&'static str),
}

impl WsError {
    /// The close status RFC 6455 (7.4.1) gives this failure: 1009 message too big, 1007
    /// invalid data (not UTF-8), 1002 protocol error.
    pub fn status(&self) -> u16 {
        match self {
            WsError::TooLarge { .. } => 1009,
            WsError::InvalidUtf8(_) => 1007,
            WsError::Protocol(_) => 1002,
        }
    }
}

/// A frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// A UTF-8 text message (JSON).
    Text = 1,
    /// A binary message.
    Binary = 2,
    /// The closing handshake.
    Close = 8,
    /// A ping.
    Ping = 9,
    /// The answer to a ping.
    Pong = 10,
}

/// Takes client messages off the front of a byte buffer.
#[derive(Debug)]
pub struct WsDecoder {
    max_message: usize,
    /// A fragmented message being put together. Boxed: clients rarely fragment, and the decoder
    /// is part of every connection's state.
    partial: Option<Box<Partial>>,
}

/// A fragmented message so far.
#[derive(Debug)]
struct Partial {
    codec: Codec,
    payload: BytesMut,
    /// For text: how much of `payload` is known to be valid UTF-8 (a character may be cut
    /// between fragments), so each fragment is checked once, as it arrives.
    valid_to: usize,
}

impl Partial {
    /// Checks the text received so far: invalid UTF-8 fails now, not at the end of the message;
    /// only an incomplete character at the very end may wait for the next fragment.
    fn check_text(&mut self, fin: bool) -> Result<(), WsError> {
        if self.codec != Codec::Json {
            return Ok(());
        }
        match std::str::from_utf8(&self.payload[self.valid_to..]) {
            Ok(_) => self.valid_to = self.payload.len(),
            Err(e) if e.error_len().is_none() && !fin => self.valid_to += e.valid_up_to(),
            Err(_) => return Err(WsError::InvalidUtf8("a text message")),
        }
        Ok(())
    }
}

/// A frame header, once enough of it is buffered.
struct Head {
    fin: bool,
    opcode: u8,
    len: u64,
    /// Header length, mask key included.
    size: usize,
    mask: [u8; 4],
}

impl WsDecoder {
    /// A decoder accepting messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self { max_message, partial: None }
    }

    /// The largest accepted message, in bytes.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Whether a fragmented message has begun and not ended.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// The next event from the front of `buf`; `Ok(None)`: not enough bytes yet (read more and
    /// call again). Pongs are consumed silently.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsEvent>, WsError> {
        loop {
            let Some(head) = self.head(buf)? else { return Ok(None) };
            // Bounded by `max_message` (checked in `head`) or 125 for control frames.
            let len = head.len as usize;
            if buf.len() < head.size + len {
                buf.reserve(head.size + len - buf.len());
                return Ok(None);
            }
            buf.advance(head.size);
            let mut payload = buf.split_to(len);
            unmask(&mut payload, head.mask);
            match head.opcode {
                0x1 | 0x2 => {
                    let codec = if head.opcode == 0x1 { Codec::Json } else { Codec::MsgPack };
                    let mut partial = Partial { codec, payload, valid_to: 0 };
                    partial.check_text(head.fin)?;
                    if head.fin {
                        return Ok(Some(WsEvent::Message(codec, partial.payload.freeze())));
                    }
                    self.partial = Some(Box::new(partial));
                }
                0x0 => {
                    if let Some(partial) = &mut self.partial {
                        partial.payload.extend_from_slice(&payload);
                        partial.check_text(head.fin)?;
                    }
                    if head.fin
                        && let Some(partial) = self.partial.take()
                    {
                        return Ok(Some(WsEvent::Message(partial.codec, partial.payload.freeze())));
                    }
                }
                0x8 => return close(&payload).map(|code| Some(WsEvent::Close(code))),
                0x9 => return Ok(Some(WsEvent::Ping(payload.freeze()))),
                _ => {} // 0xA, a pong: `head` refused every other opcode.
            }
        }
    }

    /// Parses and checks the header at the front of `buf`.
    fn head(&self, buf: &[u8]) -> Result<Option<Head>, WsError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set, but no extension was negotiated"));
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol("a client's frames must be masked"));
        }
        let (len, ext) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 2),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(l) => (u64::from_be_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]]), 8),
                None => return Ok(None),
            },
            n => (u64::from(n), 0),
        };
        match opcode {
            0x8..=0xA => {
                if !fin {
                    return Err(WsError::Protocol("a control frame must not be fragmented"));
                }
                if len > 125 {
                    return Err(WsError::Protocol("a control frame's payload is at most 125 bytes"));
                }
            }
            0x0..=0x2 => {
                match (opcode, &self.partial) {
                    (0x0, None) => return Err(WsError::Protocol("a continuation frame without a message to continue")),
                    (0x1 | 0x2, Some(_)) => {
                        return Err(WsError::Protocol("a new message began before the fragmented one ended"));
                    }
                    _ => {}
                }
                let before = self.partial.as_ref().map_or(0, |p| p.payload.len() as u64);
                let announced = before.saturating_add(len);
                if announced > self.max_message as u64 {
                    return Err(WsError::TooLarge { announced, limit: self.max_message });
                }
            }
            _ => return Err(WsError::Protocol("unknown opcode")),
        }
        let size = 2 + ext + 4;
        let Some(mask) = buf.get(size - 4..size) else { return Ok(None) };
        Ok(Some(Head { fin, opcode, len, size, mask: [mask[0], mask[1], mask[2], mask[3]] }))
    }
}

/// A close frame's status code, checked.
fn close(payload: &[u8]) -> Result<Option<u16>, WsError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(WsError::Protocol("a close frame with a 1-byte payload")),
        [a, b, reason @ ..] => (u16::from_be_bytes([*a, *b]), reason),
    };
    // The codes an endpoint may send (RFC 6455 7.4: 1004–1006 and 1015 are reserved).
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(WsError::Protocol("a close frame with an invalid status code"));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(WsError::InvalidUtf8("a close reason"));
    }
    Ok(Some(code))
}

/// XORs a payload with its mask key, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut words = data.chunks_exact_mut(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the key's phase is 0 again.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A whole unmasked (server) frame with FIN set.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.extend_from_slice(&[0x80 | opcode as u8]);
    match payload.len() {
        n @ 0..=125 => out.extend_from_slice(&[n as u8]),
        n @ 126..=0xFFFF => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out.freeze()
}

/// The whole length (header and payload) of the unmasked server frame that `head` begins with,
/// once enough of its header is there (`None` before). A writer uses it to find frame boundaries
/// in bytes it queued, so that it can drop the frames it has not begun to write.
pub fn server_frame_len(head: &[u8]) -> Option<usize> {
    let b1 = *head.get(1)?;
    let (len, size) = match b1 & 0x7f {
        126 => (u64::from(u16::from_be_bytes(head.get(2..4)?.try_into().ok()?)), 4),
        127 => (u64::from_be_bytes(head.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    usize::try_from(len).ok()?.checked_add(size)
}

/// A close frame's payload: the code, then as much of `reason` as fits in 123 bytes, cut at a
/// character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn all(decoder: &mut WsDecoder, bytes: &[u8]) -> Result<Vec<WsEvent>, WsError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(event) = decoder.decode(&mut buf)? {
            out.push(event);
        }
        Ok(out)
    }

    fn text(s: &str) -> WsEvent {
        WsEvent::Message(Codec::Json, Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn messages_of_every_length_encoding_unmask_byte_for_byte() {
        for len in [0usize, 1, 7, 8, 9, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut d = WsDecoder::new(100_000);
            let got = all(&mut d, &client(0x82, &payload)).unwrap();
            assert_eq!(got, vec![WsEvent::Message(Codec::MsgPack, Bytes::from(payload))], "length {len}");
        }
    }

    #[test]
    fn a_message_split_anywhere_comes_out_once_whole() {
        let mut stream = client(0x81, br#"{"op":"ping"}"#);
        stream.extend(client(0x89, b"hi"));
        stream.extend(client(0x82, &[1, 2, 3]));
        for cut in 1..stream.len() {
            let mut d = WsDecoder::new(1000);
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut got = Vec::new();
            while let Some(e) = d.decode(&mut buf).unwrap() {
                got.push(e);
            }
            buf.extend_from_slice(&stream[cut..]);
            while let Some(e) = d.decode(&mut buf).unwrap() {
                got.push(e);
            }
            assert_eq!(
                got,
                vec![
                    text(r#"{"op":"ping"}"#),
                    WsEvent::Ping(Bytes::from_static(b"hi")),
                    WsEvent::Message(Codec::MsgPack, Bytes::from_static(&[1, 2, 3]))
                ],
                "cut at {cut}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn fragments_are_joined_with_control_frames_between_them_and_pongs_dropped() {
        let mut stream = client(0x01, b"{\"op\":");
        stream.extend(client(0x89, b"p"));
        stream.extend(client(0x8A, b"unsolicited"));
        stream.extend(client(0x00, b"\"pi"));
        stream.extend(client(0x80, b"ng\"}"));
        let mut d = WsDecoder::new(1000);
        assert_eq!(
            all(&mut d, &stream).unwrap(),
            vec![WsEvent::Ping(Bytes::from_static(b"p")), text(r#"{"op":"ping"}"#)]
        );
        assert!(!d.in_message());
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header_fragments_counted_together() {
        let mut d = WsDecoder::new(10);
        // Only the header: the payload never has to arrive.
        let head = &client(0x82, &[0; 11])[..6];
        assert_eq!(all(&mut d, head), Err(WsError::TooLarge { announced: 11, limit: 10 }));
        let mut d = WsDecoder::new(10);
        let mut stream = client(0x02, &[0; 6]);
        stream.extend(&client(0x80, &[0; 5])[..6]);
        assert_eq!(all(&mut d, &stream), Err(WsError::TooLarge { announced: 11, limit: 10 }));
        // 2^63 and more, announced in 8 bytes.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(all(&mut WsDecoder::new(10), &huge), Err(WsError::TooLarge { .. })));
    }

    #[test]
    fn frames_that_break_the_rfc_are_refused() {
        let refused = |bytes: Vec<u8>| match all(&mut WsDecoder::new(1000), &bytes) {
            Err(e @ WsError::Protocol(why)) => {
                assert_eq!(e.status(), 1002);
                why
            }
            Err(e @ WsError::InvalidUtf8(what)) => {
                assert_eq!(e.status(), 1007);
                if what.contains("reason") { "a close reason that is not UTF-8" } else { "not UTF-8" }
            }
            other => panic!("accepted: {other:?}"),
        };
        let mut unmasked = client(0x81, b"x");
        unmasked[1] &= 0x7f;
        assert!(refused(unmasked).contains("masked"));
        assert!(refused(client(0xC1, b"x")).contains("reserved bits"));
        assert!(refused(client(0x83, b"x")).contains("opcode"));
        assert!(refused(client(0x09, b"x")).contains("fragmented"));
        assert!(refused(client(0x89, &[0; 126])).contains("125"));
        assert!(refused(client(0x80, b"x")).contains("continuation"));
        let mut two = client(0x01, b"a");
        two.extend(client(0x81, b"b"));
        assert!(refused(two).contains("before the fragmented one ended"));
        assert!(refused(client(0x81, &[0xff, 0xfe])).contains("UTF-8"));
        let mut split_char = client(0x01, &[0xc3]);
        split_char.extend(client(0x80, &[0xa9]));
        assert_eq!(
            all(&mut WsDecoder::new(10), &split_char).unwrap(),
            vec![text("é")],
            "checked whole, not per fragment"
        );
        assert!(refused(client(0x88, &[3])).contains("1-byte"));
        assert!(refused(client(0x88, &1005u16.to_be_bytes())).contains("status code"));
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xff);
        assert!(refused(client(0x88, &bad_reason)).contains("reason"));
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_shows_it_not_at_the_end_of_the_message() {
        let mut d = WsDecoder::new(1000);
        // A first fragment that is already not UTF-8, with the rest of the message yet to come.
        let first = client(0x01, &[b'o', b'k', 0xff]);
        assert_eq!(all(&mut d, &first), Err(WsError::InvalidUtf8("a text message")));
        // A character cut between fragments is fine until the fragment that completes it
        // breaks it.
        let mut d = WsDecoder::new(1000);
        assert_eq!(all(&mut d, &client(0x01, &[b'a', 0xe2, 0x82])), Ok(vec![]));
        assert_eq!(all(&mut d, &client(0x00, &[0x28])), Err(WsError::InvalidUtf8("a text message")));
        // Binary messages are not text.
        let mut d = WsDecoder::new(1000);
        assert_eq!(all(&mut d, &client(0x82, &[0xff])).unwrap().len(), 1);
        assert_eq!(WsError::TooLarge { announced: 9, limit: 1 }.status(), 1009);
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut d = WsDecoder::new(10);
        let mut payload = 4001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        assert_eq!(all(&mut d, &client(0x88, &payload)).unwrap(), vec![WsEvent::Close(Some(4001))]);
        assert_eq!(all(&mut d, &client(0x88, b"")).unwrap(), vec![WsEvent::Close(None)]);
    }

    #[test]
    fn server_frame_lengths_are_read_back_from_their_headers() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 70_000] {
            let frame = encode_frame(OpCode::Binary, &vec![7u8; len]);
            assert_eq!(server_frame_len(&frame), Some(frame.len()), "length {len}");
            let header = if len < 126 {
                2
            } else if len < 65_536 {
                4
            } else {
                10
            };
            assert_eq!(server_frame_len(&frame[..header - 1]), None, "an unfinished header");
        }
    }

    #[test]
    fn server_frames_use_the_shortest_length_encoding() {
        assert_eq!(&encode_frame(OpCode::Text, b"hi")[..], &[0x81, 2, b'h', b'i']);
        let mid = encode_frame(OpCode::Binary, &[7; 300]);
        assert_eq!(&mid[..4], &[0x82, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = encode_frame(OpCode::Binary, &[7; 70_000]);
        assert_eq!(&big[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(big[2..10].try_into().unwrap()), 70_000);
        let reason = "é".repeat(100);
        let close = close_payload(4006, &reason);
        assert_eq!(&close[..2], &4006u16.to_be_bytes());
        assert_eq!(close.len(), 2 + 122, "cut at a character boundary, within 125 bytes");
    }
}
