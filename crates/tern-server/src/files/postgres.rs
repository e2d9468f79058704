//! File bytes in PostgreSQL, for a cluster: every node reads what any node stored. Objects are
//! rows of at most [`ROW_BYTES`] in `file_chunks`, keyed `p:{upload id}` (a part) or
//! `c:{sha256}` (content), by position. The pool is the files' own, so a large transfer never
//! takes the connections messages are written with.

use std::io;

use bytes::{Bytes, BytesMut};
use deadpool_postgres::Pool;

use super::blobs::{Blobs, ByteStream, Key, PartWriter};
use crate::store::BoxFut;

/// Bytes per row.
const ROW_BYTES: usize = 1 << 20;

fn key(k: &Key) -> String {
    match k {
        Key::Part(id) => format!("p:{id}"),
        Key::Content(sha) => format!("c:{sha}"),
    }
}

fn db(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("file storage database: {e}"))
}

/// File storage in PostgreSQL.
pub struct PgBlobs {
    pool: Pool,
}

impl PgBlobs {
    /// Storage over `pool` (the store's migration created the table).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

struct PgWriter {
    pool: Pool,
    key: String,
    /// Where the buffered bytes start.
    pos: u64,
    buf: BytesMut,
}

impl PgWriter {
    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = self.buf.split().freeze();
        let c = self.pool.get().await.map_err(db)?;
        c.execute(
            "INSERT INTO file_chunks (key, pos, data, at) VALUES ($1, $2, $3, $4)",
            &[&self.key, &(self.pos as i64), &&data[..], &(crate::clock::now_ms() as i64)],
        )
        .await
        .map_err(db)?;
        self.pos += data.len() as u64;
        Ok(())
    }
}

impl PartWriter for PgWriter {
    fn write(&mut self, data: Bytes) -> BoxFut<'_, io::Result<()>> {
        Box::pin(async move {
            let mut data = &data[..];
            while !data.is_empty() {
                let take = (ROW_BYTES - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.buf.len() == ROW_BYTES {
                    self.flush().await?;
                }
            }
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFut<'static, io::Result<()>> {
        // Each row is its own committed statement: durable once written.
        Box::pin(async move { self.flush().await })
    }
}

impl Blobs for PgBlobs {
    fn append<'a>(&'a self, id: &'a str, offset: u64) -> BoxFut<'a, io::Result<Box<dyn PartWriter>>> {
        Box::pin(async move {
            let key = key(&Key::Part(id.to_owned()));
            let c = self.pool.get().await.map_err(db)?;
            // Rows past the confirmed offset are a failed request's; they all start at or after it.
            c.execute("DELETE FROM file_chunks WHERE key = $1 AND pos >= $2", &[&key, &(offset as i64)])
                .await
                .map_err(db)?;
            Ok(Box::new(PgWriter { pool: self.pool.clone(), key, pos: offset, buf: BytesMut::new() })
                as Box<dyn PartWriter>)
        })
    }

    fn read(&self, k: &Key, start: u64, end: u64) -> ByteStream {
        let (pool, key) = (self.pool.clone(), key(k));
        // One row at a time: the row holding `at`, then the next.
        Box::pin(futures_util::stream::try_unfold(start, move |at| {
            let (pool, key) = (pool.clone(), key.clone());
            async move {
                if at >= end {
                    return Ok(None);
                }
                let c = pool.get().await.map_err(db)?;
                let row = c
                    .query_opt(
                        "SELECT pos, data FROM file_chunks WHERE key = $1 AND pos <= $2 ORDER BY pos DESC LIMIT 1",
                        &[&key, &(at as i64)],
                    )
                    .await
                    .map_err(db)?
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "stored file is missing"))?;
                let pos = row.get::<_, i64>(0) as u64;
                let data: &[u8] = row.get(1);
                let from = usize::try_from(at - pos).unwrap_or(usize::MAX);
                if from >= data.len() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stored file is shorter than its record"));
                }
                let to = data.len().min(usize::try_from(end - pos).unwrap_or(usize::MAX));
                let chunk = Bytes::copy_from_slice(&data[from..to]);
                Ok(Some((chunk, pos + to as u64)))
            }
        }))
    }

    fn read_whole<'a>(&'a self, k: &'a Key, max: usize) -> BoxFut<'a, io::Result<Vec<u8>>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(db)?;
            let rows =
                c.query("SELECT data FROM file_chunks WHERE key = $1 ORDER BY pos", &[&key(k)]).await.map_err(db)?;
            let mut out = Vec::new();
            for r in rows {
                out.extend_from_slice(r.get::<_, &[u8]>(0));
                if out.len() > max {
                    return Err(io::Error::other("stored object is larger than expected"));
                }
            }
            if out.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "stored object is missing"));
            }
            Ok(out)
        })
    }

    fn promote<'a>(&'a self, id: &'a str, sha256: &'a str) -> BoxFut<'a, io::Result<()>> {
        Box::pin(async move {
            let (part, content) = (key(&Key::Part(id.to_owned())), key(&Key::Content(sha256.to_owned())));
            let mut c = self.pool.get().await.map_err(db)?;
            let tx = c.transaction().await.map_err(db)?;
            let exists =
                tx.query_opt("SELECT 1 FROM file_chunks WHERE key = $1 LIMIT 1", &[&content]).await.map_err(db)?;
            if exists.is_some() {
                tx.execute("DELETE FROM file_chunks WHERE key = $1", &[&part]).await.map_err(db)?;
            } else {
                let now = crate::clock::now_ms() as i64;
                let moved = tx
                    .execute("UPDATE file_chunks SET key = $2, at = $3 WHERE key = $1", &[&part, &content, &now])
                    .await;
                if let Err(e) = moved {
                    // Another node promoted the same content in between: keep theirs.
                    if !crate::store::postgres::is_unique_violation(&e) {
                        return Err(db(e));
                    }
                    drop(tx);
                    let c = self.pool.get().await.map_err(db)?;
                    c.execute("DELETE FROM file_chunks WHERE key = $1", &[&part]).await.map_err(db)?;
                    return Ok(());
                }
            }
            tx.commit().await.map_err(db)
        })
    }

    fn delete<'a>(&'a self, k: &'a Key) -> BoxFut<'a, io::Result<()>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(db)?;
            c.execute("DELETE FROM file_chunks WHERE key = $1", &[&key(k)]).await.map_err(db)?;
            Ok(())
        })
    }

    fn contents(&self) -> BoxFut<'_, io::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(db)?;
            let rows = c
                .query("SELECT substr(key, 3), MAX(at) FROM file_chunks WHERE key LIKE 'c:%' GROUP BY key", &[])
                .await
                .map_err(db)?;
            let now = crate::clock::now_ms();
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), now.saturating_sub(r.get::<_, i64>(1) as u64) / 1000))
                .collect())
        })
    }
}
