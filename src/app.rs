//! Start-up: a validated configuration in, a running service out. `main` and the tests build the
//! service the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::http::{AppState, router};
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
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let state = AppState {
            store: store.clone(),
            verifier: Arc::new(Verifier::new(&config.secrets)),
            delete_mode: config.delete_mode,
        };
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
