//! Files: resumable uploads (the tus 1.0 model: create, append at an offset, terminate), the
//! checks made once every byte has arrived, and reading content back.
//!
//! Metadata lives in the store ([`FileRecord`]); bytes in [`Blobs`]. An upload's bytes grow in a
//! *part*; complete, they become *content* named by their SHA-256, so identical files are kept
//! once while each upload keeps its own id and owner. Who may *download* a file is logic's rule
//! (`logic/files.rs`); here only the owner may touch an upload.

pub mod blobs;
pub mod media;
pub mod pace;
pub mod postgres;
pub mod relay;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;
use sha2::Digest;
use tern_proto::{ErrorCode, UserId};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::FilesConfig;
use crate::error::Error;
use crate::store::{FileRecord, Store};
pub use blobs::{Blobs, ByteStream, DirBlobs, Key};

/// Images larger than this (bytes) get no thumbnail: decoding reads the whole file into memory.
const MAX_THUMBNAIL_SOURCE: u64 = 32 << 20;
/// How long one thumbnail may take.
const THUMBNAIL_SECS: u64 = 10;

/// A checksum sent with a tus `PATCH` (`Upload-Checksum: <algorithm> <base64>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-1 (the algorithm tus requires every server to support).
    Sha1(Vec<u8>),
    /// SHA-256.
    Sha256(Vec<u8>),
}

impl Checksum {
    /// The algorithms this server checks, as tus lists them (`Tus-Checksum-Algorithm`).
    pub const ALGORITHMS: &'static str = "sha1,sha256";

    /// Parses the header value.
    pub fn parse(header: &str) -> Result<Self, Error> {
        let (algorithm, digest) = header
            .trim()
            .split_once(' ')
            .ok_or_else(|| Error::bad_request("Upload-Checksum must be \"<algorithm> <base64 digest>\""))?;
        let digest = data_encoding::BASE64
            .decode(digest.trim().as_bytes())
            .map_err(|_| Error::bad_request("Upload-Checksum's digest is not base64"))?;
        match algorithm {
            "sha1" => Ok(Self::Sha1(digest)),
            "sha256" => Ok(Self::Sha256(digest)),
            other => Err(Error::bad_request(format!(
                "Upload-Checksum algorithm {other:?} is not supported; use one of {}",
                Self::ALGORITHMS
            ))),
        }
    }
}

/// A running checksum over a request's bytes.
enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn matches(self, expected: &Checksum) -> bool {
        match (self, expected) {
            (Hasher::Sha1(h), Checksum::Sha1(want)) => h.finalize()[..] == want[..],
            (Hasher::Sha256(h), Checksum::Sha256(want)) => h.finalize()[..] == want[..],
            _ => false,
        }
    }
}

/// A new upload, as the client announced it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// Total bytes.
    pub length: u64,
    /// The raw `Upload-Metadata` header.
    pub metadata: String,
    /// The `filename` from it.
    pub name: String,
    /// Downloadable by anyone (`public` metadata key: avatars, stickers).
    pub public: bool,
}

/// Uploads and content.
pub struct Files {
    store: Arc<dyn Store>,
    blobs: Arc<dyn Blobs>,
    cfg: FilesConfig,
    /// Uploads a request on this node is writing to.
    writing: Mutex<HashSet<String>>,
    /// Per-user upload pacing.
    pace: pace::PerUser,
    /// The SHA-256 of each upload so far, for uploads whose bytes all came through this node:
    /// completing one then needs no second read of the file. (An upload continued on another
    /// node is read back instead.)
    hashing: Mutex<HashMap<String, (u64, sha2::Sha256)>>,
}

/// Uploads whose running hash a node keeps at most.
const MAX_HASHING: usize = 10_000;

/// Marks an upload as being written; unmarks when dropped.
struct Writing<'a> {
    files: &'a Files,
    id: String,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.files.writing.lock().remove(&self.id);
    }
}

impl Files {
    /// The service over a store and file storage.
    pub fn new(store: Arc<dyn Store>, blobs: Arc<dyn Blobs>, cfg: FilesConfig) -> Self {
        Self {
            store,
            blobs,
            pace: pace::PerUser::new(cfg.upload_bytes_per_sec_per_user),
            cfg,
            writing: Mutex::new(HashSet::new()),
            hashing: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &FilesConfig {
        &self.cfg
    }

    /// Creates an upload for `owner`, checking the size limit and the owner's quota.
    pub async fn create(&self, owner: UserId, new: NewUpload) -> Result<FileRecord, Error> {
        if new.length > self.cfg.max_file_bytes {
            return Err(Error::new(
                ErrorCode::BodyTooLarge,
                format!("the file is {} bytes; the limit is {}", new.length, self.cfg.max_file_bytes),
            ));
        }
        if new.name.len() > 255 || new.name.chars().any(char::is_control) {
            return Err(Error::bad_request("filename must be at most 255 bytes without control characters"));
        }
        let used = self.store.files_usage(owner).await?;
        if used.saturating_add(new.length) > self.cfg.quota_bytes_per_user {
            return Err(Error::forbidden(format!(
                "your files take {used} of your {} bytes; this one ({} bytes) does not fit — delete some first",
                self.cfg.quota_bytes_per_user, new.length
            )));
        }
        let now = now_ms();
        let record = FileRecord {
            id: data_encoding::HEXLOWER.encode(&rand::random::<[u8; 16]>()),
            owner,
            name: new.name,
            length: new.length,
            offset: 0,
            sha256: String::new(),
            size: 0,
            mime: String::new(),
            thumbnail: String::new(),
            width: None,
            height: None,
            public: new.public,
            created_at: now,
            expires_at: now + self.cfg.upload_expiry_secs * 1000,
            metadata: new.metadata,
        };
        self.store.put_file(record.clone()).await?;
        if new.length == 0 {
            return self.complete(record).await;
        }
        Ok(record)
    }

    /// A file's record, if it exists (complete or not) and has not expired.
    pub async fn record(&self, id: &str) -> Result<Option<FileRecord>, Error> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        let found = self.store.file(id).await?;
        Ok(found.filter(|f| f.complete() || f.expires_at > now_ms()))
    }

    /// An upload its owner may write to; others are told it does not exist.
    pub async fn owned(&self, owner: UserId, id: &str) -> Result<FileRecord, Error> {
        match self.record(id).await? {
            Some(f) if f.owner == owner => Ok(f),
            _ => Err(Error::not_found("no such upload")),
        }
    }

    /// Appends a request's bytes at `offset` (which must be where the upload stands). Bytes
    /// received before the request broke off are kept and confirmed — unless a checksum was
    /// sent, which then covers the whole request: on a mismatch nothing of it is kept. Once the
    /// last byte is in, the file is completed (type, size, metadata removal, content address).
    pub async fn append<S>(
        &self,
        mut upload: FileRecord,
        offset: u64,
        checksum: Option<Checksum>,
        body: S,
    ) -> Result<FileRecord, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send,
    {
        if upload.complete() {
            return Err(Error::new(ErrorCode::Conflict, "the upload is complete; nothing more can be appended"));
        }
        if offset != upload.offset {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "Upload-Offset is {offset} but the upload stands at {}; ask with HEAD and resume there",
                    upload.offset
                ),
            ));
        }
        let _writing = self.start_writing(&upload.id)?;
        let mut hasher = checksum.as_ref().map(|c| match c {
            Checksum::Sha1(_) => Hasher::Sha1(sha1::Sha1::new()),
            Checksum::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
        });
        let mut writer = self.blobs.append(&upload.id, offset).await.map_err(storage)?;
        let mut running = match self.hashing.lock().remove(&upload.id) {
            Some((at, h)) if at == offset => Some(h),
            _ if offset == 0 => Some(sha2::Sha256::new()),
            _ => None,
        };
        let mut written = 0u64;
        let room = upload.length - upload.offset;
        let mut body = std::pin::pin!(body);
        let mut broke: Option<Error> = None;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            };
            if written + chunk.len() as u64 > room {
                broke = Some(Error::bad_request(format!(
                    "the request carries more than the {room} bytes left of Upload-Length"
                )));
                break;
            }
            let wait = self.pace.take(upload.owner, chunk.len());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            if let Some(h) = running.as_mut() {
                h.update(&chunk);
            }
            written += chunk.len() as u64;
            writer.write(chunk).await.map_err(storage)?;
        }
        // With a checksum, the request's bytes count only if all arrived and match.
        if let (Some(h), Some(want)) = (hasher, &checksum) {
            if let Some(e) = broke {
                return Err(e);
            }
            if !h.matches(want) {
                return Err(Error::new(
                    ErrorCode::ChecksumMismatch,
                    "the bytes do not match Upload-Checksum; nothing of this request was kept, send it again",
                ));
            }
        }
        writer.finish().await.map_err(storage)?;
        upload.offset += written;
        self.store.put_file(upload.clone()).await?;
        if let Some(h) = running {
            let mut hashing = self.hashing.lock();
            if hashing.len() < MAX_HASHING {
                hashing.insert(upload.id.clone(), (upload.offset, h));
            }
        }
        if let Some(e) = broke {
            // The client is most likely gone; what arrived is confirmed for its next HEAD.
            return Err(e);
        }
        if upload.offset == upload.length {
            return self.complete(upload).await;
        }
        Ok(upload)
    }

    fn start_writing(&self, id: &str) -> Result<Writing<'_>, Error> {
        if !self.writing.lock().insert(id.to_owned()) {
            return Err(Error::new(ErrorCode::Locked, "another request is writing to this upload; retry when it ends"));
        }
        Ok(Writing { files: self, id: id.to_owned() })
    }

    /// Every byte is in: find the type from the bytes, strip identifying metadata from images,
    /// hash, and store as content.
    async fn complete(&self, mut upload: FileRecord) -> Result<FileRecord, Error> {
        let part = Key::Part(upload.id.clone());
        let head_len = upload.length.min(media::HEAD_BYTES as u64);
        let head = if head_len == 0 { Vec::new() } else { collect(self.blobs.read(&part, 0, head_len)).await? };
        let mime = media::sniff(&head);
        let mut final_id = upload.id.clone();
        let mut size = upload.length;
        let mut dims = media::dimensions(mime, &head);
        if let Some((clean_head, consumed)) = media::strip_metadata(mime, &head) {
            // Rewrite into a second part: the cleaned head, then the rest as it is.
            let clean_id = format!("{}-clean", upload.id);
            let mut w = self.blobs.append(&clean_id, 0).await.map_err(storage)?;
            size = clean_head.len() as u64 + (upload.length - consumed as u64);
            w.write(Bytes::from(clean_head.clone())).await.map_err(storage)?;
            let mut rest = self.blobs.read(&part, consumed as u64, upload.length);
            while let Some(chunk) = rest.next().await {
                w.write(chunk.map_err(storage)?).await.map_err(storage)?;
            }
            w.finish().await.map_err(storage)?;
            self.blobs.delete(&part).await.map_err(storage)?;
            dims = media::dimensions(mime, &clean_head).or(dims);
            final_id = clean_id;
        }
        // The hash made while the bytes arrived, if they all came through here unchanged; else
        // the stored bytes are read back.
        let running = self.hashing.lock().remove(&upload.id);
        let hasher = match running {
            Some((at, h)) if at == upload.length && final_id == upload.id => h,
            _ => {
                let mut hasher = sha2::Sha256::new();
                if size > 0 {
                    let mut all = self.blobs.read(&Key::Part(final_id.clone()), 0, size);
                    while let Some(chunk) = all.next().await {
                        hasher.update(&chunk.map_err(storage)?);
                    }
                }
                hasher
            }
        };
        let sha = data_encoding::HEXLOWER.encode(&hasher.finalize());
        if size > 0 {
            self.blobs.promote(&final_id, &sha).await.map_err(storage)?;
        }
        if dims.is_some() {
            upload.thumbnail = self.make_thumbnail(&upload.id, &sha, size).await;
        }
        upload.sha256 = sha;
        upload.size = size;
        upload.mime = mime.to_owned();
        (upload.width, upload.height) = dims.map_or((None, None), |(w, h)| (Some(w), Some(h)));
        upload.expires_at = 0;
        self.store.put_file(upload.clone()).await?;
        tracing::debug!(file = %upload.id, mime, size, "upload complete");
        Ok(upload)
    }

    /// Makes and stores an image's thumbnail; its content's SHA-256, or empty when the image
    /// cannot be decoded within the limits (then clients show the image itself, or a
    /// placeholder). One decode at a time per node, each given [`THUMBNAIL_SECS`] (past that its
    /// thread finishes unheeded).
    async fn make_thumbnail(&self, id: &str, sha: &str, size: u64) -> String {
        static DECODING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
        if size > MAX_THUMBNAIL_SOURCE {
            return String::new();
        }
        let made = async {
            let _one = DECODING.acquire().await.map_err(|e| e.to_string())?;
            let bytes =
                collect(self.blobs.read(&Key::Content(sha.to_owned()), 0, size)).await.map_err(|e| e.message)?;
            let work = tokio::task::spawn_blocking(move || media::thumbnail(&bytes));
            let thumb = tokio::time::timeout(Duration::from_secs(THUMBNAIL_SECS), work)
                .await
                .map_err(|_| "decoding took too long".to_owned())?
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not decodable within the limits".to_owned())?;
            let thumb_sha = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&thumb));
            let part = format!("{id}-thumb");
            let mut w = self.blobs.append(&part, 0).await.map_err(|e| e.to_string())?;
            w.write(Bytes::from(thumb)).await.map_err(|e| e.to_string())?;
            w.finish().await.map_err(|e| e.to_string())?;
            self.blobs.promote(&part, &thumb_sha).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(thumb_sha)
        };
        made.await.unwrap_or_else(|why| {
            tracing::info!(file = id, why, "no thumbnail");
            String::new()
        })
    }

    /// Removes an upload or a file (tus termination). Its content goes with the sweep once no
    /// other file names it.
    pub async fn terminate(&self, file: &FileRecord) -> Result<(), Error> {
        let _writing = self.start_writing(&file.id)?;
        self.hashing.lock().remove(&file.id);
        self.store.delete_file(&file.id).await?;
        if !file.complete() {
            self.blobs.delete(&Key::Part(file.id.clone())).await.map_err(storage)?;
        }
        Ok(())
    }

    /// Bytes `start..end` of a complete file.
    pub fn read(&self, file: &FileRecord, start: u64, end: u64) -> ByteStream {
        if start >= end {
            return Box::pin(futures_util::stream::empty());
        }
        self.blobs.read(&Key::Content(file.sha256.clone()), start, end)
    }

    /// A file's thumbnail, whole.
    pub async fn thumbnail(&self, file: &FileRecord) -> Result<Vec<u8>, Error> {
        // A thumbnail is a few tens of kilobytes; more means something is wrong.
        self.blobs.read_whole(&Key::Content(file.thumbnail.clone()), 1 << 20).await.map_err(storage)
    }

    /// Removes expired uploads and content no file names any more. Content younger than an
    /// hour is spared: an upload completing right now may not have its record written yet.
    pub async fn sweep(&self) -> Result<(u64, u64), Error> {
        let mut expired = 0;
        for upload in self.store.expired_uploads(now_ms(), 1000).await? {
            self.hashing.lock().remove(&upload.id);
            self.store.delete_file(&upload.id).await?;
            self.blobs.delete(&Key::Part(upload.id.clone())).await.map_err(storage)?;
            self.blobs.delete(&Key::Part(format!("{}-clean", upload.id))).await.map_err(storage)?;
            expired += 1;
        }
        let mut removed = 0;
        for (sha, age_secs) in self.blobs.contents().await.map_err(storage)? {
            if age_secs >= 3600 && !self.store.content_used(&sha).await? {
                self.blobs.delete(&Key::Content(sha)).await.map_err(storage)?;
                removed += 1;
            }
        }
        Ok((expired, removed))
    }

    /// Sweeps every minute until `shutdown`.
    pub async fn sweep_every_minute(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.sweep().await {
                Ok((0, 0)) => {}
                Ok((expired, removed)) => tracing::info!(expired, removed, "file sweep"),
                Err(e) => tracing::warn!(error = %e, "file sweep failed"),
            }
        }
    }
}

/// The file storage the configuration names: with PostgreSQL (a cluster) the database, so every
/// node serves every file; else a directory (`files.dir`, default `files/` in the data
/// directory).
pub async fn open_blobs(cfg: &crate::config::Config) -> Result<Arc<dyn Blobs>, String> {
    if !cfg.store.postgres_url.is_empty() {
        let opts = crate::store::postgres::PgOptions {
            url: cfg.store.postgres_url.clone(),
            pool_size: 4,
            max_batch: 1,
            schema: Some(cfg.store.postgres_schema.clone()).filter(|s| !s.is_empty()),
        };
        let pool = crate::store::postgres::connect_pool(&opts, 4).map_err(|e| format!("file storage: {e}"))?;
        return Ok(Arc::new(postgres::PgBlobs::new(pool)));
    }
    let dir = if cfg.files.dir.is_empty() { cfg.server.data_dir.join("files") } else { cfg.files.dir.clone().into() };
    let blobs = DirBlobs::open(&dir).map_err(|e| format!("file storage {}: {e}", dir.display()))?;
    Ok(Arc::new(blobs))
}

/// Reads a whole (small) stream.
async fn collect(mut stream: ByteStream) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(storage)?);
    }
    Ok(out)
}

/// A file-storage failure, logged once; the client is told to retry.
fn storage(e: std::io::Error) -> Error {
    tracing::error!(error = %e, "file storage failure");
    Error::new(ErrorCode::Unavailable, "file storage failed; nothing past the confirmed offset was kept, retry")
        .retry_after(5)
}
