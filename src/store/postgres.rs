//! PostgreSQL (Neon in production): connection options, advisory locks, and bulk writes.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, PgPool};

use super::statements::statements_impl;
use super::{PoolSettings, StoreError, UsersTable, millis_to_datetime};

/// Neon's pooled endpoints are PgBouncer in transaction mode, named `<endpoint>-pooler.<region>…`.
pub(super) fn is_neon_pooler(url: &str) -> bool {
    PgConnectOptions::from_str(url).is_ok_and(|o| {
        o.get_host()
            .split('.')
            .next()
            .is_some_and(|h| h.ends_with("-pooler"))
    })
}

pub(super) fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| {
            // sqlx says "error with configuration: " twice, once per layer.
            let text = e.to_string();
            let mut reason = text.as_str();
            while let Some(rest) = reason.strip_prefix("error with configuration: ") {
                reason = rest;
            }
            StoreError::Setup(format!(
                "DATABASE_URL is not a valid PostgreSQL URL: {reason} (sslmode is one of \
                 disable, prefer, require, verify-ca, verify-full)"
            ))
        })?
        .application_name("clerk-sync")
        // PgBouncer (Neon's `-pooler` endpoint) rejects this startup parameter.
        .extra_float_digits(None)
        // sqlx logs a slow statement's whole text at WARN, and the webhook writers' text holds
        // the users' data (README rule 8: no personal data in logs); slow transactions show in
        // the processing-time metric and in each event's log line instead.
        .disable_statement_logging();
    Ok(PgPoolOptions::new()
        // No ping before each use: it costs a round trip per event, and a connection the
        // server closed fails the transaction with an I/O error, which is retried on a fresh
        // connection (see `is_lost_race`).
        .test_before_acquire(false)
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
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

/// Several rows' newest-wins upsert (see `statements::UPSERT_ONE` for one).
const UPSERT_ROWS: &str = r#"INSERT INTO {users} AS t (id, email, "firstName", "lastName", name, "imageUrl", username,
                          "clerkCreatedAt", "clerkUpdatedAt", "createdAt", "updatedAt")
       SELECT id, email, first_name, last_name, name, image_url, username,
              clerk_created_at, clerk_updated_at, $10, $10
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                   $7::text[], $8::timestamp[], $9::timestamp[])
            AS u(id, email, first_name, last_name, name, image_url, username,
                 clerk_created_at, clerk_updated_at)
       ON CONFLICT (id) DO UPDATE SET
         email = excluded.email, "firstName" = excluded."firstName",
         "lastName" = excluded."lastName", name = excluded.name,
         "imageUrl" = excluded."imageUrl", username = excluded.username,
         "clerkCreatedAt" = excluded."clerkCreatedAt",
         "clerkUpdatedAt" = excluded."clerkUpdatedAt", "updatedAt" = excluded."updatedAt"
       WHERE t."clerkUpdatedAt" IS NULL OR t."clerkUpdatedAt" <= excluded."clerkUpdatedAt""#;

/// Clears `column` (email or username) on rows that still hold the value read: `$1` ids, `$2`
/// values, `$3` the time.
fn clear_sql(users: &UsersTable, column: &str) -> String {
    users.sql(&format!(
        r#"UPDATE {{users}} AS u SET {column} = NULL, "updatedAt" = $3
           FROM unnest($1::text[], $2::text[]) AS c(id, value)
           WHERE u.id = c.id AND u.{column} = c.value"#
    ))
}

statements_impl!(
    PgConnection,
    ns = "clerk_sync.",
    in_list = ("= ANY(", ")"),
    list = |values: &[String]| values.to_vec(),
    {
        /// Transaction-scoped advisory locks: they work through a transaction-mode pooler
        /// (session locks do not) and are released by COMMIT or ROLLBACK, even if the client
        /// vanishes.
        async fn lock_keys(&mut self, keys: &[String]) -> Result<(), sqlx::Error> {
            if keys.is_empty() {
                return Ok(());
            }
            sqlx::query(LOCK_KEYS)
                .bind(keys)
                .execute(&mut *self)
                .await
                .map(drop)
        }

        /// Two statements whatever the batch size: clear the values that move, then one
        /// `INSERT … SELECT FROM unnest(…)` upsert. The WHERE clause repeats the newest-wins
        /// rule in SQL as a last line of defence; the decision was made under the locks.
        async fn write_rows(
            &mut self,
            users: &crate::store::UsersTable,
            writes: &crate::sync::RowWrites,
            now: chrono::NaiveDateTime,
        ) -> Result<(), sqlx::Error> {
            for (column, cleared) in [
                ("email", &writes.clear_email),
                ("username", &writes.clear_username),
            ] {
                if cleared.is_empty() {
                    continue;
                }
                let (ids, values): (Vec<&str>, Vec<&str>) = cleared
                    .iter()
                    .map(|(id, value)| (id.as_str(), value.as_str()))
                    .unzip();
                let sql = clear_sql(users, column);
                sqlx::query(&sql)
                    .bind(ids)
                    .bind(values)
                    .bind(now)
                    .execute(&mut *self)
                    .await?;
            }
            if writes.upserts.is_empty() {
                return Ok(());
            }
            if let [user] = writes.upserts.as_slice() {
                // A single event: plain parameters, so the plan is cached (see load_state).
                return self.upsert_one(users, user, now).await;
            }
            let rows = &writes.upserts;
            let column =
                |f: fn(&crate::sync::UserSnapshot) -> Option<String>| -> Vec<Option<String>> {
                    rows.iter().map(f).collect()
                };
            let sql = users.sql(UPSERT_ROWS);
            sqlx::query(&sql)
                .bind(rows.iter().map(|u| u.id.clone()).collect::<Vec<String>>())
                .bind(column(|u| u.email.clone()))
                .bind(column(|u| u.first_name.clone()))
                .bind(column(|u| u.last_name.clone()))
                .bind(column(|u| u.name.clone()))
                .bind(column(|u| u.image_url.clone()))
                .bind(column(|u| u.username.clone()))
                .bind(
                    rows.iter()
                        .map(|u| u.created_at.map(millis_to_datetime))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    rows.iter()
                        .map(|u| millis_to_datetime(u.updated_at))
                        .collect::<Vec<_>>(),
                )
                .bind(now)
                .execute(&mut *self)
                .await
                .map(drop)
        }
    }
);

/// Webhook deliveries in two round trips per batch. The extended protocol sqlx speaks costs a
/// round trip per statement (BEGIN, locks, lookup, writes, inbox, COMMIT: six or more per
/// event), and on two cores the context switches of those round trips cost more than the
/// statements themselves. Here the statements go out as text in two simple-protocol messages:
/// `BEGIN; locks; lookup`, then, once the rules have decided, `writes; inbox; COMMIT`. The
/// lookup has to be a statement of its own after the locks (in READ COMMITTED each statement
/// sees what was committed before it started, so it sees everything the lock waited for).
///
/// The statements are prepared once per connection (SQL `PREPARE`, sent with the first
/// batch) and called with `EXECUTE name(literals…)`, so PostgreSQL plans them once. Behind a
/// transaction-mode pooler a prepared statement may not be on the next server connection; the
/// first such error switches the writer to sending the statements whole, values inlined as
/// escaped literals (see [`literal`]), which works through any pooler.
#[derive(Debug, Default)]
pub(super) struct DeliveryWriter {
    /// Kept between batches: no pool checkout, no ping on return.
    connection: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    /// The connection has our prepared statements.
    prepared: bool,
    /// Statements are sent whole from now on (a pooler was detected).
    inline: bool,
    texts: Option<Vec<String>>,
}

/// The statements a batch uses, by the name they are prepared under (`clerk_sync_<name>`).
#[derive(Debug, Clone, Copy)]
enum Call {
    Lock,
    LookupOne,
    LookupMany,
    ClearEmail,
    ClearUsername,
    UpsertOne,
    UpsertRows,
    DeleteRow,
    SoftDeleteRow,
    EraseRow,
    Tombstone,
    InboxOne,
    InboxRows,
}

impl Call {
    const ALL: [Call; 13] = [
        Call::Lock,
        Call::LookupOne,
        Call::LookupMany,
        Call::ClearEmail,
        Call::ClearUsername,
        Call::UpsertOne,
        Call::UpsertRows,
        Call::DeleteRow,
        Call::SoftDeleteRow,
        Call::EraseRow,
        Call::Tombstone,
        Call::InboxOne,
        Call::InboxRows,
    ];

    /// Prepared (planned once per connection): every statement but the batch lookup and the
    /// rare clears. The batch lookup (`= ANY(list)` on three indexes) needs a plan for the
    /// lists at hand; its generic plan made a batch slower (measured at eight concurrent
    /// senders: 2,530–2,950 events/s prepared against 3,260–3,640 sent whole), while the bulk
    /// upsert and inbox insert, plain scans of `unnest`, gain from being prepared (median of
    /// four runs 3,480 against 3,280).
    fn prepared(self) -> bool {
        matches!(
            self,
            Call::Lock
                | Call::LookupOne
                | Call::UpsertOne
                | Call::UpsertRows
                | Call::DeleteRow
                | Call::SoftDeleteRow
                | Call::Tombstone
                | Call::InboxOne
                | Call::InboxRows
        )
    }

    fn name(self) -> &'static str {
        match self {
            Call::Lock => "lock",
            Call::LookupOne => "lookup_one",
            Call::LookupMany => "lookup_many",
            Call::ClearEmail => "clear_email",
            Call::ClearUsername => "clear_username",
            Call::UpsertOne => "upsert_one",
            Call::UpsertRows => "upsert_rows",
            Call::DeleteRow => "delete_row",
            Call::SoftDeleteRow => "soft_delete_row",
            Call::EraseRow => "erase_row",
            Call::Tombstone => "tombstone",
            Call::InboxOne => "inbox_one",
            Call::InboxRows => "inbox_rows",
        }
    }

    fn text(self, users: &UsersTable) -> String {
        use super::statements::{UPSERT_ONE, deletion_sql, load_state_sql};
        use crate::sync::Change;
        let nobody = String::new();
        match self {
            Call::Lock => LOCK_KEYS.into(),
            Call::LookupOne => load_state_sql(users, "clerk_sync.", ("= ANY(", ")"), true),
            Call::LookupMany => load_state_sql(users, "clerk_sync.", ("= ANY(", ")"), false),
            Call::ClearEmail => clear_sql(users, "email"),
            Call::ClearUsername => clear_sql(users, "username"),
            Call::UpsertOne => users.sql(UPSERT_ONE),
            Call::UpsertRows => users.sql(UPSERT_ROWS),
            Call::DeleteRow => {
                deletion_sql(users, "clerk_sync.", &Change::DeleteRow { user_id: nobody })
            }
            Call::SoftDeleteRow => deletion_sql(
                users,
                "clerk_sync.",
                &Change::SoftDeleteRow { user_id: nobody },
            ),
            Call::EraseRow => {
                deletion_sql(users, "clerk_sync.", &Change::EraseRow { user_id: nobody })
            }
            Call::Tombstone => {
                deletion_sql(users, "clerk_sync.", &Change::Tombstone { user_id: nobody })
            }
            Call::InboxOne => super::statements::insert_inbox_sql("clerk_sync."),
            Call::InboxRows => INSERT_INBOX_ROWS.into(),
        }
    }
}

/// Writes statements into a message, as `EXECUTE`s of prepared statements or whole.
struct Script<'a> {
    sql: String,
    texts: &'a [String],
    prepared: bool,
}

impl Script<'_> {
    fn call(&mut self, call: Call, args: &[String]) {
        if self.prepared && call.prepared() {
            self.sql.push_str("EXECUTE clerk_sync_");
            self.sql.push_str(call.name());
            self.sql.push('(');
            self.sql.push_str(&args.join(", "));
            self.sql.push(')');
        } else {
            literal::render(&mut self.sql, &self.texts[call as usize], args);
        }
        self.sql.push_str(";\n");
    }
}

impl DeliveryWriter {
    pub fn new(inline: bool) -> Self {
        DeliveryWriter {
            inline,
            ..DeliveryWriter::default()
        }
    }

    pub fn discard_connection(&mut self) {
        self.connection = None;
    }

    pub async fn apply(
        &mut self,
        pool: &PgPool,
        users: &UsersTable,
        deliveries: &[(&crate::clerk::ClerkEvent, super::DeliveryRecord<'_>)],
        mode: crate::sync::DeleteMode,
    ) -> Result<Vec<crate::sync::Outcome>, sqlx::Error> {
        let texts = self
            .texts
            .get_or_insert_with(|| Call::ALL.iter().map(|c| c.text(users)).collect());
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                let mut connection = pool.acquire().await?;
                // Never handed back to the pool: if this writer goes away (or drops the
                // connection after an error, possibly inside a transaction), it is closed.
                connection.close_on_drop();
                self.prepared = false;
                self.connection.insert(connection)
            }
        };
        let mut script = Script {
            sql: String::new(),
            texts,
            prepared: !self.inline,
        };
        if !self.inline && !self.prepared {
            for call in Call::ALL.into_iter().filter(|c| c.prepared()) {
                script.sql.push_str("PREPARE clerk_sync_");
                script.sql.push_str(call.name());
                script.sql.push_str(" AS ");
                script.sql.push_str(&texts[call as usize]);
                script.sql.push_str(";\n");
            }
        }
        let result = apply_deliveries(connection, script, deliveries, mode).await;
        match &result {
            Ok(_) => self.prepared = true,
            Err(error) => {
                // Possibly inside a failed transaction, or broken: never reuse it. Roll back
                // first, so its locks are gone before the events are retried one by one
                // (closing alone releases them only once the server notices).
                if let Some(mut connection) = self.connection.take() {
                    let rollback = (&mut *connection).execute("ROLLBACK");
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), rollback).await;
                }
                let code = error.as_database_error().and_then(|e| e.code());
                // invalid_sql_statement_name, duplicate_prepared_statement: our prepared
                // statements are not where we left them, so a pooler sits in between.
                if matches!(code.as_deref(), Some("26000" | "42P05")) && !self.inline {
                    tracing::info!(
                        "prepared statements do not stay on this database connection (a \
                         transaction-mode pooler?); sending statements whole from now on"
                    );
                    self.inline = true;
                }
            }
        }
        result
    }
}

async fn apply_deliveries(
    connection: &mut PgConnection,
    mut script: Script<'_>,
    deliveries: &[(&crate::clerk::ClerkEvent, super::DeliveryRecord<'_>)],
    mode: crate::sync::DeleteMode,
) -> Result<Vec<crate::sync::Outcome>, sqlx::Error> {
    use super::flow::DeliveryBatch;
    use super::statements::{is_single, read_state};
    use sqlx::Row;

    let batch = DeliveryBatch::new(deliveries);
    let keys = &batch.keys;
    script.sql.push_str("BEGIN;\n");
    let lock_keys = batch.keys.lock_keys();
    if !lock_keys.is_empty() {
        script.call(Call::Lock, &[literal::texts(&lock_keys)]);
    }
    let single = is_single(&batch.svix_ids, keys);
    let args = if single {
        [
            literal::text(batch.svix_ids.first().map(String::as_str)),
            literal::text(keys.user_ids.first().map(String::as_str)),
            literal::text(keys.emails.first().map(String::as_str)),
            literal::text(keys.usernames.first().map(String::as_str)),
        ]
    } else {
        [
            literal::texts(&batch.svix_ids),
            literal::texts(&keys.user_ids),
            literal::texts(&keys.emails),
            literal::texts(&keys.usernames),
        ]
    };
    script.call(
        if single {
            Call::LookupOne
        } else {
            Call::LookupMany
        },
        &args,
    );
    let sql = std::mem::take(&mut script.sql);
    let rows = (&mut *connection).fetch_all(sqlx::raw_sql(&sql)).await?;
    // The lock statement's rows have one column; the lookup's have six.
    let state = read_state(rows.into_iter().filter(|row| row.len() > 1))?;

    let decision = batch.decide(state, mode, super::now());
    let now = literal::timestamp(Some(decision.now));
    for (call, cleared) in [
        (Call::ClearEmail, &decision.writes.clear_email),
        (Call::ClearUsername, &decision.writes.clear_username),
    ] {
        if cleared.is_empty() {
            continue;
        }
        let ids: Vec<&str> = cleared.iter().map(|(id, _)| id.as_str()).collect();
        let values: Vec<&str> = cleared.iter().map(|(_, value)| value.as_str()).collect();
        let args = [literal::texts(&ids), literal::texts(&values), now.clone()];
        script.call(call, &args);
    }
    let rows = &decision.writes.upserts;
    if let [user] = rows.as_slice() {
        let args = [
            literal::text(Some(&user.id)),
            literal::text(user.email.as_deref()),
            literal::text(user.first_name.as_deref()),
            literal::text(user.last_name.as_deref()),
            literal::text(user.name.as_deref()),
            literal::text(user.image_url.as_deref()),
            literal::text(user.username.as_deref()),
            literal::timestamp(user.created_at.map(millis_to_datetime)),
            literal::timestamp(Some(millis_to_datetime(user.updated_at))),
            now.clone(),
        ];
        script.call(Call::UpsertOne, &args);
    } else if !rows.is_empty() {
        let column = |f: fn(&crate::sync::UserSnapshot) -> Option<&str>| {
            literal::optional_texts(rows.iter().map(f))
        };
        let times = |f: fn(&crate::sync::UserSnapshot) -> Option<chrono::NaiveDateTime>| {
            literal::timestamps(rows.iter().map(f))
        };
        let args = [
            column(|u| Some(&u.id)),
            column(|u| u.email.as_deref()),
            column(|u| u.first_name.as_deref()),
            column(|u| u.last_name.as_deref()),
            column(|u| u.name.as_deref()),
            column(|u| u.image_url.as_deref()),
            column(|u| u.username.as_deref()),
            times(|u| u.created_at.map(millis_to_datetime)),
            times(|u| Some(millis_to_datetime(u.updated_at))),
            now.clone(),
        ];
        script.call(Call::UpsertRows, &args);
    }
    for change in &decision.deletions {
        use crate::sync::Change;
        let (call, user_id, at_time) = match change {
            Change::DeleteRow { user_id } => (Call::DeleteRow, user_id, false),
            Change::SoftDeleteRow { user_id } => (Call::SoftDeleteRow, user_id, true),
            Change::EraseRow { user_id } => (Call::EraseRow, user_id, true),
            Change::Tombstone { user_id } => (Call::Tombstone, user_id, true),
            _ => unreachable!("a deletion plans only removals and tombstones"),
        };
        let mut args = vec![literal::text(Some(user_id))];
        if at_time {
            args.push(now.clone());
        }
        script.call(call, &args);
    }
    let inbox = &decision.inbox;
    if let [record] = inbox.as_slice() {
        let args = [
            literal::text(Some(record.svix_id)),
            literal::text(Some(record.event_type)),
            literal::text(record.user_id),
            literal::text(Some(record.outcome.as_str())),
            literal::text(record.error),
            literal::text(Some(record.payload)),
            record.svix_timestamp.to_string(),
            now.clone(),
        ];
        script.call(Call::InboxOne, &args);
    } else if !inbox.is_empty() {
        let args = [
            literal::optional_texts(inbox.iter().map(|r| Some(r.svix_id))),
            literal::optional_texts(inbox.iter().map(|r| Some(r.event_type))),
            literal::optional_texts(inbox.iter().map(|r| r.user_id)),
            literal::optional_texts(inbox.iter().map(|r| Some(r.outcome.as_str()))),
            literal::optional_texts(inbox.iter().map(|r| r.error)),
            literal::optional_texts(inbox.iter().map(|r| Some(r.payload))),
            literal::integers(inbox.iter().map(|r| r.svix_timestamp)),
            now.clone(),
        ];
        script.call(Call::InboxRows, &args);
    }
    script.sql.push_str("COMMIT");
    // Only the inbox insert returns rows: the ids it inserted.
    let inserted = (&mut *connection)
        .fetch_all(sqlx::raw_sql(&script.sql))
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    Ok(decision.outcomes(&inserted))
}

/// SQL literals for statements sent as text. Strings are `E'…'` literals, whose escapes mean
/// the same whatever `standard_conforming_strings` says: a quote doubled, a backslash
/// doubled, and NUL written as `\x00`, which PostgreSQL refuses with the same error (22021)
/// a bound NUL gets, so such an event ends up stored as failed exactly as on the other paths.
mod literal {
    use std::fmt::Write;

    pub fn text(value: Option<&str>) -> String {
        let Some(value) = value else {
            return "NULL".into();
        };
        let mut out = String::with_capacity(value.len() + 3);
        out.push_str("E'");
        for c in value.chars() {
            match c {
                '\'' => out.push_str("''"),
                '\\' => out.push_str("\\\\"),
                '\0' => out.push_str("\\x00"),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    pub fn texts<S: AsRef<str>>(values: &[S]) -> String {
        optional_texts(values.iter().map(|v| Some(v.as_ref())))
    }

    pub fn optional_texts<'a>(values: impl Iterator<Item = Option<&'a str>>) -> String {
        array(values.map(text))
    }

    pub fn timestamp(value: Option<chrono::NaiveDateTime>) -> String {
        match value {
            Some(t) => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.3f")),
            None => "NULL".into(),
        }
    }

    /// An array literal (`'{…}'`): its type comes from the parameter it fills, where an
    /// `ARRAY[…]` of untyped strings would be `text[]`. The elements need no escaping.
    pub fn timestamps(values: impl Iterator<Item = Option<chrono::NaiveDateTime>>) -> String {
        untyped_array(values.map(|v| match v {
            Some(t) => format!("\"{}\"", t.format("%Y-%m-%d %H:%M:%S%.3f")),
            None => "NULL".into(),
        }))
    }

    pub fn integers(values: impl Iterator<Item = i64>) -> String {
        untyped_array(values.map(|v| v.to_string()))
    }

    fn untyped_array(items: impl Iterator<Item = String>) -> String {
        format!("'{{{}}}'", items.collect::<Vec<_>>().join(","))
    }

    /// The statements cast every array parameter (`$1::text[]`), so the element type of an
    /// empty array or one of NULLs does not matter.
    fn array(items: impl Iterator<Item = String>) -> String {
        let mut out = String::from("ARRAY[");
        for (i, item) in items.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&item);
        }
        if out.len() == "ARRAY[".len() {
            return "'{}'".into();
        }
        out.push(']');
        out
    }

    /// Appends `template` with `$n` replaced by `args[n - 1]`. The templates are the project's
    /// own statements, which use `$` for nothing else.
    pub fn render(out: &mut String, template: &str, args: &[String]) {
        let mut rest = template;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(rest.len() - at - 1, |n| n);
            let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
            match n.checked_sub(1).and_then(|i| args.get(i)) {
                Some(arg) => out.push_str(arg),
                None => {
                    let _ = write!(out, "${}", &rest[at + 1..at + 1 + digits]);
                }
            }
            rest = &rest[at + 1 + digits..];
        }
        out.push_str(rest);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn strings_are_escaped_whatever_they_hold() {
            assert_eq!(text(Some("O'Brien \\ x")), r"E'O''Brien \\ x'");
            assert_eq!(text(Some("a\0b")), r"E'a\x00b'");
            assert_eq!(text(None), "NULL");
            assert_eq!(texts::<&str>(&[]), "'{}'");
            assert_eq!(
                optional_texts([Some("a"), None].into_iter()),
                "ARRAY[E'a',NULL]"
            );
            let t =
                chrono::DateTime::from_timestamp_millis(1_700_000_000_123).map(|t| t.naive_utc());
            assert_eq!(
                timestamps([t, None].into_iter()),
                r#"'{"2023-11-14 22:13:20.123",NULL}'"#
            );
            assert_eq!(integers([1, -2].into_iter()), "'{1,-2}'");
        }

        #[test]
        fn neon_pooler_endpoints_are_recognised_by_host() {
            use super::super::is_neon_pooler;
            assert!(is_neon_pooler(
                "postgresql://u:p@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/db?sslmode=require"
            ));
            assert!(!is_neon_pooler(
                "postgresql://u:p@ep-cool-darkness-123456.us-east-2.aws.neon.tech/db?sslmode=require"
            ));
            assert!(!is_neon_pooler(
                "postgres://postgres@127.0.0.1:5432/postgres"
            ));
        }

        #[test]
        fn parameters_are_replaced_by_number() {
            let mut out = String::new();
            let args: Vec<String> = (1..=10).map(|n| format!("<{n}>")).collect();
            render(&mut out, "f($1, $10, $2) $x $11", &args);
            assert_eq!(out, "f(<1>, <10>, <2>) $x $11");
        }
    }
}
