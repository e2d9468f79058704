//! Files: resumable uploads over tus 1.0 and downloads.
//!
//! [`upload`] sends a file in chunks, each with its SHA-256 (`Upload-Checksum`). When a chunk
//! fails on the way (a dropped connection, a timeout, a server restart), it asks the server where
//! the upload stands (`HEAD`) and goes on from there, so a bad network costs a chunk, not the file.

use bytes::Bytes;
use sha2::Digest;
use tern_proto::rest::{FileInfo, SignedUrl, Stickers};

use super::{client, parse, transport, url};
use crate::{Error, Session};

/// How an upload is sent.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Bytes per request.
    pub chunk_bytes: usize,
    /// Anyone may download the file (avatars, stickers).
    pub public: bool,
    /// Failed chunks retried (each after asking where the upload stands) before giving up.
    pub retries: u32,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self { chunk_bytes: 4 << 20, public: false, retries: 5 }
    }
}

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");

/// An error answer, read as the server's error.
async fn refused(resp: reqwest::Response) -> Error {
    match parse::<serde_json::Value>(resp).await {
        Err(e) => e,
        Ok(v) => Error::Transport(format!("unexpected answer: {v}")),
    }
}

/// Creates an upload of `len` bytes named `name`; returns its path (`/v1/files/{id}`).
pub async fn create_upload(s: &Session, name: &str, len: u64, public: bool) -> Result<String, Error> {
    let mut metadata = format!("filename {}", data_encoding::BASE64.encode(name.as_bytes()));
    if public {
        metadata.push_str(&format!(",public {}", data_encoding::BASE64.encode(b"true")));
    }
    let resp = client()
        .post(url(&s.server, "/v1/files/"))
        .bearer_auth(&s.token)
        .header(TUS.0, TUS.1)
        .header("Upload-Length", len)
        .header("Upload-Metadata", metadata)
        .send()
        .await
        .map_err(transport)?;
    if resp.status() != reqwest::StatusCode::CREATED {
        return Err(refused(resp).await);
    }
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| Error::Transport("the server created an upload without a Location".into()))
}

/// Where an upload stands: bytes the server has confirmed.
pub async fn upload_offset(s: &Session, path: &str) -> Result<u64, Error> {
    let resp = client()
        .head(url(&s.server, path))
        .bearer_auth(&s.token)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .map_err(transport)?;
    if !resp.status().is_success() {
        return Err(Error::Transport(format!("HEAD {path} answered {}", resp.status())));
    }
    offset_of(&resp)
}

fn offset_of(resp: &reqwest::Response) -> Result<u64, Error> {
    resp.headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Transport("the server's answer has no Upload-Offset".into()))
}

/// Sends `chunk` at `offset`; returns the new offset.
pub async fn append_chunk(s: &Session, path: &str, offset: u64, chunk: Bytes) -> Result<u64, Error> {
    let digest = data_encoding::BASE64.encode(&sha2::Sha256::digest(&chunk));
    let resp = client()
        .patch(url(&s.server, path))
        .bearer_auth(&s.token)
        .header(TUS.0, TUS.1)
        .header("Upload-Offset", offset)
        .header("Upload-Checksum", format!("sha256 {digest}"))
        .header("Content-Type", "application/offset+octet-stream")
        .body(chunk)
        .send()
        .await
        .map_err(transport)?;
    if resp.status() != reqwest::StatusCode::NO_CONTENT {
        return Err(refused(resp).await);
    }
    offset_of(&resp)
}

/// Uploads `data` as `name`, resuming after failed chunks; returns what the server made of it.
pub async fn upload(s: &Session, name: &str, data: Bytes, opts: &UploadOptions) -> Result<FileInfo, Error> {
    let path = create_upload(s, name, data.len() as u64, opts.public).await?;
    let mut offset = 0u64;
    let mut failures = 0;
    while offset < data.len() as u64 {
        let end = (offset as usize + opts.chunk_bytes.max(1)).min(data.len());
        match append_chunk(s, &path, offset, data.slice(offset as usize..end)).await {
            Ok(next) => offset = next,
            // The server refused the request itself: retrying will not help.
            Err(e @ Error::Server { .. }) if !retryable(&e) => return Err(e),
            Err(e) => {
                failures += 1;
                if failures > opts.retries {
                    return Err(e);
                }
                tracing::debug!(error = %e, offset, "upload chunk failed; asking where the upload stands");
                offset = upload_offset(s, &path).await?;
            }
        }
    }
    info(s, path.trim_start_matches("/v1/files/")).await
}

fn retryable(e: &Error) -> bool {
    matches!(
        e.code(),
        Some(
            tern_proto::ErrorCode::ChecksumMismatch
                | tern_proto::ErrorCode::Locked
                | tern_proto::ErrorCode::Conflict
                | tern_proto::ErrorCode::Unavailable
        )
    )
}

/// What the server knows about a file the caller may read.
pub async fn info(s: &Session, file_id: &str) -> Result<FileInfo, Error> {
    super::get(s, &format!("/v1/files/{file_id}/info")).await
}

/// A file's bytes.
pub async fn download(s: &Session, file_id: &str) -> Result<Bytes, Error> {
    let resp = client()
        .get(url(&s.server, &format!("/v1/files/{file_id}")))
        .bearer_auth(&s.token)
        .send()
        .await
        .map_err(transport)?;
    if !resp.status().is_success() {
        return Err(refused(resp).await);
    }
    resp.bytes().await.map_err(transport)
}

/// A download URL needing no header, valid a few minutes.
pub async fn signed_url(s: &Session, file_id: &str) -> Result<SignedUrl, Error> {
    let resp = client()
        .post(url(&s.server, &format!("/v1/files/{file_id}/url")))
        .bearer_auth(&s.token)
        .send()
        .await
        .map_err(transport)?;
    parse(resp).await
}

/// The caller's custom stickers.
pub async fn stickers(s: &Session) -> Result<Stickers, Error> {
    super::get(s, "/v1/me/stickers").await
}

/// Adds an image the caller may read to their stickers.
pub async fn add_sticker(s: &Session, file_id: &str) -> Result<(), Error> {
    let resp = client()
        .put(url(&s.server, &format!("/v1/me/stickers/{file_id}")))
        .bearer_auth(&s.token)
        .send()
        .await
        .map_err(transport)?;
    if resp.status().is_success() { Ok(()) } else { Err(refused(resp).await) }
}
