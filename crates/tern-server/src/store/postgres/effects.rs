//! An IM transaction on this engine: the shared model (`store::sql`) over a transaction that
//! holds its conversations' locks, with seqs from [`Seqs`].

use super::*;
use crate::store::sql::{ImTx, Row as SqlRow, Sql, Value};

pub(super) struct PgTx<'a, 't> {
    pub(super) tx: &'a deadpool_postgres::Transaction<'t>,
    pub(super) seqs: &'a mut Seqs,
    pub(super) committed: &'a mut Vec<Committed>,
}

impl Sql for PgTx<'_, '_> {
    type Error = StoreError;

    async fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        Pg(self.tx).execute(sql, params).await
    }

    async fn query<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        map: impl FnMut(&SqlRow<'_, StoreError>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        Pg(self.tx).query(sql, params, map).await
    }
}

impl ImTx for PgTx<'_, '_> {
    async fn last_seq(&mut self, conv: ConvId) -> Result<u64, StoreError> {
        // The transaction locked and loaded every conversation it reads or appends to.
        Ok(self.seqs.last(conv))
    }

    async fn append(&mut self, msg: NewMessage) -> Result<(), StoreError> {
        let seq = self.seqs.next(msg.conv_id, msg.ts);
        let mut row = NewRows::default();
        row.push(&msg, seq);
        if row.insert(self.tx).await.map_err(backend)? != 1 {
            return Err(StoreError::Conflict(format!("client_msg_id {:?} is taken", msg.client_msg_id)));
        }
        // The members as they are now, this transaction's changes included.
        let recipients: Arc<[UserId]> = match msg.conv_id {
            ConvId::Group(g) => {
                let conv = ConvId::Group(g).to_string();
                self.query("SELECT user_id FROM conv_members WHERE conv_id = $1", &[Value::Text(&conv)], |r| {
                    Ok(UserId(r.int(0)? as u64))
                })
                .await?
                .into()
            }
            conv => conv.participants().collect(),
        };
        self.committed.push(Committed { message: message_of(&msg, seq), from_device: msg.from_device, recipients });
        Ok(())
    }
}
