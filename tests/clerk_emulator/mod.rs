//! `ClerkEmulator`: a local, in-process stand-in for the parts of Clerk's Backend API (BAPI) that
//! clerk-sync calls, served over real HTTP on `127.0.0.1`, plus session tokens signed the way a
//! Clerk instance signs them. Facts come from the Clerk reference
//! (`../shared/reference/clerk.md`): §c (the User object), §d (BAPI), §e (session tokens), §i
//! (organizations and memberships).
//!
//! What it emulates:
//! - Secret-key auth (`Authorization: Bearer sk_test_…`) on every `/v1` route, and Clerk's error
//!   body `{"errors":[{"message","long_message","code","meta"}],"clerk_trace_id"}` (§d).
//! - `GET|PATCH|DELETE /v1/users/{user_id}`, `GET /v1/users` (a bare array; `limit`, `offset`,
//!   `starting_after`, `order_by` on `created_at`/`updated_at`, `user_id` with `+`/`-`),
//!   `GET /v1/users/count`, `GET /v1/jwks` (§d, §e "Keys / JWKS").
//! - `GET /v1/instance` (§d): the instance the key belongs to, `environment_type`
//!   `development`. Its id is the kid of instance A's first key (Clerk's kid is the instance id);
//!   a test makes the emulator another instance with [`ClerkEmulator::set_instance_id`], or an
//!   API without the endpoint (404) with [`ClerkEmulator::remove_instance_endpoint`].
//! - The per-user PATCH limit (10 per 10 s) with `429` and `Retry-After` (§d "Rate limits").
//! - v2 session tokens: RS256 with the instance key, `kid` = instance id, `cat` header, claims
//!   `azp exp fva iat iss jti nbf sid sts sub v` (§e), and key rotation.
//! - Whatever users a test inserts; build them with `clerk_sync::clerk::sample::SampleUser` so
//!   they carry every field Clerk sends (§c).
//! - Organizations and memberships (§i), inserted by tests (build them with `SampleOrganization`
//!   and `SampleMembership` from the same module) and kept consistent as Clerk keeps them:
//!   - `GET /v1/organizations` (`limit`, `offset`, `order_by` on `created_at`/`name`/
//!     `members_count`, default `-created_at`, `include_members_count`,
//!     `include_missing_member_with_elevated_permissions`) and `GET /v1/organizations/{id}` (the
//!     id or the slug, as Clerk takes either; the same two `include_*` flags).
//!   - `GET /v1/organization_memberships`, `GET /v1/organizations/{id}/memberships` and
//!     `GET /v1/users/{id}/organization_memberships` (`limit`, `offset`, `order_by` on
//!     `created_at`, default `-created_at`).
//!   - Lists answer `{"data": [...], "total_count": n}` with the same `limit` rules as
//!     `/v1/users`; ties in any order are broken by id, so offset paging over an unchanged
//!     instance neither skips nor repeats.
//!   - `members_count` is always the number of memberships the emulator holds for the
//!     organization, whatever the inserted object said. A membership is served with its
//!     organization as it is now, not as it was inserted.
//!   - Deleting an organization deletes its memberships; deleting a user (by the test or by
//!     `DELETE /v1/users/{id}`) deletes the user's memberships.
//!
//! What it does not emulate:
//! - The instance-wide limit (100 requests / 10 s on development instances, §d): a backfill
//!   benchmark pages far faster than that. Use `rate_limit_next` to provoke 429s.
//! - Other BAPI resources and filters, other `order_by` fields, `POST /v1/users`, the metadata
//!   endpoints. Unsupported query or body parameters get a loud 422 (`form_param_unknown`)
//!   instead of being ignored, so a test never passes on a filter that silently did nothing:
//!   among them the organization list's `query`, `user_id` and `organization_id`, and the
//!   member lists' filters and name/email orders.
//! - Writes to organizations and memberships over HTTP (POST, PATCH, DELETE answer 405),
//!   invitations, domains, roles and permissions: a membership's `role`, `role_name` and
//!   `permissions` are whatever the test inserted. Organization webhooks: tests sign them.
//! - Dated API versions: `Clerk-API-Version` and `__clerk_api_version` are accepted and ignored;
//!   PATCH behaves as 2026-05-12 (no metadata fields).
//! - The Frontend API (`<frontend>/.well-known/jwks.json`): the frontend host is made up and
//!   nothing listens there. Webhooks: clerk-sync's tests sign deliveries themselves.
//! - Clerk's exact error messages and, where the reference has none, exact error codes: the
//!   codes used here are Clerk-style (`resource_not_found`, `form_param_*`, …).
//!
//! Choices where Clerk's behaviour is not documented:
//! - `starting_after` naming a user the instance does not have (say, deleted mid-backfill)
//!   answers 422 `form_param_value_invalid`, never an empty page: an empty page would look like
//!   the end of the list and hide a backfill that stopped early.
//! - `limit` outside 1..=500 answers 422, although one report says real Clerk silently used the
//!   default 10 for `limit=501` (§d): a client must not depend on either.
//! - Fault injection (`fail_next`, `rate_limit_next`) is applied before authentication, like an
//!   outage or an edge rate limiter in front of the API.
//! - Every PATCH of a user that is not itself rate-limited counts toward that user's 10 per 10 s,
//!   including ones answered 404 or 422.
//! - PATCH accepts `first_name`, `last_name` (each at most 256 characters, else 422
//!   `form_param_exceeds_allowed_length`), `username` (unique, exact match, else 422
//!   `form_identifier_exists`) and `external_id`.
//! - Organizations carry `members_count` and `pending_invitations_count` only with
//!   `include_members_count=true`, and `missing_member_with_elevated_permissions` only with
//!   `include_missing_member_with_elevated_permissions=true`: Clerk's docs describe the flags as
//!   including those fields, and `@clerk/backend` added the first to get `membersCount` at all
//!   (clerk/javascript#4196). The organization embedded in a membership carries every field, as
//!   in Clerk's membership webhooks: what Clerk's membership lists embed is not documented.
//!   `pending_invitations_count` and `missing_member_with_elevated_permissions` are served as
//!   inserted (the emulator has no invitations).
//! - Inserting an organization whose slug another organization holds, a membership of an
//!   organization the emulator does not have, or a second membership of the same user in the
//!   same organization panics in the test, changing nothing: Clerk would refuse each, and a
//!   fixture that silently replaced or dropped data would hide the test's mistake. Inserting
//!   with an id already stored replaces that organization or membership (an organization keeps
//!   its memberships).
//! - A membership's organization is `organization.id` and its user `public_user_data.user_id`;
//!   the user need not be among the emulator's users, so
//!   `GET /v1/users/{id}/organization_memberships` of an unknown user is an empty list, while a
//!   membership list of an unknown organization is a 404.
//! - That deleting a user removes their memberships is assumed (Clerk's docs don't say);
//!   whether Clerk sends a webhook per removed membership is not known (§i).
//! - Ordering by `name` compares bytes, not a collation.
#![allow(dead_code)] // each test binary that includes this module uses a different part of it

mod keys;
mod organization_routes;
mod organizations;
mod store;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use organizations::{MembershipScope, OrganizationStore, OrganizationView, Page};
use store::{IdFilter, ListQuery, Ordering, SortField, UserStore};

/// `cat` header of a session token (§e).
pub const SESSION_TOKEN_CATEGORY: &str = "cl_B7d4PD111AAA";
/// `cat` header of a JWT-template token (§e).
pub const JWT_TEMPLATE_CATEGORY: &str = "cl_B7d4PD222AAA";
/// `cat` header of an M2M token, signed with the same instance key (§e).
pub const M2M_TOKEN_CATEGORY: &str = "cl_B7d4PD333AAA";

/// Fixed rather than per emulator because the keys (and so the kids) are fixed: every emulator
/// is "instance A", and `TokenOptions::default()` can name its issuer.
const FRONTEND_API_HOST: &str = "emulated-instance-12.clerk.accounts.dev";

const PATCH_LIMIT_PER_USER: usize = 10;
const PATCH_LIMIT_WINDOW: Duration = Duration::from_secs(10);
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 500;
const MAX_FILTER_VALUES: usize = 100;
const MAX_NAME_CHARS: usize = 256;

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";

/// Which key signs a minted token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SigningKey {
    /// The instance's key in use: `instance_a.pem`, or the rotated one after
    /// [`ClerkEmulator::rotate_signing_key`].
    #[default]
    Current,
    /// `instance_a_rotated.pem`, whether or not the instance has rotated yet.
    Rotated,
    /// `other_instance.pem`: another Clerk instance's key, never in this emulator's JWKS.
    OtherInstance,
}

/// How to shape a minted session token; `Default` is a valid, fresh Clerk v2 session token.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    pub key: SigningKey,
    /// Header `kid`; `None` uses the kid of `key`.
    pub kid: Option<String>,
    /// `exp` = now + this many seconds (Clerk: 60).
    pub expires_in: i64,
    /// Added to now for `iat` (and for `nbf` unless `not_before_offset` is set).
    pub issued_at_offset: i64,
    /// `nbf` = now + this; `None` gives Clerk's `iat - 5`.
    pub not_before_offset: Option<i64>,
    pub azp: Option<String>,
    pub issuer: Option<String>,
    /// The `cat` header; see the `*_CATEGORY` constants.
    pub category: Option<String>,
    /// The `sts` claim, e.g. `Some("pending")`.
    pub status: Option<String>,
    pub session_id: String,
    pub omit_subject: bool,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            key: SigningKey::Current,
            kid: None,
            expires_in: 60,
            issued_at_offset: 0,
            not_before_offset: None,
            azp: Some("http://localhost:3000".into()),
            issuer: Some(format!("https://{FRONTEND_API_HOST}")),
            category: Some(SESSION_TOKEN_CATEGORY.into()),
            status: None,
            session_id: format!("sess_{}", random_chars(27, ALPHANUMERIC)),
            omit_subject: false,
        }
    }
}

/// One request the emulator received. `status` is 0 while the answer is still pending (e.g.
/// during [`ClerkEmulator::set_latency`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, still percent-encoded; empty when there is none.
    pub query: String,
    pub status: u16,
}

/// A running emulator. Clones share the same instance; the server stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct ClerkEmulator {
    shared: Shared,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ClerkEmulator {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start() -> ClerkEmulator {
        // A broken fixture key should fail here, in the test, not inside a request handler.
        for key in [
            &keys::INSTANCE_A,
            &keys::INSTANCE_A_ROTATED,
            &keys::OTHER_INSTANCE,
        ] {
            std::sync::LazyLock::force(key);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the Clerk emulator binds 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound address");
        let shared = Shared {
            secret_key: format!("sk_test_{}", random_chars(42, ALPHANUMERIC)).into(),
            instance: Arc::new(Mutex::new(Instance::default())),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the Clerk emulator's server failed");
        });
        ClerkEmulator {
            shared,
            addr,
            _server: Arc::new(ServerTask(server)),
        }
    }

    /// What clerk-sync gets as `CLERK_API_URL`; BAPI paths are under `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn secret_key(&self) -> String {
        self.shared.secret_key.to_string()
    }

    /// `pk_test_` + base64 of `<frontend host>$`, unpadded as Clerk builds it (§e).
    pub fn publishable_key(&self) -> String {
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(format!("{FRONTEND_API_HOST}$"));
        format!("pk_test_{encoded}")
    }

    /// The `iss` of this instance's tokens.
    pub fn frontend_api_url(&self) -> String {
        format!("https://{FRONTEND_API_HOST}")
    }

    /// SPKI PEM of the key currently signing (what users put in `CLERK_JWT_KEY`).
    pub fn instance_public_key_pem(&self) -> String {
        self.current_key().public_pem.to_string()
    }

    /// The `kid` the JWKS serves now.
    pub fn current_kid(&self) -> String {
        self.current_key().kid.to_string()
    }

    /// From now on the JWKS serves only the rotated key and `SigningKey::Current` signs with it.
    /// Rotating again changes nothing: there are only two instance keys.
    pub fn rotate_signing_key(&self) {
        self.shared.lock().rotated = true;
    }

    /// The id `GET /v1/instance` answers with; `None` while the endpoint is removed.
    pub fn instance_id(&self) -> Option<String> {
        match &self.shared.lock().instance_endpoint {
            InstanceEndpoint::Serves(id) => Some(id.clone()),
            InstanceEndpoint::Absent => None,
        }
    }

    /// From now on this emulator is the instance `id` (`ins_…`): what a secret key of another
    /// instance than the webhooks' sees.
    pub fn set_instance_id(&self, id: &str) {
        self.shared.lock().instance_endpoint = InstanceEndpoint::Serves(id.to_string());
    }

    /// From now on `GET /v1/instance` answers 404, as an API without the endpoint would.
    pub fn remove_instance_endpoint(&self) {
        self.shared.lock().instance_endpoint = InstanceEndpoint::Absent;
    }

    /// Stores a full Clerk User object (`id` required), replacing any user with that id.
    pub fn insert_user(&self, user: Value) {
        self.shared.lock().users.insert(user, now_ms());
    }

    /// [`insert_user`](Self::insert_user) for many users under one lock, for large fixtures.
    pub fn insert_users(&self, users: impl IntoIterator<Item = Value>) {
        let now = now_ms();
        let mut instance = self.shared.lock();
        for user in users {
            instance.users.insert(user, now);
        }
    }

    pub fn user(&self, id: &str) -> Option<Value> {
        self.shared.lock().users.get(id).map(|user| (*user).clone())
    }

    /// Deletes the user and the user's organization memberships (a choice; see the module doc).
    pub fn delete_user(&self, id: &str) {
        let mut instance = self.shared.lock();
        instance.users.remove(id);
        instance.organizations.remove_memberships_of_user(id);
    }

    pub fn user_count(&self) -> usize {
        self.shared.lock().users.len()
    }

    /// Stores a full Clerk Organization object (`id` required), replacing any organization with
    /// that id; its memberships stay. Panics if another organization holds its `slug`.
    pub fn insert_organization(&self, organization: Value) {
        self.shared
            .lock()
            .organizations
            .insert_organization(organization, now_ms());
    }

    /// [`insert_organization`](Self::insert_organization) for many under one lock.
    pub fn insert_organizations(&self, organizations: impl IntoIterator<Item = Value>) {
        let now = now_ms();
        let mut instance = self.shared.lock();
        for organization in organizations {
            instance
                .organizations
                .insert_organization(organization, now);
        }
    }

    /// The organization as a webhook would carry it: every field, `members_count` counted.
    pub fn organization(&self, id: &str) -> Option<Value> {
        self.shared
            .lock()
            .organizations
            .organization(id, OrganizationView::FULL)
    }

    /// Deletes the organization and, as Clerk does, its memberships.
    pub fn delete_organization(&self, id: &str) {
        self.shared.lock().organizations.remove_organization(id);
    }

    pub fn organization_count(&self) -> usize {
        self.shared.lock().organizations.organization_count()
    }

    /// Stores a full Clerk OrganizationMembership object (`id`, `organization.id` and
    /// `public_user_data.user_id` required), replacing any membership with that id. Panics if
    /// its organization is not stored, or if another membership already makes that user a member
    /// of it.
    pub fn insert_membership(&self, membership: Value) {
        self.shared
            .lock()
            .organizations
            .insert_membership(membership, now_ms());
    }

    /// [`insert_membership`](Self::insert_membership) for many under one lock.
    pub fn insert_memberships(&self, memberships: impl IntoIterator<Item = Value>) {
        let now = now_ms();
        let mut instance = self.shared.lock();
        for membership in memberships {
            instance.organizations.insert_membership(membership, now);
        }
    }

    /// The membership as the lists serve it: with its organization as it is now.
    pub fn membership(&self, id: &str) -> Option<Value> {
        self.shared.lock().organizations.membership(id)
    }

    pub fn delete_membership(&self, id: &str) {
        self.shared.lock().organizations.remove_membership(id);
    }

    pub fn membership_count(&self) -> usize {
        self.shared.lock().organizations.membership_count()
    }

    /// An RS256 JWT shaped like Clerk's v2 session token for `user_id`.
    pub fn mint_session_token(&self, user_id: &str, options: &TokenOptions) -> String {
        let rotated = self.shared.lock().rotated;
        let key = keys::key_for(options.key, rotated);
        keys::mint(key, user_id, options, chrono::Utc::now().timestamp())
    }

    /// The next `n` requests under `/v1` get `status` (400..=599) with a Clerk error body.
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or_else(|| panic!("fail_next needs an error status, got {status}"));
        self.shared.lock().inject(n, Fault::Status(status));
    }

    /// The next `n` requests under `/v1` are answered normally, and only then do faults
    /// injected after this call apply: a way to make a job fail midway.
    pub fn pass_next(&self, n: usize) {
        self.shared.lock().inject(n, Fault::Pass);
    }

    /// The next `n` requests under `/v1` get 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        self.shared
            .lock()
            .inject(n, Fault::RateLimited { retry_after_secs });
    }

    /// Delays every answer by `latency`, so concurrent callers overlap.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Holds every answer to a path starting with `path_prefix` until [`Hold::release`]: a
    /// test then acts while such a request is known to be in flight, instead of hoping a sleep
    /// lines the two up.
    pub fn hold_answers(&self, path_prefix: &str) -> Hold {
        let (open, opened) = tokio::sync::watch::channel(false);
        let arrived = Arc::new(tokio::sync::Notify::new());
        self.shared.lock().hold = Some((path_prefix.to_owned(), arrived.clone(), opened));
        Hold { arrived, open }
    }

    /// Every request received, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Requests with this method whose path starts with `path_prefix` (so `/v1/users` also
    /// counts `/v1/users/count` and `/v1/users/{id}`).
    pub fn request_count(&self, method: &str, path_prefix: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.starts_with(path_prefix))
            .count()
    }

    fn current_key(&self) -> &'static keys::InstanceKey {
        keys::key_for(SigningKey::Current, self.shared.lock().rotated)
    }
}

/// The state every request handler and every `ClerkEmulator` clone shares.
#[derive(Clone)]
struct Shared {
    secret_key: Arc<str>,
    instance: Arc<Mutex<Instance>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Instance> {
        // A panic inside one handler must not turn every later request into a second, confusing
        // panic; the first one is the failure worth reading.
        self.instance.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Instance {
    instance_endpoint: InstanceEndpoint,
    users: UserStore,
    organizations: OrganizationStore,
    faults: VecDeque<(usize, Fault)>,
    /// Accepted PATCHes per user id within the last window.
    patches: HashMap<String, VecDeque<Instant>>,
    requests: Vec<RecordedRequest>,
    latency: Duration,
    /// Set by [`ClerkEmulator::hold_answers`]: told of each arrival, waits for the release.
    #[allow(clippy::type_complexity)]
    hold: Option<(
        String,
        Arc<tokio::sync::Notify>,
        tokio::sync::watch::Receiver<bool>,
    )>,
    rotated: bool,
}

/// Answers held back by [`ClerkEmulator::hold_answers`].
pub struct Hold {
    arrived: Arc<tokio::sync::Notify>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Hold {
    /// Resolves once a request the hold applies to has arrived and is being held.
    pub async fn request_arrived(&self) {
        self.arrived.notified().await;
    }

    /// Lets every held answer go, and every later one through at once.
    pub fn release(self) {
        let _ = self.open.send(true);
    }
}

/// What `GET /v1/instance` answers.
enum InstanceEndpoint {
    Serves(String),
    Absent,
}

impl Default for InstanceEndpoint {
    fn default() -> Self {
        InstanceEndpoint::Serves(keys::INSTANCE_A.kid.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answer normally: queued before other faults to make them strike midway through a job.
    Pass,
    Status(StatusCode),
    RateLimited {
        retry_after_secs: u64,
    },
}

impl Instance {
    fn inject(&mut self, n: usize, fault: Fault) {
        if n > 0 {
            self.faults.push_back((n, fault));
        }
    }

    /// Faults are served in the order they were injected.
    fn take_fault(&mut self) -> Option<Fault> {
        let (remaining, fault) = self.faults.front_mut()?;
        let fault = *fault;
        *remaining -= 1;
        if *remaining == 0 {
            self.faults.pop_front();
        }
        Some(fault)
    }

    /// Records a PATCH of `user_id`, or says how many seconds until one is allowed again.
    fn note_patch(&mut self, user_id: &str, now: Instant) -> Option<u64> {
        let window = self.patches.entry(user_id.to_string()).or_default();
        while window
            .front()
            .is_some_and(|at| now.duration_since(*at) >= PATCH_LIMIT_WINDOW)
        {
            window.pop_front();
        }
        if window.len() >= PATCH_LIMIT_PER_USER {
            let wait = PATCH_LIMIT_WINDOW - now.duration_since(window[0]);
            return Some((wait.as_millis().div_ceil(1000) as u64).max(1));
        }
        window.push_back(now);
        None
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let query = uri.query().unwrap_or_default();
    // Recorded and faulted on arrival, so concurrent callers see a deterministic order.
    let (slot, fault, latency, hold) = {
        let mut instance = shared.lock();
        instance.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            status: 0,
        });
        let under_v1 = path == "/v1" || path.starts_with("/v1/");
        let fault = if under_v1 {
            instance.take_fault()
        } else {
            None
        };
        let hold = instance
            .hold
            .clone()
            .filter(|(prefix, _, _)| path.starts_with(prefix.as_str()))
            .map(|(_, arrived, opened)| (arrived, opened));
        (instance.requests.len() - 1, fault, instance.latency, hold)
    };
    if let Some((arrived, mut opened)) = hold {
        arrived.notify_one();
        let _ = opened.wait_for(|open| *open).await;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match fault {
        Some(Fault::Status(status)) => error_for_status(status),
        Some(Fault::RateLimited { retry_after_secs }) => rate_limited(retry_after_secs),
        Some(Fault::Pass) | None => shared.route(&method, path, query, &headers, &body),
    };
    shared.lock().requests[slot].status = response.status().as_u16();
    response
}

impl Shared {
    fn route(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        if !self.authorized(headers) {
            return clerk_error(
                StatusCode::UNAUTHORIZED,
                "authentication_invalid",
                "Invalid authentication",
                "Unable to authenticate the request, you need to supply an active API key",
                json!({}),
            );
        }
        let decoded: Vec<Cow<'_, str>> = path
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .map(percent_decode)
            .collect();
        let segments: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["v1", "jwks"]) => self.jwks(),
            ("GET", ["v1", "instance"]) => self.instance(),
            ("GET", ["v1", "users"]) => self.list_users(query),
            ("GET", ["v1", "users", "count"]) => self.count_users(query),
            (_, ["v1", "users", "count"]) => method_not_allowed(),
            ("GET", ["v1", "users", id]) => self.get_user(id),
            ("PATCH", ["v1", "users", id]) => self.patch_user(id, body),
            ("DELETE", ["v1", "users", id]) => self.delete_user(id),
            ("GET", ["v1", "users", id, "organization_memberships"]) => {
                self.list_memberships(MembershipScope::User(id), query)
            }
            ("GET", ["v1", "organizations"]) => self.list_organizations(query),
            ("GET", ["v1", "organizations", id]) => self.get_organization(id, query),
            ("GET", ["v1", "organizations", id, "memberships"]) => {
                self.list_memberships(MembershipScope::Organization(id), query)
            }
            ("GET", ["v1", "organization_memberships"]) => {
                self.list_memberships(MembershipScope::Instance, query)
            }
            (
                _,
                [
                    "v1",
                    "jwks" | "users" | "instance" | "organizations" | "organization_memberships",
                ]
                | ["v1", "users" | "organizations", _]
                | ["v1", "users", _, "organization_memberships"]
                | ["v1", "organizations", _, "memberships"],
            ) => method_not_allowed(),
            _ => not_found(),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && token == &*self.secret_key
            })
    }

    fn jwks(&self) -> Response {
        let key = keys::key_for(SigningKey::Current, self.lock().rotated);
        json_response(StatusCode::OK, &json!({"keys": [key.jwk()]}))
    }

    fn instance(&self) -> Response {
        match &self.lock().instance_endpoint {
            InstanceEndpoint::Serves(id) => json_response(
                StatusCode::OK,
                &json!({
                    "object": "instance",
                    "id": id,
                    "environment_type": "development",
                    "allowed_origins": null,
                }),
            ),
            InstanceEndpoint::Absent => not_found(),
        }
    }

    fn get_user(&self, id: &str) -> Response {
        let user = self.lock().users.get(id);
        match user {
            Some(user) => json_response(StatusCode::OK, &*user),
            None => not_found(),
        }
    }

    fn delete_user(&self, id: &str) -> Response {
        let mut instance = self.lock();
        let removed = instance.users.remove(id);
        if removed {
            instance.organizations.remove_memberships_of_user(id);
        }
        drop(instance);
        if removed {
            json_response(
                StatusCode::OK,
                &json!({"object": "user", "id": id, "deleted": true}),
            )
        } else {
            not_found()
        }
    }

    fn patch_user(&self, id: &str, body: &[u8]) -> Response {
        if let Some(retry_after) = self.lock().note_patch(id, Instant::now()) {
            return rate_limited(retry_after);
        }
        let changes = match user_changes(body) {
            Ok(changes) => changes,
            Err(invalid) => return invalid.into_response(),
        };
        let mut instance = self.lock();
        if instance.users.get(id).is_none() {
            return not_found();
        }
        if let Some(Value::String(username)) = changes.get("username")
            && instance.users.username_taken(username, id)
        {
            return clerk_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "form_identifier_exists",
                "That username is taken. Please try another.",
                "That username is taken. Please try another.",
                json!({"param_name": "username"}),
            );
        }
        let user = instance.users.update(id, now_ms(), |object| {
            object.extend(changes);
        });
        drop(instance);
        match user {
            Some(user) => json_response(StatusCode::OK, &*user),
            None => not_found(),
        }
    }

    fn list_users(&self, query: &str) -> Response {
        let query = match list_query(query) {
            Ok(query) => query,
            Err(invalid) => return invalid.into_response(),
        };
        let page = self.lock().users.list(&query);
        match page {
            // Serialized outside the lock: a 500-user page is the expensive part of a request.
            Ok(users) => {
                let users: Vec<&Value> = users.iter().map(|user| &**user).collect();
                json_response(StatusCode::OK, &users)
            }
            Err(store::UnknownCursor) => param_error(
                "form_param_value_invalid",
                "starting_after",
                "starting_after must be the id of an existing user",
            )
            .into_response(),
        }
    }

    fn count_users(&self, query: &str) -> Response {
        let filter = match Params::parse(query, &["user_id"]).and_then(|p| id_filter(&p)) {
            Ok(filter) => filter,
            Err(invalid) => return invalid.into_response(),
        };
        let count = self.lock().users.count(&filter);
        json_response(
            StatusCode::OK,
            &json!({"object": "total_count", "total_count": count}),
        )
    }
}

/// Validates a PATCH body into the fields to set. Only the fields below are supported; any
/// other parameter is refused rather than silently dropped.
fn user_changes(body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(Invalid {
            code: "form_param_format_invalid",
            param: None,
            long_message: "The request body must be a JSON object".into(),
        });
    };
    let mut changes = Map::new();
    for (name, value) in fields {
        let is_name = matches!(name.as_str(), "first_name" | "last_name");
        if !is_name && !matches!(name.as_str(), "username" | "external_id") {
            return Err(param_error(
                "form_param_unknown",
                &name,
                &format!("{name} is not a parameter the Clerk emulator's user update supports"),
            ));
        }
        let value = match value {
            Value::Null => Value::Null,
            // Clerk: null or "" removes the username (§d).
            Value::String(text) if name == "username" && text.is_empty() => Value::Null,
            Value::String(text) if is_name && text.chars().count() > MAX_NAME_CHARS => {
                return Err(param_error(
                    "form_param_exceeds_allowed_length",
                    &name,
                    &format!("{name} must be at most {MAX_NAME_CHARS} characters long"),
                ));
            }
            Value::String(text) => Value::String(text),
            _ => {
                return Err(param_error(
                    "form_param_format_invalid",
                    &name,
                    &format!("{name} must be a string or null"),
                ));
            }
        };
        changes.insert(name, value);
    }
    Ok(changes)
}

fn list_query(query: &str) -> Result<ListQuery, Invalid> {
    let params = Params::parse(
        query,
        &["limit", "offset", "order_by", "starting_after", "user_id"],
    )?;
    let Page { limit, offset } = parse_page(&params)?;
    let ordering = match params.first("order_by") {
        None => Ordering::DEFAULT,
        Some(text) => Ordering::parse(text).ok_or_else(|| {
            param_error(
                "form_param_value_invalid",
                "order_by",
                &format!(
                    "order_by {text:?} is not one of created_at, updated_at with an optional \
                     + or - (the Clerk emulator orders by nothing else)"
                ),
            )
        })?,
    };
    let starting_after = params.first("starting_after").map(str::to_string);
    if starting_after.is_some() {
        if ordering.field != SortField::CreatedAt {
            return Err(param_error(
                "form_param_value_invalid",
                "starting_after",
                "starting_after can only be used when ordering by created_at",
            ));
        }
        if offset != 0 {
            return Err(param_error(
                "form_param_value_invalid",
                "starting_after",
                "starting_after cannot be combined with a non-zero offset",
            ));
        }
    }
    Ok(ListQuery {
        limit,
        offset,
        ordering,
        starting_after,
        filter: id_filter(&params)?,
    })
}

/// `limit` (1..=500, default 10) and `offset` (default 0), the same on every BAPI list (§d).
fn parse_page(params: &Params) -> Result<Page, Invalid> {
    let limit = match params.first("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => {
            let limit = parse_count(text, "limit")?;
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(param_error(
                    "form_param_value_invalid",
                    "limit",
                    &format!("limit must be between 1 and {MAX_LIMIT}"),
                ));
            }
            limit
        }
    };
    let offset = params
        .first("offset")
        .map_or(Ok(0), |text| parse_count(text, "offset"))?;
    Ok(Page { limit, offset })
}

fn parse_count(text: &str, name: &str) -> Result<usize, Invalid> {
    text.parse::<usize>().map_err(|_| {
        param_error(
            "form_param_format_invalid",
            name,
            &format!("{name} must be a non-negative integer"),
        )
    })
}

fn id_filter(params: &Params) -> Result<IdFilter, Invalid> {
    let values = params.all("user_id");
    if values.len() > MAX_FILTER_VALUES {
        return Err(param_error(
            "form_param_value_invalid",
            "user_id",
            &format!("user_id accepts at most {MAX_FILTER_VALUES} values"),
        ));
    }
    let mut filter = IdFilter::default();
    for value in values {
        match value.strip_prefix('-') {
            Some(id) => {
                filter.exclude.insert(id.to_string());
            }
            None => {
                let id = value.strip_prefix('+').unwrap_or(value);
                filter
                    .include
                    .get_or_insert_default()
                    .insert(id.to_string());
            }
        }
    }
    Ok(filter)
}

/// Decoded query parameters, keeping repeats (`user_id=a&user_id=b`).
struct Params(HashMap<String, Vec<String>>);

impl Params {
    fn parse(query: &str, allowed: &[&str]) -> Result<Params, Invalid> {
        let mut params: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name == "__clerk_api_version" {
                continue;
            }
            if !allowed.contains(&name.as_ref()) {
                return Err(param_error(
                    "form_param_unknown",
                    &name,
                    &format!("{name} is not a parameter the Clerk emulator supports here"),
                ));
            }
            params
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        Ok(Params(params))
    }

    /// Clerk reads only the first value of a single-valued parameter (§d, `order_by`).
    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Clerk's error body (§d "Error shape").
fn clerk_error(
    status: StatusCode,
    code: &str,
    message: &str,
    long_message: &str,
    meta: Value,
) -> Response {
    json_response(
        status,
        &json!({
            "errors": [{"message": message, "long_message": long_message, "code": code, "meta": meta}],
            "clerk_trace_id": random_chars(32, HEX),
        }),
    )
}

/// A rejected parameter (or, with no `param`, a rejected body): Clerk's 422.
struct Invalid {
    code: &'static str,
    param: Option<String>,
    long_message: String,
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let meta = match self.param {
            Some(param) => json!({"param_name": param}),
            None => json!({}),
        };
        clerk_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            self.code,
            "is invalid",
            &self.long_message,
            meta,
        )
    }
}

fn param_error(code: &'static str, param: &str, long_message: &str) -> Invalid {
    Invalid {
        code,
        param: Some(param.to_string()),
        long_message: long_message.to_string(),
    }
}

fn not_found() -> Response {
    clerk_error(
        StatusCode::NOT_FOUND,
        "resource_not_found",
        "not found",
        "Resource not found",
        json!({}),
    )
}

fn method_not_allowed() -> Response {
    clerk_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
        "This endpoint does not support this HTTP method",
        json!({}),
    )
}

/// 429 with `Retry-After` in seconds, which `@clerk/backend` parses as an integer (§d "429").
fn rate_limited(retry_after_secs: u64) -> Response {
    let mut response = clerk_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "Too Many Requests",
        "Too many requests, retry later",
        json!({}),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after_secs.into());
    response
}

/// The error an injected failure answers with: a Clerk-style code for the status.
fn error_for_status(status: StatusCode) -> Response {
    let (code, message, long_message) = match status.as_u16() {
        400 => ("bad_request", "bad request", "The request was malformed"),
        401 => (
            "authentication_invalid",
            "Invalid authentication",
            "Unable to authenticate the request, you need to supply an active API key",
        ),
        403 => (
            "authorization_invalid",
            "Unauthorized request",
            "You are not authorized to perform this request",
        ),
        404 => ("resource_not_found", "not found", "Resource not found"),
        409 => (
            "conflict",
            "conflict",
            "The request conflicts with the resource's state",
        ),
        422 => (
            "form_param_value_invalid",
            "is invalid",
            "A parameter is invalid",
        ),
        429 => (
            "too_many_requests",
            "Too Many Requests",
            "Too many requests, retry later",
        ),
        _ => (
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers. We've been notified and are working on fixing it.",
        ),
    };
    clerk_error(status, code, message, long_message, json!({}))
}

/// Clients percent-encode path segments (clerk-sync's own client does), so ids are matched
/// decoded. Malformed escapes are kept as they are.
fn percent_decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&decoded).into_owned())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_chars(len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
        .collect()
}
