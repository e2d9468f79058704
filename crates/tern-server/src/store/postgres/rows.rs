//! The cluster engine's side of the shared model (`store::sql`): tokio-postgres rows as
//! [`Columns`], and the pool's connections and transactions running its SQL with statements
//! prepared once per connection.

use tokio_postgres::types::ToSql;

use super::*;
use crate::store::sql::{Columns, Row as SqlRow, Sql, Value};

impl Columns for Row {
    type Error = StoreError;

    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.try_get(i).map_err(backend)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(i).map_err(backend)
    }

    fn boolean(&self, i: usize) -> Result<bool, StoreError> {
        self.try_get(i).map_err(backend)
    }

    fn opt_bool(&self, i: usize) -> Result<Option<bool>, StoreError> {
        self.try_get(i).map_err(backend)
    }

    fn text(&self, i: usize) -> Result<&str, StoreError> {
        self.try_get(i).map_err(backend)
    }

    fn opt_text(&self, i: usize) -> Result<Option<&str>, StoreError> {
        self.try_get(i).map_err(backend)
    }

    fn blob(&self, i: usize) -> Result<&[u8], StoreError> {
        self.try_get(i).map_err(backend)
    }

    fn corrupt(&self, i: usize, why: String) -> StoreError {
        StoreError::Backend(format!("column {i}: {why}"))
    }
}

/// The parameters as tokio-postgres takes them (every integer column is BIGINT).
fn bound<'v>(params: &'v [Value<'_>]) -> Vec<&'v (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| -> &(dyn ToSql + Sync) {
            match p {
                Value::Int(v) => v,
                Value::OptInt(v) => v,
                Value::Text(v) => v,
                Value::OptText(v) => v,
                Value::Bool(v) => v,
                Value::Blob(v) => v,
            }
        })
        .collect()
}

/// A pooled connection or a transaction on one, running the shared model's SQL.
pub(super) struct Pg<'a, C>(pub(super) &'a C);

/// `Sql` for the two deadpool types that cache prepared statements per connection.
macro_rules! sql_over {
    ($t:ty) => {
        impl Sql for Pg<'_, $t> {
            type Error = StoreError;

            async fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
                let stmt = self.0.prepare_cached(sql).await.map_err(backend)?;
                self.0.execute(&stmt, &bound(params)).await.map_err(backend)
            }

            async fn query<T>(
                &mut self,
                sql: &str,
                params: &[Value<'_>],
                mut map: impl FnMut(&SqlRow<'_, StoreError>) -> Result<T, StoreError>,
            ) -> Result<Vec<T>, StoreError> {
                let stmt = self.0.prepare_cached(sql).await.map_err(backend)?;
                let rows = self.0.query(&stmt, &bound(params)).await.map_err(backend)?;
                rows.iter().map(|r| map(r)).collect()
            }
        }
    };
}
sql_over!(deadpool_postgres::ClientWrapper);
sql_over!(deadpool_postgres::Transaction<'_>);
