//! Realistic Clerk user, organization and membership events, shaped like Clerk's published
//! examples (every field Clerk sends, not only the ones we read), for `trigger`, the tests and
//! load generation.

use serde_json::{Value, json};

/// The user a sample event describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleUser {
    /// Clerk's user id (`user_…`).
    pub id: String,
    /// Primary email; `None` for a user who signed up with a phone number or a username.
    pub email: Option<String>,
    /// Sent as `first_name`; `None` sends `null`.
    pub first_name: Option<String>,
    /// Sent as `last_name`; `None` sends `null`.
    pub last_name: Option<String>,
    /// Sent as `username`; `None` as for an instance without usernames.
    pub username: Option<String>,
    /// Sent as both `image_url` and `profile_image_url`.
    pub image_url: String,
    /// Clerk's creation time, Unix milliseconds.
    pub created_at: i64,
    /// Clerk's last change, Unix milliseconds; also the envelope's `timestamp` of the user's
    /// created and updated events. Raise it to make an update newer than the last.
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

/// The organization a sample event describes; `to_json` is Clerk's Organization object, field for
/// field as in Clerk's `organization.created` example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleOrganization {
    /// Clerk's organization id (`org_…`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unique within an instance, as Clerk's slugs are.
    pub slug: String,
    /// The logo's URL.
    pub image_url: String,
    /// The id of the user who created it.
    pub created_by: String,
    /// What the object claims. Clerk counts the memberships, and so does the Clerk emulator,
    /// whatever this says.
    pub members_count: u64,
    /// Clerk's creation time, Unix milliseconds.
    pub created_at: i64,
    /// Clerk's last change, Unix milliseconds; also the envelope's `timestamp` of the
    /// organization's created and updated events.
    pub updated_at: i64,
}

impl SampleOrganization {
    /// An organization with made-up but plausible values derived from its id (so slugs of
    /// different ids differ), one member, created and updated at `now_ms`.
    pub fn new(id: impl Into<String>, now_ms: i64) -> Self {
        let id = id.into();
        let short = id.trim_start_matches("org_").to_ascii_lowercase();
        SampleOrganization {
            name: format!("Acme {short}"),
            slug: format!("acme-{}", short.replace('_', "-")),
            image_url: format!("https://img.clerk.com/{short}"),
            created_by: format!("user_{short}"),
            members_count: 1,
            created_at: now_ms,
            updated_at: now_ms,
            id,
        }
    }

    /// The full Clerk Organization object.
    pub fn to_json(&self) -> Value {
        json!({
            "object": "organization",
            "id": self.id,
            "name": self.name,
            "slug": self.slug,
            "image_url": self.image_url,
            "has_image": true,
            "members_count": self.members_count,
            "missing_member_with_elevated_permissions": false,
            "pending_invitations_count": 0,
            "max_allowed_memberships": 5,
            "admin_delete_enabled": true,
            "public_metadata": {},
            "private_metadata": {},
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at
        })
    }
}

/// A user's membership of an organization; `to_json` is Clerk's OrganizationMembership object,
/// field for field as in Clerk's `organizationMembership.created` example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleMembership {
    /// Clerk's membership id (`orgmem_…`).
    pub id: String,
    /// Embedded whole in the object, as Clerk embeds it.
    pub organization: SampleOrganization,
    /// The member's Clerk user id, sent in `public_user_data`.
    pub user_id: String,
    /// `org:admin`, `org:member` or a custom `org:<key>`.
    pub role: String,
    /// Clerk's creation time, Unix milliseconds.
    pub created_at: i64,
    /// Clerk's last change, Unix milliseconds; also the envelope's `timestamp` of the
    /// membership's created and updated events (not of its deletion).
    pub updated_at: i64,
}

impl SampleMembership {
    /// `user_id` as a plain member (`org:member`) of `organization`, created and updated at
    /// `now_ms`.
    pub fn new(
        id: impl Into<String>,
        organization: SampleOrganization,
        user_id: impl Into<String>,
        now_ms: i64,
    ) -> Self {
        SampleMembership {
            id: id.into(),
            organization,
            user_id: user_id.into(),
            role: "org:member".into(),
            created_at: now_ms,
            updated_at: now_ms,
        }
    }

    /// The same membership with another role, e.g. `org:admin`.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// The full Clerk OrganizationMembership object. `public_user_data` describes the user as
    /// [`SampleUser::new`] makes them; `role_name` and `permissions` are those of Clerk's default
    /// roles (a custom role gets its key as name and no permissions).
    pub fn to_json(&self) -> Value {
        let user = SampleUser::new(self.user_id.as_str(), self.created_at);
        let key = self.role.trim_start_matches("org:");
        let (role_name, permissions): (String, &[&str]) = match key {
            "admin" => (
                "Admin".into(),
                &[
                    "org:sys_profile:manage",
                    "org:sys_profile:delete",
                    "org:sys_memberships:read",
                    "org:sys_memberships:manage",
                    "org:sys_domains:read",
                    "org:sys_domains:manage",
                ],
            ),
            "member" => ("Member".into(), &["org:sys_memberships:read"]),
            custom => (custom.replace('_', " "), &[]),
        };
        json!({
            "object": "organization_membership",
            "id": self.id,
            "role": self.role,
            "role_name": role_name,
            "permissions": permissions,
            "public_metadata": {},
            "private_metadata": {},
            "organization": self.organization.to_json(),
            "public_user_data": {
                "user_id": self.user_id,
                "first_name": user.first_name,
                "last_name": user.last_name,
                "profile_image_url": user.image_url,
                "image_url": user.image_url,
                "has_image": true,
                "identifier": user.email,
                "username": user.username
            },
            "created_at": self.created_at,
            "updated_at": self.updated_at
        })
    }
}

/// An `organization.created` body.
pub fn organization_created(organization: &SampleOrganization) -> String {
    envelope(
        "organization.created",
        organization.to_json(),
        organization.updated_at,
    )
    .to_string()
}

/// An `organization.updated` body.
pub fn organization_updated(organization: &SampleOrganization) -> String {
    envelope(
        "organization.updated",
        organization.to_json(),
        organization.updated_at,
    )
    .to_string()
}

/// An `organization.deleted` body: Clerk sends the id and the slug.
pub fn organization_deleted(organization_id: &str, slug: &str, timestamp_ms: i64) -> String {
    envelope(
        "organization.deleted",
        json!({"object": "organization", "id": organization_id, "slug": slug, "deleted": true}),
        timestamp_ms,
    )
    .to_string()
}

/// An `organizationMembership.created` body.
pub fn membership_created(membership: &SampleMembership) -> String {
    envelope(
        "organizationMembership.created",
        membership.to_json(),
        membership.updated_at,
    )
    .to_string()
}

/// An `organizationMembership.updated` body.
pub fn membership_updated(membership: &SampleMembership) -> String {
    envelope(
        "organizationMembership.updated",
        membership.to_json(),
        membership.updated_at,
    )
    .to_string()
}

/// An `organizationMembership.deleted` body: Clerk sends the whole membership as it was, its
/// `updated_at` not bumped, so only `timestamp_ms` says when it ended.
pub fn membership_deleted(membership: &SampleMembership, timestamp_ms: i64) -> String {
    envelope(
        "organizationMembership.deleted",
        membership.to_json(),
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
