//! Wire frames: a server frame with its encodings, computed at most once per codec (and
//! compressed at most once) and shared by every connection that gets it. A leaf: the bus carries
//! these, the router queues them, the transports write them.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tern_proto::codec::compression;
use tern_proto::{Codec, MsgId, ServerFrame};

/// A server frame with its encodings, computed on first use and shared by every connection.
#[derive(Debug)]
pub struct OutFrame {
    frame: ServerFrame,
    /// Compress encodings longer than this (for clients that accept compression).
    compress_over: usize,
    json: OnceLock<Bytes>,
    /// MessagePack with the 4-byte length prefix; WebSocket binary frames use it without.
    binary: OnceLock<Bytes>,
    json_br: OnceLock<Option<Bytes>>,
    /// Compressed MessagePack with the length prefix.
    binary_br: OnceLock<Option<Bytes>>,
    /// Whole WebSocket frames (header and payload), by [`ws_slot`].
    ws_framed: [OnceLock<Bytes>; 4],
}

/// Where a WebSocket encoding is kept in [`OutFrame::ws_framed`].
fn ws_slot(codec: Codec, brotli: bool) -> usize {
    usize::from(codec == Codec::MsgPack) * 2 + usize::from(brotli)
}

/// The bytes to write for one frame on one connection.
pub enum Wire {
    /// A JSON text frame.
    Text(Bytes),
    /// A binary frame (MessagePack, or a compressed frame).
    Binary(Bytes),
}

impl OutFrame {
    /// Wraps a frame that is never compressed.
    pub fn new(frame: ServerFrame) -> Arc<Self> {
        Self::compressible(frame, usize::MAX)
    }

    /// Wraps a frame whose encodings longer than `compress_over` bytes are sent compressed to
    /// clients that accept it.
    pub fn compressible(frame: ServerFrame, compress_over: usize) -> Arc<Self> {
        Arc::new(Self {
            frame,
            compress_over,
            json: OnceLock::new(),
            binary: OnceLock::new(),
            json_br: OnceLock::new(),
            binary_br: OnceLock::new(),
            ws_framed: Default::default(),
        })
    }

    /// A frame that arrived from another node with its MessagePack encoding (and the brotli form
    /// of it, if the sender compressed it): those bytes are queued as they are.
    pub fn from_wire(frame: ServerFrame, compress_over: usize, binary: Bytes, compressed: Option<Bytes>) -> Arc<Self> {
        let prefixed = |b: &Bytes| {
            let mut out = bytes::BytesMut::with_capacity(b.len() + tern_proto::codec::LEN_PREFIX);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
            out.freeze()
        };
        let out = Self::compressible(frame, compress_over);
        let _ = out.binary.set(prefixed(&binary));
        if compressed.is_some() || binary.len() <= compress_over {
            let _ = out.binary_br.set(compressed.as_ref().map(prefixed));
        }
        out
    }

    /// The compression threshold.
    pub fn compress_over(&self) -> usize {
        self.compress_over
    }

    /// The brotli-compressed MessagePack encoding (no prefix), if the frame is long enough to be
    /// sent compressed.
    pub fn binary_compressed(&self) -> Option<Bytes> {
        self.binary_br_prefixed().map(|c| c.slice(tern_proto::codec::LEN_PREFIX..))
    }

    /// The frame.
    pub fn frame(&self) -> &ServerFrame {
        &self.frame
    }

    /// The id to track for an ACK: stored messages and QoS-1 pushes.
    pub fn ack_id(&self) -> Option<MsgId> {
        match &self.frame {
            ServerFrame::Msg(m) => Some(m.msg_id),
            ServerFrame::Push(p) if p.qos >= 1 => Some(p.msg_id),
            _ => None,
        }
    }

    /// JSON encoding.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| Bytes::from(Codec::Json.encode(&self.frame)))
    }

    /// MessagePack encoding preceded by its 4-byte big-endian length (stream transports).
    pub fn binary_prefixed(&self) -> &Bytes {
        self.binary.get_or_init(|| Codec::MsgPack.encode_prefixed(&self.frame))
    }

    fn compress(&self, plain: &[u8]) -> Option<Bytes> {
        (plain.len() > self.compress_over).then(|| Bytes::from(compression::brotli(plain)))
    }

    /// What to write on a message-oriented transport (WebSocket).
    pub fn ws(&self, codec: Codec, brotli: bool) -> Wire {
        match (codec, brotli) {
            (Codec::Json, true) => match self.json_br.get_or_init(|| self.compress(self.json())) {
                Some(c) => Wire::Binary(c.clone()),
                None => Wire::Text(self.json().clone()),
            },
            (Codec::Json, false) => Wire::Text(self.json().clone()),
            (Codec::MsgPack, true) => match self.binary_br_prefixed() {
                Some(c) => Wire::Binary(c.slice(tern_proto::codec::LEN_PREFIX..)),
                None => Wire::Binary(self.binary()),
            },
            (Codec::MsgPack, false) => Wire::Binary(self.binary()),
        }
    }

    /// [`OutFrame::ws`] as a whole WebSocket frame, encoded once per encoding and shared by
    /// every connection it is written to.
    pub fn ws_frame(&self, codec: Codec, brotli: bool) -> Bytes {
        self.ws_framed[ws_slot(codec, brotli)]
            .get_or_init(|| match self.ws(codec, brotli) {
                Wire::Text(b) => tern_proto::ws::encode_frame(tern_proto::ws::OpCode::Text, &b),
                Wire::Binary(b) => tern_proto::ws::encode_frame(tern_proto::ws::OpCode::Binary, &b),
            })
            .clone()
    }

    /// What to write on a stream transport (TCP): always MessagePack, length-prefixed.
    pub fn stream(&self, brotli: bool) -> Bytes {
        match brotli.then(|| self.binary_br_prefixed()).flatten() {
            Some(c) => c.clone(),
            None => self.binary_prefixed().clone(),
        }
    }

    fn binary_br_prefixed(&self) -> Option<&Bytes> {
        self.binary_br
            .get_or_init(|| {
                let plain = &self.binary_prefixed()[tern_proto::codec::LEN_PREFIX..];
                self.compress(plain).map(|c| {
                    let mut out = bytes::BytesMut::with_capacity(c.len() + 4);
                    out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                    out.extend_from_slice(&c);
                    out.freeze()
                })
            })
            .as_ref()
    }

    /// MessagePack encoding without prefix (message-oriented transports).
    pub fn binary(&self) -> Bytes {
        self.binary_prefixed().slice(tern_proto::codec::LEN_PREFIX..)
    }
}

/// What the connection core needs of an outbound frame.
impl tern_proto::conn::Outbound for OutFrame {
    fn from_frame(frame: ServerFrame) -> Arc<Self> {
        OutFrame::new(frame)
    }

    fn frame(&self) -> &ServerFrame {
        OutFrame::frame(self)
    }

    fn ack_id(&self) -> Option<MsgId> {
        OutFrame::ack_id(self)
    }
}
