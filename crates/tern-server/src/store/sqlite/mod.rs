//! The embedded store: SQLite in WAL mode.
//!
//! Writes go through one writer thread that drains its queue and commits everything it found in
//! one transaction (group commit): under load one fsync covers hundreds of messages, idle a
//! single message commits at once. The writer owns the per-conversation seq counters, so seqs
//! are assigned in queue order without locks. Reads use a pool of read connections on tokio's
//! blocking threads; WAL lets them run beside the writer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use tern_proto::{ConvId, DeviceId, GroupId, Message, UserId};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::im::{
    ConvSummary, Decide, DmPolicy, Effect, GroupState, MemberRecord, Profile, ProfileChange, Relation, RelationRow,
    Scope, like_prefix,
};
use super::sql::{self, PROFILE_COLUMNS, USER_COLUMNS, profile_from, user_from};
use super::{
    ApiKeyRecord, AppendTicket, Appended, BoxFut, CommitListener, Committed, ConvPosition, FileRecord, FileRef,
    NewMessage, Page, RoomSanction, SanctionKind, SendRules, SessionCutoff, Store, StoreError, StoreHealth,
    StoredRoomSettings, UserRecord,
};
use crate::clock::now_ms;
use crate::config::{StoreConfig, Synchronous};

mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod wal;
mod writer;

use rows::*;
use schema::*;
use wal::*;
use writer::*;

/// A write other than a message append, run inside the writer's transaction; returns the
/// number of changed rows.
pub(super) type WriteOp = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> Result<usize, rusqlite::Error> + Send>;

/// One queued write.
pub(super) enum Write {
    CreateUser { username: String, password_hash: String, reply: oneshot::Sender<Result<UserId, StoreError>> },
    Append { msg: NewMessage, reply: oneshot::Sender<Result<Appended, StoreError>> },
    Apply { op: WriteOp, reply: oneshot::Sender<Result<usize, StoreError>> },
    Transact { scope: Scope, decide: Decide, reply: oneshot::Sender<Result<(), StoreError>> },
}

/// The embedded SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    writes: mpsc::Sender<Write>,
    readers: Arc<ReaderPool>,
    /// Dropping it stops the checkpoint thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
    health: Arc<StoreHealth>,
}

pub(super) struct ReaderPool {
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
            let conn = pool.idle.lock().pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&pool.path, None)?,
            };
            let result = f(&conn).map_err(StoreError::from);
            {
                let mut idle = pool.idle.lock();
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

pub(super) fn open_connection(path: &Path, sync: Option<Synchronous>) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Every statement this store runs is prepared once per connection and kept: rusqlite's
    // default cache holds 16, fewer than the writer uses, and a miss re-parses the SQL (measured:
    // a 16-entry cache cost the 1:1 path ~40% of its throughput once the IM statements arrived).
    conn.set_prepared_statement_cache_capacity(128);
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
    pub fn open(
        dir: &Path,
        cfg: &StoreConfig,
        listener: Arc<dyn CommitListener>,
        rules: &'static dyn SendRules,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("tern.db");
        let conn = open_connection(&path, Some(cfg.synchronous))?;
        migrate(&conn)?;
        // Checkpointing (copying the WAL into the database, with its fsyncs) runs on its own
        // thread; the writer only copies a short tail when the WAL is to start over (see
        // `WalCheckpointer`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The writer probes two B-trees per message (the (conv, seq) key and the client-id
        // index); a 64 MiB page cache keeps their hot pages in memory instead of re-reading them.
        conn.pragma_update(None, "cache_size", -65536)?;
        // A recalled message's content must be gone from storage, not just unlinked: freed
        // pages are overwritten with zeros.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let restart_wal = Arc::new(AtomicBool::new(false));
        let checkpointer = spawn_checkpointer(&path, cfg.synchronous, Arc::clone(&restart_wal))?;
        // Bounded: a full queue makes `append` wait, which pauses reading on the sending
        // connections — backpressure reaches the clients instead of memory growing.
        let (tx, rx) = mpsc::channel(cfg.max_batch * 8);
        let max_batch = cfg.max_batch;
        let health = Arc::new(StoreHealth::default());
        let writer_health = Arc::clone(&health);
        std::thread::Builder::new()
            .name("tern-store-writer".into())
            .spawn(move || Writer::new(conn, listener, rules, restart_wal, writer_health).run(rx, max_batch))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        let readers = Arc::new(ReaderPool { path, idle: Mutex::new(Vec::new()), permits: Semaphore::new(cfg.readers) });
        Ok(Self { writes: tx, readers, _checkpointer: checkpointer, health })
    }
}

impl SqliteStore {
    async fn apply(&self, op: WriteOp) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writes.send(Write::Apply { op, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

impl Store for SqliteStore {
    fn set_password(&self, user: UserId, password_hash: String) -> BoxFut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let changed = self
                .apply(Box::new(move |tx| {
                    tx.prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
                        .execute(params![user.0 as i64, password_hash])
                }))
                .await?;
            Ok(changed > 0)
        })
    }

    fn set_disabled(&self, user: UserId, disabled: bool) -> BoxFut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let changed = self
                .apply(Box::new(move |tx| {
                    tx.prepare_cached("UPDATE users SET disabled = ?2 WHERE id = ?1")?
                        .execute(params![user.0 as i64, disabled])
                }))
                .await?;
            Ok(changed > 0)
        })
    }

    fn put_session_cutoff(&self, cutoff: SessionCutoff) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let device = cutoff.device.map(|d| d.0).unwrap_or_default();
            self.apply(Box::new(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO session_cutoffs (user_id, device_id, after_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (user_id, device_id) DO UPDATE SET after_ms = max(after_ms, excluded.after_ms)",
                )?
                .execute(params![cutoff.user.0 as i64, device, cutoff.after_ms as i64])
            }))
            .await
            .map(drop)
        })
    }

    fn session_cutoffs(&self) -> BoxFut<'_, Result<Vec<SessionCutoff>, StoreError>> {
        Box::pin(self.readers.run(|c| {
            let mut stmt = c.prepare_cached("SELECT user_id, device_id, after_ms FROM session_cutoffs")?;
            let rows = stmt.query_map([], |r| {
                let device: String = r.get(1)?;
                Ok(SessionCutoff {
                    user: UserId(r.get::<_, i64>(0)? as u64),
                    device: if device.is_empty() { None } else { Some(DeviceId(device)) },
                    after_ms: r.get::<_, i64>(2)? as u64,
                })
            })?;
            rows.collect()
        }))
    }

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
                    scopes: super::parse_scopes(&scopes),
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

    fn put_room_sanction(&self, sanction: RoomSanction) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.apply(Box::new(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO room_sanctions (room, user_id, kind, until_ms, reason, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(room, user_id, kind) DO UPDATE SET \
                     until_ms = excluded.until_ms, reason = excluded.reason, created_at = excluded.created_at",
                )?
                .execute(rusqlite::params![
                    sanction.room,
                    sanction.user_id.0 as i64,
                    sanction.kind.as_str(),
                    sanction.until_ms as i64,
                    sanction.reason,
                    sanction.created_at as i64,
                ])
            }))
            .await
            .map(drop)
        })
    }

    fn lift_room_sanction<'a>(
        &'a self,
        room: &'a str,
        user: UserId,
        kind: SanctionKind,
    ) -> BoxFut<'a, Result<bool, StoreError>> {
        let room = room.to_owned();
        Box::pin(async move {
            let changed = self
                .apply(Box::new(move |tx| {
                    tx.prepare_cached("DELETE FROM room_sanctions WHERE room = ?1 AND user_id = ?2 AND kind = ?3")?
                        .execute(rusqlite::params![room, user.0 as i64, kind.as_str()])
                }))
                .await?;
            Ok(changed > 0)
        })
    }

    fn backup(&self) -> BoxFut<'_, Result<std::path::PathBuf, StoreError>> {
        // `VACUUM INTO` on a reader: one read transaction, so one consistent state of the
        // database, while the writer goes on committing into the WAL.
        let dest = self.readers.path.with_file_name(format!("backup-{:016x}.db", rand::random::<u64>()));
        Box::pin(async move {
            let to = dest.clone();
            self.readers
                .run(move |c| c.execute("VACUUM INTO ?1", [to.to_string_lossy().into_owned()]).map(drop))
                .await?;
            Ok(dest)
        })
    }

    fn put_room_settings(&self, settings: StoredRoomSettings) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.apply(Box::new(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO room_settings \
                     (room, slow_mode_secs, policy, tokens_after_ms, history_size, anonymous_posts) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(room) DO UPDATE SET \
                     slow_mode_secs = excluded.slow_mode_secs, policy = excluded.policy, \
                     tokens_after_ms = excluded.tokens_after_ms, history_size = excluded.history_size, \
                     anonymous_posts = excluded.anonymous_posts",
                )?
                .execute(rusqlite::params![
                    settings.room,
                    settings.slow_mode_secs,
                    settings.policy.as_str(),
                    settings.tokens_after_ms as i64,
                    settings.history_size,
                    settings.anonymous_posts,
                ])
            }))
            .await
            .map(drop)
        })
    }

    fn room_settings(&self) -> BoxFut<'_, Result<Vec<StoredRoomSettings>, StoreError>> {
        Box::pin(self.readers.run(|c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {} FROM room_settings", sql::ROOM_SETTINGS_COLUMNS))?;
            let rows = stmt.query_map([], |r| sql::room_settings_from(r))?;
            rows.collect()
        }))
    }

    fn room_sanctions(&self) -> BoxFut<'_, Result<Vec<RoomSanction>, StoreError>> {
        Box::pin(self.readers.run(|c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {} FROM room_sanctions", sql::SANCTION_COLUMNS))?;
            let rows = stmt.query_map([], |r| sql::sanction_from(r))?;
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
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"))?
                .query_row([username], |r| user_from(r))
                .optional()
        }))
    }

    fn user_by_id(&self, id: UserId) -> BoxFut<'_, Result<Option<UserRecord>, StoreError>> {
        Box::pin(self.readers.run(move |c| {
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?
                .query_row([id.0 as i64], |r| user_from(r))
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
        Box::pin(self.readers.run(move |c| now(sql::messages(&mut Lite(c), conv, page, limit))))
    }

    fn last_seq(&self, conv: ConvId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::stored_last_seq(&mut Lite(c), conv))))
    }

    fn conversations_of(&self, user: UserId) -> BoxFut<'_, Result<Vec<ConvPosition>, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::conversations_of(&mut Lite(c), user))))
    }

    fn transact(&self, scope: Scope, decide: Decide) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.writes.send(Write::Transact { scope, decide, reply }).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn profiles(&self, users: Vec<UserId>) -> BoxFut<'_, Result<Vec<Profile>, StoreError>> {
        Box::pin(self.readers.run(move |c| {
            let mut out = Vec::with_capacity(users.len());
            for u in users {
                if let Some(p) = now(sql::load_profile(&mut Lite(c), u))? {
                    out.push(p);
                }
            }
            Ok(out)
        }))
    }

    fn search_users(&self, prefix: String, limit: u32) -> BoxFut<'_, Result<Vec<Profile>, StoreError>> {
        Box::pin(self.readers.run(move |c| {
            // SQLite's LIKE ignores ASCII case, as usernames do.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PROFILE_COLUMNS} FROM users WHERE username LIKE ?1 ESCAPE '\\' ORDER BY username LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![like_prefix(&prefix), limit], |r| profile_from(r))?;
            rows.collect()
        }))
    }

    fn update_profile(&self, user: UserId, update: ProfileChange) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.apply(Box::new(move |tx| {
                let avatar = update.avatar.map(|a| if a.is_empty() { None } else { Some(a) });
                tx.prepare_cached(
                    "UPDATE users SET nickname = COALESCE(?2, nickname), \
                     avatar = CASE WHEN ?3 THEN ?4 ELSE avatar END, signature = COALESCE(?5, signature), \
                     dm_policy = COALESCE(?6, dm_policy) WHERE id = ?1",
                )?
                .execute(params![
                    user.0 as i64,
                    update.nickname,
                    avatar.is_some(),
                    avatar.flatten(),
                    update.signature,
                    update.dm_policy.map(DmPolicy::as_str)
                ])
            }))
            .await
            .map(drop)
        })
    }

    fn relations_of(&self, user: UserId) -> BoxFut<'_, Result<Vec<RelationRow>, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::relations_of(&mut Lite(c), user))))
    }

    fn group(&self, group: GroupId) -> BoxFut<'_, Result<Option<GroupState>, StoreError>> {
        Box::pin(self.readers.run(move |c| {
            // One read transaction, so members and last seq agree.
            let tx = c.unchecked_transaction()?;
            let mut lite = Lite(&tx);
            let last = now(sql::stored_last_seq(&mut lite, ConvId::Group(group)))?;
            now(sql::load_group(&mut lite, group, last))
        }))
    }

    fn conversation_list(&self, user: UserId) -> BoxFut<'_, Result<Vec<ConvSummary>, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::conversation_list(&mut Lite(c), user))))
    }

    fn membership(&self, conv: ConvId, user: UserId) -> BoxFut<'_, Result<Option<MemberRecord>, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::load_member(&mut Lite(c), conv, user))))
    }

    fn health(&self) -> &StoreHealth {
        &self.health
    }

    fn read_count(&self, conv: ConvId, seq: u64, except: UserId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::read_count(&mut Lite(c), conv, seq, except))))
    }

    fn put_file(&self, file: FileRecord) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.apply(Box::new(move |tx| now(sql::put_file(&mut Lite(tx), &file)).map(|n| n as usize))).await.map(drop)
        })
    }

    fn file<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<Option<FileRecord>, StoreError>> {
        let id = id.to_owned();
        Box::pin(self.readers.run(move |c| now(sql::load_file(&mut Lite(c), &id))))
    }

    fn delete_file<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<bool, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let removed =
                self.apply(Box::new(move |tx| now(sql::delete_file(&mut Lite(tx), &id)).map(usize::from))).await?;
            Ok(removed > 0)
        })
    }

    fn files_usage(&self, owner: UserId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::files_usage(&mut Lite(c), owner))))
    }

    fn expired_uploads(&self, now_ms: u64, limit: u32) -> BoxFut<'_, Result<Vec<FileRecord>, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::expired_uploads(&mut Lite(c), now_ms, limit))))
    }

    fn content_used<'a>(&'a self, sha256: &'a str) -> BoxFut<'a, Result<bool, StoreError>> {
        let sha256 = sha256.to_owned();
        Box::pin(self.readers.run(move |c| now(sql::content_used(&mut Lite(c), &sha256))))
    }

    fn add_file_ref(&self, file_ref: FileRef) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.apply(Box::new(move |tx| now(sql::add_file_ref(&mut Lite(tx), &file_ref)).map(|n| n as usize)))
                .await
                .map(drop)
        })
    }

    fn file_messages<'a>(&'a self, file_id: &'a str) -> BoxFut<'a, Result<Vec<(ConvId, u64)>, StoreError>> {
        let file_id = file_id.to_owned();
        Box::pin(self.readers.run(move |c| now(sql::file_messages(&mut Lite(c), &file_id))))
    }

    fn add_sticker<'a>(&'a self, user: UserId, file_id: &'a str, at: u64) -> BoxFut<'a, Result<bool, StoreError>> {
        let file_id = file_id.to_owned();
        Box::pin(async move {
            let added = self
                .apply(Box::new(move |tx| now(sql::add_sticker(&mut Lite(tx), user, &file_id, at)).map(usize::from)))
                .await?;
            Ok(added > 0)
        })
    }

    fn remove_sticker<'a>(&'a self, user: UserId, file_id: &'a str) -> BoxFut<'a, Result<bool, StoreError>> {
        let file_id = file_id.to_owned();
        Box::pin(async move {
            let removed = self
                .apply(Box::new(move |tx| now(sql::remove_sticker(&mut Lite(tx), user, &file_id)).map(usize::from)))
                .await?;
            Ok(removed > 0)
        })
    }

    fn stickers(&self, user: UserId) -> BoxFut<'_, Result<Vec<super::Sticker>, StoreError>> {
        Box::pin(self.readers.run(move |c| now(sql::stickers(&mut Lite(c), user))))
    }
}
