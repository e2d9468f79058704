//! The PostgreSQL schema and its migration (one node migrates, under an advisory lock).

use super::*;

/// The schema version this build writes; a database at a later version is refused.
pub(super) const SCHEMA_VERSION: i32 = 3;

/// Conversation ids compare bytewise (`COLLATE "C"`), the same order the lock protocol sorts in.
pub(super) const SCHEMA_V1: &str = r#"
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

/// Version 2: live-room bans and mutes (`until_ms` 0 = until lifted) and room settings.
const SCHEMA_V2: &str = r#"
CREATE TABLE room_sanctions (
    room TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room, user_id, kind)
);
CREATE TABLE room_settings (
    room TEXT PRIMARY KEY,
    slow_mode_secs BIGINT,
    policy TEXT NOT NULL,
    tokens_after_ms BIGINT NOT NULL,
    history_size BIGINT,
    anonymous_posts BOOLEAN NOT NULL DEFAULT false
);
"#;

/// Version 3: files and the messages that name them; file bytes in chunks.
const SCHEMA_V3: &str = r#"
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner BIGINT NOT NULL,
    name TEXT NOT NULL,
    length BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    mime TEXT NOT NULL,
    thumbnail TEXT NOT NULL,
    width BIGINT,
    height BIGINT,
    public BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX files_owner ON files(owner);
CREATE INDEX files_sha256 ON files(sha256);
CREATE TABLE file_refs (
    file_id TEXT NOT NULL,
    conv_id TEXT NOT NULL,
    sender BIGINT NOT NULL,
    client_msg_id TEXT NOT NULL,
    PRIMARY KEY (file_id, sender, client_msg_id)
);
CREATE TABLE stickers (
    user_id BIGINT NOT NULL,
    file_id TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, file_id)
);
CREATE TABLE file_chunks (
    key TEXT NOT NULL,
    pos BIGINT NOT NULL,
    data BYTEA NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (key, pos)
);
"#;

/// Held (session advisory lock) while a node migrates, so nodes starting together migrate once.
pub(super) const MIGRATION_LOCK: i64 = 0x7465_726e_6d69_6772; // "ternmigr"

pub(super) async fn migrate(pool: &Pool, schema: Option<&str>) -> Result<(), StoreError> {
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
        if version < 2 {
            tx.batch_execute(SCHEMA_V2).await.map_err(backend)?;
        }
        if version < 3 {
            tx.batch_execute(SCHEMA_V3).await.map_err(backend)?;
        }
        tx.execute("UPDATE tern_schema SET version = $1", &[&SCHEMA_VERSION]).await.map_err(backend)?;
        tx.commit().await.map_err(backend)
    }
    .await;
    let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.map_err(backend);
    result.and(unlocked.map(drop))
}
