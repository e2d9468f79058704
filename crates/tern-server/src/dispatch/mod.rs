//! Fan-out: from "this message is durable" to bytes queued on every connection that must get it.
//!
//! [`Dispatcher`] listens to store commits and publishes one [`Envelope`] per message on the bus.
//! [`Registry`] is this node's map of connected devices; it receives envelopes from the bus and
//! queues the same [`OutFrame`] (an `Arc`) on each matching connection. A frame is encoded at most
//! once per codec, lazily, whatever the number of recipients.
//!
//! A connection whose queue is full is not waited for: it is cut off as a slow consumer (it will
//! reconnect and resume from the store), so one slow device never delays the others and memory
//! per connection stays bounded.

mod registry;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
pub use registry::{ConnHandle, Kick, Registry};
use tern_proto::{Codec, MsgId, ServerFrame};

use crate::bus::{Bus, Envelope, Target};
use crate::store::{CommitListener, Committed};

/// A server frame with its encodings, computed on first use and shared by every connection.
#[derive(Debug)]
pub struct OutFrame {
    frame: ServerFrame,
    json: OnceLock<Bytes>,
    /// MessagePack with the 4-byte length prefix; WebSocket binary frames use it without.
    binary: OnceLock<Bytes>,
}

impl OutFrame {
    /// Wraps a frame for sending.
    pub fn new(frame: ServerFrame) -> Arc<Self> {
        Arc::new(Self {
            frame,
            json: OnceLock::new(),
            binary: OnceLock::new(),
        })
    }

    /// The frame.
    pub fn frame(&self) -> &ServerFrame {
        &self.frame
    }

    /// The pushed message's id, for ACK tracking.
    pub fn msg_id(&self) -> Option<MsgId> {
        match &self.frame {
            ServerFrame::Msg(m) => Some(m.msg_id),
            _ => None,
        }
    }

    /// JSON encoding.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(Codec::Json.encode(&self.frame)))
    }

    /// MessagePack encoding preceded by its 4-byte big-endian length (stream transports).
    pub fn binary_prefixed(&self) -> &Bytes {
        self.binary
            .get_or_init(|| Codec::MsgPack.encode_prefixed(&self.frame))
    }

    /// MessagePack encoding without prefix (message-oriented transports).
    pub fn binary(&self) -> Bytes {
        self.binary_prefixed()
            .slice(tern_proto::codec::LEN_PREFIX..)
    }
}

/// Turns commits into deliveries.
pub struct Dispatcher {
    bus: Arc<dyn Bus>,
}

impl Dispatcher {
    /// A dispatcher publishing on `bus`.
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        Self { bus }
    }
}

impl CommitListener for Dispatcher {
    fn committed(&self, batch: &[Committed]) {
        for c in batch {
            let users = c.message.conv_id.participants().collect();
            let target = Target::Users {
                users,
                skip: Some((c.message.from, c.from_device.clone())),
            };
            let frame = OutFrame::new(ServerFrame::Msg(c.message.clone()));
            self.bus.publish(Envelope { target, frame });
        }
    }
}
