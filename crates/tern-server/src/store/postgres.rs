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
use tern_proto::{ConvId, DeviceId, GroupId, Message, MsgId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, NoTls, Row};

use super::im::{
    ConvSummary, Decide, DmPolicy, Effect, GroupRecord, GroupState, JoinPolicy, JoinRequest, MemberRecord, PairState,
    Profile, ProfileUpdate, Relation, RelationRow, Scope, Snapshot, UNREAD_CAP, like_prefix, may_message, parse_role,
    relation_rows, role_str,
};
use super::{
    ApiKeyRecord, AppendTicket, Appended, BoxFut, CommitListener, Committed, ConvPosition, NewMessage, Page,
    SessionCutoff, Store, StoreError, StoreHealth, UserRecord,
};

/// The schema version this build writes; a database at a later version is refused.
const SCHEMA_VERSION: i32 = 1;

/// Conversation ids compare bytewise (`COLLATE "C"`), the same order the lock protocol sorts in.
const SCHEMA_V1: &str = r#"
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    nickname TEXT NOT NULL DEFAULT '',
    avatar TEXT,
    signature TEXT NOT NULL DEFAULT '',
    dm_policy TEXT NOT NULL DEFAULT 'anyone',
    disabled BOOLEAN NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX users_username ON users (lower(username));
CREATE TABLE conversations (
    conv_id TEXT COLLATE "C" PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    last_ts BIGINT NOT NULL
);
CREATE TABLE messages (
    conv_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    msg_id BIGINT NOT NULL,
    sender BIGINT NOT NULL,
    sender_device TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    body BYTEA NOT NULL,
    counted BOOLEAN NOT NULL,
    PRIMARY KEY (conv_id, seq)
);
CREATE UNIQUE INDEX messages_client_id ON messages (sender, client_msg_id);
CREATE TABLE conv_members (
    conv_id TEXT COLLATE "C" NOT NULL,
    user_id BIGINT NOT NULL,
    role TEXT NOT NULL DEFAULT 'member',
    joined_seq BIGINT NOT NULL DEFAULT 1,
    read_seq BIGINT NOT NULL DEFAULT 0,
    muted_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (conv_id, user_id)
);
CREATE INDEX conv_members_user ON conv_members (user_id);
CREATE TABLE groups (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    owner BIGINT NOT NULL,
    join_policy TEXT NOT NULL,
    muted_all BOOLEAN NOT NULL,
    max_members BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    dissolved BOOLEAN NOT NULL
);
CREATE TABLE join_requests (
    group_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    message TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE TABLE relations (
    owner BIGINT NOT NULL,
    peer BIGINT NOT NULL,
    friend BOOLEAN NOT NULL,
    blocked BOOLEAN NOT NULL,
    request_msg TEXT,
    request_ts BIGINT,
    PRIMARY KEY (owner, peer)
);
CREATE INDEX relations_peer ON relations (peer);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    scopes TEXT NOT NULL,
    rate_per_sec DOUBLE PRECISION NOT NULL,
    burst BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE rooms (
    room TEXT PRIMARY KEY,
    area TEXT NOT NULL
);
CREATE TABLE session_cutoffs (
    user_id BIGINT NOT NULL,
    device_id TEXT NOT NULL,
    after_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
"#;

/// Held (session advisory lock) while a node migrates, so nodes starting together migrate once.
const MIGRATION_LOCK: i64 = 0x7465_726e_6d69_6772; // "ternmigr"

/// How often a batch of appends is retried after a deadlock or a race before it is refused.
const BATCH_ATTEMPTS: u32 = 5;

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

enum Write {
    Append { msg: NewMessage, reply: oneshot::Sender<Result<Appended, StoreError>> },
    Transact { scope: Scope, decide: Decide, reply: oneshot::Sender<Result<(), StoreError>> },
}

/// An engine error as the request sees it: the database out of resources (class 53: disk
/// full, out of memory, too many connections), failing (class 58: I/O) or unreachable is
/// `Unavailable` (retry later, `/healthz` says so); anything else is this request's failure.
fn backend(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if matches!(&db.code().code()[..2], "53" | "58") => {
            StoreError::Unavailable(format!("{}: {}", db.code().code(), db.message()))
        }
        Some(db) => StoreError::Backend(format!("{}: {}", db.code().code(), db.message())),
        None if e.is_closed() => StoreError::Unavailable(format!("database connection lost: {e}")),
        None => StoreError::Backend(e.to_string()),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("no database connection: {e}"))
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A 64-bit FNV-1a of the conversation id: the advisory lock key. Spelled out rather than taken
/// from `std::hash` because every node, of any build, must compute the same key.
fn conv_lock_key(conv: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in conv.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Takes the conversation locks, in the global order, skipping those already held.
async fn lock_convs(
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
    pub async fn open(opts: &PgOptions, listener: Arc<dyn CommitListener>) -> Result<Self, StoreError> {
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
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(5)))
            .wait_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        migrate(&pool, opts.schema.as_deref()).await?;
        // Bounded: a full queue makes `append` wait, which pauses reading on the sending
        // connections — backpressure reaches the clients instead of memory growing.
        let (tx, rx) = mpsc::channel(opts.max_batch * 8);
        let health = Arc::new(StoreHealth::default());
        let writer = Writer { pool: pool.clone(), listener, health: Arc::clone(&health) };
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

async fn migrate(pool: &Pool, schema: Option<&str>) -> Result<(), StoreError> {
    let mut c = pool.get().await.map_err(pool_error)?;
    // The lock comes first: `CREATE SCHEMA IF NOT EXISTS` itself races between nodes starting
    // together (both see no schema; one fails on the catalog's unique index).
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(backend)?;
    let result = async {
        if let Some(schema) = schema {
            c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.map_err(backend)?;
        }
        let tx = c.transaction().await.map_err(backend)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS tern_schema (version INTEGER NOT NULL)").await.map_err(backend)?;
        let version: i32 = match tx.query_opt("SELECT version FROM tern_schema", &[]).await.map_err(backend)? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO tern_schema (version) VALUES (0)", &[]).await.map_err(backend)?;
                0
            }
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "database has schema version {version}, this build knows up to {SCHEMA_VERSION}"
            )));
        }
        if version < 1 {
            tx.batch_execute(SCHEMA_V1).await.map_err(backend)?;
        }
        tx.execute("UPDATE tern_schema SET version = $1", &[&SCHEMA_VERSION]).await.map_err(backend)?;
        tx.commit().await.map_err(backend)
    }
    .await;
    let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.map_err(backend);
    result.and(unlocked.map(drop))
}

struct Writer {
    pool: Pool,
    listener: Arc<dyn CommitListener>,
    health: Arc<StoreHealth>,
}

/// An append waiting in a batch.
struct Pending {
    msg: NewMessage,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Write>, max_batch: usize) {
        let mut batch: Vec<Write> = Vec::with_capacity(max_batch);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            // Consecutive appends go in one transaction; an IM operation runs on its own, in
            // queue order.
            let mut appends = Vec::new();
            for write in batch.drain(..) {
                match write {
                    Write::Append { msg, reply } => appends.push(Pending { msg, reply }),
                    Write::Transact { scope, decide, reply } => {
                        self.append_batch(std::mem::take(&mut appends)).await;
                        let result = self.transact(scope, decide).await;
                        self.note_health(result.as_ref().err().into_iter());
                        let _ = reply.send(result);
                    }
                }
            }
            self.append_batch(appends).await;
        }
        tracing::debug!("postgres store writer stopped");
    }

    /// Commits a batch of appends. If it fails for a reason other than a retryable race, it is
    /// retried message by message, so one message the database refuses fails only its own send.
    async fn append_batch(&self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let msgs: Vec<NewMessage> = batch.iter().map(|p| p.msg.clone()).collect();
        match self.commit_appends(&msgs).await {
            Ok(results) => self.answer(batch, results),
            Err(e) if batch.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, messages = batch.len(), "append batch failed; retrying one by one");
                for (pending, msg) in batch.into_iter().zip(msgs) {
                    let result = match self.commit_appends(std::slice::from_ref(&msg)).await {
                        Ok(mut results) => {
                            results.pop().unwrap_or_else(|| Err(StoreError::Backend("no result".into())))
                        }
                        Err(e) => Err(e),
                    };
                    self.answer(vec![pending], vec![result]);
                }
            }
            Err(e) => {
                let results = batch.iter().map(|_| Err(e.clone())).collect();
                self.answer(batch, results);
            }
        }
    }

    /// Sends each pending append its result and records the store's health.
    fn answer(&self, batch: Vec<Pending>, results: Vec<Result<Appended, StoreError>>) {
        self.note_health(results.iter().filter_map(|r| r.as_ref().err()));
        for (p, r) in batch.into_iter().zip(results) {
            let _ = p.reply.send(r);
        }
    }

    fn note_health<'a>(&self, errors: impl Iterator<Item = &'a StoreError>) {
        let mut unavailable = None;
        for e in errors {
            if let StoreError::Unavailable(why) = e {
                unavailable = Some(why.as_str());
            }
        }
        match unavailable {
            Some(why) => self.health.failed(why),
            None => self.health.ok(),
        }
    }

    /// Commits appends in one transaction, retrying races; reports the commits to the listener.
    async fn commit_appends(&self, msgs: &[NewMessage]) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let (results, committed) = loop {
            attempt += 1;
            match self.try_append_batch(msgs).await {
                Err(BatchError::Retry(why)) if attempt < BATCH_ATTEMPTS => {
                    tracing::debug!(%why, attempt, "append batch retried");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                Err(BatchError::Retry(why)) => return Err(StoreError::Backend(why)),
                Err(BatchError::Failed(e)) => {
                    tracing::error!(error = %e, messages = msgs.len(), "append batch failed");
                    return Err(e);
                }
                Ok(done) => break done,
            }
        };
        let m = &*crate::telemetry::M;
        crate::telemetry::observe(&m.commit, started.elapsed());
        m.batch.record(committed.len() as f64);
        m.stored.increment(committed.len() as u64);
        if !committed.is_empty() {
            self.listener.committed(&committed);
        }
        Ok(results)
    }

    /// One attempt at a batch: a fixed number of round trips whatever its size.
    async fn try_append_batch(&self, msgs: &[NewMessage]) -> Result<BatchDone, BatchError> {
        let mut client = self.pool.get().await.map_err(|e| BatchError::Failed(pool_error(e)))?;
        let tx = client.transaction().await?;
        let mut held = BTreeSet::new();
        lock_convs(&tx, &mut held, msgs.iter().map(|m| m.conv_id.to_string())).await?;
        let mut seqs = Seqs::load(&tx, msgs.iter().map(|m| m.conv_id)).await?;

        // Who may send: 1:1 recipients' policies and blocks in one query, groups one each.
        let pairs: Vec<(UserId, UserId)> = msgs
            .iter()
            .filter_map(|m| match m.conv_id {
                ConvId::Direct(..) => m.conv_id.peer_of(m.from).filter(|to| *to != m.from).map(|to| (to, m.from)),
                _ => None,
            })
            .collect();
        let dm = load_dm_rules(&tx, &pairs).await?;
        let mut groups: HashMap<GroupId, Option<GroupState>> = HashMap::new();
        for g in msgs.iter().filter_map(|m| m.conv_id.group()) {
            if let std::collections::hash_map::Entry::Vacant(v) = groups.entry(g) {
                v.insert(load_group(&tx, g, 0).await?);
            }
        }

        // Resends: originals stored earlier (by any node).
        let senders: Vec<i64> = msgs.iter().map(|m| m.from.0 as i64).collect();
        let keys: Vec<&str> = msgs.iter().map(|m| m.client_msg_id.as_str()).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE (sender, client_msg_id) IN \
                     (SELECT * FROM unnest($1::bigint[], $2::text[]))"
                ),
                &[&senders, &keys],
            )
            .await?;
        let mut originals: HashMap<(UserId, String), Message> = HashMap::new();
        for row in rows {
            let m = row_to_message(&row).map_err(BatchError::Failed)?;
            originals.insert((m.from, m.client_msg_id.clone()), m);
        }

        let now = crate::clock::now_ms();
        let mut results: Vec<Result<Appended, StoreError>> = Vec::with_capacity(msgs.len());
        let mut committed = Vec::new();
        let mut fresh = NewRows::default();
        // Earlier messages of this batch, by (sender, key): a resend within one batch.
        let mut in_batch: HashMap<(UserId, &str), usize> = HashMap::new();
        for (i, msg) in msgs.iter().enumerate() {
            let allowed = match msg.conv_id {
                ConvId::Direct(..) => match msg.conv_id.peer_of(msg.from).filter(|to| *to != msg.from) {
                    None => Ok(()),
                    Some(to) => match dm.get(&(to, msg.from)) {
                        None => Err(crate::error::Error::not_found(format!("user {to} does not exist"))),
                        Some((policy, relation)) => may_message(*policy, relation),
                    },
                },
                ConvId::Group(g) => match groups.get(&g).and_then(Option::as_ref) {
                    Some(group) => group.may_send(msg.from, now),
                    None => Err(crate::error::Error::not_found("conversation not found")),
                },
                ConvId::User(_) => Ok(()),
            };
            if let Err(e) = allowed {
                results.push(Err(StoreError::Denied(e)));
                continue;
            }
            let original = originals.get(&(msg.from, msg.client_msg_id.clone())).cloned().or_else(|| {
                in_batch.get(&(msg.from, msg.client_msg_id.as_str())).and_then(|&j| match &results[j] {
                    Ok(a) => Some(a.message.clone()),
                    Err(_) => None,
                })
            });
            if let Some(original) = original {
                results.push(if original.conv_id == msg.conv_id {
                    Ok(Appended { message: original, duplicate: true })
                } else {
                    Err(StoreError::Conflict(format!(
                        "client_msg_id {:?} was already used for another conversation",
                        msg.client_msg_id
                    )))
                });
                continue;
            }
            in_batch.insert((msg.from, msg.client_msg_id.as_str()), i);
            let seq = seqs.next(msg.conv_id, msg.ts);
            let recipients: Arc<[UserId]> = match msg.conv_id {
                ConvId::Group(g) => match groups.get(&g).and_then(Option::as_ref) {
                    Some(group) => group.members.keys().copied().collect(),
                    None => Arc::from(Vec::new()),
                },
                conv => conv.participants().collect(),
            };
            let message = message_of(msg, seq);
            fresh.push(msg, seq);
            committed.push(Committed { message: message.clone(), from_device: msg.from_device.clone(), recipients });
            results.push(Ok(Appended { message, duplicate: false }));
        }
        let expected = fresh.len();
        let inserted = fresh.insert(&tx).await?;
        if inserted != expected {
            // A key was stored by another node between our check and our insert (in another
            // conversation: ours is locked). The retry finds it among the originals.
            return Err(BatchError::Retry(format!("{} of {expected} messages raced a resend", expected - inserted)));
        }
        seqs.save(&tx).await?;
        tx.commit().await?;
        Ok((results, committed))
    }

    /// One IM operation in its own transaction: lock its scope, load, decide, lock what the
    /// effects append to, apply, commit.
    async fn transact(&self, scope: Scope, decide: Decide) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(backend)?;
        let mut held = BTreeSet::new();
        let mut scope_convs = Vec::new();
        scope_convs.extend(scope.group.map(ConvId::Group));
        scope_convs.extend(scope.pair.map(|(a, b)| ConvId::direct(a, b)));
        scope_convs.extend(scope.message.map(|(c, _)| c));
        scope_convs.extend(scope.member.map(|(c, _)| c));
        lock_convs(&tx, &mut held, scope_convs.iter().map(ConvId::to_string)).await.map_err(backend)?;
        let mut seqs = Seqs::load(&tx, scope_convs.iter().copied()).await.map_err(backend)?;
        let snapshot = snapshot(&tx, &scope, &seqs).await?;
        let effects = decide(&snapshot).map_err(StoreError::Denied)?;
        let appends: Vec<ConvId> =
            effects.iter().filter_map(|e| if let Effect::Append(m) = e { Some(m.conv_id) } else { None }).collect();
        lock_convs(&tx, &mut held, appends.iter().map(ConvId::to_string)).await.map_err(backend)?;
        seqs.load_more(&tx, appends.iter().copied()).await.map_err(backend)?;
        let mut committed = Vec::new();
        for effect in effects {
            apply_effect(&tx, effect, &mut seqs, &mut committed).await?;
        }
        seqs.save(&tx).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        if !committed.is_empty() {
            self.listener.committed(&committed);
        }
        Ok(())
    }
}

type BatchDone = (Vec<Result<Appended, StoreError>>, Vec<Committed>);

enum BatchError {
    /// Worth another attempt: a deadlock, a serialization failure, a raced resend.
    Retry(String),
    Failed(StoreError),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE => {
                BatchError::Retry(e.to_string())
            }
            _ => BatchError::Failed(backend(e)),
        }
    }
}

fn message_of(msg: &NewMessage, seq: u64) -> Message {
    Message {
        msg_id: msg.msg_id,
        conv_id: msg.conv_id,
        seq,
        from: msg.from,
        client_msg_id: msg.client_msg_id.clone(),
        ts: msg.ts,
        body: msg.body.clone(),
    }
}

/// Last seqs of the locked conversations, advanced in memory and written back once.
#[derive(Default)]
struct Seqs {
    /// conv → (last seq, its time, the seq stored before this transaction).
    convs: HashMap<ConvId, (u64, u64, u64)>,
}

impl Seqs {
    async fn load(
        tx: &tokio_postgres::Transaction<'_>,
        convs: impl IntoIterator<Item = ConvId>,
    ) -> Result<Self, tokio_postgres::Error> {
        let mut seqs = Seqs::default();
        seqs.load_more(tx, convs).await?;
        Ok(seqs)
    }

    async fn load_more(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        convs: impl IntoIterator<Item = ConvId>,
    ) -> Result<(), tokio_postgres::Error> {
        let wanted: BTreeSet<ConvId> = convs.into_iter().filter(|c| !self.convs.contains_key(c)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = wanted.iter().map(ConvId::to_string).collect();
        let rows =
            tx.query("SELECT conv_id, last_seq, last_ts FROM conversations WHERE conv_id = ANY($1)", &[&ids]).await?;
        for c in &wanted {
            self.convs.insert(*c, (0, 0, 0));
        }
        for row in rows {
            if let Ok(conv) = row.get::<_, &str>(0).parse::<ConvId>() {
                let (seq, ts) = (row.get::<_, i64>(1) as u64, row.get::<_, i64>(2) as u64);
                self.convs.insert(conv, (seq, ts, seq));
            }
        }
        Ok(())
    }

    fn last(&self, conv: ConvId) -> u64 {
        self.convs.get(&conv).map_or(0, |s| s.0)
    }

    /// The next seq of a locked conversation.
    fn next(&mut self, conv: ConvId, ts: u64) -> u64 {
        let entry = self.convs.entry(conv).or_insert((0, 0, 0));
        entry.0 += 1;
        entry.1 = ts;
        entry.0
    }

    /// Writes back every advanced conversation; a conversation's first message makes its
    /// participants members (groups add theirs explicitly).
    async fn save(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        let mut ids = Vec::new();
        let mut last = Vec::new();
        let mut ts = Vec::new();
        let mut member_conv = Vec::new();
        let mut member_user = Vec::new();
        for (conv, (seq, t, before)) in &self.convs {
            if seq == before {
                continue;
            }
            ids.push(conv.to_string());
            last.push(*seq as i64);
            ts.push(*t as i64);
            if *before == 0 {
                for u in conv.participants() {
                    member_conv.push(conv.to_string());
                    member_user.push(u.0 as i64);
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO conversations (conv_id, last_seq, last_ts) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
             ON CONFLICT (conv_id) DO UPDATE SET last_seq = excluded.last_seq, last_ts = excluded.last_ts",
            &[&ids, &last, &ts],
        )
        .await?;
        if !member_conv.is_empty() {
            tx.execute(
                "INSERT INTO conv_members (conv_id, user_id) SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT DO NOTHING",
                &[&member_conv, &member_user],
            )
            .await?;
        }
        Ok(())
    }
}

/// New message rows, inserted with one statement.
#[derive(Default)]
struct NewRows {
    conv: Vec<String>,
    seq: Vec<i64>,
    msg_id: Vec<i64>,
    sender: Vec<i64>,
    device: Vec<String>,
    key: Vec<String>,
    ts: Vec<i64>,
    body: Vec<Vec<u8>>,
    counted: Vec<bool>,
}

impl NewRows {
    fn push(&mut self, msg: &NewMessage, seq: u64) {
        self.conv.push(msg.conv_id.to_string());
        self.seq.push(seq as i64);
        self.msg_id.push(msg.msg_id.0 as i64);
        self.sender.push(msg.from.0 as i64);
        self.device.push(msg.from_device.0.clone());
        self.key.push(msg.client_msg_id.clone());
        self.ts.push(msg.ts as i64);
        self.body.push(msg.body_json.to_vec());
        self.counted.push(msg.body.is_content());
    }

    fn len(&self) -> usize {
        self.seq.len()
    }

    /// Inserts the rows; how many were new (a row whose key exists is skipped).
    async fn insert(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<usize, tokio_postgres::Error> {
        if self.seq.is_empty() {
            return Ok(0);
        }
        let n = tx
            .execute(
                "INSERT INTO messages (conv_id, seq, msg_id, sender, sender_device, client_msg_id, ts, body, counted) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], \
                 $7::bigint[], $8::bytea[], $9::boolean[]) ON CONFLICT (sender, client_msg_id) DO NOTHING",
                &[
                    &self.conv,
                    &self.seq,
                    &self.msg_id,
                    &self.sender,
                    &self.device,
                    &self.key,
                    &self.ts,
                    &self.body,
                    &self.counted,
                ],
            )
            .await?;
        Ok(n as usize)
    }
}

/// For each (recipient, sender): the recipient's message policy and relation towards the
/// sender. A recipient that does not exist is absent.
async fn load_dm_rules(
    tx: &tokio_postgres::Transaction<'_>,
    pairs: &[(UserId, UserId)],
) -> Result<HashMap<(UserId, UserId), (DmPolicy, Relation)>, tokio_postgres::Error> {
    let mut out = HashMap::new();
    if pairs.is_empty() {
        return Ok(out);
    }
    let to: Vec<i64> = pairs.iter().map(|p| p.0.0 as i64).collect();
    let from: Vec<i64> = pairs.iter().map(|p| p.1.0 as i64).collect();
    let rows = tx
        .query(
            "SELECT DISTINCT q.to_id, q.from_id, u.dm_policy, r.friend, r.blocked, r.request_msg, r.request_ts \
             FROM unnest($1::bigint[], $2::bigint[]) AS q(to_id, from_id) JOIN users u ON u.id = q.to_id \
             LEFT JOIN relations r ON r.owner = q.to_id AND r.peer = q.from_id",
            &[&to, &from],
        )
        .await?;
    for row in rows {
        let key = (UserId(row.get::<_, i64>(0) as u64), UserId(row.get::<_, i64>(1) as u64));
        let relation = relation_at(&row, 3);
        out.insert(key, (DmPolicy::parse(row.get(2)), relation));
    }
    Ok(out)
}

/// A relation from columns `friend, blocked, request_msg, request_ts` starting at `at` (all
/// NULL from an outer join: no relation).
fn relation_at(row: &Row, at: usize) -> Relation {
    let msg: Option<String> = row.get(at + 2);
    let ts: Option<i64> = row.get(at + 3);
    Relation {
        friend: row.get::<_, Option<bool>>(at).unwrap_or(false),
        blocked: row.get::<_, Option<bool>>(at + 1).unwrap_or(false),
        requested: msg.map(|m| (m, ts.unwrap_or(0) as u64)),
    }
}

async fn snapshot(tx: &tokio_postgres::Transaction<'_>, scope: &Scope, seqs: &Seqs) -> Result<Snapshot, StoreError> {
    let mut snap = Snapshot::default();
    if let Some(g) = scope.group {
        snap.group = load_group(tx, g, seqs.last(ConvId::Group(g))).await.map_err(|e| match e {
            BatchError::Retry(why) => StoreError::Backend(why),
            BatchError::Failed(e) => e,
        })?;
    }
    if let Some((a, b)) = scope.pair {
        snap.pair = Some(PairState {
            a,
            b,
            b_profile: load_profile(tx, b).await?,
            ab: load_relation(tx, a, b).await?,
            ba: load_relation(tx, b, a).await?,
        });
    }
    if let Some((conv, seq)) = scope.message {
        snap.message = message_at(tx, conv, seq).await?;
    }
    if let Some((conv, user)) = scope.member {
        snap.member = load_member(tx, conv, user).await?;
        snap.member_conv_last_seq = seqs.last(conv);
    }
    Ok(snap)
}

async fn apply_effect(
    tx: &tokio_postgres::Transaction<'_>,
    effect: Effect,
    seqs: &mut Seqs,
    committed: &mut Vec<Committed>,
) -> Result<(), StoreError> {
    match effect {
        Effect::PutGroup(info) => {
            tx.execute(
                "INSERT INTO groups (id, name, owner, join_policy, muted_all, max_members, created_at, dissolved) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 owner = excluded.owner, join_policy = excluded.join_policy, muted_all = excluded.muted_all, \
                 max_members = excluded.max_members, dissolved = excluded.dissolved",
                &[
                    &(info.id.0 as i64),
                    &info.name,
                    &(info.owner.0 as i64),
                    &info.join_policy.as_str(),
                    &info.muted_all,
                    &i64::from(info.max_members),
                    &(info.created_at as i64),
                    &info.dissolved,
                ],
            )
            .await
            .map_err(backend)?;
        }
        Effect::PutMember(g, member) => {
            tx.execute(
                "INSERT INTO conv_members (conv_id, user_id, role, joined_seq, read_seq, muted_until) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conv_id, user_id) DO UPDATE SET role = excluded.role, \
                 joined_seq = excluded.joined_seq, muted_until = excluded.muted_until",
                &[
                    &ConvId::Group(g).to_string(),
                    &(member.user.0 as i64),
                    &role_str(member.role),
                    &(member.joined_seq as i64),
                    &(member.read_seq as i64),
                    &(member.muted_until as i64),
                ],
            )
            .await
            .map_err(backend)?;
        }
        Effect::RemoveMember(g, user) => {
            tx.execute(
                "DELETE FROM conv_members WHERE conv_id = $1 AND user_id = $2",
                &[&ConvId::Group(g).to_string(), &(user.0 as i64)],
            )
            .await
            .map_err(backend)?;
        }
        Effect::PutJoinRequest(g, req) => {
            tx.execute(
                "INSERT INTO join_requests (group_id, user_id, message, ts) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (group_id, user_id) DO UPDATE SET message = excluded.message, ts = excluded.ts",
                &[&(g.0 as i64), &(req.user.0 as i64), &req.message, &(req.ts as i64)],
            )
            .await
            .map_err(backend)?;
        }
        Effect::RemoveJoinRequest(g, user) => {
            tx.execute(
                "DELETE FROM join_requests WHERE group_id = $1 AND user_id = $2",
                &[&(g.0 as i64), &(user.0 as i64)],
            )
            .await
            .map_err(backend)?;
        }
        Effect::PutRelation { owner, peer, relation } => {
            if relation == Relation::default() {
                tx.execute(
                    "DELETE FROM relations WHERE owner = $1 AND peer = $2",
                    &[&(owner.0 as i64), &(peer.0 as i64)],
                )
                .await
                .map_err(backend)?;
            } else {
                let (msg, ts) = match relation.requested {
                    Some((m, ts)) => (Some(m), Some(ts as i64)),
                    None => (None, None),
                };
                tx.execute(
                    "INSERT INTO relations (owner, peer, friend, blocked, request_msg, request_ts) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (owner, peer) DO UPDATE SET \
                     friend = excluded.friend, blocked = excluded.blocked, request_msg = excluded.request_msg, \
                     request_ts = excluded.request_ts",
                    &[&(owner.0 as i64), &(peer.0 as i64), &relation.friend, &relation.blocked, &msg, &ts],
                )
                .await
                .map_err(backend)?;
            }
        }
        Effect::SetRead { conv, user, seq } => {
            tx.execute(
                "INSERT INTO conv_members (conv_id, user_id, read_seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (conv_id, user_id) DO UPDATE SET read_seq = GREATEST(conv_members.read_seq, excluded.read_seq)",
                &[&conv.to_string(), &(user.0 as i64), &(seq as i64)],
            )
            .await
            .map_err(backend)?;
        }
        Effect::Replace { conv, seq, body } => {
            let json = super::encode_body(&body);
            tx.execute(
                "UPDATE messages SET body = $3, counted = $4 WHERE conv_id = $1 AND seq = $2",
                &[&conv.to_string(), &(seq as i64), &&json[..], &body.is_content()],
            )
            .await
            .map_err(backend)?;
        }
        Effect::Append(msg) => {
            // Effects come from rules that already checked the operation: a key stored before
            // would be a bug, so it fails the operation (the unique index refuses it).
            let seq = seqs.next(msg.conv_id, msg.ts);
            let mut row = NewRows::default();
            row.push(&msg, seq);
            if row.insert(tx).await.map_err(backend)? != 1 {
                return Err(StoreError::Conflict(format!("client_msg_id {:?} is taken", msg.client_msg_id)));
            }
            // The members as they are now, this transaction's changes included.
            let recipients: Arc<[UserId]> = match msg.conv_id {
                ConvId::Group(g) => tx
                    .query("SELECT user_id FROM conv_members WHERE conv_id = $1", &[&ConvId::Group(g).to_string()])
                    .await
                    .map_err(backend)?
                    .iter()
                    .map(|r| UserId(r.get::<_, i64>(0) as u64))
                    .collect(),
                conv => conv.participants().collect(),
            };
            committed.push(Committed { message: message_of(&msg, seq), from_device: msg.from_device, recipients });
        }
    }
    Ok(())
}

const MEMBER_COLUMNS: &str = "user_id, role, joined_seq, read_seq, muted_until";

fn member_from_row(r: &Row) -> MemberRecord {
    MemberRecord {
        user: UserId(r.get::<_, i64>(0) as u64),
        role: parse_role(r.get(1)),
        joined_seq: r.get::<_, i64>(2) as u64,
        read_seq: r.get::<_, i64>(3) as u64,
        muted_until: r.get::<_, i64>(4) as u64,
    }
}

async fn load_member<C: GenericClient + Sync>(
    c: &C,
    conv: ConvId,
    user: UserId,
) -> Result<Option<MemberRecord>, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {MEMBER_COLUMNS} FROM conv_members WHERE conv_id = $1 AND user_id = $2"),
            &[&conv.to_string(), &(user.0 as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(row.as_ref().map(member_from_row))
}

async fn load_group(
    tx: &tokio_postgres::Transaction<'_>,
    g: GroupId,
    last_seq: u64,
) -> Result<Option<GroupState>, BatchError> {
    let Some(r) = tx
        .query_opt(
            "SELECT id, name, owner, join_policy, muted_all, max_members, created_at, dissolved FROM groups WHERE id = $1",
            &[&(g.0 as i64)],
        )
        .await?
    else {
        return Ok(None);
    };
    let info = GroupRecord {
        id: GroupId(r.get::<_, i64>(0) as u64),
        name: r.get(1),
        owner: UserId(r.get::<_, i64>(2) as u64),
        join_policy: JoinPolicy::parse(r.get(3)),
        muted_all: r.get(4),
        max_members: r.get::<_, i64>(5).clamp(0, i64::from(u32::MAX)) as u32,
        created_at: r.get::<_, i64>(6) as u64,
        dissolved: r.get(7),
    };
    let members = tx
        .query(
            &format!("SELECT {MEMBER_COLUMNS} FROM conv_members WHERE conv_id = $1"),
            &[&ConvId::Group(g).to_string()],
        )
        .await?
        .iter()
        .map(|r| {
            let m = member_from_row(r);
            (m.user, m)
        })
        .collect();
    let requests = tx
        .query("SELECT user_id, message, ts FROM join_requests WHERE group_id = $1", &[&(g.0 as i64)])
        .await?
        .iter()
        .map(|r| {
            let req = JoinRequest {
                user: UserId(r.get::<_, i64>(0) as u64),
                message: r.get(1),
                ts: r.get::<_, i64>(2) as u64,
            };
            (req.user, req)
        })
        .collect();
    Ok(Some(GroupState { info, members, requests, last_seq }))
}

const PROFILE_COLUMNS: &str = "id, username, nickname, avatar, signature, dm_policy";

fn profile_from_row(r: &Row) -> Profile {
    Profile {
        user_id: UserId(r.get::<_, i64>(0) as u64),
        username: r.get(1),
        nickname: r.get(2),
        avatar: r.get(3),
        signature: r.get(4),
        dm_policy: DmPolicy::parse(r.get(5)),
    }
}

async fn load_profile<C: GenericClient + Sync>(c: &C, user: UserId) -> Result<Option<Profile>, StoreError> {
    let row = c
        .query_opt(&format!("SELECT {PROFILE_COLUMNS} FROM users WHERE id = $1"), &[&(user.0 as i64)])
        .await
        .map_err(backend)?;
    Ok(row.as_ref().map(profile_from_row))
}

async fn load_relation<C: GenericClient + Sync>(c: &C, owner: UserId, peer: UserId) -> Result<Relation, StoreError> {
    let row = c
        .query_opt(
            "SELECT friend, blocked, request_msg, request_ts FROM relations WHERE owner = $1 AND peer = $2",
            &[&(owner.0 as i64), &(peer.0 as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(row.map(|r| relation_at(&r, 0)).unwrap_or_default())
}

const MESSAGE_COLUMNS: &str = "conv_id, seq, msg_id, sender, client_msg_id, ts, body";

fn row_to_message(row: &Row) -> Result<Message, StoreError> {
    message_from(row, 0)
}

/// A message from the [`MESSAGE_COLUMNS`] starting at column `at`.
fn message_from(row: &Row, at: usize) -> Result<Message, StoreError> {
    let conv_id = row
        .get::<_, &str>(at)
        .parse::<ConvId>()
        .map_err(|e| StoreError::Backend(format!("stored conversation id: {e}")))?;
    let seq = row.get::<_, i64>(at + 1) as u64;
    let body = super::decode_body(row.get::<_, &[u8]>(at + 6), conv_id, seq);
    Ok(Message {
        conv_id,
        seq,
        msg_id: MsgId(row.get::<_, i64>(at + 2) as u64),
        from: UserId(row.get::<_, i64>(at + 3) as u64),
        client_msg_id: row.get(at + 4),
        ts: row.get::<_, i64>(at + 5) as u64,
        body,
    })
}

async fn message_at<C: GenericClient + Sync>(c: &C, conv: ConvId, seq: u64) -> Result<Option<Message>, StoreError> {
    let row = c
        .query_opt(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv_id = $1 AND seq = $2"),
            &[&conv.to_string(), &(seq.min(i64::MAX as u64) as i64)],
        )
        .await
        .map_err(backend)?;
    row.as_ref().map(row_to_message).transpose()
}

fn user_from_row(row: &Row) -> UserRecord {
    UserRecord {
        id: UserId(row.get::<_, i64>(0) as u64),
        username: row.get(1),
        password_hash: row.get(2),
        disabled: row.get(3),
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
                .query_opt(
                    "SELECT id, username, password_hash, disabled FROM users WHERE lower(username) = lower($1)",
                    &[&username],
                )
                .await?;
            Ok(row.as_ref().map(user_from_row))
        })
    }

    fn user_by_id(&self, id: UserId) -> BoxFut<'_, Result<Option<UserRecord>, StoreError>> {
        Box::pin(async move {
            let row = self
                .query_opt("SELECT id, username, password_hash, disabled FROM users WHERE id = $1", &[&(id.0 as i64)])
                .await?;
            Ok(row.as_ref().map(user_from_row))
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
        Box::pin(async move {
            let (sql, bound) = match page {
                Page::After(seq) => (
                    format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
                    ),
                    seq,
                ),
                Page::Before(seq) => (
                    format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                    ),
                    seq,
                ),
            };
            let rows =
                self.query(&sql, &[&conv.to_string(), &(bound.min(i64::MAX as u64) as i64), &i64::from(limit)]).await?;
            rows.iter().map(row_to_message).collect()
        })
    }

    fn last_seq(&self, conv: ConvId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let row =
                self.query_opt("SELECT last_seq FROM conversations WHERE conv_id = $1", &[&conv.to_string()]).await?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
        })
    }

    fn conversations_of(&self, user: UserId) -> BoxFut<'_, Result<Vec<ConvPosition>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT m.conv_id, c.last_seq, m.joined_seq FROM conv_members m \
                     JOIN conversations c ON c.conv_id = m.conv_id WHERE m.user_id = $1",
                    &[&(user.0 as i64)],
                )
                .await?;
            // Rows are written only from parsed ids; an unparsable one is skipped, not fatal.
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let conv = r.get::<_, &str>(0).parse().ok()?;
                    Some((conv, r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64))
                })
                .collect())
        })
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
                rows.iter().map(profile_from_row).map(|p| (p.user_id, p)).collect();
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
            Ok(rows.iter().map(profile_from_row).collect())
        })
    }

    fn update_profile(&self, user: UserId, update: ProfileUpdate) -> BoxFut<'_, Result<(), StoreError>> {
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
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT owner, peer, friend, blocked, request_msg, request_ts FROM relations WHERE owner = $1 \
                     UNION ALL SELECT owner, peer, friend, blocked, request_msg, request_ts FROM relations WHERE peer = $1",
                    &[&(user.0 as i64)],
                )
                .await?;
            let rows = rows
                .iter()
                .map(|r| (UserId(r.get::<_, i64>(0) as u64), UserId(r.get::<_, i64>(1) as u64), relation_at(r, 2)));
            Ok(relation_rows(user, rows))
        })
    }

    fn group(&self, group: GroupId) -> BoxFut<'_, Result<Option<GroupState>, StoreError>> {
        Box::pin(async move {
            let mut c = self.client().await?;
            // One snapshot for the group, its members and its last seq.
            let tx = c.build_transaction().read_only(true).start().await.map_err(backend)?;
            let last = tx
                .query_opt(
                    "SELECT last_seq FROM conversations WHERE conv_id = $1",
                    &[&ConvId::Group(group).to_string()],
                )
                .await
                .map_err(backend)?
                .map_or(0, |r| r.get::<_, i64>(0) as u64);
            let state = load_group(&tx, group, last).await.map_err(|e| match e {
                BatchError::Retry(why) => StoreError::Backend(why),
                BatchError::Failed(e) => e,
            })?;
            tx.commit().await.map_err(backend)?;
            Ok(state)
        })
    }

    fn conversation_list(&self, user: UserId) -> BoxFut<'_, Result<Vec<ConvSummary>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .query(
                    &format!(
                        "SELECT m.conv_id, m.read_seq, c.last_seq, c.last_ts, \
                         (SELECT COUNT(*) FROM (SELECT 1 FROM messages x WHERE x.conv_id = m.conv_id AND x.seq > m.read_seq \
                            AND x.counted AND x.sender <> $1 LIMIT {UNREAD_CAP}) u), \
                         (SELECT p.read_seq FROM conv_members p WHERE m.conv_id LIKE 'd:%' AND p.conv_id = m.conv_id \
                            AND p.user_id <> $1 LIMIT 1), \
                         CASE WHEN m.conv_id LIKE 'g:%' THEN (SELECT g.name FROM groups g WHERE g.id = substr(m.conv_id, 3)::bigint) END, \
                         lm.conv_id, lm.seq, lm.msg_id, lm.sender, lm.client_msg_id, lm.ts, lm.body \
                         FROM conv_members m JOIN conversations c ON c.conv_id = m.conv_id \
                         LEFT JOIN messages lm ON lm.conv_id = m.conv_id AND lm.seq = c.last_seq \
                         WHERE m.user_id = $1 AND m.conv_id NOT LIKE 'u:%' ORDER BY c.last_ts DESC, c.conv_id"
                    ),
                    &[&(user.0 as i64)],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let Ok(conv_id) = r.get::<_, &str>(0).parse::<ConvId>() else { continue };
                let last_seq = r.get::<_, i64>(2) as u64;
                let peer_read_seq = match conv_id.peer_of(user) {
                    Some(peer) if peer != user => Some(r.get::<_, Option<i64>>(5).unwrap_or(0) as u64),
                    _ => None,
                };
                out.push(ConvSummary {
                    conv_id,
                    last_seq,
                    last_ts: r.get::<_, i64>(3) as u64,
                    last_message: match r.get::<_, Option<&str>>(7) {
                        Some(_) => Some(message_from(r, 7)?),
                        None => None,
                    },
                    read_seq: r.get::<_, i64>(1) as u64,
                    unread: r.get::<_, i64>(4) as u64,
                    peer_read_seq,
                    name: r.get(6),
                });
            }
            Ok(out)
        })
    }

    fn membership(&self, conv: ConvId, user: UserId) -> BoxFut<'_, Result<Option<MemberRecord>, StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            load_member(&**c, conv, user).await
        })
    }

    fn health(&self) -> &StoreHealth {
        &self.health
    }

    fn read_count(&self, conv: ConvId, seq: u64, except: UserId) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    "SELECT COUNT(*) FROM conv_members WHERE conv_id = $1 AND read_seq >= $2 AND joined_seq <= $2 AND user_id <> $3",
                    &[&conv.to_string(), &(seq.min(i64::MAX as u64) as i64), &(except.0 as i64)],
                )
                .await?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, Recorder};

    /// The database to test against (`TERN_TEST_POSTGRES`, e.g.
    /// `postgres://postgres@127.0.0.1:5432/test`). Without it the tests print a notice and pass,
    /// unless `TERN_REQUIRE_POSTGRES` is set (CI sets both).
    fn test_url() -> Option<String> {
        match std::env::var("TERN_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                assert!(
                    std::env::var_os("TERN_REQUIRE_POSTGRES").is_none(),
                    "TERN_REQUIRE_POSTGRES is set but TERN_TEST_POSTGRES is not"
                );
                eprintln!("SKIPPED: set TERN_TEST_POSTGRES=postgres://… to run the PostgreSQL store tests");
                None
            }
        }
    }

    /// Options for a fresh schema of its own (tests run in parallel on one database).
    fn fresh(url: &str) -> PgOptions {
        PgOptions {
            url: url.to_owned(),
            pool_size: 4,
            max_batch: 256,
            schema: Some(format!("tern_test_{:016x}", rand::random::<u64>())),
        }
    }

    async fn drop_schema(url: &str, schema: &str) {
        if let Ok((c, conn)) = tokio_postgres::connect(url, NoTls).await {
            tokio::spawn(conn);
            let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_passes_the_conformance_suite() {
        let Some(url) = test_url() else { return };
        let schemas = parking_lot::Mutex::new(Vec::new());
        conformance::run_all(&mut |listener| {
            let opts = fresh(&url);
            schemas.lock().push(opts.schema.clone().unwrap());
            Box::pin(async move { Arc::new(PostgresStore::open(&opts, listener).await.unwrap()) as Arc<dyn Store> })
        })
        .await;
        for s in schemas.into_inner() {
            drop_schema(&url, &s).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_writing_one_conversation_share_one_gap_free_sequence() {
        let Some(url) = test_url() else { return };
        let opts = fresh(&url);
        // Opened at the same moment, as nodes started together: the schema is created and
        // migrated once, without a race.
        let opened = futures_util::future::join_all((0..3).map(|_| {
            let opts = opts.clone();
            async move {
                let recorder = Arc::new(Recorder::default());
                let store = PostgresStore::open(&opts, recorder.clone()).await.unwrap();
                (Arc::new(store) as Arc<dyn Store>, recorder)
            }
        }))
        .await;
        conformance::nodes_share_one_gap_free_sequence(&opened).await;
        drop_schema(&url, opts.schema.as_deref().unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_a_newer_build_is_refused_and_reopening_keeps_data() {
        let Some(url) = test_url() else { return };
        let opts = fresh(&url);
        let conv = ConvId::direct(UserId(1), UserId(2));
        {
            let store = PostgresStore::open(&opts, conformance::null_listener()).await.unwrap();
            assert_eq!(conformance::seed_users(&store, 2).await, vec![UserId(1), UserId(2)]);
            let t = store.append(conformance::new_message(conv, UserId(1), "c1")).await.unwrap();
            assert_eq!(t.await.unwrap().unwrap().message.seq, 1);
        }
        let store = PostgresStore::open(&opts, conformance::null_listener()).await.unwrap();
        let t = store.append(conformance::new_message(conv, UserId(2), "c2")).await.unwrap();
        assert_eq!(t.await.unwrap().unwrap().message.seq, 2, "seq continues after reopening");
        store.execute("UPDATE tern_schema SET version = 99", &[]).await.unwrap();
        match PostgresStore::open(&opts, conformance::null_listener()).await {
            Err(StoreError::Backend(m)) => assert!(m.contains("schema version 99"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a newer schema was accepted"),
        }
        drop_schema(&url, opts.schema.as_deref().unwrap()).await;
    }
}
