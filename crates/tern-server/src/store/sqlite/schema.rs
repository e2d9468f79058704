//! The embedded store's schema and its migrations (`PRAGMA user_version`).

use super::*;

pub(super) const SCHEMA_VERSION: i64 = 7;

pub(super) const SCHEMA: &str = "
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

/// Version 3: the IM layer. Profiles on `users`; `conv_members` (one row per user per
/// conversation: group roles, join point, read position, mutes — and the conversation list);
/// groups, join requests and relations (friends, requests, blocks); `counted` marks messages
/// that count as unread (not notices or tombstones); `last_ts` orders the conversation list.
pub(super) const MIGRATE_V3: &str = "
ALTER TABLE users ADD COLUMN nickname TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN avatar TEXT;
ALTER TABLE users ADD COLUMN signature TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN dm_policy TEXT NOT NULL DEFAULT 'anyone';
ALTER TABLE messages ADD COLUMN counted INTEGER NOT NULL DEFAULT 1;
ALTER TABLE conversations ADD COLUMN last_ts INTEGER NOT NULL DEFAULT 0;
CREATE TABLE conv_members (
    conv_id TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    role TEXT NOT NULL DEFAULT 'member',
    joined_seq INTEGER NOT NULL DEFAULT 1,
    read_seq INTEGER NOT NULL DEFAULT 0,
    muted_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conv_id, user_id)
) WITHOUT ROWID;
CREATE INDEX conv_members_user ON conv_members(user_id);
INSERT OR IGNORE INTO conv_members (conv_id, user_id) SELECT conv_id, user_a FROM conversations;
INSERT OR IGNORE INTO conv_members (conv_id, user_id) SELECT conv_id, user_b FROM conversations;
CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    owner INTEGER NOT NULL,
    join_policy TEXT NOT NULL,
    muted_all INTEGER NOT NULL,
    max_members INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    dissolved INTEGER NOT NULL
);
CREATE TABLE join_requests (
    group_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    message TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE TABLE relations (
    owner INTEGER NOT NULL,
    peer INTEGER NOT NULL,
    friend INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    request_msg TEXT,
    request_ts INTEGER,
    PRIMARY KEY (owner, peer)
) WITHOUT ROWID;
CREATE INDEX relations_peer ON relations(peer);
";

/// Version 4: sessions. `users.disabled`; `session_cutoffs` voids a user's tokens issued before
/// a logout, password change or disabling (`device_id` '' = every device).
pub(super) const MIGRATE_V4: &str = "
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
CREATE TABLE session_cutoffs (
    user_id INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    after_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;
";

/// Version 5: the client-id index leads with the client's id instead of the sender. Client ids
/// begin with their creation time (the SDK's do), so new entries land on the index's right
/// edge, one or two pages per commit; keyed by sender first they landed at the end of each
/// sender's range — one more dirty page per sender in every commit, each rewritten to the WAL
/// (measured at 30,000 1:1 msgs/s: the WAL's page writes were a quarter of the server's CPU).
pub(super) const MIGRATE_V5: &str = "
DROP INDEX IF EXISTS messages_client_id;
CREATE UNIQUE INDEX messages_client_key ON messages(client_msg_id, sender);
";

/// Version 6: live-room bans and mutes (`until_ms` 0 = until lifted) and room settings (slow
/// mode, who may enter, when join tokens were last voided).
pub(super) const MIGRATE_V6: &str = "
CREATE TABLE room_sanctions (
    room TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room, user_id, kind)
) WITHOUT ROWID;
CREATE TABLE room_settings (
    room TEXT PRIMARY KEY,
    slow_mode_secs INTEGER,
    policy TEXT NOT NULL,
    tokens_after_ms INTEGER NOT NULL,
    history_size INTEGER,
    anonymous_posts INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
";

/// Version 7: files (uploads and their metadata; the bytes live in the file storage) and the
/// messages that name them (`file_refs`, joined to `messages` by the sender's client id).
pub(super) const MIGRATE_V7: &str = "
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner INTEGER NOT NULL,
    name TEXT NOT NULL,
    length INTEGER NOT NULL,
    upload_offset INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mime TEXT NOT NULL,
    thumbnail TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    public INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    metadata TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX files_owner ON files(owner);
CREATE INDEX files_sha256 ON files(sha256);
CREATE TABLE file_refs (
    file_id TEXT NOT NULL,
    conv_id TEXT NOT NULL,
    sender INTEGER NOT NULL,
    client_msg_id TEXT NOT NULL,
    PRIMARY KEY (file_id, sender, client_msg_id)
) WITHOUT ROWID;
CREATE TABLE stickers (
    user_id INTEGER NOT NULL,
    file_id TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, file_id)
) WITHOUT ROWID;
";

pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "data directory has schema version {version}, this build knows up to {SCHEMA_VERSION}"
        )));
    }
    conn.execute_batch(SCHEMA)?;
    if version < 3 {
        conn.execute_batch(&format!("BEGIN; {MIGRATE_V3} COMMIT;"))?;
    }
    if version < 4 {
        conn.execute_batch(&format!("BEGIN; {MIGRATE_V4} COMMIT;"))?;
    }
    if version < 5 {
        conn.execute_batch(&format!("BEGIN; {MIGRATE_V5} COMMIT;"))?;
    }
    if version < 6 {
        conn.execute_batch(&format!("BEGIN; {MIGRATE_V6} COMMIT;"))?;
    }
    if version < 7 {
        conn.execute_batch(&format!("BEGIN; {MIGRATE_V7} COMMIT;"))?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}
