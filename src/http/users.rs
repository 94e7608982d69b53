//! The signed-in user: `GET /api/users/me`, `PATCH /api/users/me`,
//! `GET /api/users/me/organizations`, and the axum extractors an app puts in its own handlers
//! (`ClerkSession`, `SyncedUser`).
//!
//! A session whose user has no row yet (its webhook is still on the way) is not an error: the
//! user is fetched from Clerk once, however many requests ask at the same time, and applied by
//! the same newest-snapshot-wins rules as a webhook, so the two never fight. Profile updates go
//! to Clerk first (the source of truth) and the row is written from Clerk's answer.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::error::ApiError;
use super::fallback::{FetchError, Fetched, apply_clerk_user};
use super::state::AppState;
use crate::clerk::api::{ClerkApiError, UserUpdate};
use crate::clerk::session::{Session, SessionError};
use crate::store::{MembershipRecord, StoreError, UserRecord};

/// Longest first or last name accepted, in characters.
const MAX_NAME_CHARS: usize = 256;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users/me", get(me).patch(update_me))
        .route("/api/users/me/organizations", get(my_organizations))
}

/// A request from a signed-in Clerk user: the session token verified.
#[derive(Debug, Clone)]
pub struct ClerkSession(pub Session);

/// A verified session whose user row exists (fetched from Clerk if its webhook has not arrived).
#[derive(Debug, Clone)]
pub struct SyncedUser {
    /// The verified session, as [`ClerkSession`] gives it.
    pub session: Session,
    /// The user's row, never a deleted one (the extractor answers 404 for those).
    pub user: UserRecord,
}

impl<S> FromRequestParts<S> for ClerkSession
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let Some(verifier) = &state.users.sessions else {
            return Err(ApiError::NotConfigured(
                "session verification is not configured: set CLERK_SECRET_KEY (keys are fetched \
                 from Clerk) or CLERK_JWT_KEY (the PEM public key from Clerk's dashboard)"
                    .into(),
            ));
        };
        let client = state
            .limiters
            .client_address(super::limits::RateLimiters::peer(parts), &parts.headers);
        if let Some(wait) = client.and_then(|c| state.limiters.address(c).err()) {
            crate::metrics::rate_limited("address");
            return Err(ApiError::RateLimited(Some(wait)));
        }
        let Some(token) = session_token(parts) else {
            crate::metrics::session_failure("missing");
            return Err(ApiError::SignInRequired);
        };
        match verifier.verify(token).await {
            Ok(session) => {
                if let Err(wait) = state.limiters.user(&session.user_id) {
                    crate::metrics::rate_limited("user");
                    return Err(ApiError::RateLimited(Some(wait)));
                }
                Ok(ClerkSession(session))
            }
            Err(SessionError::KeysUnavailable(reason)) => {
                crate::metrics::session_failure("keys_unavailable");
                tracing::error!(
                    reason,
                    "cannot verify sessions: Clerk's keys are unavailable"
                );
                Err(ApiError::Unavailable(
                    "cannot verify the session right now".into(),
                ))
            }
            Err(e) => {
                crate::metrics::session_failure(e.reason());
                tracing::info!(reason = e.reason(), "session refused: {e}");
                Err(ApiError::InvalidSession)
            }
        }
    }
}

impl<S> FromRequestParts<S> for SyncedUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClerkSession(session) = ClerkSession::from_request_parts(parts, state).await?;
        let state = AppState::from_ref(state);
        let user = ensure_user_exists(&state, &session.user_id).await?;
        Ok(SyncedUser { session, user })
    }
}

/// `Authorization: Bearer <jwt>` (a bare token is taken whole, as Clerk's SDK does), else the
/// `__session` cookie.
fn session_token(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            Some(_) => "",
            None => value,
        };
        if !token.is_empty() {
            return Some(token);
        }
    }
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, value)| *name == "__session" && !value.is_empty())
        .map(|(_, value)| value)
}

/// The design's `ensureUserExists`, done right: the row, or the user fetched from Clerk and
/// applied like a webhook; never a deleted user brought back.
pub(crate) async fn ensure_user_exists(
    state: &AppState,
    user_id: &str,
) -> Result<UserRecord, ApiError> {
    let (row, tombstoned) = state.store.user(user_id).await.map_err(store_unavailable)?;
    if tombstoned || row.as_ref().is_some_and(|r| r.deleted_at.is_some()) {
        return Err(ApiError::NotFound("this user has been deleted".into()));
    }
    if let Some(row) = row {
        return Ok(row);
    }
    let Some(clerk) = &state.users.clerk else {
        return Err(ApiError::NotFound(
            "this user is not in the table yet (its webhook has not arrived); set \
             CLERK_SECRET_KEY to let clerk-sync fetch such users from Clerk"
                .into(),
        ));
    };
    match state
        .users
        .fetch(&state.store, state.delete_mode, clerk, user_id)
        .await
    {
        Fetched::Synced => {}
        Fetched::Deleted => return Err(ApiError::NotFound("this user has been deleted".into())),
        Fetched::NotInClerk => {
            return Err(ApiError::NotFound(
                "this user does not exist in Clerk".into(),
            ));
        }
        Fetched::Failed(error) => return Err(error.into_api_error()),
    }
    match state.store.user(user_id).await.map_err(store_unavailable)? {
        (Some(row), false) if row.deleted_at.is_none() => Ok(row),
        _ => Err(ApiError::NotFound("this user has been deleted".into())),
    }
}

fn store_unavailable(error: StoreError) -> ApiError {
    tracing::error!(error = %error, "database unavailable");
    ApiError::Unavailable("database unavailable, retry later".into())
}

/// The row as a Prisma client hands it to an app: the table's camelCase names, times as ISO
/// 8601 UTC strings with milliseconds ([`UserRecord`]'s `Serialize`).
async fn me(user: SyncedUser) -> Json<UserRecord> {
    Json(user.user)
}

/// The signed-in user's memberships, each with its organization, newest first.
///
/// The user is looked up exactly as for `GET /api/users/me`, with the same answers: 404 for a
/// deleted user, and a user whose row is not there yet is fetched from Clerk once (a fetch
/// shared with a concurrent `/api/users/me`), or 404 without `CLERK_SECRET_KEY`. Memberships
/// are never fetched from Clerk: they come from their own webhooks, so a user whose row was
/// just fetched gets `[]` (or the memberships whose events arrived first) until those land.
async fn my_organizations(
    State(state): State<AppState>,
    user: SyncedUser,
) -> Result<Json<Vec<MembershipRecord>>, ApiError> {
    let memberships = state
        .store
        .user_memberships(&user.user.id)
        .await
        .map_err(store_unavailable)?;
    Ok(Json(memberships))
}

/// `{"firstName"?: string, "lastName"?: string}`, written to Clerk first.
async fn update_me(
    State(state): State<AppState>,
    ClerkSession(session): ClerkSession,
    body: Bytes,
) -> Result<Json<UserRecord>, ApiError> {
    let update = parse_profile_update(&body)?;
    let (_, tombstoned) = state
        .store
        .user(&session.user_id)
        .await
        .map_err(store_unavailable)?;
    if tombstoned {
        return Err(ApiError::NotFound("this user has been deleted".into()));
    }
    let Some(clerk) = &state.users.clerk else {
        return Err(ApiError::NotConfigured(
            "profile updates are written to Clerk first and need CLERK_SECRET_KEY".into(),
        ));
    };
    let data = clerk
        .update_user(&session.user_id, &update)
        .await
        .map_err(|e| match e {
            ClerkApiError::Api { status: 404, .. } => {
                ApiError::NotFound("this user does not exist in Clerk".into())
            }
            ClerkApiError::Api {
                status: 400 | 422,
                message,
                ..
            } => ApiError::Rejected(message),
            ClerkApiError::RateLimited { retry_after } => ApiError::RateLimited(retry_after),
            other => {
                tracing::warn!(error = %other, "profile update could not be written to Clerk");
                ApiError::Unavailable(
                    "cannot reach Clerk to save the profile; nothing was changed".into(),
                )
            }
        })?;
    let outcome = apply_clerk_user(&state.store, state.delete_mode, data)
        .await
        .map_err(FetchError::into_api_error)?;
    tracing::info!(source = "profile_update", user_id = %session.user_id, outcome = outcome.as_str(), "profile written through to Clerk");
    match state
        .store
        .user(&session.user_id)
        .await
        .map_err(store_unavailable)?
    {
        (Some(row), false) if row.deleted_at.is_none() => Ok(Json(row)),
        _ => Err(ApiError::NotFound("this user has been deleted".into())),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn parse_profile_update(body: &[u8]) -> Result<UserUpdate, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("the body is not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(invalid(
            "body",
            "the body must be a JSON object like {\"firstName\": \"Ada\"}",
        ));
    };
    let mut update = UserUpdate::default();
    for (field, value) in fields {
        let target = match field.as_str() {
            "firstName" => &mut update.first_name,
            "lastName" => &mut update.last_name,
            _ => {
                return Err(invalid(
                    &field,
                    format!("{field} cannot be changed here; only firstName and lastName can"),
                ));
            }
        };
        let Value::String(text) = value else {
            return Err(invalid(&field, format!("{field} must be a string")));
        };
        let text = text.trim();
        if text.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(
                &field,
                format!("{field} is longer than {MAX_NAME_CHARS} characters"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(invalid(
                &field,
                format!("{field} contains control characters"),
            ));
        }
        *target = Some(text.to_owned());
    }
    if update.first_name.is_none() && update.last_name.is_none() {
        return Err(invalid(
            "body",
            "nothing to update: send firstName and/or lastName",
        ));
    }
    Ok(update)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_updates_are_validated_field_by_field() {
        let ok =
            parse_profile_update(br#"{"firstName": "  Ada ", "lastName": "Lovelace"}"#).unwrap();
        assert_eq!(ok.first_name.as_deref(), Some("Ada"));
        for (body, field) in [
            (&br#"{"firstName": 5}"#[..], "firstName"),
            (br#"{"email": "x@example.com"}"#, "email"),
            (br#"{}"#, "body"),
            (br#"[1]"#, "body"),
            (br#"not json"#, "body"),
            (br#"{"lastName": "a\u0000b"}"#, "lastName"),
        ] {
            match parse_profile_update(body) {
                Err(ApiError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        let long = format!(r#"{{"firstName": "{}"}}"#, "é".repeat(MAX_NAME_CHARS + 1));
        assert!(parse_profile_update(long.as_bytes()).is_err());
    }
}
