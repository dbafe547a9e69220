//! Serving until told to stop: Ctrl-C locally, SIGTERM from Kubernetes, with in-flight requests
//! allowed to finish.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

/// A stop signal many tasks can wait on: cloned into each, triggered once.
#[derive(Clone, Debug)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

/// Triggers a [`Shutdown`]; dropping it triggers it too.
#[derive(Debug)]
pub struct Trigger(tokio::sync::watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    /// Resolves once triggered; a `'static` future, so it can be handed to spawned tasks.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }
}

impl Trigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            // Without the handler we can still stop on SIGTERM.
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for open requests.
/// Handlers can extract `ConnectInfo<SocketAddr>` for the peer address.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening for HTTP");
    }
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
