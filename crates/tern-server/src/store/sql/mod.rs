//! The IM model in SQL, written once for both engines.
//!
//! The embedded and the cluster engine store the same tables. What differs between them is how
//! they reach the database (rusqlite on a thread, tokio-postgres on a task), how they lock and
//! how their writers batch — not the IM model. So the model's statements, snapshots, effects and
//! row mapping live here, over two small traits an engine implements:
//!
//! - [`Sql`]: run a statement, or a query whose rows are read through [`Columns`];
//! - [`ImTx`]: what an IM transaction needs beyond SQL — the conversation's last seq (each engine
//!   keeps seqs its own way), appending a message (each engine's writer does it), and a hook to
//!   keep the engine's caches true after an effect.
//!
//! A new [`Effect`](super::im::Effect) is one arm in `effects.rs`, for both engines.
//!
//! The statements use PostgreSQL's `$1` placeholders. SQLite reads `$1` as a parameter named
//! "$1", and the embedded engine binds by name, so the numbers mean the same in both. Only SQL
//! that both dialects accept belongs here; anything dialect-specific (case-insensitive names,
//! array parameters, batch inserts, locks) stays in its engine.

mod effects;
mod files;
mod reads;
mod rows;

pub(super) use effects::{apply_effect, snapshot};
pub(super) use files::*;
pub(super) use reads::*;
pub(super) use rows::*;

use tern_proto::{ConvId, GroupId};

use super::NewMessage;
use super::im::{Effect, GroupState};

/// A statement parameter. Every integer column is 64-bit in both schemas.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    /// An integer.
    Int(i64),
    /// A nullable integer.
    OptInt(Option<i64>),
    /// Text.
    Text(&'a str),
    /// Nullable text.
    OptText(Option<&'a str>),
    /// A boolean (an integer 0/1 in SQLite).
    Bool(bool),
    /// Bytes.
    Blob(&'a [u8]),
}

impl Value<'_> {
    /// An id (user, group, message) as stored: its 64 bits reinterpreted.
    pub(crate) fn id(v: u64) -> Self {
        Value::Int(v as i64)
    }

    /// A seq or time from a request: clamped into the column's range.
    pub(crate) fn num(v: u64) -> Self {
        Value::Int(v.min(i64::MAX as u64) as i64)
    }
}

/// One row of a query's result, by column index.
pub(crate) trait Columns {
    /// The engine's error.
    type Error;
    /// An integer.
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    /// A nullable integer.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// A boolean.
    fn boolean(&self, i: usize) -> Result<bool, Self::Error>;
    /// A nullable boolean (an outer join's missing side).
    fn opt_bool(&self, i: usize) -> Result<Option<bool>, Self::Error>;
    /// Text.
    fn text(&self, i: usize) -> Result<&str, Self::Error>;
    /// Nullable text.
    fn opt_text(&self, i: usize) -> Result<Option<&str>, Self::Error>;
    /// Bytes.
    fn blob(&self, i: usize) -> Result<&[u8], Self::Error>;
    /// The error for a stored value that does not parse.
    fn corrupt(&self, i: usize, why: String) -> Self::Error;
}

/// A row as the shared mapping functions see it.
pub(crate) type Row<'r, E> = dyn Columns<Error = E> + 'r;

/// A connection or transaction that runs the model's SQL.
pub(crate) trait Sql {
    /// The engine's error.
    type Error;

    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, Self::Error>;

    /// Runs a query and maps each row.
    async fn query<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        map: impl FnMut(&Row<'_, Self::Error>) -> Result<T, Self::Error>,
    ) -> Result<Vec<T>, Self::Error>;

    /// Runs a query that matches at most one row (by key) and maps it.
    async fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        map: impl FnMut(&Row<'_, Self::Error>) -> Result<T, Self::Error>,
    ) -> Result<Option<T>, Self::Error> {
        Ok(self.query(sql, params, map).await?.into_iter().next())
    }
}

/// An IM transaction: [`Sql`] plus what each engine does its own way.
pub(crate) trait ImTx: Sql + Sized {
    /// The conversation's last seq as this transaction sees it (its own appends included).
    async fn last_seq(&mut self, conv: ConvId) -> Result<u64, Self::Error>;

    /// A group's settings, members and join requests (`last_seq` left 0), or `None`.
    async fn group(&mut self, g: GroupId) -> Result<Option<GroupState>, Self::Error> {
        load_group(self, g, 0).await
    }

    /// Appends a message an operation's rules decided on (`Effect::Append`): it takes the next
    /// seq and is delivered after commit. A client id used before is a bug in the rules and
    /// fails the operation.
    async fn append(&mut self, msg: NewMessage) -> Result<(), Self::Error>;

    /// Called after an effect other than an append was written, so an engine can keep its
    /// caches true.
    fn wrote(&mut self, _effect: &Effect) {}
}
