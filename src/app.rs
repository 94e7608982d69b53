//! Start-up: a validated configuration in, a running service out. `main` and the tests build the
//! service the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clerk::api::ClerkApi;
use crate::clerk::session::{KeySource, SessionRules, SessionVerifier};
use crate::config::{ClerkSettings, ServeConfig};
use crate::http::{AppState, Users, router};
use crate::store::{Store, StoreError};
use crate::webhook::Verifier;

/// A service bound to its address, ready to run.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl App {
    /// Connects to the database, applies migrations (unless turned off) and binds the address.
    pub async fn build(config: &ServeConfig) -> Result<App, StartError> {
        let store = Store::connect(&config.database, &config.pool).await?;
        if config.migrate {
            store.check_connection(&config.database).await?;
            let report = store.migrate().await?;
            for (version, description) in &report.applied {
                tracing::info!(version, description, "applied migration");
            }
        }
        let state = build_state(config, store.clone())?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(App {
            listener,
            router: router(state, config.max_body_bytes),
            store,
        })
    }

    /// The bound address (useful when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}

/// The state the handlers and extractors share, for an app that mounts clerk-sync's routes
/// into its own router (see `examples/embedded.rs`). Migrations are the caller's business
/// (`Store::migrate`).
pub fn build_state(config: &ServeConfig, store: Store) -> Result<AppState, StartError> {
    Ok(AppState {
        store,
        verifier: Arc::new(Verifier::new(&config.secrets)),
        delete_mode: config.delete_mode,
        users: Arc::new(users(&config.clerk)?),
    })
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
