//! The WebSocket framing (RFC 6455, the server's side) fed arbitrary bytes in arbitrary chunks:
//! it never panics, never yields a message over the limit or a text message that is not UTF-8,
//! and yields the same events and the same refusal whatever the chunking.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

mod chunking;
use tern_proto::Codec;
use tern_proto::ws::{WsDecoder, WsEvent};

const MAX: usize = 4096;

/// All events of `input` fed in chunks of `chunk` bytes, and whether the stream was refused.
fn events(input: &[u8], chunk: usize) -> (Vec<WsEvent>, bool) {
    let mut decoder = WsDecoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => {
                    if let WsEvent::Message(codec, payload) = &event {
                        assert!(payload.len() <= MAX, "a message over the limit came out");
                        if *codec == Codec::Json {
                            assert!(std::str::from_utf8(payload).is_ok(), "a text message that is not UTF-8");
                        }
                    }
                    out.push(event);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    chunking::same_whatever_the_chunking(data, events);
});
