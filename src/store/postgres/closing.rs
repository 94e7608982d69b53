//! A transaction that never returns its connection to the pool unfinished.

use deadpool_postgres::{Object, Pool};

use crate::store::error::DriverError;

/// A transaction on a pooled PostgreSQL connection (`BEGIN` and the rest through the simple
/// protocol, no values). Dropped before [`ClosingTransaction::commit`] or
/// [`ClosingTransaction::rollback`] ended it (its future dropped at a timeout, an error on the
/// way), the connection is closed rather than handed back to the pool: the server rolls the
/// transaction back, and nobody else gets a connection inside it, or behind a statement still
/// waiting for a lock.
pub(crate) struct ClosingTransaction {
    client: Option<Object>,
}

impl ClosingTransaction {
    /// Takes a connection and starts the transaction with `begin` (`BEGIN`, or `BEGIN` with
    /// options and `SET LOCAL`s after it).
    pub(crate) async fn begin(pool: &Pool, begin: &str) -> Result<ClosingTransaction, DriverError> {
        let transaction = ClosingTransaction {
            client: Some(pool.get().await?),
        };
        transaction.client().batch_execute(begin).await?;
        Ok(transaction)
    }

    pub(crate) fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("a transaction keeps its client until it ends")
    }

    pub(crate) async fn commit(self) -> Result<(), DriverError> {
        self.end("COMMIT").await
    }

    pub(crate) async fn rollback(self) -> Result<(), DriverError> {
        self.end("ROLLBACK").await
    }

    /// Ends the transaction and hands the connection, idle again, back to the pool.
    async fn end(mut self, sql: &str) -> Result<(), DriverError> {
        self.client().batch_execute(sql).await?;
        self.client.take();
        Ok(())
    }
}

impl Drop for ClosingTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Out of the pool: dropping the client closes the connection.
            drop(Object::take(client));
        }
    }
}
