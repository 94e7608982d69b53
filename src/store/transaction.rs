//! The transaction every source of changes runs in, on either backend: round one takes the
//! locks and reads what the events touch, round two writes what the rules decided, the inbox
//! rows and any checkpoint, and commits. What to read and what to write is decided above, in
//! `crate::ingest`; this module only says how each backend does it.

use std::collections::HashSet;

use super::error::DriverError;
use super::handle::Store;
use super::statements::{LoadedState, StateKeys};
use super::writes::Writes;

/// A transaction on either backend.
pub(crate) enum Transaction {
    Postgres(super::postgres::Transaction),
    Sqlite(super::sqlite::Transaction),
}

impl Transaction {
    pub async fn begin(store: &Store) -> Result<Transaction, DriverError> {
        Ok(match &store.pool {
            super::handle::Pool::Postgres(pool) => {
                Transaction::Postgres(super::postgres::Transaction::begin(pool).await?)
            }
            super::handle::Pool::Sqlite(pool) => {
                Transaction::Sqlite(super::sqlite::Transaction::begin(pool))
            }
        })
    }

    /// Takes the locks and reads what the decision needs.
    pub(crate) async fn read(
        &mut self,
        store: &Store,
        locks: &[String],
        svix_ids: &[String],
        keys: &StateKeys,
    ) -> Result<LoadedState, DriverError> {
        match self {
            Transaction::Postgres(tx) => tx.read(&store.texts, locks, svix_ids, keys).await,
            Transaction::Sqlite(tx) => tx.read(&store.users, svix_ids, keys).await,
        }
    }

    /// Writes and commits; the `svix-id`s whose inbox rows were inserted.
    pub(crate) async fn write(
        &mut self,
        store: &Store,
        writes: &Writes<'_>,
    ) -> Result<HashSet<String>, DriverError> {
        match self {
            Transaction::Postgres(tx) => tx.write(&store.texts, writes).await,
            Transaction::Sqlite(tx) => tx.write(&store.users, writes).await,
        }
    }

    pub(crate) async fn rollback(&mut self) {
        match self {
            Transaction::Postgres(tx) => tx.rollback().await,
            Transaction::Sqlite(tx) => tx.rollback().await,
        }
    }
}
