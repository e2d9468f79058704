//! The TCP framing (4-byte big-endian length + payload) fed arbitrary bytes in arbitrary
//! chunks: it never panics, never yields a frame over the limit, never buffers past the limit
//! plus a header, and yields the same frames whatever the chunking. Each frame then goes through
//! the MessagePack decoder, which must refuse or accept without panicking.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

mod chunking;
use tern_proto::{ClientFrame, Codec, FrameDecoder};

const MAX: usize = 4096;

/// All frames of `input` fed in chunks of `chunk` bytes; `None` once the stream is refused.
fn frames(input: &[u8], chunk: usize) -> (Vec<bytes::Bytes>, bool) {
    let decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX, "a frame over the limit came out");
                    out.push(frame);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        // What stays buffered is at most one incomplete frame.
        assert!(buf.len() < MAX + 4 + chunk.max(1), "buffered {} bytes", buf.len());
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some(whole) = chunking::same_whatever_the_chunking(data, frames) else { return };
    for frame in &whole {
        let _ = Codec::MsgPack.decode::<ClientFrame>(frame);
    }
});
