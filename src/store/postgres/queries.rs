//! Reads and single-statement writes outside the one flow (inbox, state, leases, a user's
//! row), with the SQL the SQLite side uses too (`statements`). Each is one `query_typed`: one
//! round trip, no prepared statement left behind.

use chrono::NaiveDateTime;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row};

use super::super::records::{StoredEvent, UserRecord};
use super::super::statements as sql;
use super::super::users_table::UsersTable;

const NS: &str = "clerk_sync.";

pub(crate) async fn user(
    client: &Client,
    users: &UsersTable,
    id: &str,
) -> Result<(Option<UserRecord>, bool), tokio_postgres::Error> {
    let row = client
        .query_typed_one(&sql::user_sql(users, NS), &[(&id, Type::TEXT)])
        .await?;
    let tombstoned: bool = row.try_get("tombstoned")?;
    let Some(id) = row.try_get::<_, Option<String>>("id")? else {
        return Ok((None, tombstoned));
    };
    let record = super::super::records::user_record_from!(row, id);
    Ok((Some(record), tombstoned))
}

fn stored_event(row: &Row) -> Result<StoredEvent, tokio_postgres::Error> {
    Ok(super::super::records::stored_event_from!(
        row,
        row.try_get("payload")?
    ))
}

pub(crate) async fn stored_event_by_id(
    client: &Client,
    svix_id: &str,
) -> Result<Option<StoredEvent>, tokio_postgres::Error> {
    client
        .query_typed_opt(&sql::stored_event_sql(NS), &[(&svix_id, Type::TEXT)])
        .await?
        .as_ref()
        .map(stored_event)
        .transpose()
}

pub(crate) async fn stored_events(
    client: &Client,
    failed_only: bool,
    limit: i64,
) -> Result<Vec<StoredEvent>, tokio_postgres::Error> {
    client
        .query_typed(
            &sql::stored_events_sql(NS),
            &[(&failed_only, Type::BOOL), (&limit, Type::INT8)],
        )
        .await?
        .iter()
        .map(stored_event)
        .collect()
}

pub(crate) async fn get_state(
    client: &Client,
    key: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    client
        .query_typed_opt(&sql::get_state_sql(NS), &[(&key, Type::TEXT)])
        .await?
        .map(|row| row.try_get(0))
        .transpose()
}

pub(crate) async fn set_state(
    client: &Client,
    key: &str,
    value: Option<&str>,
    now: NaiveDateTime,
) -> Result<(), tokio_postgres::Error> {
    match value {
        Some(value) => {
            client
                .execute_typed(
                    &sql::set_state_sql(NS),
                    &[
                        (&key, Type::TEXT),
                        (&value, Type::TEXT),
                        (&now, Type::TIMESTAMP),
                    ],
                )
                .await
        }
        None => {
            client
                .execute_typed(&sql::delete_state_sql(NS), &[(&key, Type::TEXT)])
                .await
        }
    }
    .map(drop)
}

pub(crate) async fn acquire_lease(
    client: &Client,
    name: &str,
    holder: &str,
    expires_at: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<bool, tokio_postgres::Error> {
    let changed = client
        .execute_typed(
            &sql::acquire_lease_sql(NS),
            &[
                (&name, Type::TEXT),
                (&holder, Type::TEXT),
                (&expires_at, Type::TIMESTAMP),
                (&now, Type::TIMESTAMP),
            ],
        )
        .await?;
    Ok(changed == 1)
}

pub(crate) async fn release_lease(
    client: &Client,
    name: &str,
    holder: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute_typed(
            &sql::release_lease_sql(NS),
            &[(&name, Type::TEXT), (&holder, Type::TEXT)],
        )
        .await
        .map(drop)
}

pub(crate) async fn lease(
    client: &Client,
    name: &str,
) -> Result<Option<(String, NaiveDateTime)>, tokio_postgres::Error> {
    client
        .query_typed_opt(&sql::lease_sql(NS), &[(&name, Type::TEXT)])
        .await?
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .transpose()
}

pub(crate) async fn take_over_lease(
    client: &Client,
    name: &str,
    dead_holder: &str,
    new_holder: &str,
    expires_at: NaiveDateTime,
) -> Result<bool, tokio_postgres::Error> {
    let changed = client
        .execute_typed(
            &sql::take_over_lease_sql(NS),
            &[
                (&name, Type::TEXT),
                (&dead_holder, Type::TEXT),
                (&new_holder, Type::TEXT),
                (&expires_at, Type::TIMESTAMP),
            ],
        )
        .await?;
    Ok(changed == 1)
}

pub(crate) async fn failed_event_count(client: &Client) -> Result<i64, tokio_postgres::Error> {
    client
        .query_typed_one(&sql::failed_count_sql(NS), &[])
        .await?
        .try_get(0)
}

pub(crate) async fn live_user_ids(
    client: &Client,
    users: &UsersTable,
    before: NaiveDateTime,
) -> Result<Vec<String>, tokio_postgres::Error> {
    client
        .query_typed(
            &sql::live_user_ids_sql(users),
            &[(&before, Type::TIMESTAMP)],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}
