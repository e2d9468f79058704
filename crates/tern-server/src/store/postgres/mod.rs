//! The cluster store: PostgreSQL, shared by every node.
//!
//! The same [`Store`] contract as the embedded engine, with one difference that shapes the code:
//! several nodes write at once, so nothing may be cached as "the truth" across transactions. What
//! the embedded writer gets from being the only writer, this engine gets from locks:
//!
//! - **One lock per conversation**, a transaction-scoped advisory lock keyed by a stable hash of
//!   the conversation id (`conv_lock_key`). Whoever holds it assigns that conversation's next
//!   seqs, so seqs stay gap-free and strictly increasing across nodes; a rolled-back transaction
//!   takes its seqs with it. IM operations lock the conversations their [`Scope`] names (a
//!   friend pair locks its 1:1 conversation), so a kick and a send to the same group serialize.
//! - **Locks are taken in one global order** (by conversation id, bytewise): a transaction locks
//!   everything it will append to up front, sorted. IM operations lock their scope first and the
//!   users' event streams (`u:…`, which sort after `d:…` and `g:…`) after deciding, so they
//!   follow the same order. Should two transactions still deadlock, PostgreSQL aborts one; a
//!   batch of appends is then retried whole.
//!
//! Per node, writes go through one writer task, like the embedded store: consecutive appends are
//! committed as one transaction (group commit, a fixed number of round trips per batch however
//! many messages it holds), IM operations one transaction each, in queue order. After each commit
//! the writer hands the new messages to the [`CommitListener`] before answering the senders.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tern_proto::{ConvId, DeviceId, GroupId, Message, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use super::im::{
    ConvSummary, Decide, DmPolicy, Effect, GroupState, MemberRecord, Profile, ProfileChange, Relation, RelationRow,
    Scope, like_prefix,
};
use super::sql::{self, MESSAGE_COLUMNS, PROFILE_COLUMNS, USER_COLUMNS, profile_from, user_from};
use super::{
    ApiKeyRecord, AppendTicket, Appended, BoxFut, CommitListener, Committed, ConvPosition, FileRecord, FileRef,
    NewMessage, Page, RoomSanction, SanctionKind, SendRules, SessionCutoff, Store, StoreError, StoreHealth,
    StoredRoomSettings, UserRecord,
};

mod effects;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use effects::*;
use rows::*;
use schema::*;
use writer::*;

/// The PostgreSQL settings.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db` (or a libpq key=value string).
    pub url: String,
    /// Connections in the pool (reads and the writer share it).
    pub pool_size: usize,
    /// Most appends committed in one transaction.
    pub max_batch: usize,
    /// Tables live in this schema (created if missing); `None`: the connection's default.
    pub schema: Option<String>,
}

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PostgresStore {
    pool: Pool,
    writes: mpsc::Sender<Write>,
    health: Arc<StoreHealth>,
}

pub(super) enum Write {
    Append { msg: NewMessage, reply: oneshot::Sender<Result<Appended, StoreError>> },
    Transact { scope: Scope, decide: Decide, reply: oneshot::Sender<Result<(), StoreError>> },
}

/// An engine error as the request sees it: the database out of resources (class 53: disk
/// full, out of memory, too many connections), failing (class 58: I/O) or unreachable is
/// `Unavailable` (retry later, `/healthz` says so); anything else is this request's failure.
pub(super) fn backend(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if matches!(&db.code().code()[..2], "53" | "58") => {
            StoreError::Unavailable(format!("{}: {}", db.code().code(), db.message()))
        }
        Some(db) => StoreError::Backend(format!("{}: {}", db.code().code(), db.message())),
        None if e.is_closed() => StoreError::Unavailable(format!("database connection lost: {e}")),
        None => StoreError::Backend(e.to_string()),
    }
}

/// A connection pool of `size` to the database and schema `opts` name (the store's, and the
/// file storage's own small one, so big transfers never wait on the message path's connections).
pub fn connect_pool(opts: &PgOptions, size: usize) -> Result<Pool, StoreError> {
    let mut config: tokio_postgres::Config =
        opts.url.parse().map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name("tern");
    }
    if let Some(schema) = &opts.schema {
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || schema.is_empty() {
            return Err(StoreError::Backend(format!("bad schema name {schema:?}")));
        }
        config.options(format!("-c search_path={schema}"));
    }
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))
}

pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A 64-bit FNV-1a of the conversation id: the advisory lock key. Spelled out rather than taken
/// from `std::hash` because every node, of any build, must compute the same key.
pub(super) fn conv_lock_key(conv: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in conv.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Takes the conversation locks, in the global order, skipping those already held.
pub(super) async fn lock_convs(
    tx: &tokio_postgres::Transaction<'_>,
    held: &mut BTreeSet<String>,
    convs: impl IntoIterator<Item = String>,
) -> Result<(), tokio_postgres::Error> {
    let wanted: BTreeSet<String> = convs.into_iter().filter(|c| !held.contains(c)).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = wanted.iter().map(|c| conv_lock_key(c)).collect();
    // A function scan of an array yields its elements in order, so the locks are taken in order.
    tx.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", &[&keys]).await?;
    held.extend(wanted);
    Ok(())
}

impl PostgresStore {
    /// Connects, migrates the schema and starts the writer task, which hands every commit to
    /// `listener`.
    pub async fn open(
        opts: &PgOptions,
        listener: Arc<dyn CommitListener>,
        rules: &'static dyn SendRules,
    ) -> Result<Self, StoreError> {
        let pool = connect_pool(opts, opts.pool_size.max(2))?;
        migrate(&pool, opts.schema.as_deref()).await?;
        // Bounded: a full queue makes `append` wait, which pauses reading on the sending
        // connections — backpressure reaches the clients instead of memory growing.
        let (tx, rx) = mpsc::channel(opts.max_batch * 8);
        let health = Arc::new(StoreHealth::default());
        let writer = Writer::new(pool.clone(), listener, rules, Arc::clone(&health));
        tokio::spawn(writer.run(rx, opts.max_batch.max(1)));
        Ok(Self { pool, writes: tx, health })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs one statement outside the writer; the number of changed rows.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(backend)?;
        c.execute(&stmt, params).await.map_err(backend)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(backend)?;
        c.query(&stmt, params).await.map_err(backend)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql).await.map_err(backend)?;
        c.query_opt(&stmt, params).await.map_err(backend)
    }
}

impl Store for PostgresStore {
    fn create_user<'a>(&'a self, username: &'a str, password_hash: &'a str) -> BoxFut<'a, Result<UserId, StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            let now = crate::clock::now_ms() as i64;
            let row = c
                .query_one(
                    "INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
                    &[&username, &password_hash, &now],
                )
                .await;
            match row {
                Ok(row) => Ok(UserId(row.get::<_, i64>(0) as u64)),
                Err(e) if is_unique_violation(&e) => {
                    Err(StoreError::Conflict(format!("username {username:?} is taken")))
                }
                Err(e) => Err(backend(e)),
            }
        })
    }

    fn user_by_name<'a>(&'a self, username: &'a str) -> BoxFut<'a, Result<Option<UserRecord>, StoreError>> {
        Box::pin(async move {
            let row = self
                .query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1)"), &[&username])
                .await?;
            row.as_ref().map(|r| user_from(r)).transpose()
        })
    }

    fn user_by_id(&self, id: UserId) -> BoxFut<'_, Result<Option<UserRecord>, StoreError>> {
        Box::pin(async move {
            let row =
                self.query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), &[&(id.0 as i64)]).await?;
            row.as_ref().map(|r| user_from(r)).transpose()
        })
    }

    fn append(&self, msg: NewMessage) -> BoxFut<'_, Result<AppendTicket, StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.writes.send(Write::Append { msg, reply }).await.map_err(|_| StoreError::Closed)?;
            Ok(rx)
        })
    }

    fn messages(&self, conv: ConvId, page: Page, limit: u32) -> BoxFut<'_, Result<Vec<Message>, StoreError>> {
        Box::pin(async move { sql::messages(&mut Pg(&*self.client().await?), conv, page, limit).await })
    }

    fn last_seq(&self, conv: ConvId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move { sql::stored_last_seq(&mut Pg(&*self.client().await?), conv).await })
    }

    fn conversations_of(&self, user: UserId) -> BoxFut<'_, Result<Vec<ConvPosition>, StoreError>> {
        Box::pin(async move { sql::conversations_of(&mut Pg(&*self.client().await?), user).await })
    }

    fn transact(&self, scope: Scope, decide: Decide) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.writes.send(Write::Transact { scope, decide, reply }).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn profiles(&self, users: Vec<UserId>) -> BoxFut<'_, Result<Vec<Profile>, StoreError>> {
        Box::pin(async move {
            let ids: Vec<i64> = users.iter().map(|u| u.0 as i64).collect();
            let rows = self.query(&format!("SELECT {PROFILE_COLUMNS} FROM users WHERE id = ANY($1)"), &[&ids]).await?;
            let mut by_id: HashMap<UserId, Profile> =
                rows.iter().map(|r| profile_from(r).map(|p| (p.user_id, p))).collect::<Result<_, _>>()?;
            // In the order asked.
            Ok(users.iter().filter_map(|u| by_id.remove(u)).collect())
        })
    }

    fn search_users(&self, prefix: String, limit: u32) -> BoxFut<'_, Result<Vec<Profile>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    &format!(
                        "SELECT {PROFILE_COLUMNS} FROM users WHERE lower(username) LIKE $1 ESCAPE '\\' \
                         ORDER BY lower(username) LIMIT $2"
                    ),
                    &[&like_prefix(&prefix.to_lowercase()), &i64::from(limit)],
                )
                .await?;
            rows.iter().map(|r| profile_from(r)).collect()
        })
    }

    fn update_profile(&self, user: UserId, update: ProfileChange) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let avatar = update.avatar.map(|a| if a.is_empty() { None } else { Some(a) });
            self.execute(
                "UPDATE users SET nickname = COALESCE($2, nickname), \
                 avatar = CASE WHEN $3 THEN $4 ELSE avatar END, signature = COALESCE($5, signature), \
                 dm_policy = COALESCE($6, dm_policy) WHERE id = $1",
                &[
                    &(user.0 as i64),
                    &update.nickname,
                    &avatar.is_some(),
                    &avatar.flatten(),
                    &update.signature,
                    &update.dm_policy.map(DmPolicy::as_str),
                ],
            )
            .await
            .map(drop)
        })
    }

    fn relations_of(&self, user: UserId) -> BoxFut<'_, Result<Vec<RelationRow>, StoreError>> {
        Box::pin(async move { sql::relations_of(&mut Pg(&*self.client().await?), user).await })
    }

    fn group(&self, group: GroupId) -> BoxFut<'_, Result<Option<GroupState>, StoreError>> {
        Box::pin(async move {
            let mut c = self.client().await?;
            // One snapshot for the group, its members and its last seq.
            let tx = c.build_transaction().read_only(true).start().await.map_err(backend)?;
            let mut pg = Pg(&tx);
            let last = sql::stored_last_seq(&mut pg, ConvId::Group(group)).await?;
            let state = sql::load_group(&mut pg, group, last).await?;
            tx.commit().await.map_err(backend)?;
            Ok(state)
        })
    }

    fn conversation_list(&self, user: UserId) -> BoxFut<'_, Result<Vec<ConvSummary>, StoreError>> {
        Box::pin(async move { sql::conversation_list(&mut Pg(&*self.client().await?), user).await })
    }

    fn membership(&self, conv: ConvId, user: UserId) -> BoxFut<'_, Result<Option<MemberRecord>, StoreError>> {
        Box::pin(async move { sql::load_member(&mut Pg(&*self.client().await?), conv, user).await })
    }

    fn health(&self) -> &StoreHealth {
        &self.health
    }

    fn read_count(&self, conv: ConvId, seq: u64, except: UserId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move { sql::read_count(&mut Pg(&*self.client().await?), conv, seq, except).await })
    }

    fn create_api_key(&self, key: ApiKeyRecord) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let result = self
                .execute(
                    "INSERT INTO api_keys (id, name, secret_hash, scopes, rate_per_sec, burst, created_at, revoked) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &key.id,
                        &key.name,
                        &key.secret_hash,
                        &key.scopes.join(","),
                        &key.rate_per_sec,
                        &i64::from(key.burst),
                        &(key.created_at as i64),
                        &key.revoked,
                    ],
                )
                .await;
            match result {
                Err(StoreError::Backend(e)) if e.starts_with(SqlState::UNIQUE_VIOLATION.code()) => {
                    Err(StoreError::Conflict("already exists".into()))
                }
                other => other.map(drop),
            }
        })
    }

    fn set_password(&self, user: UserId, password_hash: String) -> BoxFut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let n = self
                .execute("UPDATE users SET password_hash = $2 WHERE id = $1", &[&(user.0 as i64), &password_hash])
                .await?;
            Ok(n > 0)
        })
    }

    fn set_disabled(&self, user: UserId, disabled: bool) -> BoxFut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let n =
                self.execute("UPDATE users SET disabled = $2 WHERE id = $1", &[&(user.0 as i64), &disabled]).await?;
            Ok(n > 0)
        })
    }

    fn put_session_cutoff(&self, cutoff: SessionCutoff) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let device = cutoff.device.map(|d| d.0).unwrap_or_default();
            self.execute(
                "INSERT INTO session_cutoffs (user_id, device_id, after_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, device_id) DO UPDATE SET after_ms = GREATEST(session_cutoffs.after_ms, excluded.after_ms)",
                &[&(cutoff.user.0 as i64), &device, &(cutoff.after_ms as i64)],
            )
            .await
            .map(drop)
        })
    }

    fn session_cutoffs(&self) -> BoxFut<'_, Result<Vec<SessionCutoff>, StoreError>> {
        Box::pin(async move {
            let rows = self.query("SELECT user_id, device_id, after_ms FROM session_cutoffs", &[]).await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let device: String = r.get(1);
                    SessionCutoff {
                        user: UserId(r.get::<_, i64>(0) as u64),
                        device: if device.is_empty() { None } else { Some(DeviceId(device)) },
                        after_ms: r.get::<_, i64>(2) as u64,
                    }
                })
                .collect())
        })
    }

    fn api_keys(&self) -> BoxFut<'_, Result<Vec<ApiKeyRecord>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT id, name, secret_hash, scopes, rate_per_sec, burst, created_at, revoked FROM api_keys ORDER BY created_at",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let scopes: String = r.get(3);
                    ApiKeyRecord {
                        id: r.get(0),
                        name: r.get(1),
                        secret_hash: r.get(2),
                        scopes: super::parse_scopes(&scopes),
                        rate_per_sec: r.get(4),
                        burst: r.get::<_, i64>(5).clamp(0, i64::from(u32::MAX)) as u32,
                        created_at: r.get::<_, i64>(6) as u64,
                        revoked: r.get(7),
                    }
                })
                .collect())
        })
    }

    fn revoke_api_key<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<bool, StoreError>> {
        Box::pin(async move { Ok(self.execute("UPDATE api_keys SET revoked = true WHERE id = $1", &[&id]).await? > 0) })
    }

    fn set_room_area<'a>(&'a self, room: &'a str, area: &'a str) -> BoxFut<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.execute(
                "INSERT INTO rooms (room, area) VALUES ($1, $2) ON CONFLICT (room) DO UPDATE SET area = excluded.area",
                &[&room, &area],
            )
            .await
            .map(drop)
        })
    }

    fn room_areas(&self) -> BoxFut<'_, Result<Vec<(String, String)>, StoreError>> {
        Box::pin(async move {
            let rows = self.query("SELECT room, area FROM rooms", &[]).await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn put_room_sanction(&self, sanction: RoomSanction) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.execute(
                "INSERT INTO room_sanctions (room, user_id, kind, until_ms, reason, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room, user_id, kind) DO UPDATE SET \
                 until_ms = excluded.until_ms, reason = excluded.reason, created_at = excluded.created_at",
                &[
                    &sanction.room,
                    &(sanction.user_id.0 as i64),
                    &sanction.kind.as_str(),
                    &(sanction.until_ms as i64),
                    &sanction.reason,
                    &(sanction.created_at as i64),
                ],
            )
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
        Box::pin(async move {
            let removed = self
                .execute(
                    "DELETE FROM room_sanctions WHERE room = $1 AND user_id = $2 AND kind = $3",
                    &[&room, &(user.0 as i64), &kind.as_str()],
                )
                .await?;
            Ok(removed > 0)
        })
    }

    fn backup(&self) -> BoxFut<'_, Result<std::path::PathBuf, StoreError>> {
        Box::pin(async {
            Err(StoreError::Denied(crate::error::Error::bad_request(
                "this server uses PostgreSQL: back it up with pg_dump (README, \"Backup and restore\")",
            )))
        })
    }

    fn put_room_settings(&self, settings: StoredRoomSettings) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let slow = settings.slow_mode_secs.map(i64::from);
            let history = settings.history_size.map(i64::from);
            self.execute(
                "INSERT INTO room_settings \
                 (room, slow_mode_secs, policy, tokens_after_ms, history_size, anonymous_posts) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room) DO UPDATE SET \
                 slow_mode_secs = excluded.slow_mode_secs, policy = excluded.policy, \
                 tokens_after_ms = excluded.tokens_after_ms, history_size = excluded.history_size, \
                 anonymous_posts = excluded.anonymous_posts",
                &[
                    &settings.room,
                    &slow,
                    &settings.policy.as_str(),
                    &(settings.tokens_after_ms as i64),
                    &history,
                    &settings.anonymous_posts,
                ],
            )
            .await
            .map(drop)
        })
    }

    fn room_settings(&self) -> BoxFut<'_, Result<Vec<StoredRoomSettings>, StoreError>> {
        Box::pin(async move {
            let rows = self.query(&format!("SELECT {} FROM room_settings", sql::ROOM_SETTINGS_COLUMNS), &[]).await?;
            rows.iter().map(|r| sql::room_settings_from(r)).collect()
        })
    }

    fn room_sanctions(&self) -> BoxFut<'_, Result<Vec<RoomSanction>, StoreError>> {
        Box::pin(async move {
            let rows = self.query(&format!("SELECT {} FROM room_sanctions", sql::SANCTION_COLUMNS), &[]).await?;
            rows.iter().map(|r| sql::sanction_from(r)).collect()
        })
    }

    fn put_file(&self, file: FileRecord) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move { sql::put_file(&mut Pg(&*self.client().await?), &file).await.map(drop) })
    }

    fn file<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<Option<FileRecord>, StoreError>> {
        Box::pin(async move { sql::load_file(&mut Pg(&*self.client().await?), id).await })
    }

    fn delete_file<'a>(&'a self, id: &'a str) -> BoxFut<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(backend)?;
            let removed = sql::delete_file(&mut Pg(&tx), id).await?;
            tx.commit().await.map_err(backend)?;
            Ok(removed)
        })
    }

    fn files_usage(&self, owner: UserId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move { sql::files_usage(&mut Pg(&*self.client().await?), owner).await })
    }

    fn expired_uploads(&self, now_ms: u64, limit: u32) -> BoxFut<'_, Result<Vec<FileRecord>, StoreError>> {
        Box::pin(async move { sql::expired_uploads(&mut Pg(&*self.client().await?), now_ms, limit).await })
    }

    fn content_used<'a>(&'a self, sha256: &'a str) -> BoxFut<'a, Result<bool, StoreError>> {
        Box::pin(async move { sql::content_used(&mut Pg(&*self.client().await?), sha256).await })
    }

    fn add_file_ref(&self, file_ref: FileRef) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move { sql::add_file_ref(&mut Pg(&*self.client().await?), &file_ref).await.map(drop) })
    }

    fn file_messages<'a>(&'a self, file_id: &'a str) -> BoxFut<'a, Result<Vec<(ConvId, u64)>, StoreError>> {
        Box::pin(async move { sql::file_messages(&mut Pg(&*self.client().await?), file_id).await })
    }

    fn add_sticker<'a>(&'a self, user: UserId, file_id: &'a str, at: u64) -> BoxFut<'a, Result<bool, StoreError>> {
        Box::pin(async move { sql::add_sticker(&mut Pg(&*self.client().await?), user, file_id, at).await })
    }

    fn remove_sticker<'a>(&'a self, user: UserId, file_id: &'a str) -> BoxFut<'a, Result<bool, StoreError>> {
        Box::pin(async move { sql::remove_sticker(&mut Pg(&*self.client().await?), user, file_id).await })
    }

    fn stickers(&self, user: UserId) -> BoxFut<'_, Result<Vec<super::Sticker>, StoreError>> {
        Box::pin(async move { sql::stickers(&mut Pg(&*self.client().await?), user).await })
    }
}
