//! What the framing targets share: a decoder must give the same output and the same refusal
//! whether its input arrives whole or in small chunks.

use std::fmt::Debug;

/// Feeds `data` after its first byte to `decode` whole, then in chunks of 1–17 bytes (the first
/// byte chooses), asserts both agree, and returns the items; `None` for empty input. `decode`
/// takes the input and a chunk size and returns its items and whether it refused the stream.
pub fn same_whatever_the_chunking<T: PartialEq + Debug>(
    data: &[u8],
    decode: impl Fn(&[u8], usize) -> (Vec<T>, bool),
) -> Option<Vec<T>> {
    let (&chunk, input) = data.split_first()?;
    let (whole, refused_whole) = decode(input, input.len());
    let (pieces, refused_pieces) = decode(input, usize::from(chunk % 17) + 1);
    assert_eq!(refused_whole, refused_pieces, "refusal depends on chunking");
    assert_eq!(whole, pieces, "output depends on chunking");
    Some(whole)
}
