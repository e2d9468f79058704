//! Encodings and stream framing.
//!
//! One set of frame types, two encodings: JSON (WebSocket text frames, browsers) and MessagePack
//! with named fields (WebSocket binary frames and raw TCP). Over raw TCP each frame is preceded by
//! its length as a 4-byte big-endian integer; [`FrameDecoder`] checks that length against the
//! limit *before* buffering the payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::{CLIENT_OPS, ErrorCode};

/// How deeply a frame may nest, in either codec: serde_json's fixed recursion limit, given to
/// the MessagePack decoder too (whose own default, 1024, lets a 60 KB frame recurse deep enough
/// to overflow a worker thread's stack). Client data has a lower limit of its own,
/// [`crate::frame::MAX_DATA_DEPTH`], checked after decoding.
pub const MAX_FRAME_DEPTH: usize = 128;

/// Bytes of the length prefix on stream transports.
pub const LEN_PREFIX: usize = 4;

/// The whole length (prefix and payload) of the length-prefixed frame that `head` begins with,
/// once its prefix is there (`None` before).
pub fn prefixed_frame_len(head: &[u8]) -> Option<usize> {
    let prefix: [u8; LEN_PREFIX] = head.get(..LEN_PREFIX)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prefix)).ok()?.checked_add(LEN_PREFIX)
}

/// Which encoding a frame uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// UTF-8 JSON.
    Json,
    /// MessagePack, maps with field names.
    MsgPack,
}

/// A frame that could not be decoded, with what to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// `bad_request` or `unknown_op`.
    pub code: ErrorCode,
    /// The request id, if one could be read from the broken frame, so the error can be matched.
    pub id: Option<u64>,
    /// What is wrong, for humans.
    pub message: String,
}

impl Codec {
    /// Encodes a value.
    pub fn encode<T: Serialize>(self, value: &T) -> Vec<u8> {
        match self {
            // Serializing our own frame types cannot fail: every map key is a string and no
            // type has a fallible `Serialize`. An empty vec would surface as a decode error.
            Codec::Json => serde_json::to_vec(value).unwrap_or_default(),
            Codec::MsgPack => rmp_serde::to_vec_named(value).unwrap_or_default(),
        }
    }

    /// Encodes a value for a stream transport: length prefix, then the payload.
    pub fn encode_prefixed<T: Serialize>(self, value: &T) -> Bytes {
        let payload = self.encode(value);
        let mut out = BytesMut::with_capacity(LEN_PREFIX + payload.len());
        out.put_u32(payload.len() as u32);
        out.put_slice(&payload);
        out.freeze()
    }

    /// Decodes a frame. On failure, tells a malformed frame from an unknown `op` and recovers
    /// the request id when it can (only on the error path, so the fast path parses once).
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, DecodeError> {
        let result = match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::MsgPack => from_msgpack(bytes).map_err(|e| e.to_string()),
        };
        result.map_err(|detail| self.classify(bytes, detail))
    }

    fn classify(self, bytes: &[u8], detail: String) -> DecodeError {
        #[derive(serde::Deserialize)]
        struct Probe {
            op: Option<String>,
            id: Option<u64>,
        }
        let probe: Option<Probe> = match self {
            Codec::Json => serde_json::from_slice(bytes).ok(),
            Codec::MsgPack => from_msgpack(bytes).ok(),
        };
        match probe {
            Some(Probe { op: Some(op), id }) if !CLIENT_OPS.contains(&op.as_str()) => DecodeError {
                code: ErrorCode::UnknownOp,
                id,
                message: format!("unknown op {op:?}; known ops: {}", CLIENT_OPS.join(", ")),
            },
            Some(Probe { op: None, id }) => {
                DecodeError { code: ErrorCode::BadRequest, id, message: "frame has no \"op\" field".into() }
            }
            Some(Probe { id, .. }) => {
                DecodeError { code: ErrorCode::BadRequest, id, message: format!("invalid frame: {detail}") }
            }
            None => DecodeError {
                code: ErrorCode::BadRequest,
                id: None,
                message: match self {
                    Codec::Json => format!("frame is not a JSON object: {detail}"),
                    Codec::MsgPack => format!("frame is not a MessagePack map: {detail}"),
                },
            },
        }
    }
}

/// MessagePack decoding with the frame depth limit.
fn from_msgpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_FRAME_DEPTH);
    T::deserialize(&mut de)
}

/// A length prefix announced more bytes than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {announced} bytes exceeds the limit of {limit} bytes")]
pub struct FrameTooLarge {
    /// What the prefix announced.
    pub announced: usize,
    /// The limit.
    pub limit: usize,
}

/// Splits a byte stream into length-prefixed frames.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder accepting payloads up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// The largest accepted payload, in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Takes one complete frame's payload off the front of `buf`. `Ok(None)` means "not enough
    /// bytes yet" — read more and call again. The announced length is checked before any payload
    /// is buffered, and `buf` is reserved only for a frame that fits.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameTooLarge> {
        if buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame {
            return Err(FrameTooLarge { announced: len, limit: self.max_frame });
        }
        if buf.len() < LEN_PREFIX + len {
            buf.reserve(LEN_PREFIX + len - buf.len());
            return Ok(None);
        }
        buf.advance(LEN_PREFIX);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::frame::{Body, ClientFrame, Message, ServerFrame};
    use crate::ids::{ConvId, MsgId, UserId};

    fn sample_frames() -> Vec<ClientFrame> {
        let mut resume = BTreeMap::new();
        resume.insert(ConvId::direct(UserId(1), UserId(2)), 7);
        vec![
            ClientFrame::Auth {
                token: "t".into(),
                proto: Some(1),
                resume: Some(resume),
                accept_compression: vec!["br".into()],
            },
            ClientFrame::Auth { token: "t".into(), proto: None, resume: None, accept_compression: vec![] },
            ClientFrame::Send {
                id: 3,
                to: Some(UserId(2)),
                conv_id: None,
                client_msg_id: "c1".into(),
                body: Body::Text { text: "héllo".into() },
            },
            ClientFrame::Ack { msg_ids: vec![MsgId(1), MsgId(u64::MAX)] },
            ClientFrame::History {
                id: 4,
                conv_id: ConvId::direct(UserId(1), UserId(2)),
                after_seq: Some(0),
                before_seq: None,
                limit: Some(10),
            },
            ClientFrame::Ping,
        ]
    }

    #[test]
    fn prefixed_frame_lengths_are_read_back_from_their_prefix() {
        let frame = Codec::MsgPack.encode_prefixed(&sample_frames()[0]);
        assert_eq!(prefixed_frame_len(&frame), Some(frame.len()));
        assert_eq!(prefixed_frame_len(&frame[..3]), None);
    }

    #[test]
    fn client_frames_round_trip_in_both_codecs() {
        for codec in [Codec::Json, Codec::MsgPack] {
            for frame in sample_frames() {
                let bytes = codec.encode(&frame);
                assert_eq!(codec.decode::<ClientFrame>(&bytes), Ok(frame), "{codec:?}");
            }
        }
    }

    #[test]
    fn server_push_round_trips_and_reads_as_documented() {
        let msg = ServerFrame::Msg(Message {
            msg_id: MsgId(42),
            conv_id: ConvId::direct(UserId(1), UserId(2)),
            seq: 5,
            from: UserId(1),
            client_msg_id: "c".into(),
            ts: 1_700_000_000_000,
            body: Body::Text { text: "hi".into() },
        });
        for codec in [Codec::Json, Codec::MsgPack] {
            assert_eq!(codec.decode::<ServerFrame>(&codec.encode(&msg)), Ok(msg.clone()));
        }
        let json: serde_json::Value = serde_json::from_slice(&Codec::Json.encode(&msg)).unwrap();
        assert_eq!(json["op"], "msg");
        assert_eq!(json["conv_id"], "d:1:2");
        assert_eq!(json["body"]["type"], "text");
    }

    #[test]
    fn room_frames_and_pushes_round_trip_in_both_codecs() {
        use crate::frame::{Priority, Push, PushScope};
        let push = |id, qos| Push {
            msg_id: MsgId(id),
            priority: Priority::Low,
            qos,
            scope: PushScope::Room { room: "r1".into() },
            ts: 7,
            data: serde_json::json!({"text": "666", "n": [1, -2, 3.5], "ok": true, "none": null}),
            from: None,
        };
        let frames = vec![
            ServerFrame::Push(push(1, 1)),
            ServerFrame::Batch { scope: PushScope::All, pushes: vec![push(2, 0), push(3, 0)] },
            ServerFrame::Joined { id: 1, room: "r1".into(), area: "games".into(), online: 42 },
            ServerFrame::Left { id: 2, room: None },
            ServerFrame::Online { room: "r1".into(), count: 9 },
        ];
        for codec in [Codec::Json, Codec::MsgPack] {
            for f in &frames {
                assert_eq!(codec.decode::<ServerFrame>(&codec.encode(f)).as_ref(), Ok(f), "{codec:?}");
            }
            for f in [
                ClientFrame::Join { id: 3, room: "r1".into(), token: None, recent: None },
                ClientFrame::Leave { id: 4 },
            ] {
                assert_eq!(codec.decode::<ClientFrame>(&codec.encode(&f)), Ok(f));
            }
        }
        let json: serde_json::Value = serde_json::from_slice(&Codec::Json.encode(&frames[0])).unwrap();
        assert_eq!((json["op"].as_str(), json["scope"]["kind"].as_str()), (Some("push"), Some("room")));
    }

    #[test]
    fn data_depth_counts_containers_and_survives_hostile_nesting() {
        use crate::frame::data_depth;
        use serde_json::json;
        assert_eq!(data_depth(&json!(7)), 0);
        assert_eq!(data_depth(&json!({})), 1);
        assert_eq!(data_depth(&json!({"a": [1, {"b": "c"}], "d": null})), 3);
        let mut deep = json!(1);
        for _ in 0..1000 {
            deep = json!({ "x": deep });
        }
        assert_eq!(data_depth(&deep), 1000);
    }

    #[test]
    fn an_unreadable_body_round_trips_as_its_own_kind() {
        let body = Body::Unreadable {};
        for codec in [Codec::Json, Codec::MsgPack] {
            assert_eq!(codec.decode::<Body>(&codec.encode(&body)), Ok(body.clone()));
        }
        assert_eq!(String::from_utf8(Codec::Json.encode(&body)).unwrap(), r#"{"type":"unreadable"}"#);
        assert!(!body.is_content());
    }

    #[test]
    fn decode_errors_are_classified() {
        let e = Codec::Json.decode::<ClientFrame>(b"{nope").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.id, None);

        let e = Codec::Json.decode::<ClientFrame>(br#"{"op":"dance","id":9}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownOp);
        assert_eq!(e.id, Some(9));

        let e = Codec::Json.decode::<ClientFrame>(br#"{"op":"send","id":5,"to":"x"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.id, Some(5));

        let e = Codec::Json.decode::<ClientFrame>(br#"{"id":5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("op"));

        let e = Codec::MsgPack.decode::<ClientFrame>(&[0xc1, 0x00]).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn length_decoder_waits_splits_and_refuses_oversize_before_buffering() {
        let d = FrameDecoder::new(16);
        let mut buf = BytesMut::new();
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.put_slice(&[0, 0]);
        assert_eq!(d.decode(&mut buf), Ok(None), "truncated prefix is not a frame yet");
        buf.put_slice(&[0, 3, b'a', b'b']);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.put_slice(&[b'c', 0, 0, 0, 1, b'z']);
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(d.decode(&mut buf).unwrap().as_deref(), Some(&b"z"[..]));
        assert!(buf.is_empty());

        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(d.decode(&mut huge), Err(FrameTooLarge { announced: u32::MAX as usize, limit: 16 }));
        assert!(huge.capacity() < 64, "nothing reserved for a refused frame");
    }

    #[test]
    fn prefixed_encoding_decodes() {
        let bytes = Codec::MsgPack.encode_prefixed(&ClientFrame::Ping);
        let mut buf = BytesMut::from(&bytes[..]);
        let payload = FrameDecoder::new(1024).decode(&mut buf).unwrap().unwrap();
        assert_eq!(Codec::MsgPack.decode::<ClientFrame>(&payload), Ok(ClientFrame::Ping));
    }
}

/// Compressed frames (server → client only).
///
/// A frame payload whose first byte is [`COMPRESSED`] is compressed: the second byte names the
/// algorithm ([`BROTLI`]), the rest is the compressed encoding of one frame in the connection's
/// codec. No uncompressed frame starts with `0x00` (JSON frames start with `{`, MessagePack
/// frames with a map marker), so the two cannot be confused. On WebSocket, compressed frames are
/// binary messages even on a JSON connection.
pub mod compression {
    use std::borrow::Cow;
    use std::io::Read;

    /// First byte of a compressed frame.
    pub const COMPRESSED: u8 = 0x00;
    /// Second byte: brotli.
    pub const BROTLI: u8 = 0x01;
    /// The name a client lists in `auth.accept_compression` for brotli.
    pub const BROTLI_NAME: &str = "br";

    /// Compresses an encoded frame with brotli: quality 5, a good speed/ratio point for one
    /// compression shared by many sockets. The window stays at 4 MiB (lgwin 22): measured with
    /// `tern bench compress`, windows sized to small frames (lgwin 10–16) were 10–20× slower in
    /// this brotli implementation for the same ratio.
    pub fn brotli(frame: &[u8]) -> Vec<u8> {
        let mut out = vec![COMPRESSED, BROTLI];
        let lgwin = 22;
        let params = brotli::enc::BrotliEncoderParams { quality: 5, lgwin, ..Default::default() };
        let mut input = frame;
        // Writing into a Vec cannot fail.
        let _ = brotli::BrotliCompress(&mut input, &mut out, &params);
        out
    }

    /// Why a compressed frame could not be opened.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum DecompressError {
        /// Unknown algorithm byte.
        #[error("unknown compression {0:#04x}")]
        Unknown(u8),
        /// Corrupt data.
        #[error("corrupt compressed frame: {0}")]
        Corrupt(String),
        /// Expands beyond the limit (a decompression bomb).
        #[error("compressed frame expands beyond {0} bytes")]
        TooLarge(usize),
    }

    /// Returns the frame inside `payload`: decompressed if it is compressed, else as is.
    /// Refuses to expand beyond `max` bytes.
    pub fn open(payload: &[u8], max: usize) -> Result<Cow<'_, [u8]>, DecompressError> {
        match payload {
            [COMPRESSED, BROTLI, data @ ..] => {
                let mut out = Vec::new();
                let reader = brotli::Decompressor::new(data, 4096);
                reader
                    .take(max as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| DecompressError::Corrupt(e.to_string()))?;
                if out.len() > max {
                    return Err(DecompressError::TooLarge(max));
                }
                Ok(Cow::Owned(out))
            }
            [COMPRESSED, other, ..] => Err(DecompressError::Unknown(*other)),
            [COMPRESSED] => Err(DecompressError::Corrupt("empty".into())),
            plain => Ok(Cow::Borrowed(plain)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_passes_plain_frames_and_refuses_bombs() {
            let frame =
                br#"{"op":"batch","pushes":[{"data":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]}"#.repeat(20);
            let packed = brotli(&frame);
            assert!(packed.len() < frame.len() / 4);
            assert_eq!(open(&packed, 1 << 20).unwrap().as_ref(), &frame[..]);
            assert_eq!(open(b"{\"op\":\"pong\"}", 10).unwrap().as_ref(), b"{\"op\":\"pong\"}");
            assert_eq!(open(&packed, 100), Err(DecompressError::TooLarge(100)));
            assert_eq!(open(&[0, 9, 1], 100), Err(DecompressError::Unknown(9)));
            assert!(matches!(open(&[0, 1, 0xff, 0xff], 100), Err(DecompressError::Corrupt(_))));
        }
    }
}
