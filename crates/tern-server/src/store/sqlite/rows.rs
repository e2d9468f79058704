//! The embedded engine's side of the shared model (`store::sql`): rusqlite rows as
//! [`Columns`], parameters bound by name, and the few reads only this engine has.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rusqlite::types::{ToSqlOutput, Type, ValueRef};

use super::*;
use crate::store::sql::{Columns, Row, Sql, Value, message_from};

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn int(&self, i: usize) -> Result<i64, rusqlite::Error> {
        self.get(i)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, rusqlite::Error> {
        self.get(i)
    }

    fn boolean(&self, i: usize) -> Result<bool, rusqlite::Error> {
        self.get(i)
    }

    fn opt_bool(&self, i: usize) -> Result<Option<bool>, rusqlite::Error> {
        self.get(i)
    }

    fn text(&self, i: usize) -> Result<&str, rusqlite::Error> {
        self.get_ref(i)?.as_str().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
    }

    fn opt_text(&self, i: usize) -> Result<Option<&str>, rusqlite::Error> {
        self.get_ref(i)?
            .as_str_or_null()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
    }

    fn blob(&self, i: usize) -> Result<&[u8], rusqlite::Error> {
        self.get_ref(i)?.as_blob().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Blob, Box::new(e)))
    }

    fn corrupt(&self, i: usize, why: String) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(i, Type::Text, why.into())
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Int(v) | Value::OptInt(Some(v)) => ValueRef::Integer(v),
            Value::Bool(b) => ValueRef::Integer(i64::from(b)),
            Value::Text(s) | Value::OptText(Some(s)) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            Value::OptInt(None) | Value::OptText(None) => ValueRef::Null,
        }))
    }
}

/// The names SQLite gives the shared statements' `$n` placeholders.
const PLACEHOLDERS: [&str; 15] =
    ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15"];

/// `params` as `($n, value)` pairs, to bind by name.
fn named<'v, 'p>(params: &'v [Value<'p>]) -> Result<Vec<(&'static str, &'v Value<'p>)>, rusqlite::Error> {
    if params.len() > PLACEHOLDERS.len() {
        return Err(rusqlite::Error::InvalidParameterCount(params.len(), PLACEHOLDERS.len()));
    }
    Ok(PLACEHOLDERS.iter().copied().zip(params).collect())
}

/// A connection (a reader's, or the writer's transaction) running the shared model's SQL.
/// Statements are prepared once per connection and kept.
pub(super) struct Lite<'c>(pub(super) &'c Connection);

impl Sql for Lite<'_> {
    type Error = rusqlite::Error;

    async fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, rusqlite::Error> {
        let named = named(params)?;
        Ok(self.0.prepare_cached(sql)?.execute(&named[..])? as u64)
    }

    async fn query<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        mut map: impl FnMut(&Row<'_, rusqlite::Error>) -> Result<T, rusqlite::Error>,
    ) -> Result<Vec<T>, rusqlite::Error> {
        let named = named(params)?;
        let mut stmt = self.0.prepare_cached(sql)?;
        let mut rows = stmt.query(&named[..])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(map(row)?);
        }
        Ok(out)
    }
}

/// The result of the shared model's code run on this engine. Its SQL runs synchronously on the
/// calling thread, so the future is ready the first time it is polled.
pub(super) fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the embedded engine's SQL never waits"),
    }
}

pub(super) fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// The message `sender` sent with `client_msg_id`, if any (a resend).
pub(super) fn find_by_client_id(
    conn: &Connection,
    sender: UserId,
    client_msg_id: &str,
) -> Result<Option<Message>, rusqlite::Error> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM messages WHERE sender = ?1 AND client_msg_id = ?2",
        crate::store::sql::MESSAGE_COLUMNS
    ))?
    .query_row(params![sender.0 as i64, client_msg_id], |r| message_from(r, 0))
    .optional()
}
