//! Start-up: a validated configuration in, a running service out. `main` and the tests build the
//! service the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::clerk::api::{ClerkApi, RetryPolicy, SecretKey};
use crate::clerk::session::{KeySource, SessionRules, SessionVerifier};
use crate::config::{ClerkSettings, ServeConfig};
use crate::http::{AppState, ConnectionLimits, RateLimiters, Users};
use crate::ingest::{DeliveryQueue, WriterSettings};
use crate::jobs::reconcile::{self, ReconcileOptions};
use crate::jobs::{MAX_PAGE_SIZE, Pacer, events};
use crate::store::{Store, StoreError};
use crate::webhook::Verifier;

/// A service bound to its address, ready to run.
pub struct App {
    listener: TcpListener,
    /// `/metrics` on its own address, when configured.
    metrics: Option<(TcpListener, axum::Router)>,
    router: axum::Router,
    /// How connections are capped and timed out, on both addresses.
    connection_limits: ConnectionLimits,
    store: Store,
    /// The webhook writers, stopped explicitly on shutdown: they keep database connections of
    /// their own, and every clone of the state (the `/metrics` router's too) keeps them alive.
    deliveries: DeliveryQueue,
    /// Scheduled reconciliation, when configured.
    reconciler: Option<(ClerkApi, Duration, ReconcileOptions)>,
    /// Events older than this leave the inbox (`None`: all are kept).
    inbox_retention: Option<Duration>,
    shutdown_timeout: Duration,
}

/// Why the service could not start; the text says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be connected to, checked or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration cannot work (e.g. reconciliation without a secret key); the text names
    /// the variables involved.
    #[error("{0}")]
    Config(String),
    /// `what` says which of the addresses it was (the main one, or the metrics one).
    #[error("cannot listen on {addr} ({what}): {error}{hint}", hint = listen_hint(.error))]
    Listen {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// Which address it was, by the variables that set it.
        what: &'static str,
        /// The operating system's error (address in use, permission denied, ...).
        error: std::io::Error,
    },
}

impl App {
    /// Connects to the database, applies migrations (unless turned off) and binds the address.
    pub async fn build(config: &ServeConfig) -> Result<App, StartError> {
        // Before connecting: a configuration that cannot work should not wait for a database.
        config.validate().map_err(|e| StartError::Config(e.0))?;
        let store =
            Store::connect_with(&config.database, &config.pool, config.users_table.clone()).await?;
        if config.migrate {
            store.check_connection(&config.database).await?;
            let report = store.migrate().await?;
            for (version, description) in &report.applied {
                tracing::info!(version, description, "applied migration");
            }
        }
        crate::metrics::install();
        // A key of another Clerk instance must not read that instance's users into this table:
        // webhooks go on, whatever would read Clerk with the key is off (logged as an error).
        let without_key;
        let config = match &config.clerk.secret_key {
            Some(key) if !key_fits(&store, &config.clerk, key).await => {
                without_key = ServeConfig {
                    clerk: ClerkSettings {
                        secret_key: None,
                        ..config.clerk.clone()
                    },
                    reconcile_every: None,
                    ..config.clone()
                };
                &without_key
            }
            _ => config,
        };
        let state = build_state(config, store.clone())?;
        let deliveries = state.deliveries.clone();
        let metrics = match config.metrics_listen {
            Some(addr) => {
                let listener = crate::http::bind(addr).map_err(|error| StartError::Listen {
                    addr,
                    what: "for /metrics, CLERK_SYNC_METRICS_LISTEN",
                    error,
                })?;
                Some((listener, crate::http::metrics_router(state.clone())))
            }
            None => None,
        };
        let listener = crate::http::bind(config.listen).map_err(|error| StartError::Listen {
            addr: config.listen,
            what: "CLERK_SYNC_LISTEN / --listen / PORT",
            error,
        })?;
        let reconciler = match (config.reconcile_every, &state.users.clerk) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(StartError::Config(
                    "CLERK_SYNC_RECONCILE_EVERY needs CLERK_SECRET_KEY: reconciliation reads \
                     every user from Clerk's Backend API"
                        .into(),
                ));
            }
            (Some(every), Some(api)) => Some((
                api.clone(),
                every,
                ReconcileOptions {
                    dry_run: false,
                    allow_mass_delete: false,
                    requests_per_10s: Pacer::default_budget(api),
                    page_size: MAX_PAGE_SIZE,
                    delete_mode: config.delete_mode,
                    quiet: true,
                },
            )),
        };
        Ok(App {
            listener,
            router: crate::http::routes(
                state,
                config.max_body_bytes,
                metrics.is_none(),
                &config.limits,
            ),
            connection_limits: ConnectionLimits::new(&config.limits),
            metrics,
            store,
            deliveries,
            reconciler,
            inbox_retention: config.inbox_retention,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The bound address (useful when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The database the service writes to, already connected and migrated.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let scheduler = self.reconciler.map(|(api, every, options)| {
            tracing::info!(every_s = every.as_secs(), "reconciliation scheduled");
            tokio::spawn(reconcile::schedule(self.store.clone(), api, every, options))
        });
        let retention = self.inbox_retention.map(|retention| {
            tracing::info!(retention_s = retention.as_secs(), "inbox retention on");
            tokio::spawn(events::apply_retention(self.store.clone(), retention))
        });
        let metrics_server = self.metrics.map(|(listener, router)| {
            tracing::info!(
                "metrics on http://{}/metrics",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            let limits = self.connection_limits.clone();
            tokio::spawn(crate::http::serve(
                listener,
                router,
                limits,
                std::future::pending(),
            ))
        });
        // Stop accepting on the signal, let requests in flight finish, but not forever: a
        // transaction cut short rolls back, and Svix delivers that event again.
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        };
        let server = crate::http::serve(self.listener, self.router, self.connection_limits, signal);
        let grace = self.shutdown_timeout;
        let stopped_at = Arc::new(std::sync::OnceLock::new());
        let stopping_at = stopped_at.clone();
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                let _ = stopping_at.set(tokio::time::Instant::now());
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let served = tokio::select! {
            served = server => served,
            () = deadline => {
                tracing::warn!(grace_s = grace.as_secs(), "requests still in flight after the shutdown grace period; exiting");
                Ok(())
            }
        };
        // The rest fits in what is left of the grace period too: `close` waits for every
        // connection in use, and a process that never exits gets killed by its platform.
        let end = stopped_at
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now)
            + grace;
        // Before the pool closes: a chunk cut short rolls back, one failing on a closed pool
        // would only log a misleading error. A reconciliation cut short leaves its lease to
        // the next run, which takes it over (this process is gone by then).
        stop(retention).await;
        stop(scheduler).await;
        stop(metrics_server).await;
        if tokio::time::timeout_at(end, self.deliveries.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "webhook events still being written at the end of the shutdown grace period; \
                 exiting (their transactions roll back and Svix delivers them again)"
            );
        }
        if tokio::time::timeout_at(end, self.store.close())
            .await
            .is_err()
        {
            tracing::warn!(
                "database connections still in use at the end of the shutdown grace period; \
                 exiting without waiting for them"
            );
        }
        served
    }
}

/// Cancels a background task and waits until it has let go of what it held.
async fn stop<T>(task: Option<tokio::task::JoinHandle<T>>) {
    if let Some(task) = task {
        task.abort();
        let _ = task.await;
    }
}

/// The state the handlers and extractors share, for an app that mounts clerk-sync's routes
/// into its own router (see `examples/embedded.rs`). Migrations are the caller's business
/// (`Store::migrate`).
pub fn build_state(config: &ServeConfig, store: Store) -> Result<AppState, StartError> {
    config.validate().map_err(|e| StartError::Config(e.0))?;
    let mut writers = WriterSettings::default_for(&store, config.pool.max_connections);
    if let Some(count) = config.writers {
        writers.writers = count;
    }
    writers.timeout = config.limits.db_timeout;
    Ok(AppState {
        deliveries: DeliveryQueue::start(store.clone(), config.delete_mode, writers),
        store,
        verifier: Arc::new(Verifier::new(&config.secrets)),
        delete_mode: config.delete_mode,
        users: Arc::new(users(&config.clerk)?),
        metrics_token: config.metrics_token.as_deref().map(Arc::from),
        admin_token: config.admin_token.as_deref().map(Arc::from),
        limiters: Arc::new(RateLimiters::new(&config.limits)),
        db_timeout: config.limits.db_timeout,
        cors_origins: config.clerk.authorized_parties.as_slice().into(),
    })
}

/// How long start-up waits for Clerk to say which instance CLERK_SECRET_KEY belongs to.
const KEY_CHECK_WAIT: Duration = Duration::from_secs(3);

/// Whether the key may be used: false only when Clerk says it belongs to another instance than
/// the stored webhooks. One attempt, briefly: a Clerk away must not hold up start-up.
async fn key_fits(store: &Store, settings: &ClerkSettings, key: &SecretKey) -> bool {
    let retry = RetryPolicy {
        attempts: 1,
        timeout: KEY_CHECK_WAIT,
        ..settings.retry.clone()
    };
    match ClerkApi::new(&settings.api_url, key.clone(), retry) {
        Ok(probe) => crate::jobs::key_fits_stored_events(store, &probe, KEY_CHECK_WAIT).await,
        // `users` reports the unusable URL.
        Err(_) => true,
    }
}

/// The Clerk client and session verifier the configuration allows.
fn users(settings: &ClerkSettings) -> Result<Users, StartError> {
    let clerk = settings
        .secret_key
        .clone()
        .map(|key| ClerkApi::new(&settings.api_url, key, settings.retry.clone()))
        .transpose()
        .map_err(StartError::Config)?;
    let rules = SessionRules {
        authorized_parties: settings.authorized_parties.clone(),
        issuer: settings.issuer.clone(),
        allow_pending: settings.allow_pending_sessions,
        jwks_min_refetch: settings.jwks_min_refetch,
    };
    let source = match (&settings.jwt_key, &clerk) {
        (Some(pem), _) => Some(KeySource::Pem(pem.clone())),
        (None, Some(api)) => Some(KeySource::Jwks(api.clone())),
        (None, None) => None,
    };
    let sessions = source
        .map(|source| SessionVerifier::new(source, rules))
        .transpose()
        .map_err(StartError::Config)?;
    match (&sessions, &clerk) {
        (None, _) => tracing::info!(
            "user API off: set CLERK_SECRET_KEY (or CLERK_JWT_KEY) to serve /api/users/me"
        ),
        (Some(_), None) => tracing::info!(
            "user API on, without fallback fetch or profile updates (they need CLERK_SECRET_KEY)"
        ),
        (Some(_), Some(_)) => tracing::info!("user API on, with fallback fetch from Clerk"),
    }
    if settings.authorized_parties.is_empty() && sessions.is_some() {
        tracing::warn!(
            "CLERK_AUTHORIZED_PARTIES is not set: session tokens minted for any origin are \
             accepted; set it to your app's origins (e.g. https://example.com)"
        );
    }
    Ok(Users::new(sessions, clerk))
}

fn listen_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process (perhaps another clerk-sync, or `next dev` on port 3000) uses it: \
             stop it or choose another address"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need privileges: choose a port above 1024"
        }
        _ => "",
    }
}

/// Resolves on Ctrl-C or SIGTERM (what container platforms send before stopping a process).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
