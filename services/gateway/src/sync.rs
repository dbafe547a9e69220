//! Keeps the proxy's route table equal to the built-in routes plus the `gateway/routes` projection:
//! after each commit of the projection the table is reloaded and swapped in whole.

use std::{sync::Arc, time::Duration};

use edd_projections::{Handle, Watermark};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    queries,
    routes::{Route, RouteTable},
    Gateway,
};

/// Where the route table stands; [`RouteSync::watermark`] lets the admin API answer only once a
/// change is live.
#[derive(Clone)]
pub struct RouteSync {
    loaded: Arc<watch::Sender<u64>>,
}

impl RouteSync {
    /// Follows the projection behind `handle` (in `pool`) into `gateway`, until the runner stops.
    pub fn follow(pool: PgPool, handle: Handle, gateway: Arc<Gateway>, builtin: Vec<Route>) -> Self {
        let loaded = Arc::new(watch::channel(0).0);
        let sync = Self { loaded: loaded.clone() };
        tokio::spawn(async move {
            let mut position = handle.watch();
            loop {
                let reached = *position.borrow_and_update();
                match load(&pool).await {
                    Ok(routes) => {
                        gateway.set_routes(RouteTable::new(builtin.iter().cloned().chain(routes)));
                        loaded.send_replace(reached);
                    }
                    Err(e) => {
                        if !matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01")) {
                            tracing::warn!(error = %e, "cannot load routes; retrying");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                if position.changed().await.is_err() {
                    return;
                }
            }
        });
        sync
    }

    /// The stream sequence the live table reflects: what a route command waits on.
    pub fn watermark(&self) -> Watermark {
        Watermark::new("gateway route table", self.loaded.subscribe())
    }
}

async fn load(pool: &PgPool) -> Result<Vec<Route>, sqlx::Error> {
    let stored = queries::routes(pool).await?;
    let mut routes = Vec::with_capacity(stored.len());
    for r in stored {
        match Route::new(&r.id, &r.host, &r.path_prefix, &r.upstream, r.strip_prefix) {
            Ok(route) => routes.push(route.with_max_body(r.max_body_bytes)),
            // Validated before its event was written; a bad row means a changed rule, not bad input.
            Err(e) => tracing::error!(route = r.id, error = %e, "stored route is no longer valid; skipped"),
        }
    }
    Ok(routes)
}
