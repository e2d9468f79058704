//! The JSON decoder of client frames (WebSocket text messages): any input is refused with an
//! error or accepted; an accepted frame re-encodes and decodes to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_proto::{ClientFrame, Codec};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Codec::Json.decode::<ClientFrame>(data) {
        let again: ClientFrame = Codec::Json.decode(&Codec::Json.encode(&frame)).expect("re-encoded frame decodes");
        assert_eq!(again, frame);
    }
});
