//! PostgreSQL (Neon in production) through tokio-postgres: the pool, and the transaction every
//! source of user changes runs in two round trips.
//!
//! Every statement goes out as an unnamed statement with its parameters' types given
//! (`query_typed`): values are always bound, never written into SQL text, and no named
//! prepared statement has to survive between transactions, so it works the same directly and
//! through any pooler (PgBouncer in transaction mode with or without prepared-statement
//! support, or in session mode). A request goes out when its future is first polled and the
//! answers come back in order, so the statements of one round are sent together (see
//! [`pipeline`]).

mod closing;
pub(crate) mod connect;
pub(crate) mod queries;

pub(crate) use closing::ClosingTransaction;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use chrono::NaiveDateTime;
use deadpool_postgres::{Manager, ManagerConfig, Object, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use super::error::{DriverError, StoreError};
use super::organization_statements::{self, OrganizationTexts, Value};
use super::records::{datetime_to_millis, millis_to_datetime};
use super::statements::{
    LoadedState, StateKeys, UPSERT_INTO, UPSERT_ON_CONFLICT, insert_inbox_sql, is_single,
    load_state_sql, upsert_one_sql,
};
use super::target::PoolSettings;
use super::users_table::UsersTable;
use super::writes::Writes;
use crate::sync::{Change, UserSnapshot};

/// The connection pool.
pub type Pool = deadpool_postgres::Pool;

/// Opens a pool; connections are made on first use, so a server can start (and say it is not
/// ready) while the database is still away.
pub(super) fn pool(url: &str, settings: &PoolSettings) -> Result<Pool, StoreError> {
    let connect::Connector { mut config, tls } = connect::connector(url, settings.connect_timeout)?;
    if config.get_application_name().is_none() {
        config.application_name("clerk-sync");
    }
    let manager = Manager::from_config(
        config,
        tls,
        // No query on checkout: a ping costs a round trip per transaction, and a connection
        // the server closed fails its transaction with an I/O error, which is retried on a
        // fresh connection (a closed one is never handed out again).
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.max_connections.max(1) as usize)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Setup(format!("cannot set up the connection pool: {e}")))
}

/// Opens one connection outside the pool and closes it: a failure says its real cause.
pub(super) async fn check(url: &str, settings: &PoolSettings) -> Result<(), String> {
    let connect::Connector { config, tls } =
        connect::connector(url, settings.connect_timeout).map_err(|e| e.to_string())?;
    match config.connect(tls).await {
        Ok((client, connection)) => {
            drop(client);
            // Ends once the client is gone (Terminate sent).
            let _ = connection.await;
            Ok(())
        }
        Err(e) => Err(connect::explain(&e)),
    }
}

const LOCK_KEYS: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k";

/// A batch's inbox rows; returns the `svix-id`s that were not there yet.
const INSERT_INBOX_ROWS: &str =
    "INSERT INTO clerk_sync.inbox (svix_id, event_type, user_id, outcome, error, payload,
                                    svix_timestamp, received_at)
     SELECT svix_id, event_type, user_id, outcome, error, payload, svix_timestamp, $8
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[])
          AS r(svix_id, event_type, user_id, outcome, error, payload, svix_timestamp)
     ON CONFLICT (svix_id) DO NOTHING
     RETURNING svix_id";

const UPDATE_INBOX: &str = "UPDATE clerk_sync.inbox SET outcome = $2, error = $3, replayed_at = $4
                            WHERE svix_id = $1";

const SET_STATE: &str = "INSERT INTO clerk_sync.state (key, value, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                                                         updated_at = excluded.updated_at";

const TOMBSTONES: &str = "INSERT INTO clerk_sync.tombstones (user_id, deleted_at)
                          SELECT user_id, $2 FROM unnest($1::text[]) AS t(user_id)
                          ON CONFLICT (user_id) DO NOTHING";

/// The rows' upsert: `$1`…`$9` the columns as arrays, `$10` the time.
fn upsert_rows_sql(users: &UsersTable) -> String {
    users.sql(&format!(
        "{UPSERT_INTO}
       SELECT id, email, first_name, last_name, name, image_url, username,
              clerk_created_at, clerk_updated_at, $10, $10
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                   $7::text[], $8::timestamp[], $9::timestamp[])
            AS u(id, email, first_name, last_name, name, image_url, username,
                 clerk_created_at, clerk_updated_at)
       {UPSERT_ON_CONFLICT}"
    ))
}

/// Clears `column` (email or username) on rows that still hold the value read: `$1` ids, `$2`
/// values, `$3` the time.
fn clear_sql(users: &UsersTable, column: &str) -> String {
    users.sql(&format!(
        r#"UPDATE {{users}} AS u SET {column} = NULL, "updatedAt" = $3
           FROM unnest($1::text[], $2::text[]) AS c(id, value)
           WHERE u.id = c.id AND u.{column} = c.value"#
    ))
}

/// A deletion's rows, all of one kind: `$1` the ids, `$2` the time.
fn deletion_sql(users: &UsersTable, change: &Change) -> String {
    users.sql(match change {
        Change::DeleteRow { .. } => "DELETE FROM {users} WHERE id = ANY($1::text[])",
        Change::SoftDeleteRow { .. } => {
            r#"UPDATE {users} SET "deletedAt" = $2, email = NULL, username = NULL, "updatedAt" = $2
               WHERE id = ANY($1::text[])"#
        }
        _ => {
            r#"UPDATE {users} SET "deletedAt" = $2, email = NULL, username = NULL,
                   "firstName" = NULL, "lastName" = NULL, name = NULL, "imageUrl" = NULL,
                   "updatedAt" = $2
               WHERE id = ANY($1::text[])"#
        }
    })
}

/// The statement texts of one users table, made once per store.
#[derive(Debug)]
pub(super) struct Texts {
    lookup: String,
    lookup_one: String,
    upsert_one: String,
    inbox_one: String,
    upsert: String,
    clear_email: String,
    clear_username: String,
    delete: String,
    soft_delete: String,
    erase: String,
    organizations: OrganizationTexts,
}

impl Texts {
    pub(super) fn new(users: &UsersTable) -> Texts {
        let nobody = String::new();
        Texts {
            lookup: load_state_sql(users, "clerk_sync.", IN_LIST, false),
            lookup_one: load_state_sql(users, "clerk_sync.", ("= ANY(", "::text[])"), true),
            upsert_one: upsert_one_sql(users),
            inbox_one: insert_inbox_sql("clerk_sync."),
            upsert: upsert_rows_sql(users),
            clear_email: clear_sql(users, "email"),
            clear_username: clear_sql(users, "username"),
            delete: deletion_sql(
                users,
                &Change::DeleteRow {
                    user_id: nobody.clone(),
                },
            ),
            soft_delete: deletion_sql(
                users,
                &Change::SoftDeleteRow {
                    user_id: nobody.clone(),
                },
            ),
            erase: deletion_sql(users, &Change::EraseRow { user_id: nobody }),
            organizations: OrganizationTexts::new(users, "clerk_sync.", IN_LIST),
        }
    }
}

/// "Is in this list", the list in a sub-select: planned for any list, not for the one at hand
/// (for a page of 500, planning each value took longer than looking it up; measured in
/// docs/benchmarks.md).
const IN_LIST: (&str, &str) = ("= ANY((SELECT ", "::text[])::text[])");

/// An `organization_statements` statement with its values bound.
fn bound<'a>(
    client: &'a tokio_postgres::Client,
    statement: &'a organization_statements::Statement<'a>,
) -> Statement<'a> {
    let params = statement
        .values
        .iter()
        .map(|value| match value {
            Value::Text(text) => (text as &(dyn ToSql + Sync), Type::TEXT),
            Value::Time(time) => (time as &(dyn ToSql + Sync), Type::TIMESTAMP),
            Value::Int(int) => (int as &(dyn ToSql + Sync), Type::INT8),
        })
        .collect();
    self::statement(client, statement.sql, params)
}

type Statement<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Sends every statement before reading any answer, in the order given, and waits for all.
/// The first error (in that order) is the one returned, once every statement has gone out:
/// the statements after a failed one only say that the transaction is aborted, but the last
/// (`COMMIT`) must still reach the server to end it.
async fn pipeline(statements: Vec<Statement<'_>>) -> Result<Vec<Vec<Row>>, tokio_postgres::Error> {
    let mut pending: Vec<Option<Statement<'_>>> = statements.into_iter().map(Some).collect();
    let mut results: Vec<Vec<Row>> = pending.iter().map(|_| Vec::new()).collect();
    let mut failed: Option<(usize, tokio_postgres::Error)> = None;
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, (slot, result)) in pending.iter_mut().zip(results.iter_mut()).enumerate() {
            let Some(statement) = slot else { continue };
            match statement.as_mut().poll(cx) {
                Poll::Ready(Ok(rows)) => {
                    *result = rows;
                    *slot = None;
                }
                Poll::Ready(Err(error)) => {
                    *slot = None;
                    if failed.as_ref().is_none_or(|(at, _)| i < *at) {
                        failed = Some((i, error));
                    }
                }
                Poll::Pending => done = false,
            }
        }
        // Every statement has been polled, so sent, by the end of the first pass.
        if done || failed.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    match failed {
        Some((_, error)) => Err(error),
        None => Ok(results),
    }
}

/// One statement of a pipeline: its text and its parameters with their types.
fn statement<'a>(
    client: &'a tokio_postgres::Client,
    sql: &'a str,
    params: Vec<(&'a (dyn ToSql + Sync), Type)>,
) -> Statement<'a> {
    Box::pin(async move { client.query_typed(sql, &params).await })
}

fn simple<'a>(client: &'a tokio_postgres::Client, sql: &'a str) -> Statement<'a> {
    Box::pin(async move { client.batch_execute(sql).await.map(|()| Vec::new()) })
}

/// A transaction on a pooled connection. Dropped while the transaction may be open (a batch
/// abandoned after `CLERK_SYNC_DB_TIMEOUT`, an error halfway), the connection is closed
/// rather than handed back, so nobody else ever gets a connection inside a transaction.
pub(crate) struct Transaction {
    client: Option<Object>,
    open: bool,
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if self.open
            && let Some(client) = self.client.take()
        {
            // Out of the pool; dropping the client closes the connection, and the server
            // rolls the transaction back.
            drop(Object::take(client));
        }
    }
}

impl Transaction {
    pub(super) async fn begin(pool: &Pool) -> Result<Transaction, DriverError> {
        Ok(Transaction {
            client: Some(pool.get().await?),
            open: false,
        })
    }

    fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("a transaction keeps its client until dropped")
    }

    /// Round trip one: `BEGIN`, the locks, the lookup.
    pub(super) async fn read(
        &mut self,
        texts: &Texts,
        locks: &[String],
        svix_ids: &[String],
        keys: &StateKeys,
    ) -> Result<LoadedState, DriverError> {
        self.open = true;
        // A lone event (the webhook hot path) binds plain values: PostgreSQL plans `= $1`
        // faster than `= ANY($1)`, and every statement here is planned anew.
        let firsts = [
            svix_ids.first(),
            keys.user_ids.first(),
            keys.emails.first(),
            keys.usernames.first(),
        ];
        let organization_lists = keys.organizations.lists();
        let client = self.client();
        let mut statements = vec![simple(client, "BEGIN")];
        if !locks.is_empty() {
            statements.push(statement(
                client,
                LOCK_KEYS,
                vec![(&locks, Type::TEXT_ARRAY)],
            ));
        }
        statements.push(if is_single(svix_ids, keys) {
            statement(
                client,
                &texts.lookup_one,
                firsts
                    .iter()
                    .map(|v| (v as &(dyn ToSql + Sync), Type::TEXT))
                    .collect(),
            )
        } else {
            statement(
                client,
                &texts.lookup,
                vec![
                    (&svix_ids, Type::TEXT_ARRAY),
                    (&keys.user_ids, Type::TEXT_ARRAY),
                    (&keys.emails, Type::TEXT_ARRAY),
                    (&keys.usernames, Type::TEXT_ARRAY),
                ],
            )
        });
        let organizations = !keys.organizations.is_empty();
        if organizations {
            statements.push(statement(
                client,
                &texts.organizations.lookup,
                organization_lists
                    .iter()
                    .map(|list| (list as &(dyn ToSql + Sync), Type::TEXT_ARRAY))
                    .collect(),
            ));
        }
        let result = pipeline(statements).await;
        let (rows, organization_rows) = match result {
            Ok(mut results) => {
                let organization_rows = if organizations {
                    results.pop().unwrap_or_default()
                } else {
                    Vec::new()
                };
                (results.pop().unwrap_or_default(), organization_rows)
            }
            Err(error) => {
                self.rollback().await;
                return Err(error.into());
            }
        };
        let mut state = read_state(&rows)?;
        let organization_rows = organization_rows
            .iter()
            .map(|row| Ok(organization_statements::lookup_row_from!(row)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        state.organizations = organization_statements::organization_state(organization_rows);
        Ok(state)
    }

    /// Round trip two: the writes, the inbox rows, the checkpoint and `COMMIT` (with `BEGIN`
    /// first when nothing was read). Returns the `svix-id`s whose inbox rows were inserted.
    pub(super) async fn write(
        &mut self,
        texts: &Texts,
        writes: &Writes<'_>,
    ) -> Result<HashSet<String>, DriverError> {
        let client = self
            .client
            .as_ref()
            .expect("a transaction keeps its client until dropped");
        let begin = !self.open;
        self.open = true;
        let now = &writes.now;
        // The values first: the statements borrow them.
        let clears = [
            (&texts.clear_email, &writes.rows.clear_email),
            (&texts.clear_username, &writes.rows.clear_username),
        ]
        .map(|(sql, cleared)| {
            let (ids, values): (Vec<&str>, Vec<&str>) = cleared
                .iter()
                .map(|(id, value)| (id.as_str(), value.as_str()))
                .unzip();
            (sql, ids, values)
        });
        let rows = UpsertColumns::new(&writes.rows.upserts);
        let deletions = DeletionColumns::new(writes.deletions);
        let inbox = InboxColumns::new(writes);
        let organization_upserts = texts
            .organizations
            .upserts(writes.organizations, writes.now);
        let organization_deletions = texts.organizations.deletions(
            writes.organizations,
            writes.deleted_users,
            writes.keep_organization_rows,
            writes.now,
        );
        let replays: Vec<(&str, &str, Option<&str>)> = writes
            .replays
            .iter()
            .map(|r| (r.svix_id, r.outcome.as_str(), r.error))
            .collect();

        let mut statements = Vec::new();
        if begin {
            statements.push(simple(client, "BEGIN"));
        }
        for (sql, ids, values) in &clears {
            if !ids.is_empty() {
                statements.push(statement(
                    client,
                    sql,
                    vec![
                        (ids, Type::TEXT_ARRAY),
                        (values, Type::TEXT_ARRAY),
                        (now, Type::TIMESTAMP),
                    ],
                ));
            }
        }
        match writes.rows.upserts.len() {
            0 => {}
            1 => statements.push(statement(client, &texts.upsert_one, rows.one(now))),
            _ => statements.push(statement(client, &texts.upsert, rows.params(now))),
        }
        statements.extend(organization_upserts.iter().map(|s| bound(client, s)));
        if !deletions.delete.is_empty() {
            statements.push(statement(
                client,
                &texts.delete,
                vec![(&deletions.delete, Type::TEXT_ARRAY)],
            ));
        }
        for (sql, ids) in [
            (&texts.soft_delete, &deletions.soft_delete),
            (&texts.erase, &deletions.erase),
        ] {
            if !ids.is_empty() {
                statements.push(statement(
                    client,
                    sql,
                    vec![(ids, Type::TEXT_ARRAY), (now, Type::TIMESTAMP)],
                ));
            }
        }
        if !deletions.tombstone.is_empty() {
            statements.push(statement(
                client,
                TOMBSTONES,
                vec![
                    (&deletions.tombstone, Type::TEXT_ARRAY),
                    (now, Type::TIMESTAMP),
                ],
            ));
        }
        statements.extend(organization_deletions.iter().map(|s| bound(client, s)));
        let inbox_at = (!writes.inbox.is_empty()).then(|| {
            statements.push(match writes.inbox.len() {
                1 => statement(client, &texts.inbox_one, inbox.one(now)),
                _ => statement(client, INSERT_INBOX_ROWS, inbox.params(now)),
            });
            statements.len() - 1
        });
        for (svix_id, outcome, error) in &replays {
            statements.push(statement(
                client,
                UPDATE_INBOX,
                vec![
                    (svix_id, Type::TEXT),
                    (outcome, Type::TEXT),
                    (error, Type::TEXT),
                    (now, Type::TIMESTAMP),
                ],
            ));
        }
        if let Some((key, value)) = &writes.checkpoint {
            statements.push(statement(
                client,
                SET_STATE,
                vec![
                    (key, Type::TEXT),
                    (value, Type::TEXT),
                    (now, Type::TIMESTAMP),
                ],
            ));
        }
        statements.push(simple(client, "COMMIT"));
        let result = pipeline(statements).await;
        let results = match result {
            Ok(results) => results,
            Err(error) => {
                if error.as_db_error().is_some() {
                    // The COMMIT that followed ended the failed transaction (as a ROLLBACK).
                    self.open = false;
                }
                return Err(error.into());
            }
        };
        self.open = false;
        let Some(at) = inbox_at else {
            return Ok(HashSet::new());
        };
        results[at]
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<_, _>>()
            .map_err(DriverError::from)
    }

    /// Ends the transaction without writing (a dry run, or a failure in round one). If that
    /// fails too, the connection is closed when the transaction is dropped.
    pub(super) async fn rollback(&mut self) {
        if !self.open {
            return;
        }
        let rollback = self.client().batch_execute("ROLLBACK");
        if let Ok(Ok(())) = tokio::time::timeout(std::time::Duration::from_secs(1), rollback).await
        {
            self.open = false;
        }
    }
}

/// The upserts' columns, as arrays bound to `upsert_rows_sql`.
struct UpsertColumns<'a> {
    ids: Vec<&'a str>,
    text: [Vec<Option<&'a str>>; 6],
    created_at: Vec<Option<NaiveDateTime>>,
    updated_at: Vec<NaiveDateTime>,
}

impl<'a> UpsertColumns<'a> {
    fn new(rows: &'a [UserSnapshot]) -> Self {
        let column = |f: fn(&'a UserSnapshot) -> Option<&'a str>| rows.iter().map(f).collect();
        UpsertColumns {
            ids: rows.iter().map(|u| u.id.as_str()).collect(),
            text: [
                column(|u| u.email.as_deref()),
                column(|u| u.first_name.as_deref()),
                column(|u| u.last_name.as_deref()),
                column(|u| u.name.as_deref()),
                column(|u| u.image_url.as_deref()),
                column(|u| u.username.as_deref()),
            ],
            created_at: rows
                .iter()
                .map(|u| u.created_at.map(millis_to_datetime))
                .collect(),
            updated_at: rows
                .iter()
                .map(|u| millis_to_datetime(u.updated_at))
                .collect(),
        }
    }

    /// The first row's values for `upsert_one_sql`.
    fn one<'p>(&'p self, now: &'p NaiveDateTime) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&self.ids[0], Type::TEXT)];
        params.extend(
            self.text
                .iter()
                .map(|c| (&c[0] as &(dyn ToSql + Sync), Type::TEXT)),
        );
        params.push((&self.created_at[0], Type::TIMESTAMP));
        params.push((&self.updated_at[0], Type::TIMESTAMP));
        params.push((now, Type::TIMESTAMP));
        params
    }

    fn params<'p>(&'p self, now: &'p NaiveDateTime) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&self.ids, Type::TEXT_ARRAY)];
        params.extend(
            self.text
                .iter()
                .map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY)),
        );
        params.push((&self.created_at, Type::TIMESTAMP_ARRAY));
        params.push((&self.updated_at, Type::TIMESTAMP_ARRAY));
        params.push((now, Type::TIMESTAMP));
        params
    }
}

/// A batch's deletions by kind: rows are independent of each other, so each kind is one
/// statement.
#[derive(Default)]
struct DeletionColumns<'a> {
    delete: Vec<&'a str>,
    soft_delete: Vec<&'a str>,
    erase: Vec<&'a str>,
    tombstone: Vec<&'a str>,
}

impl<'a> DeletionColumns<'a> {
    fn new(changes: &'a [Change]) -> Self {
        let mut columns = DeletionColumns::default();
        for change in changes {
            let (list, id) = match change {
                Change::DeleteRow { user_id } => (&mut columns.delete, user_id),
                Change::SoftDeleteRow { user_id } => (&mut columns.soft_delete, user_id),
                Change::EraseRow { user_id } => (&mut columns.erase, user_id),
                Change::Tombstone { user_id } => (&mut columns.tombstone, user_id),
                Change::ReleaseEmail { .. }
                | Change::ReleaseUsername { .. }
                | Change::Upsert(_) => {
                    unreachable!("snapshot changes are written as row writes")
                }
            };
            list.push(id.as_str());
        }
        columns
    }
}

/// The inbox rows' columns, as arrays bound to [`INSERT_INBOX_ROWS`].
struct InboxColumns<'a> {
    text: [Vec<Option<&'a str>>; 6],
    svix_timestamps: Vec<i64>,
}

impl<'a> InboxColumns<'a> {
    fn new(writes: &'a Writes<'a>) -> Self {
        let rows = writes.inbox;
        InboxColumns {
            text: [
                rows.iter().map(|r| Some(r.svix_id)).collect(),
                rows.iter().map(|r| Some(r.event_type)).collect(),
                rows.iter().map(|r| r.user_id).collect(),
                rows.iter().map(|r| Some(r.outcome.as_str())).collect(),
                rows.iter().map(|r| r.error).collect(),
                rows.iter().map(|r| Some(r.payload)).collect(),
            ],
            svix_timestamps: rows.iter().map(|r| r.svix_timestamp).collect(),
        }
    }

    /// The first row's values for the one-row insert (`statements::insert_inbox_sql`).
    fn one<'p>(&'p self, now: &'p NaiveDateTime) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = self
            .text
            .iter()
            .map(|c| (&c[0] as &(dyn ToSql + Sync), Type::TEXT))
            .collect();
        params.push((&self.svix_timestamps[0], Type::INT8));
        params.push((now, Type::TIMESTAMP));
        params
    }

    fn params<'p>(&'p self, now: &'p NaiveDateTime) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = self
            .text
            .iter()
            .map(|c| (c as &(dyn ToSql + Sync), Type::TEXT_ARRAY))
            .collect();
        params.push((&self.svix_timestamps, Type::INT8_ARRAY));
        params.push((now, Type::TIMESTAMP));
        params
    }
}

/// Reads the rows of [`load_state_sql`].
fn read_state(rows: &[Row]) -> Result<LoadedState, tokio_postgres::Error> {
    let mut state = LoadedState::default();
    let mut found = HashSet::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        match row.try_get::<_, &str>("kind")? {
            "t" => {
                state.tombstoned.insert(id);
            }
            "i" => {
                state.seen.insert(id);
            }
            _ if !found.insert(id.clone()) => {}
            _ => state.users.push(crate::sync::StoredUser {
                id,
                email: row.try_get("email")?,
                username: row.try_get("username")?,
                clerk_updated_at: row
                    .try_get::<_, Option<NaiveDateTime>>("clerkUpdatedAt")?
                    .map(datetime_to_millis),
                deleted: row.try_get("deleted")?,
            }),
        }
    }
    Ok(state)
}
