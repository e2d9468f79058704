//! What a file is, found from its bytes (never from what the client says), and the metadata
//! removed from images before anyone else downloads them.

/// How many leading bytes the server looks at: enough for any image header this module reads.
pub const HEAD_BYTES: usize = 1 << 20;

/// Images with more pixels than this are kept as plain files: never sent as an image message
/// nor shown inline, so a decompression bomb costs whoever opens it nothing either.
pub const MAX_IMAGE_PIXELS: u64 = 50_000_000;

/// The content type of a file from its first bytes; `application/octet-stream` when unknown.
pub fn sniff(head: &[u8]) -> &'static str {
    if head.is_empty() {
        return "application/octet-stream";
    }
    match infer::get(head) {
        Some(kind) => kind.mime_type(),
        None if looks_like_text(head) => "text/plain",
        None => "application/octet-stream",
    }
}

/// UTF-8 with no control characters other than whitespace.
fn looks_like_text(head: &[u8]) -> bool {
    // A multi-byte character may be cut at the end of the head.
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
        Err(_) => return false,
    };
    !valid.is_empty() && !valid.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
}

/// Image types shown inline (everything else is served as an attachment). No SVG: it can carry
/// script.
pub fn inline_image(mime: &str) -> bool {
    matches!(mime, "image/jpeg" | "image/png" | "image/gif" | "image/webp")
}

/// Audio types played inline.
pub fn inline_audio(mime: &str) -> bool {
    matches!(
        mime,
        "audio/mpeg"
            | "audio/ogg"
            | "audio/opus"
            | "audio/x-wav"
            | "audio/wav"
            | "audio/aac"
            | "audio/mp4"
            | "audio/m4a"
            | "audio/x-m4a"
            | "audio/webm"
    )
}

/// An image's size in pixels, from its header (nothing is decoded), if it is an inline image
/// within [`MAX_IMAGE_PIXELS`].
pub fn dimensions(mime: &str, head: &[u8]) -> Option<(u32, u32)> {
    if !inline_image(mime) {
        return None;
    }
    let size = imagesize::blob_size(head).ok()?;
    let (w, h) = (u32::try_from(size.width).ok()?, u32::try_from(size.height).ok()?);
    (w > 0 && h > 0 && u64::from(w) * u64::from(h) <= MAX_IMAGE_PIXELS).then_some((w, h))
}

/// The file's head rewritten without identifying metadata (EXIF with its GPS position, XMP,
/// IPTC, comments, PNG text chunks), and how many bytes of the original head it replaces —
/// or `None` when there is nothing to remove (or the header runs past `head`).
pub fn strip_metadata(mime: &str, head: &[u8]) -> Option<(Vec<u8>, usize)> {
    match mime {
        "image/jpeg" => strip_jpeg(head),
        "image/png" => strip_png(head),
        _ => None,
    }
}

/// JPEG: segments up to the start of scan; APP1 (EXIF, XMP), APP13 (IPTC) and COM go. The
/// EXIF orientation is the one tag kept (in an EXIF of its own), or phone photos would show
/// sideways.
fn strip_jpeg(head: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(head.len().min(64 * 1024));
    out.extend_from_slice(head.get(..2)?);
    let mut at = 2;
    let mut removed = false;
    loop {
        let marker = *head.get(at + 1)?;
        if *head.get(at)? != 0xFF {
            return None;
        }
        // Start of scan (or a marker without length): the rest is image data, kept as it is.
        if marker == 0xDA || marker == 0xD9 || (0xD0..=0xD7).contains(&marker) {
            return removed.then_some((out, at));
        }
        let len = usize::from(u16::from_be_bytes([*head.get(at + 2)?, *head.get(at + 3)?]));
        let end = at + 2 + len;
        let segment = head.get(at..end)?;
        if matches!(marker, 0xE1 | 0xED | 0xFE) {
            removed = true;
            if let Some(o) = segment.get(4..).and_then(exif_orientation).filter(|o| *o != 1) {
                out.extend_from_slice(&orientation_only_exif(o));
            }
        } else {
            out.extend_from_slice(segment);
        }
        at = end;
    }
}

/// The orientation tag (0x0112) of an APP1 EXIF payload (`Exif\0\0` and a TIFF structure).
fn exif_orientation(payload: &[u8]) -> Option<u16> {
    let tiff = payload.strip_prefix(b"Exif\0\0")?;
    let big = match tiff.get(..4)? {
        b"MM\0*" => true,
        b"II*\0" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    };
    let b: [u8; 4] = tiff.get(4..8)?.try_into().ok()?;
    let ifd = usize::try_from(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }).ok()?;
    let count = usize::from(u16_at(ifd)?);
    (0..count.min(256)).find_map(|i| {
        let entry = ifd + 2 + i * 12;
        (u16_at(entry)? == 0x0112).then(|| u16_at(entry + 8)).flatten()
    })
}

/// An APP1 segment whose EXIF holds only an orientation.
fn orientation_only_exif(orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut seg = vec![0xFF, 0xE1];
    let len = (2 + 6 + tiff.len()) as u16;
    seg.extend_from_slice(&len.to_be_bytes());
    seg.extend_from_slice(b"Exif\0\0");
    seg.extend_from_slice(&tiff);
    seg
}

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_EDGE: u32 = 320;

/// Images with more pixels than this get no thumbnail (decoding one costs 4 bytes a pixel).
pub const MAX_THUMBNAIL_PIXELS: u64 = 25_000_000;

/// A JPEG thumbnail of an inline image (the first frame of a GIF), upright per its EXIF
/// orientation, at most [`THUMBNAIL_EDGE`] on its longer side — or `None` if it cannot be
/// decoded within the limits. CPU-bound: call it on a blocking thread.
pub fn thumbnail(bytes: &[u8]) -> Option<Vec<u8>> {
    use image::ImageDecoder;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_THUMBNAIL_PIXELS * 4 + (16 << 20));
    limits.max_image_width = Some(20_000);
    limits.max_image_height = Some(20_000);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().ok()?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_THUMBNAIL_PIXELS {
        return None;
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).ok()?;
    img.apply_orientation(orientation);
    if img.width() > THUMBNAIL_EDGE || img.height() > THUMBNAIL_EDGE {
        img = img.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE);
    }
    let small = img.to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&small).ok()?;
    Some(out)
}

/// PNG: chunks up to the first image data; eXIf and the text and time chunks go.
fn strip_png(head: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(head.len().min(64 * 1024));
    out.extend_from_slice(head.get(..8)?);
    let mut at = 8;
    let mut removed = false;
    loop {
        let len = usize::try_from(u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?)).ok()?;
        let kind = head.get(at + 4..at + 8)?;
        if kind == b"IDAT" || kind == b"IEND" {
            return removed.then_some((out, at));
        }
        let end = at.checked_add(12)?.checked_add(len)?;
        let chunk = head.get(at..end)?;
        if matches!(kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME") {
            removed = true;
        } else {
            out.extend_from_slice(chunk);
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal JPEG header: SOI, APP0 (JFIF), APP1 (Exif), SOF0 (2x3), SOS, data, EOI.
    fn jpeg_with_exif() -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        j.extend([0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]);
        j.extend([0xFF, 0xE1, 0x00, 0x0C, b'E', b'x', b'i', b'f', 0, 0, b'G', b'P', b'S', b'!']);
        j.extend([0xFF, 0xC0, 0x00, 0x0B, 8, 0x00, 0x03, 0x00, 0x02, 1, 1, 0x11, 0]);
        j.extend([0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0, 0x12, 0x34, 0xFF, 0xD9]);
        j
    }

    #[test]
    fn jpeg_loses_its_exif_and_keeps_everything_else() {
        let j = jpeg_with_exif();
        assert_eq!(sniff(&j), "image/jpeg");
        assert_eq!(dimensions("image/jpeg", &j), Some((2, 3)));
        let (head, consumed) = strip_metadata("image/jpeg", &j).unwrap();
        let mut clean = head.clone();
        clean.extend_from_slice(&j[consumed..]);
        assert!(!clean.windows(4).any(|w| w == b"Exif"), "EXIF removed");
        assert!(!clean.windows(3).any(|w| w == b"GPS"));
        assert_eq!(clean.len(), j.len() - 14);
        assert_eq!(dimensions("image/jpeg", &clean), Some((2, 3)), "still a readable JPEG");
        assert_eq!(strip_metadata("image/jpeg", &clean), None, "nothing left to remove");
    }

    #[test]
    fn png_loses_text_chunks() {
        let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0, 0, 0, 0]);
            c
        };
        p.extend(chunk(b"IHDR", &[0, 0, 0, 4, 0, 0, 0, 5, 8, 6, 0, 0, 0]));
        p.extend(chunk(b"tEXt", b"Comment\0secret"));
        p.extend(chunk(b"IDAT", &[1, 2, 3]));
        p.extend(chunk(b"IEND", &[]));
        assert_eq!(sniff(&p), "image/png");
        assert_eq!(dimensions("image/png", &p), Some((4, 5)));
        let (head, consumed) = strip_metadata("image/png", &p).unwrap();
        let mut clean = head;
        clean.extend_from_slice(&p[consumed..]);
        assert!(!clean.windows(6).any(|w| w == b"secret"));
        assert_eq!(clean.len(), p.len() - (12 + 14));
    }

    #[test]
    fn the_type_comes_from_the_bytes() {
        assert_eq!(sniff(b""), "application/octet-stream");
        assert_eq!(sniff(b"hello, world\n"), "text/plain");
        assert_eq!(sniff(&[0, 1, 2, 0xFF, 0xFE]), "application/octet-stream");
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
        // An SVG is never an inline image, whatever it is sniffed as.
        assert!(!inline_image(sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>")));
    }

    #[test]
    fn a_huge_image_is_not_an_image() {
        // A PNG header claiming 100,000 x 100,000 pixels (a decompression bomb's header).
        let mut p = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        p.extend(100_000u32.to_be_bytes());
        p.extend(100_000u32.to_be_bytes());
        p.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sniff(&p), "image/png");
        assert_eq!(dimensions("image/png", &p), None);
    }
}
