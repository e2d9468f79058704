//! The MessagePack decoder of client frames (TCP, WebSocket binary): any input is refused with
//! an error or accepted; an accepted frame re-encodes and decodes to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_proto::{ClientFrame, Codec};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Codec::MsgPack.decode::<ClientFrame>(data) {
        let again: ClientFrame =
            Codec::MsgPack.decode(&Codec::MsgPack.encode(&frame)).expect("re-encoded frame decodes");
        assert_eq!(again, frame);
    }
});
