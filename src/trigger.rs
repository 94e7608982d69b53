//! `clerk-sync trigger`: sends a realistic, correctly signed Clerk event to a running server, so
//! everything can be tried locally without Clerk or a tunnel.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clerk::sample::{self, SampleMembership, SampleOrganization, SampleUser};
use crate::store::{MembershipRecord, OrganizationRecord};
use crate::webhook::{SigningSecret, signed_headers};

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `*.created`: a new user, organization or membership (new ids unless given).
    Created,
    /// `*.updated`: an existing one changed, newer than what the database holds.
    Updated,
    /// `*.deleted`: an existing one removed.
    Deleted,
}

impl Action {
    fn suffix(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

/// Which event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerEvent {
    /// `user.*`.
    User(Action),
    /// `organization.*`.
    Organization(Action),
    /// `organizationMembership.*`.
    Membership(Action),
    /// A JSON file sent byte for byte (e.g. one of Clerk's example payloads).
    File(PathBuf),
}

/// The event types `trigger` makes up itself.
pub(crate) const EVENT_TYPES: [&str; 9] = [
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
];

impl TriggerEvent {
    /// An event type, or a file to send. Text that names neither (`user.foo`) is refused with
    /// the list of types rather than taken for a missing file. `created`, `updated` and
    /// `deleted` alone mean the user's.
    pub fn parse(text: &str) -> Result<TriggerEvent, TriggerError> {
        let action = |suffix: &str| match suffix {
            "created" => Some(Action::Created),
            "updated" => Some(Action::Updated),
            "deleted" => Some(Action::Deleted),
            _ => None,
        };
        let named = match text.split_once('.') {
            Some(("user", suffix)) => action(suffix).map(TriggerEvent::User),
            Some(("organization", suffix)) => action(suffix).map(TriggerEvent::Organization),
            Some(("organizationMembership", suffix)) => {
                action(suffix).map(TriggerEvent::Membership)
            }
            None => action(text).map(TriggerEvent::User),
            _ => None,
        };
        Ok(match named {
            Some(event) => event,
            None if Path::new(text).exists()
                || text.contains(std::path::MAIN_SEPARATOR)
                || text.ends_with(".json") =>
            {
                TriggerEvent::File(PathBuf::from(text))
            }
            None => {
                return Err(TriggerError::Usage(format!(
                    "{text:?} is neither an event type trigger can make up ({}) nor a file; \
                     to send any other event, save its JSON in a file and give the file's path",
                    EVENT_TYPES.join(", ")
                )));
            }
        })
    }

    /// Clerk's name of the event, e.g. `organizationMembership.created`; `None` for a file.
    pub fn event_type(&self) -> Option<&'static str> {
        let (kind, action) = match self {
            TriggerEvent::User(action) => (0, action),
            TriggerEvent::Organization(action) => (1, action),
            TriggerEvent::Membership(action) => (2, action),
            TriggerEvent::File(_) => return None,
        };
        let index = kind * 3 + *action as usize;
        debug_assert!(EVENT_TYPES[index].ends_with(action.suffix()));
        Some(EVENT_TYPES[index])
    }
}

/// What to put in the event: the flags of `clerk-sync trigger`, and the rows the event starts
/// from.
#[derive(Debug, Clone, Default)]
pub struct EventFields {
    /// The user of a `user.*` or `organizationMembership.*` event; the creator of
    /// `organization.created`.
    pub user_id: Option<String>,
    /// The user's primary email, instead of a made-up one.
    pub email: Option<String>,
    /// Send the user without any email address (phone or username sign-up).
    pub no_email: bool,
    /// The user's first name, instead of a made-up one.
    pub first_name: Option<String>,
    /// The user's last name, instead of a made-up one.
    pub last_name: Option<String>,
    /// The user's username, instead of a made-up one.
    pub username: Option<String>,
    /// The organization of an `organization.*` or `organizationMembership.*` event.
    pub org_id: Option<String>,
    /// A membership's role: `org:admin`, `org:member`, a custom `org:<key>`, or the key alone
    /// (`admin` is `org:admin`).
    pub role: Option<String>,
    /// An organization's slug.
    pub slug: Option<String>,
    /// The user as the database has it (for `user.updated`): the update starts from it instead
    /// of made-up values, keeping `created_at`, which Clerk never changes.
    pub current: Option<SampleUser>,
    /// The organization as the database has it: `organization.updated` starts from it, and a
    /// membership event embeds it as it is, so that neither overwrites what the organization
    /// holds with made-up values.
    pub current_organization: Option<SampleOrganization>,
    /// The membership of `user_id` in `org_id` as the database has it (for
    /// `organizationMembership.updated` / `.deleted`): its id, role and times.
    pub current_membership: Option<SampleMembership>,
}

/// The flags that make up a user, with whether each was given.
fn user_flags(fields: &EventFields) -> impl Iterator<Item = &'static str> {
    [
        ("--email", fields.email.is_some()),
        ("--no-email", fields.no_email),
        ("--first-name", fields.first_name.is_some()),
        ("--last-name", fields.last_name.is_some()),
        ("--username", fields.username.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
}

fn usage(message: impl Into<String>) -> TriggerError {
    TriggerError::Usage(message.into())
}

/// Refuses flags that do not fit the event (rather than ignoring them) and events missing the
/// ids they need, saying what to do instead. Checked before anything is read or sent.
pub fn check_flags(event: &TriggerEvent, fields: &EventFields) -> Result<(), TriggerError> {
    let org_flags = [
        ("--org-id", fields.org_id.is_some()),
        ("--role", fields.role.is_some()),
        ("--slug", fields.slug.is_some()),
    ];
    let Some(event_type) = event.event_type() else {
        let given = org_flags
            .into_iter()
            .chain([("--user-id", fields.user_id.is_some())])
            .filter_map(|(flag, given)| given.then_some(flag));
        if let Some(flag) = given.chain(user_flags(fields)).next() {
            return Err(usage(format!(
                "{flag} makes up part of an event, but a file is sent as it is, byte for byte; \
                 edit the file instead, or name an event type ({})",
                EVENT_TYPES.join(", ")
            )));
        }
        return Ok(());
    };
    match event {
        TriggerEvent::User(action) => {
            if let Some((flag, _)) = org_flags.iter().find(|(_, given)| *given) {
                return Err(usage(format!(
                    "{flag} is for organization.* and organizationMembership.* events, not \
                     {event_type}"
                )));
            }
            if *action == Action::Deleted
                && let Some(flag) = user_flags(fields).next()
            {
                return Err(usage(format!(
                    "user.deleted sends the user's id alone; {flag} goes with user.created or \
                     user.updated"
                )));
            }
        }
        TriggerEvent::Organization(_) | TriggerEvent::Membership(_) => {
            if let Some(flag) = user_flags(fields).next() {
                return Err(usage(format!(
                    "{flag} describes a user: it goes with user.created and user.updated, not \
                     {event_type}"
                )));
            }
        }
        TriggerEvent::File(_) => {}
    }
    if let Some(id) = &fields.org_id
        && (!id.starts_with("org_") || id.len() <= "org_".len())
    {
        return Err(usage(format!(
            "--org-id {id:?} is not an organization id: Clerk's start with org_ (e.g. \
             org_2abc..., or one printed by `clerk-sync trigger organization.created`)"
        )));
    }
    if !matches!(event, TriggerEvent::User(_))
        && let Some(id) = fields
            .user_id
            .as_deref()
            .filter(|id| id.starts_with("org_"))
    {
        return Err(usage(format!(
            "--user-id {id:?} is an organization's id; an organization goes in --org-id"
        )));
    }
    match event {
        TriggerEvent::User(Action::Updated | Action::Deleted) if fields.user_id.is_none() => {
            Err(usage(format!(
                "{event_type} needs the user it is about: add --user-id user_... (the id printed \
                 by `clerk-sync trigger user.created`)"
            )))
        }
        TriggerEvent::Organization(action) => {
            if fields.role.is_some() {
                return Err(usage(format!(
                    "--role is a member's role: it goes with organizationMembership.created or \
                     organizationMembership.updated, not {event_type}"
                )));
            }
            if *action != Action::Created && fields.user_id.is_some() {
                return Err(usage(format!(
                    "{event_type} names no user (--user-id sets the creator of \
                     organization.created; memberships are organizationMembership.* events)"
                )));
            }
            if *action != Action::Created && fields.org_id.is_none() {
                return Err(usage(format!(
                    "{event_type} needs the organization it is about: add --org-id org_... (the \
                     id printed by `clerk-sync trigger organization.created`)"
                )));
            }
            Ok(())
        }
        TriggerEvent::Membership(action) => {
            if fields.slug.is_some() {
                return Err(usage(format!(
                    "--slug is the organization's: change it with `clerk-sync trigger \
                     organization.updated --org-id org_... --slug ...`, not {event_type}"
                )));
            }
            if *action == Action::Deleted && fields.role.is_some() {
                return Err(usage(
                    "organizationMembership.deleted sends the membership as it was, role and \
                     all; --role goes with organizationMembership.created or .updated",
                ));
            }
            if let Some(role) = &fields.role {
                role_key(role)?;
            }
            if *action != Action::Created && (fields.org_id.is_none() || fields.user_id.is_none()) {
                return Err(usage(format!(
                    "{event_type} needs the membership it is about, named by its organization \
                     and its user: add --org-id org_... --user-id user_... (the ids printed by \
                     `clerk-sync trigger organizationMembership.created`)"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Clerk's key of a role given as `org:admin`, or as `admin` (which means `org:admin`).
fn role_key(role: &str) -> Result<String, TriggerError> {
    let role = role.trim();
    if role.is_empty() || role.ends_with(':') || role.chars().any(char::is_whitespace) {
        return Err(usage(format!(
            "--role {role:?} is not a role: use org:admin, org:member or a custom role's key \
             (org:billing, or billing alone)"
        )));
    }
    Ok(if role.contains(':') {
        role.to_owned()
    } else {
        format!("org:{role}")
    })
}

/// An organization's row, as a sample event describing it as it is.
pub fn sample_organization(row: &OrganizationRecord) -> SampleOrganization {
    let millis = |t: chrono::NaiveDateTime| t.and_utc().timestamp_millis();
    let updated_at = row.clerk_updated_at.map_or(0, millis);
    SampleOrganization {
        id: row.id.clone(),
        name: row.name.clone(),
        // An organization whose slug moved on to another holds none: sent as "", read as none.
        slug: row.slug.clone().unwrap_or_default(),
        image_url: row.image_url.clone().unwrap_or_default(),
        created_by: row.created_by.clone().unwrap_or_default(),
        members_count: 1,
        created_at: row.clerk_created_at.map_or(updated_at, millis),
        updated_at,
    }
}

/// A membership's row (with its organization's), as a sample event describing it as it is.
pub fn sample_membership(row: &MembershipRecord) -> SampleMembership {
    let millis = |t: chrono::NaiveDateTime| t.and_utc().timestamp_millis();
    let updated_at = row.clerk_updated_at.map_or(0, millis);
    SampleMembership {
        id: row.id.clone(),
        organization: sample_organization(&row.organization),
        user_id: row.user_id.clone(),
        role: row.role.clone(),
        created_at: row.clerk_created_at.map_or(updated_at, millis),
        updated_at,
    }
}

/// Why `trigger` sent nothing.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The event or flags were wrong; the text says what to give instead.
    #[error("{0}")]
    Usage(String),
    /// The event file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file given as the event.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The server did not answer (not running, wrong address); an answer, even an error, is a
    /// [`Delivered`].
    #[error("could not reach {url}: {source}. Is `clerk-sync serve` running there?")]
    Send {
        /// The webhook URL the event was posted to.
        url: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
}

/// A signed request ready to send.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    /// The delivery's `svix-id`; sending the same id again is a duplicate to the server.
    pub svix_id: String,
    /// The ids the event is about, as far as trigger made it up (none for a file).
    pub user_id: Option<String>,
    /// The organization the event is about, for organization and membership events.
    pub organization_id: Option<String>,
    /// The membership the event is about, for membership events.
    pub membership_id: Option<String>,
    /// The JSON body, exactly the bytes signed.
    pub body: String,
    /// `svix-id`, `svix-timestamp` and `svix-signature`, as Svix sends them.
    pub headers: Vec<(&'static str, String)>,
}

impl SignedEvent {
    /// What the event is about, for people: `user_...`, `org_...`, or
    /// `orgmem_... (user_... in org_...)`.
    pub fn about(&self) -> Option<String> {
        match (&self.membership_id, &self.organization_id, &self.user_id) {
            (Some(membership), Some(organization), Some(user)) => {
                Some(format!("{membership} ({user} in {organization})"))
            }
            (None, Some(organization), _) => Some(organization.clone()),
            (None, None, Some(user)) => Some(user.clone()),
            _ => None,
        }
    }
}

/// An event's body and the ids it is about.
#[derive(Default)]
struct MadeUp {
    user_id: Option<String>,
    organization_id: Option<String>,
    membership_id: Option<String>,
    body: String,
}

/// Builds and signs the event.
pub fn build(
    event: &TriggerEvent,
    fields: &EventFields,
    secret: &SigningSecret,
    svix_id: Option<String>,
) -> Result<SignedEvent, TriggerError> {
    check_flags(event, fields)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let made = match event {
        TriggerEvent::User(action) => user_event(*action, fields, now_ms),
        TriggerEvent::Organization(action) => organization_event(*action, fields, now_ms),
        TriggerEvent::Membership(action) => membership_event(*action, fields, now_ms)?,
        TriggerEvent::File(path) => MadeUp {
            body: std::fs::read_to_string(path).map_err(|source| TriggerError::File {
                path: path.clone(),
                source,
            })?,
            ..MadeUp::default()
        },
    };
    let svix_id = svix_id.unwrap_or_else(|| sample::random_id("msg"));
    let timestamp = chrono::Utc::now().timestamp();
    let headers = signed_headers(secret, &svix_id, timestamp, made.body.as_bytes())
        .map_err(|e| TriggerError::Usage(format!("cannot sign the event: {e}")))?;
    Ok(SignedEvent {
        svix_id,
        user_id: made.user_id,
        organization_id: made.organization_id,
        membership_id: made.membership_id,
        body: made.body,
        headers,
    })
}

/// An id the flags gave, else a new random one (for the `*.created` events).
fn given_or_new(id: &Option<String>, prefix: &str) -> String {
    id.clone().unwrap_or_else(|| sample::random_id(prefix))
}

/// An id [`check_flags`] made sure of.
fn given(id: &Option<String>) -> String {
    id.clone().unwrap_or_default()
}

fn user_event(action: Action, fields: &EventFields, now_ms: i64) -> MadeUp {
    let id = match action {
        Action::Created => given_or_new(&fields.user_id, "user"),
        Action::Updated | Action::Deleted => given(&fields.user_id),
    };
    let body = match action {
        Action::Created => sample::user_created(&sample_user(fields, &id, now_ms)),
        Action::Updated => sample::user_updated(&sample_user(fields, &id, now_ms)),
        Action::Deleted => sample::user_deleted(&id, now_ms),
    };
    MadeUp {
        user_id: Some(id),
        body,
        ..MadeUp::default()
    }
}

fn sample_user(fields: &EventFields, id: &str, now_ms: i64) -> SampleUser {
    let mut user = match &fields.current {
        Some(current) if current.id == id => SampleUser {
            // Newer than what the row holds, even when clocks disagree.
            updated_at: now_ms.max(current.updated_at + 1),
            ..current.clone()
        },
        _ => SampleUser::new(id, now_ms),
    };
    if fields.no_email {
        user.email = None;
    } else if let Some(email) = &fields.email {
        user.email = Some(email.clone());
    }
    if let Some(first) = &fields.first_name {
        user.first_name = Some(first.clone());
    }
    if let Some(last) = &fields.last_name {
        user.last_name = Some(last.clone());
    }
    if let Some(username) = &fields.username {
        user.username = Some(username.clone());
    }
    user
}

/// The organization `id` as the database has it (else made up at `now_ms`), its `updated_at`
/// moved past the row's when `newer`.
fn current_organization(
    fields: &EventFields,
    id: &str,
    now_ms: i64,
    newer: bool,
) -> SampleOrganization {
    let current = fields
        .current_organization
        .as_ref()
        .or(fields.current_membership.as_ref().map(|m| &m.organization))
        .filter(|o| o.id == id);
    match current {
        Some(current) => {
            let mut organization = current.clone();
            if newer || organization.updated_at <= 0 {
                // Newer than what the row holds, even when clocks disagree.
                organization.updated_at = now_ms.max(current.updated_at + 1);
            }
            organization
        }
        None => SampleOrganization::new(id, now_ms),
    }
}

fn organization_event(action: Action, fields: &EventFields, now_ms: i64) -> MadeUp {
    let id = match action {
        Action::Created => given_or_new(&fields.org_id, "org"),
        Action::Updated | Action::Deleted => given(&fields.org_id),
    };
    let mut organization = match action {
        Action::Created => SampleOrganization::new(&id, now_ms),
        Action::Updated | Action::Deleted => current_organization(fields, &id, now_ms, true),
    };
    if let Some(slug) = &fields.slug {
        organization.slug = slug.clone();
    }
    if let Some(creator) = &fields.user_id {
        organization.created_by = creator.clone();
    }
    let body = match action {
        Action::Created => sample::organization_created(&organization),
        Action::Updated => sample::organization_updated(&organization),
        Action::Deleted => {
            sample::organization_deleted(&id, &organization.slug, organization.updated_at)
        }
    };
    MadeUp {
        organization_id: Some(id),
        body,
        ..MadeUp::default()
    }
}

fn membership_event(
    action: Action,
    fields: &EventFields,
    now_ms: i64,
) -> Result<MadeUp, TriggerError> {
    let (organization_id, user_id) = match action {
        Action::Created => (
            given_or_new(&fields.org_id, "org"),
            given_or_new(&fields.user_id, "user"),
        ),
        Action::Updated | Action::Deleted => (given(&fields.org_id), given(&fields.user_id)),
    };
    // The organization goes in as the database has it, not newer: a membership event must not
    // overwrite its name or slug.
    let organization = current_organization(fields, &organization_id, now_ms, false);
    let current = fields
        .current_membership
        .as_ref()
        .filter(|m| m.organization.id == organization_id && m.user_id == user_id)
        .filter(|_| action != Action::Created);
    let mut membership = match current {
        Some(current) => SampleMembership {
            organization,
            // Newer than what the row holds, even when clocks disagree.
            updated_at: now_ms.max(current.updated_at + 1),
            ..current.clone()
        },
        None => SampleMembership::new(sample::random_id("orgmem"), organization, &user_id, now_ms),
    };
    if let Some(role) = &fields.role {
        membership.role = role_key(role)?;
    }
    let body = match action {
        Action::Created => sample::membership_created(&membership),
        Action::Updated => sample::membership_updated(&membership),
        // Clerk sends the membership as it was; the envelope's time orders the deletion.
        Action::Deleted => {
            let at = membership.updated_at;
            if let Some(current) = current {
                membership.updated_at = current.updated_at;
            }
            sample::membership_deleted(&membership, at)
        }
    };
    Ok(MadeUp {
        user_id: Some(user_id),
        organization_id: Some(organization_id),
        membership_id: Some(membership.id),
        body,
    })
}

/// The answer the server gave.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The HTTP status; 2xx means the event was accepted.
    pub status: u16,
    /// The response body: JSON with the `outcome` (`created`, `duplicate`, ...) or the `error`.
    pub body: String,
}

/// Posts a signed event.
pub async fn send(url: &str, event: &SignedEvent) -> Result<Delivered, TriggerError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|source| TriggerError::Send {
            url: url.to_owned(),
            source,
        })?;
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(event.body.clone());
    for (name, value) in &event.headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(|source| TriggerError::Send {
        url: url.to_owned(),
        source,
    })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok(Delivered { status, body })
}

/// The webhook URL of a server listening on `listen` (a wildcard address means this machine).
pub fn local_webhook_url(listen: SocketAddr) -> String {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    format!(
        "http://{host}:{}{}",
        listen.port(),
        crate::http::WEBHOOK_PATH
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn body(event: &TriggerEvent, fields: &EventFields) -> Value {
        let (secret, _) = SigningSecret::generate();
        let signed = build(event, fields, &secret, None).unwrap();
        serde_json::from_str(&signed.body).unwrap()
    }

    #[test]
    fn every_event_type_parses_to_itself() {
        for event_type in EVENT_TYPES {
            let event = TriggerEvent::parse(event_type).unwrap();
            assert_eq!(event.event_type(), Some(event_type));
        }
        assert_eq!(
            TriggerEvent::parse("deleted").unwrap(),
            TriggerEvent::User(Action::Deleted)
        );
        assert!(matches!(
            TriggerEvent::parse("clerk/org.json").unwrap(),
            TriggerEvent::File(_)
        ));
        for wrong in [
            "organisation.created",
            "organizationMembership.removed",
            "org",
        ] {
            let error = TriggerEvent::parse(wrong).unwrap_err().to_string();
            assert!(error.contains("organizationMembership.deleted"), "{error}");
        }
    }

    #[test]
    fn an_organization_update_starts_from_the_row_and_is_newer() {
        let mut current = SampleOrganization::new("org_a", 4_000_000_000_000);
        current.slug = "kept".into();
        let fields = EventFields {
            org_id: Some("org_a".into()),
            current_organization: Some(current.clone()),
            ..EventFields::default()
        };
        let sent = body(&TriggerEvent::Organization(Action::Updated), &fields);
        assert_eq!(sent["type"], "organization.updated");
        assert_eq!(sent["data"]["slug"], "kept");
        assert_eq!(sent["data"]["created_at"], current.created_at);
        assert_eq!(sent["data"]["updated_at"], current.updated_at + 1);
    }

    #[test]
    fn a_membership_event_carries_its_organization_as_it_is_and_moves_its_own_time_on() {
        let organization = SampleOrganization::new("org_a", 1_000);
        let current = SampleMembership::new("orgmem_1", organization.clone(), "user_1", 1_000)
            .with_role("org:admin");
        let mut later = current.clone();
        later.updated_at = 4_000_000_000_000;
        let fields = EventFields {
            org_id: Some("org_a".into()),
            user_id: Some("user_1".into()),
            current_organization: Some(organization.clone()),
            current_membership: Some(later.clone()),
            ..EventFields::default()
        };
        let sent = body(&TriggerEvent::Membership(Action::Updated), &fields);
        assert_eq!(sent["data"]["id"], "orgmem_1");
        assert_eq!(sent["data"]["role"], "org:admin", "kept");
        assert_eq!(sent["data"]["updated_at"], later.updated_at + 1);
        assert_eq!(sent["data"]["organization"], organization.to_json());

        let sent = body(&TriggerEvent::Membership(Action::Deleted), &fields);
        assert_eq!(sent["data"]["updated_at"], later.updated_at, "as it was");
        assert_eq!(sent["timestamp"], later.updated_at + 1);

        let fields = EventFields {
            role: Some("billing".into()),
            ..fields
        };
        let sent = body(&TriggerEvent::Membership(Action::Created), &fields);
        assert_eq!(sent["data"]["role"], "org:billing");
        assert_ne!(sent["data"]["id"], "orgmem_1", "a new membership");
    }
}
