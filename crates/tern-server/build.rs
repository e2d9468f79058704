//! Embeds the web client (`web/index.html`, `web/app/**`) into the server binary: generates a
//! table of (path, content type, ETag, bytes) that `api::web` serves, so `tern serve` needs no
//! files beside it and adding a file to `web/app/` needs no other change.

// A build script fails the build by panicking, with the message as the error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../web");
    let root = root.canonicalize().expect("the web client lives in web/ at the repository root");
    let mut files = vec![root.join("index.html")];
    collect(&root.join("app"), &mut files);
    files.sort();

    let mut out = String::from("pub(super) static ASSETS: &[Asset] = &[\n");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let bytes = std::fs::read(file).unwrap();
        let path = format!("/{}", file.strip_prefix(&root).unwrap().to_str().unwrap());
        writeln!(
            out,
            "    Asset {{ path: {path:?}, content_type: {:?}, etag: \"\\\"{:016x}\\\"\", bytes: include_bytes!({:?}) }},",
            content_type(file),
            fnv1a(&bytes),
            file.display().to_string(),
        )
        .unwrap();
    }
    out.push_str("];\n");
    println!("cargo:rerun-if-changed={}", root.join("app").display());
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("web_assets.rs");
    std::fs::write(dest, out).unwrap();
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        other => panic!("web/: no content type for {other:?}; add it to build.rs"),
    }
}

/// FNV-1a: a content hash for ETags (not security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
