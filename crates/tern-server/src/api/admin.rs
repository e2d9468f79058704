//! Operator endpoints (admin-scope API key): a consistent backup of a running server.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{ApiState, KeyCaller};
use crate::error::Error;
use crate::logic::push::Scope;
use tern_proto::rest::ErrorBody;

/// `GET /v1/admin/backup`: the embedded store as one SQLite file, a consistent state taken
/// without stopping writes (`tern backup --out FILE`; restore with `tern restore`).
#[utoipa::path(get, path = "/v1/admin/backup", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "A SQLite database file: the store as of one moment", content_type = "application/vnd.sqlite3"), (status = 400, description = "The PostgreSQL store is backed up with pg_dump", body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn backup(State(s): State<ApiState>, KeyCaller(c): KeyCaller) -> Result<impl IntoResponse, Error> {
    c.require(Scope::Admin)?;
    let path = s.logic.backup().await?;
    let file = tokio::fs::File::open(&path).await;
    // Unlinked at once: the open file keeps its bytes until the answer is sent, and nothing is
    // left behind if the client goes away half way.
    let _ = tokio::fs::remove_file(&path).await;
    let file = file.map_err(|e| {
        Error::from(crate::store::StoreError::Backend(format!("cannot read the backup {}: {e}", path.display())))
    })?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    tracing::info!(bytes = size, by = %c.key_id, "backup taken");
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_owned()),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"tern-backup.db\"".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    ))
}
