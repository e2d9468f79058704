//! The embedded store: SQLite in WAL mode.
//!
//! Writes go through one writer thread that drains its queue and commits everything it found in
//! one transaction (group commit): under load one fsync covers hundreds of messages, idle a
//! single message commits at once. The writer owns the per-conversation seq counters, so seqs
//! are assigned in queue order without locks. Reads use a pool of read connections on tokio's
//! blocking threads; WAL lets them run beside the writer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use tern_proto::{Body, ConvId, Message, MsgId, UserId};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{
    ApiKeyRecord, AppendTicket, Appended, BoxFut, CommitListener, Committed, NewMessage, Page, Store, StoreError,
    UserRecord,
};
use crate::clock::now_ms;
use crate::config::{StoreConfig, Synchronous};

const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    conv_id TEXT PRIMARY KEY,
    user_a INTEGER NOT NULL,
    user_b INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_a ON conversations(user_a);
CREATE INDEX IF NOT EXISTS conversations_b ON conversations(user_b);
CREATE TABLE IF NOT EXISTS messages (
    conv_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    msg_id INTEGER NOT NULL,
    sender INTEGER NOT NULL,
    sender_device TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (conv_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id ON messages(sender, client_msg_id);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    scopes TEXT NOT NULL,
    rate_per_sec REAL NOT NULL,
    burst INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    area TEXT NOT NULL
) WITHOUT ROWID;
";

/// A write other than a message append, run inside the writer's transaction; returns the
/// number of changed rows.
type WriteOp = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> Result<usize, rusqlite::Error> + Send>;

/// One queued write.
enum Write {
    CreateUser { username: String, password_hash: String, reply: oneshot::Sender<Result<UserId, StoreError>> },
    Append { msg: NewMessage, reply: oneshot::Sender<Result<Appended, StoreError>> },
    Apply { op: WriteOp, reply: oneshot::Sender<Result<usize, StoreError>> },
}

/// The embedded SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    writes: mpsc::Sender<Write>,
    readers: Arc<ReaderPool>,
    /// Dropping it stops the checkpoint thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

struct ReaderPool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReaderPool {
    /// Runs `f` on a read connection on a blocking thread.
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = pool.idle.lock().map_err(|_| StoreError::Closed)?.pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&pool.path, None)?,
            };
            let result = f(&conn).map_err(StoreError::from);
            if let Ok(mut idle) = pool.idle.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

fn open_connection(path: &Path, sync: Option<Synchronous>) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    if let Some(sync) = sync {
        let level = match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", level)?;
    }
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`, starts the writer thread, and hands every
    /// commit to `listener`.
    pub fn open(dir: &Path, cfg: &StoreConfig, listener: Arc<dyn CommitListener>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("tern.db");
        let conn = open_connection(&path, Some(cfg.synchronous))?;
        migrate(&conn)?;
        // Checkpointing (copying the WAL into the database, with its fsyncs) runs on its own
        // thread, so the writer only ever appends to the WAL.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The writer probes two B-trees per message (the (conv, seq) key and the client-id
        // index); a 64 MiB page cache keeps their hot pages in memory instead of re-reading them.
        conn.pragma_update(None, "cache_size", -65536)?;
        let checkpointer = spawn_checkpointer(&path, cfg.synchronous)?;
        // Bounded: a full queue makes `append` wait, which pauses reading on the sending
        // connections — backpressure reaches the clients instead of memory growing.
        let (tx, rx) = mpsc::channel(cfg.max_batch * 8);
        let max_batch = cfg.max_batch;
        std::thread::Builder::new()
            .name("tern-store-writer".into())
            .spawn(move || Writer { conn, listener, seqs: HashMap::new() }.run(rx, max_batch))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        let readers = Arc::new(ReaderPool { path, idle: Mutex::new(Vec::new()), permits: Semaphore::new(cfg.readers) });
        Ok(Self { writes: tx, readers, _checkpointer: checkpointer })
    }
}

/// Every second, a passive checkpoint (never blocks the writer or readers). Stops when the
/// store is dropped.
fn spawn_checkpointer(path: &Path, sync: Synchronous) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let conn = open_connection(path, Some(sync))?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("tern-store-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_secs(1))
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "wal checkpoint failed");
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("cannot start checkpoint thread: {e}")))?;
    Ok(stop)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "data directory has schema version {version}, this build knows up to {SCHEMA_VERSION}"
        )));
    }
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

struct Writer {
    conn: Connection,
    listener: Arc<dyn CommitListener>,
    /// Last seq per conversation, loaded on first use. Only the writer assigns seqs, so the
    /// cache is the truth once loaded; it is dropped whenever a commit fails.
    seqs: HashMap<ConvId, u64>,
}

/// A write's answer, held until its transaction commits.
enum Reply {
    User(oneshot::Sender<Result<UserId, StoreError>>, Result<UserId, StoreError>),
    Append(oneshot::Sender<Result<Appended, StoreError>>, Result<Appended, StoreError>),
    Applied(oneshot::Sender<Result<usize, StoreError>>, Result<usize, StoreError>),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Write>, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
        tracing::debug!("store writer stopped");
    }

    fn commit_batch(&mut self, batch: &mut Vec<Write>) {
        let mut replies = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        let outcome = self.apply(batch.drain(..), &mut replies, &mut committed);
        match outcome {
            Ok(()) => {
                if !committed.is_empty() {
                    self.listener.committed(&committed);
                }
                for reply in replies {
                    match reply {
                        Reply::User(tx, r) => drop(tx.send(r)),
                        Reply::Append(tx, r) => drop(tx.send(r)),
                        Reply::Applied(tx, r) => drop(tx.send(r)),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; batch refused");
                self.seqs.clear();
                let err = StoreError::Backend(e.to_string());
                for reply in replies {
                    match reply {
                        Reply::User(tx, _) => drop(tx.send(Err(err.clone()))),
                        Reply::Append(tx, _) => drop(tx.send(Err(err.clone()))),
                        Reply::Applied(tx, _) => drop(tx.send(Err(err.clone()))),
                    }
                }
            }
        }
    }

    fn apply(
        &mut self,
        batch: impl Iterator<Item = Write>,
        replies: &mut Vec<Reply>,
        committed: &mut Vec<Committed>,
    ) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        // Newest seq per conversation written in this batch, to update `conversations` once.
        let mut touched: HashMap<ConvId, u64> = HashMap::new();
        for write in batch {
            match write {
                Write::CreateUser { username, password_hash, reply } => {
                    let now = now_ms() as i64;
                    let result = tx
                        .prepare_cached("INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3)")?
                        .execute(params![username, password_hash, now]);
                    let result = match result {
                        Ok(_) => Ok(UserId(tx.last_insert_rowid() as u64)),
                        Err(e) if is_constraint(&e) => {
                            Err(StoreError::Conflict(format!("username {username:?} is taken")))
                        }
                        Err(e) => return Err(e),
                    };
                    replies.push(Reply::User(reply, result));
                }
                Write::Apply { op, reply } => {
                    let result = match op(&tx) {
                        Ok(n) => Ok(n),
                        Err(e) if is_constraint(&e) => Err(StoreError::Conflict("already exists".into())),
                        Err(e) => return Err(e),
                    };
                    replies.push(Reply::Applied(reply, result));
                }
                Write::Append { msg, reply } => {
                    let seq = match self.seqs.get(&msg.conv_id) {
                        Some(s) => *s + 1,
                        None => last_seq(&tx, msg.conv_id)? + 1,
                    };
                    // The unique index on (sender, client_msg_id) is the dedup: one index probe
                    // for the common case of a new message, a lookup only for a resend (also
                    // one queued earlier in this same batch, as the transaction sees its rows).
                    let inserted = tx
                        .prepare_cached(
                            "INSERT INTO messages (conv_id, seq, msg_id, sender, sender_device, client_msg_id, ts, body) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(sender, client_msg_id) DO NOTHING",
                        )?
                        .execute(params![
                            msg.conv_id.to_string(),
                            seq as i64,
                            msg.msg_id.0 as i64,
                            msg.from.0 as i64,
                            msg.from_device.0,
                            msg.client_msg_id,
                            msg.ts as i64,
                            &msg.body_json[..],
                        ])?;
                    if inserted == 0 {
                        let result = match find_by_client_id(&tx, msg.from, &msg.client_msg_id)? {
                            Some(original) if original.conv_id == msg.conv_id => {
                                Ok(Appended { message: original, duplicate: true })
                            }
                            _ => Err(StoreError::Conflict(format!(
                                "client_msg_id {:?} was already used for another conversation",
                                msg.client_msg_id
                            ))),
                        };
                        replies.push(Reply::Append(reply, result));
                        continue;
                    }
                    self.seqs.insert(msg.conv_id, seq);
                    touched.insert(msg.conv_id, seq);
                    let message = Message {
                        msg_id: msg.msg_id,
                        conv_id: msg.conv_id,
                        seq,
                        from: msg.from,
                        client_msg_id: msg.client_msg_id,
                        ts: msg.ts,
                        body: msg.body,
                    };
                    committed.push(Committed { message: message.clone(), from_device: msg.from_device });
                    replies.push(Reply::Append(reply, Ok(Appended { message, duplicate: false })));
                }
            }
        }
        for (conv, seq) in &touched {
            let ConvId::Direct(a, b) = *conv;
            tx.prepare_cached(
                "INSERT INTO conversations (conv_id, user_a, user_b, last_seq) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(conv_id) DO UPDATE SET last_seq = excluded.last_seq",
            )?
            .execute(params![conv.to_string(), a.0 as i64, b.0 as i64, *seq as i64])?;
        }
        tx.commit()?;
        // Keep the seq cache bounded; it refills from `conversations` on demand.
        if self.seqs.len() > 100_000 {
            self.seqs.clear();
        }
        Ok(())
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn last_seq(conn: &Connection, conv: ConvId) -> Result<u64, rusqlite::Error> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT last_seq FROM conversations WHERE conv_id = ?1")?
        .query_row([conv.to_string()], |r| r.get(0))
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

const MESSAGE_COLUMNS: &str = "conv_id, seq, msg_id, sender, client_msg_id, ts, body";

fn row_to_message(row: &rusqlite::Row<'_>) -> Result<Message, rusqlite::Error> {
    let conv: String = row.get(0)?;
    let conv_id = conv
        .parse::<ConvId>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
    let body: Vec<u8> = row.get(6)?;
    let body: Body = serde_json::from_slice(&body)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Blob, Box::new(e)))?;
    Ok(Message {
        conv_id,
        seq: row.get::<_, i64>(1)? as u64,
        msg_id: MsgId(row.get::<_, i64>(2)? as u64),
        from: UserId(row.get::<_, i64>(3)? as u64),
        client_msg_id: row.get(4)?,
        ts: row.get::<_, i64>(5)? as u64,
        body,
    })
}

fn find_by_client_id(
    conn: &Connection,
    sender: UserId,
    client_msg_id: &str,
) -> Result<Option<Message>, rusqlite::Error> {
    conn.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender = ?1 AND client_msg_id = ?2"))?
        .query_row(params![sender.0 as i64, client_msg_id], row_to_message)
        .optional()
}

fn user_from_row(row: &rusqlite::Row<'_>) -> Result<UserRecord, rusqlite::Error> {
    Ok(UserRecord { id: UserId(row.get::<_, i64>(0)? as u64), username: row.get(1)?, password_hash: row.get(2)? })
}

impl SqliteStore {
    async fn apply(&self, op: WriteOp) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writes.send(Write::Apply { op, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

impl Store for SqliteStore {
    fn create_api_key(&self, key: ApiKeyRecord) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.apply(Box::new(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO api_keys (id, name, secret_hash, scopes, rate_per_sec, burst, created_at, revoked) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    key.id,
                    key.name,
                    key.secret_hash,
                    key.scopes.join(","),
                    key.rate_per_sec,
                    key.burst,
                    key.created_at as i64,
                    key.revoked
                ])
            }))
            .await
            .map(drop)
        })
    }

    fn api_keys(&self) -> BoxFut<'_, Result<Vec<ApiKeyRecord>, StoreError>> {
        Box::pin(self.readers.run(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, secret_hash, scopes, rate_per_sec, burst, created_at, revoked FROM api_keys ORDER BY created_at",
            )?;
            let rows = stmt.query_map([], |r| {
                let scopes: String = r.get(3)?;
                Ok(ApiKeyRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    secret_hash: r.get(2)?,
                    scopes: scopes.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                    rate_per_sec: r.get(4)?,
                    burst: r.get(5)?,
                    created_at: r.get::<_, i64>(6)? as u64,
                    revoked: r.get(7)?,
                })
            })?;
            rows.collect()
        }))
    }

    fn revoke_api_key<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<bool, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let changed = self
                .apply(Box::new(move |tx| {
                    tx.prepare_cached("UPDATE api_keys SET revoked = 1 WHERE id = ?1")?.execute([id])
                }))
                .await?;
            Ok(changed > 0)
        })
    }

    fn set_room_area<'a>(&'a self, room: &'a str, area: &'a str) -> BoxFut<'a, Result<(), StoreError>> {
        let (room, area) = (room.to_owned(), area.to_owned());
        Box::pin(async move {
            self.apply(Box::new(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO rooms (room, area) VALUES (?1, ?2) ON CONFLICT(room) DO UPDATE SET area = excluded.area",
                )?
                .execute([room, area])
            }))
            .await
            .map(drop)
        })
    }

    fn room_areas(&self) -> BoxFut<'_, Result<Vec<(String, String)>, StoreError>> {
        Box::pin(self.readers.run(|c| {
            let mut stmt = c.prepare_cached("SELECT room, area FROM rooms")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        }))
    }

    fn create_user<'a>(&'a self, username: &'a str, password_hash: &'a str) -> BoxFut<'a, Result<UserId, StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let write =
                Write::CreateUser { username: username.to_owned(), password_hash: password_hash.to_owned(), reply };
            self.writes.send(write).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn user_by_name<'a>(&'a self, username: &'a str) -> BoxFut<'a, Result<Option<UserRecord>, StoreError>> {
        let username = username.to_owned();
        Box::pin(self.readers.run(move |c| {
            c.prepare_cached("SELECT id, username, password_hash FROM users WHERE username = ?1")?
                .query_row([username], user_from_row)
                .optional()
        }))
    }

    fn user_by_id(&self, id: UserId) -> BoxFut<'_, Result<Option<UserRecord>, StoreError>> {
        Box::pin(self.readers.run(move |c| {
            c.prepare_cached("SELECT id, username, password_hash FROM users WHERE id = ?1")?
                .query_row([id.0 as i64], user_from_row)
                .optional()
        }))
    }

    fn append(&self, msg: NewMessage) -> BoxFut<'_, Result<AppendTicket, StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.writes.send(Write::Append { msg, reply }).await.map_err(|_| StoreError::Closed)?;
            Ok(rx)
        })
    }

    fn messages(&self, conv: ConvId, page: Page, limit: u32) -> BoxFut<'_, Result<Vec<Message>, StoreError>> {
        Box::pin(self.readers.run(move |c| {
            let (sql, bound) = match page {
                Page::After(seq) => (
                    format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv_id = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"),
                    seq,
                ),
                Page::Before(seq) => (
                    format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"),
                    seq,
                ),
            };
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![conv.to_string(), bound.min(i64::MAX as u64) as i64, limit], row_to_message)?;
            rows.collect()
        }))
    }

    fn last_seq(&self, conv: ConvId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(self.readers.run(move |c| last_seq(c, conv)))
    }

    fn conversations_of(&self, user: UserId) -> BoxFut<'_, Result<Vec<(ConvId, u64)>, StoreError>> {
        Box::pin(self.readers.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT conv_id, last_seq FROM conversations WHERE user_a = ?1 \
                 UNION ALL SELECT conv_id, last_seq FROM conversations WHERE user_b = ?1 AND user_a <> ?1",
            )?;
            let rows = stmt.query_map([user.0 as i64], |r| {
                let conv: String = r.get(0)?;
                let seq: i64 = r.get(1)?;
                Ok((conv, seq as u64))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (conv, seq) = row?;
                // Rows are written only from parsed ids; an unparsable one is skipped, not fatal.
                if let Ok(conv) = conv.parse() {
                    out.push((conv, seq));
                }
            }
            Ok(out)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        conformance::run_all(|listener| {
            let path = dir.path().join(format!("db-{}", rand::random::<u32>()));
            let store = SqliteStore::open(&path, &StoreConfig::default(), listener).unwrap();
            Arc::new(store) as Arc<dyn Store>
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_messages_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let conv = ConvId::direct(UserId(1), UserId(2));
        {
            let store = SqliteStore::open(dir.path(), &StoreConfig::default(), conformance::null_listener()).unwrap();
            for i in 0..3 {
                let t = store.append(conformance::new_message(conv, UserId(1), &format!("c{i}"))).await.unwrap();
                t.await.unwrap().unwrap();
            }
        }
        let store = SqliteStore::open(dir.path(), &StoreConfig::default(), conformance::null_listener()).unwrap();
        let t = store.append(conformance::new_message(conv, UserId(2), "next")).await.unwrap();
        assert_eq!(t.await.unwrap().unwrap().message.seq, 4, "seq continues after reopen");
        let dup = store.append(conformance::new_message(conv, UserId(1), "c1")).await.unwrap();
        let dup = dup.await.unwrap().unwrap();
        assert!(dup.duplicate);
        assert_eq!(dup.message.seq, 2);
    }
}
