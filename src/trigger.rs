//! `clerk-sync trigger`: sends a realistic, correctly signed Clerk event to a running server, so
//! everything can be tried locally without Clerk or a tunnel.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clerk::sample::{self, SampleUser};
use crate::webhook::{SigningSecret, signed_headers};

/// Which event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerEvent {
    Created,
    Updated,
    Deleted,
    /// A JSON file sent byte for byte (e.g. one of Clerk's example payloads).
    File(PathBuf),
}

/// The event types `trigger` makes up itself.
pub const EVENT_TYPES: [&str; 3] = ["user.created", "user.updated", "user.deleted"];

impl TriggerEvent {
    /// An event type, or a file to send. Text that names neither (`user.foo`) is refused with
    /// the list of types rather than taken for a missing file.
    pub fn parse(text: &str) -> Result<TriggerEvent, TriggerError> {
        Ok(match text {
            "user.created" | "created" => TriggerEvent::Created,
            "user.updated" | "updated" => TriggerEvent::Updated,
            "user.deleted" | "deleted" => TriggerEvent::Deleted,
            path if Path::new(path).exists()
                || path.contains(std::path::MAIN_SEPARATOR)
                || path.ends_with(".json") =>
            {
                TriggerEvent::File(PathBuf::from(path))
            }
            other => {
                return Err(TriggerError::Usage(format!(
                    "{other:?} is neither an event type trigger can make up ({}) nor a file; \
                     to send any other event, save its JSON in a file and give the file's path",
                    EVENT_TYPES.join(", ")
                )));
            }
        })
    }
}

/// What to put in the event.
#[derive(Debug, Clone, Default)]
pub struct UserFields {
    pub user_id: Option<String>,
    pub email: Option<String>,
    /// Send the user without any email address (phone or username sign-up).
    pub no_email: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    /// The user as the database has it (for `user.updated`): the update starts from it instead
    /// of made-up values, keeping `created_at`, which Clerk never changes.
    pub current: Option<SampleUser>,
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not reach {url}: {source}. Is `clerk-sync serve` running there?")]
    Send { url: String, source: reqwest::Error },
}

/// A signed request ready to send.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    pub svix_id: String,
    pub user_id: Option<String>,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

/// Builds and signs the event.
pub fn build(
    event: &TriggerEvent,
    fields: &UserFields,
    secret: &SigningSecret,
    svix_id: Option<String>,
) -> Result<SignedEvent, TriggerError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let needs_id = |kind: &str| {
        fields.user_id.clone().ok_or_else(|| {
            TriggerError::Usage(format!(
                "{kind} needs the user it is about: add --user-id user_... (the id printed by \
                 `clerk-sync trigger user.created`)"
            ))
        })
    };
    let sample_user = |id: String| {
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
    };
    let (user_id, body) = match event {
        TriggerEvent::Created => {
            let id = fields
                .user_id
                .clone()
                .unwrap_or_else(|| sample::random_id("user"));
            (Some(id.clone()), sample::user_created(&sample_user(id)))
        }
        TriggerEvent::Updated => {
            let id = needs_id("user.updated")?;
            (Some(id.clone()), sample::user_updated(&sample_user(id)))
        }
        TriggerEvent::Deleted => {
            let id = needs_id("user.deleted")?;
            (Some(id.clone()), sample::user_deleted(&id, now_ms))
        }
        TriggerEvent::File(path) => {
            let body = std::fs::read_to_string(path).map_err(|source| TriggerError::File {
                path: path.clone(),
                source,
            })?;
            (None, body)
        }
    };
    let svix_id = svix_id.unwrap_or_else(|| sample::random_id("msg"));
    let timestamp = chrono::Utc::now().timestamp();
    let headers = signed_headers(secret, &svix_id, timestamp, body.as_bytes())
        .map_err(|e| TriggerError::Usage(format!("cannot sign the event: {e}")))?;
    Ok(SignedEvent {
        svix_id,
        user_id,
        body,
        headers,
    })
}

/// The answer the server gave.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub status: u16,
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
