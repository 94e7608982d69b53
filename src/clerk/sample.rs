//! Realistic Clerk user events, shaped like Clerk's published examples (every field Clerk sends,
//! not only the ones we read), for `trigger`, the tests and load generation.

use serde_json::{Value, json};

/// The user a sample event describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleUser {
    pub id: String,
    /// Primary email; `None` for a user who signed up with a phone number or a username.
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl SampleUser {
    /// A user with made-up but plausible values, created and updated at `now_ms`.
    pub fn new(id: impl Into<String>, now_ms: i64) -> Self {
        let id = id.into();
        let short = id.trim_start_matches("user_").to_ascii_lowercase();
        SampleUser {
            email: Some(format!("{short}@example.com")),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            username: Some(format!("ada_{short}")),
            image_url: format!("https://img.clerk.com/{short}"),
            created_at: now_ms,
            updated_at: now_ms,
            id,
        }
    }

    /// Clerk's email address id for this user's primary email.
    fn email_id(&self) -> String {
        format!("idn_{}", self.id.trim_start_matches("user_"))
    }

    /// The full Clerk User object.
    pub fn to_clerk_json(&self) -> Value {
        let email_addresses: Vec<Value> = self
            .email
            .iter()
            .map(|email| {
                json!({
                    "id": self.email_id(),
                    "object": "email_address",
                    "email_address": email,
                    "reserved": false,
                    "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": null},
                    "linked_to": [],
                    "matches_sso_connection": false,
                    "created_at": self.created_at,
                    "updated_at": self.created_at
                })
            })
            .collect();
        json!({
            "object": "user",
            "id": self.id,
            "external_id": null,
            "primary_email_address_id": self.email.as_ref().map(|_| self.email_id()),
            "primary_phone_number_id": null,
            "primary_web3_wallet_id": null,
            "username": self.username,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "profile_image_url": self.image_url,
            "image_url": self.image_url,
            "has_image": true,
            "public_metadata": {},
            "private_metadata": {},
            "unsafe_metadata": {},
            "email_addresses": email_addresses,
            "phone_numbers": [],
            "web3_wallets": [],
            "passkeys": [],
            "password_enabled": true,
            "two_factor_enabled": false,
            "totp_enabled": false,
            "backup_code_enabled": false,
            "mfa_enabled_at": null,
            "mfa_disabled_at": null,
            "external_accounts": [],
            "saml_accounts": [],
            "enterprise_accounts": [],
            "last_sign_in_at": self.updated_at,
            "banned": false,
            "locked": false,
            "lockout_expires_in_seconds": null,
            "verification_attempts_remaining": 100,
            "updated_at": self.updated_at,
            "created_at": self.created_at,
            "delete_self_enabled": true,
            "create_organization_enabled": true,
            "create_organizations_limit": null,
            "last_active_at": self.updated_at,
            "legal_accepted_at": null
        })
    }
}

/// Wraps `data` in Clerk's event envelope.
pub fn envelope(event_type: &str, data: Value, timestamp_ms: i64) -> Value {
    json!({
        "data": data,
        "event_attributes": {
            "http_request": {
                "client_ip": "192.0.2.10",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36"
            }
        },
        "instance_id": "ins_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
        "object": "event",
        "timestamp": timestamp_ms,
        "type": event_type
    })
}

/// A `user.created` body.
pub fn user_created(user: &SampleUser) -> String {
    envelope("user.created", user.to_clerk_json(), user.updated_at).to_string()
}

/// A `user.updated` body.
pub fn user_updated(user: &SampleUser) -> String {
    envelope("user.updated", user.to_clerk_json(), user.updated_at).to_string()
}

/// A `user.deleted` body: Clerk sends only the id.
pub fn user_deleted(user_id: &str, timestamp_ms: i64) -> String {
    envelope(
        "user.deleted",
        json!({"object": "user", "id": user_id, "deleted": true}),
        timestamp_ms,
    )
    .to_string()
}

/// A fresh Clerk-looking id (`user_` + 27 alphanumerics) or message id (`msg_` + 27).
pub fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..27)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}
