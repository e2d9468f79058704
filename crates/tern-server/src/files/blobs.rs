//! Where file bytes live: behind one trait, a directory (embedded) or PostgreSQL in chunks
//! (cluster). Two kinds of object: an upload's *part* (growing, by upload id) and *content*
//! (complete, immutable, by SHA-256, shared by every upload of the same bytes).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::store::BoxFut;

/// Bytes as they are read, in chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// An object in the file storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// An upload in progress, by upload id.
    Part(String),
    /// Complete content, by lowercase hex SHA-256.
    Content(String),
}

/// Appends to one part. Bytes written are durable once [`PartWriter::finish`] returns.
pub trait PartWriter: Send {
    /// Writes the next bytes.
    fn write(&mut self, data: Bytes) -> BoxFut<'_, io::Result<()>>;
    /// Makes everything written durable.
    fn finish(self: Box<Self>) -> BoxFut<'static, io::Result<()>>;
}

/// File storage.
pub trait Blobs: Send + Sync + 'static {
    /// Opens part `id` for writing at `offset`: anything stored past `offset` (bytes of a
    /// request that failed before they were confirmed) is dropped first.
    fn append<'a>(&'a self, id: &'a str, offset: u64) -> BoxFut<'a, io::Result<Box<dyn PartWriter>>>;

    /// Reads bytes `start..end` of an object.
    fn read(&self, key: &Key, start: u64, end: u64) -> ByteStream;

    /// A whole small object (a thumbnail), refusing one larger than `max` bytes.
    fn read_whole<'a>(&'a self, key: &'a Key, max: usize) -> BoxFut<'a, io::Result<Vec<u8>>>;

    /// Makes part `id` the content `sha256` (dropping the part if that content is stored
    /// already).
    fn promote<'a>(&'a self, id: &'a str, sha256: &'a str) -> BoxFut<'a, io::Result<()>>;

    /// Removes an object (nothing if it does not exist).
    fn delete<'a>(&'a self, key: &'a Key) -> BoxFut<'a, io::Result<()>>;

    /// Every stored content with its age in seconds, for the sweep of unreferenced bytes.
    fn contents(&self) -> BoxFut<'_, io::Result<Vec<(String, u64)>>>;
}

/// Reading chunk size, and the most a reader buffers.
const CHUNK: usize = 1 << 20;
/// What a part's writer gathers before it writes.
const WRITE_BUFFER: usize = 1 << 20;

/// File storage in a directory: `parts/{id}` and `content/{sha[..2]}/{sha}`.
pub struct DirBlobs {
    root: PathBuf,
}

impl DirBlobs {
    /// Opens (creating) the directory.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("parts"))?;
        std::fs::create_dir_all(root.join("content"))?;
        Ok(Self { root: root.to_owned() })
    }

    fn path(&self, key: &Key) -> PathBuf {
        match key {
            Key::Part(id) => self.root.join("parts").join(id),
            Key::Content(sha) => self.root.join("content").join(sha.get(..2).unwrap_or("00")).join(sha),
        }
    }
}

struct DirWriter {
    /// Buffered: a request's body arrives in frames of a few kilobytes, and each write to a
    /// tokio file is a trip to the blocking pool.
    file: tokio::io::BufWriter<tokio::fs::File>,
}

impl PartWriter for DirWriter {
    fn write(&mut self, data: Bytes) -> BoxFut<'_, io::Result<()>> {
        Box::pin(async move { self.file.write_all(&data).await })
    }

    fn finish(self: Box<Self>) -> BoxFut<'static, io::Result<()>> {
        Box::pin(async move {
            let mut file = self.file;
            file.flush().await?;
            file.get_mut().sync_data().await
        })
    }
}

impl Blobs for DirBlobs {
    fn append<'a>(&'a self, id: &'a str, offset: u64) -> BoxFut<'a, io::Result<Box<dyn PartWriter>>> {
        Box::pin(async move {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(self.path(&Key::Part(id.into())))
                .await?;
            file.set_len(offset).await?;
            file.seek(io::SeekFrom::Start(offset)).await?;
            Ok(Box::new(DirWriter { file: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file) })
                as Box<dyn PartWriter>)
        })
    }

    fn read(&self, key: &Key, start: u64, end: u64) -> ByteStream {
        let path = self.path(key);
        Box::pin(futures_util::stream::try_unfold(None, move |file: Option<(tokio::fs::File, u64)>| {
            let path = path.clone();
            async move {
                let (mut file, at) = match file {
                    Some(f) => f,
                    None => {
                        let mut f = tokio::fs::File::open(&path).await?;
                        f.seek(io::SeekFrom::Start(start)).await?;
                        (f, start)
                    }
                };
                if at >= end {
                    return Ok(None);
                }
                let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
                let mut buf = vec![0; want];
                let mut filled = 0;
                while filled < want {
                    let n = file.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "stored file is shorter than its record",
                        ));
                    }
                    filled += n;
                }
                Ok(Some((Bytes::from(buf), Some((file, at + want as u64)))))
            }
        }))
    }

    fn read_whole<'a>(&'a self, key: &'a Key, max: usize) -> BoxFut<'a, io::Result<Vec<u8>>> {
        Box::pin(async move {
            let mut file = tokio::fs::File::open(self.path(key)).await?;
            let mut out = Vec::new();
            (&mut file).take(max as u64 + 1).read_to_end(&mut out).await?;
            if out.len() > max {
                return Err(io::Error::other("stored object is larger than expected"));
            }
            Ok(out)
        })
    }

    fn promote<'a>(&'a self, id: &'a str, sha256: &'a str) -> BoxFut<'a, io::Result<()>> {
        Box::pin(async move {
            let part = self.path(&Key::Part(id.into()));
            let content = self.path(&Key::Content(sha256.into()));
            if tokio::fs::try_exists(&content).await? {
                return tokio::fs::remove_file(&part).await;
            }
            if let Some(dir) = content.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::rename(&part, &content).await?;
            // The content's age counts from now (the sweep spares young content), and the
            // rename is made durable.
            let file = tokio::fs::OpenOptions::new().write(true).open(&content).await?;
            file.into_std().await.set_modified(std::time::SystemTime::now())?;
            if let Some(dir) = content.parent() {
                tokio::fs::File::open(dir).await?.sync_all().await?;
            }
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a Key) -> BoxFut<'a, io::Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(key)).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        })
    }

    fn contents(&self) -> BoxFut<'_, io::Result<Vec<(String, u64)>>> {
        let root = self.root.join("content");
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let now = std::time::SystemTime::now();
                for dir in std::fs::read_dir(&root)? {
                    for entry in std::fs::read_dir(dir?.path())? {
                        let entry = entry?;
                        let age = entry.metadata()?.modified().ok().and_then(|m| now.duration_since(m).ok());
                        out.push((entry.file_name().to_string_lossy().into_owned(), age.map_or(0, |a| a.as_secs())));
                    }
                }
                Ok(out)
            })
            .await
            .map_err(io::Error::other)?
        })
    }
}
