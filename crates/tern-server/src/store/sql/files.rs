//! File records, the messages that name files, and users' sticker collections, for both engines.

use tern_proto::{ConvId, UserId};

use super::rows::num;
use super::{Row, Sql, Value};
use crate::store::{FileRecord, FileRef};

/// What [`file_from`] reads.
const FILE_COLUMNS: &str = "id, owner, name, length, upload_offset, sha256, size, mime, thumbnail, width, height, public, created_at, expires_at, metadata";

fn file_from<E>(r: &Row<'_, E>) -> Result<FileRecord, E> {
    let pixels = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok());
    Ok(FileRecord {
        id: r.text(0)?.to_owned(),
        owner: UserId(num(r, 1)?),
        name: r.text(2)?.to_owned(),
        length: num(r, 3)?,
        offset: num(r, 4)?,
        sha256: r.text(5)?.to_owned(),
        size: num(r, 6)?,
        mime: r.text(7)?.to_owned(),
        thumbnail: r.text(8)?.to_owned(),
        width: pixels(r.opt_int(9)?),
        height: pixels(r.opt_int(10)?),
        public: r.boolean(11)?,
        created_at: num(r, 12)?,
        expires_at: num(r, 13)?,
        metadata: r.text(14)?.to_owned(),
    })
}

pub(crate) async fn put_file<S: Sql>(s: &mut S, f: &FileRecord) -> Result<u64, S::Error> {
    s.execute(
        "INSERT INTO files (id, owner, name, length, upload_offset, sha256, size, mime, thumbnail, width, height, \
         public, created_at, expires_at, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, length = excluded.length, \
         upload_offset = excluded.upload_offset, sha256 = excluded.sha256, size = excluded.size, mime = excluded.mime, thumbnail = excluded.thumbnail, \
         width = excluded.width, height = excluded.height, public = excluded.public, \
         expires_at = excluded.expires_at, metadata = excluded.metadata",
        &[
            Value::Text(&f.id),
            Value::id(f.owner.0),
            Value::Text(&f.name),
            Value::num(f.length),
            Value::num(f.offset),
            Value::Text(&f.sha256),
            Value::num(f.size),
            Value::Text(&f.mime),
            Value::Text(&f.thumbnail),
            Value::OptInt(f.width.map(i64::from)),
            Value::OptInt(f.height.map(i64::from)),
            Value::Bool(f.public),
            Value::num(f.created_at),
            Value::num(f.expires_at),
            Value::Text(&f.metadata),
        ],
    )
    .await
}

pub(crate) async fn load_file<S: Sql>(s: &mut S, id: &str) -> Result<Option<FileRecord>, S::Error> {
    s.query_opt(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"), &[Value::Text(id)], file_from).await
}

pub(crate) async fn delete_file<S: Sql>(s: &mut S, id: &str) -> Result<bool, S::Error> {
    s.execute("DELETE FROM file_refs WHERE file_id = $1", &[Value::Text(id)]).await?;
    Ok(s.execute("DELETE FROM files WHERE id = $1", &[Value::Text(id)]).await? > 0)
}

pub(crate) async fn files_usage<S: Sql>(s: &mut S, owner: UserId) -> Result<u64, S::Error> {
    // SUM of BIGINT is NUMERIC in PostgreSQL: cast back, in both dialects.
    let used = s
        .query_opt(
            "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) FROM files WHERE owner = $1",
            &[Value::id(owner.0)],
            |r| num(r, 0),
        )
        .await?;
    Ok(used.unwrap_or(0))
}

pub(crate) async fn expired_uploads<S: Sql>(s: &mut S, now_ms: u64, limit: u32) -> Result<Vec<FileRecord>, S::Error> {
    s.query(
        &format!("SELECT {FILE_COLUMNS} FROM files WHERE sha256 = '' AND expires_at < $1 LIMIT $2"),
        &[Value::num(now_ms), Value::Int(i64::from(limit))],
        file_from,
    )
    .await
}

pub(crate) async fn content_used<S: Sql>(s: &mut S, sha256: &str) -> Result<bool, S::Error> {
    let found = s
        .query_opt(
            "SELECT length FROM files WHERE sha256 = $1 OR thumbnail = $1 LIMIT 1",
            &[Value::Text(sha256)],
            |r| r.int(0),
        )
        .await?;
    Ok(found.is_some())
}

pub(crate) async fn add_file_ref<S: Sql>(s: &mut S, r: &FileRef) -> Result<u64, S::Error> {
    let conv = r.conv_id.to_string();
    s.execute(
        "INSERT INTO file_refs (file_id, conv_id, sender, client_msg_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (file_id, sender, client_msg_id) DO NOTHING",
        &[Value::Text(&r.file_id), Value::Text(&conv), Value::id(r.sender.0), Value::Text(&r.client_msg_id)],
    )
    .await
}

/// A reference counts once its message is stored in the conversation it named, and stops
/// counting when the message is recalled (a tombstone is not `counted`).
pub(crate) async fn file_messages<S: Sql>(s: &mut S, file_id: &str) -> Result<Vec<(ConvId, u64)>, S::Error> {
    s.query(
        "SELECT m.conv_id, m.seq FROM file_refs r JOIN messages m \
         ON m.client_msg_id = r.client_msg_id AND m.sender = r.sender \
         WHERE r.file_id = $1 AND m.conv_id = r.conv_id AND m.counted",
        &[Value::Text(file_id)],
        |r| {
            let conv = r.text(0)?.parse::<ConvId>().map_err(|_| r.corrupt(0, "stored conversation id".into()))?;
            Ok((conv, num(r, 1)?))
        },
    )
    .await
}

pub(crate) async fn add_sticker<S: Sql>(s: &mut S, user: UserId, file_id: &str, at: u64) -> Result<bool, S::Error> {
    let added = s
        .execute(
            "INSERT INTO stickers (user_id, file_id, added_at) VALUES ($1, $2, $3) ON CONFLICT (user_id, file_id) DO NOTHING",
            &[Value::id(user.0), Value::Text(file_id), Value::num(at)],
        )
        .await?;
    Ok(added > 0)
}

pub(crate) async fn remove_sticker<S: Sql>(s: &mut S, user: UserId, file_id: &str) -> Result<bool, S::Error> {
    let removed = s
        .execute("DELETE FROM stickers WHERE user_id = $1 AND file_id = $2", &[Value::id(user.0), Value::Text(file_id)])
        .await?;
    Ok(removed > 0)
}

/// A user's stickers whose files still exist, oldest first: `(file_id, added_at, width, height)`.
pub(crate) async fn stickers<S: Sql>(s: &mut S, user: UserId) -> Result<Vec<crate::store::Sticker>, S::Error> {
    s.query(
        "SELECT s.file_id, s.added_at, f.width, f.height FROM stickers s JOIN files f ON f.id = s.file_id \
         WHERE s.user_id = $1 ORDER BY s.added_at, s.file_id",
        &[Value::id(user.0)],
        |r| {
            let pixels = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok());
            Ok(crate::store::Sticker {
                file_id: r.text(0)?.to_owned(),
                added_at: num(r, 1)?,
                width: pixels(r.opt_int(2)?),
                height: pixels(r.opt_int(3)?),
            })
        },
    )
    .await
}
