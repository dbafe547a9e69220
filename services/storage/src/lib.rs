//! The storage service: namespaces and files on GFS, share links and quotas (see `docs/storage.md`).
//!
//! Event-sourced on the `STORAGE` stream: commands append events and answer once the service's own
//! `storage/catalog` projection shows them; reads come from that projection. A file's bytes are a
//! GFS file (a *blob*) written completely before the event that names it, so a file is either
//! wholly there or not at all; blobs no event refers to are swept.
//!
//! Layout: `api` (thin axum handlers), `commands` (uploads, deletions), `state` (shared state, the
//! commit path), `queries` (catalog reads),
//! [`projection`] (the catalog), [`transfer`] (streaming to and from GFS), [`http`] (ranges,
//! conditional requests), [`names`] (what names and paths may be), [`progress`] (transfer
//! progress), [`reactions`] (user deletions, the sweeper), [`config`].

mod api;
mod commands;
pub mod config;
pub mod http;
pub mod names;
pub mod progress;
pub mod projection;
mod queries;
pub mod reactions;
mod state;
pub mod transfer;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream;
use edd_events::EventStore;
use edd_gfs::client::{GfsClient, GfsConfig, GfsError};
use edd_kit::{auth::PermissionsProjection, App, Committer, Metrics, Shutdown};
use edd_projections::{Projection, RunnerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::StorageConfig;
pub use state::GFS_NAMESPACE;

/// The storage service's permissions: the `storage` scope root.
pub const PERMISSIONS: PermissionsProjection = PermissionsProjection::new("storage/permissions", Some("storage"));

/// The projections the storage service runs in `sfs_db`.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(projection::CatalogProjection), Arc::new(PERMISSIONS)]
}

/// What the service needs from outside: the event log, its database and GFS's client secret.
pub struct Deps {
    pub js: jetstream::Context,
    pub pool: PgPool,
    pub gfs_secret: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("GFS client: {0}")]
    Gfs(#[from] GfsError),
    #[error("GFS TLS: {0}")]
    GfsTls(#[from] edd_gfs::tls::TlsError),
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// The storage API's HTTP contract (`GET /openapi.json` on the storage host, `docs/openapi/storage.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    edd_kit::openapi::document("storage", api::routes().split_for_parts().1)
}

/// Runs the storage service on `listener` until `shutdown`.
pub async fn run(config: StorageConfig, deps: Deps, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let Deps { js, pool, gfs_secret } = deps;
    let mut gfs_config = GfsConfig::new(config.gfs_masters.clone(), gfs_secret);
    // TLS to GFS when `EDD_GFS_TLS_CA_FILE` is set (docs/gfs.md, Security).
    gfs_config.tls = edd_gfs::tls::Tls::from_env()?;
    let gfs = GfsClient::new(gfs_config)?;
    let catalog_projection: Arc<dyn Projection> = Arc::new(projection::CatalogProjection);
    let filters = catalog_projection.filters();
    let catalog =
        edd_projections::spawn(pool.clone(), js.clone(), catalog_projection, RunnerConfig::default(), shutdown.wait());
    let (authorizer, _) =
        edd_kit::auth::start(pool.clone(), js.clone(), PERMISSIONS, RunnerConfig::default(), shutdown.wait());

    let state = state::AppState {
        commits: Committer::new(EventStore::new(js), "storage").follow(filters, catalog.watermark()),
        pool: pool.clone(),
        authorizer: authorizer.clone(),
        catalog,
        gfs: gfs.clone(),
        config: Arc::new(config.clone()),
        progress: progress::Progress::default(),
        uploads: Arc::default(),
    };
    if config.sweep_grace_secs < config.upload_deadline_secs {
        tracing::warn!(
            grace = config.sweep_grace_secs,
            deadline = config.upload_deadline_secs,
            "the sweep grace is shorter than the upload deadline: a slow upload's blob may be swept"
        );
    }
    tokio::spawn(ensure_gfs_namespace(gfs.clone(), shutdown.clone()));
    tokio::spawn(reactions::follow_user_deletions(state.clone(), shutdown.clone()));
    tokio::spawn(reactions::sweep_forever(
        state.clone(),
        Duration::from_secs(config.sweep_interval_secs),
        Duration::from_secs(config.sweep_grace_secs),
        shutdown.clone(),
    ));

    let (routes, _) = api::routes().with_state(state).split_for_parts();
    let router = App::new("storage", Metrics::new())
        .router(routes)
        .openapi(openapi())
        // Uploads answer once the whole body is stored; they have their own idle timeout and deadline.
        .request_timeout(config.upload_deadline() + Duration::from_secs(60))
        .readiness("permissions", move || authorizer.clone().readiness())
        .readiness("postgres", move || {
            let pool = pool.clone();
            async move { sqlx::query("SELECT 1").execute(&pool).await.map(drop) }
        })
        .readiness("gfs", move || {
            let gfs = gfs.clone();
            async move { gfs.status().await.map(drop) }
        })
        .build();
    edd_kit::shutdown::serve(listener, router, shutdown.wait()).await?;
    Ok(())
}

/// Creates the GFS namespace blobs live in, retrying until GFS answers.
async fn ensure_gfs_namespace(gfs: GfsClient, shutdown: Shutdown) {
    loop {
        match gfs.create_namespace(GFS_NAMESPACE).await {
            Ok(()) | Err(GfsError::AlreadyExists(_)) => return,
            Err(e) => tracing::warn!(error = %e, "cannot create the GFS namespace yet; retrying"),
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
