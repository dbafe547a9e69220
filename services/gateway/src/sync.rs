//! Keeps the proxy's route table equal to the built-in routes plus the `gateway/routes` projection:
//! after each commit of the projection the table is reloaded and swapped in whole.

use std::{sync::Arc, time::Duration};

use edd_projections::Handle;
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use crate::{
    projection::SCHEMA,
    routes::{Route, RouteTable},
    Gateway,
};

/// Where the route table stands; [`RouteSync::wait_for`] lets the admin API answer only once a
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

    /// Waits until the table reflects stream sequence `seq`.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.loaded.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= seq)).await.is_ok_and(|r| r.is_ok())
    }
}

async fn load(pool: &PgPool) -> Result<Vec<Route>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT route_id, host, path_prefix, upstream, strip_prefix, max_body_bytes FROM {SCHEMA}.routes ORDER BY route_id"
    ))
    .fetch_all(pool)
    .await?;
    let mut routes = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("route_id")?;
        let route = Route::new(
            &id,
            row.try_get("host")?,
            row.try_get("path_prefix")?,
            row.try_get("upstream")?,
            row.try_get("strip_prefix")?,
        )
        .map(|r| r.with_max_body(row.try_get::<Option<i64>, _>("max_body_bytes").ok().flatten().map(|n| n as u64)));
        match route {
            Ok(r) => routes.push(r),
            // Validated before its event was written; a bad row means a changed rule, not bad input.
            Err(e) => tracing::error!(route = id, error = %e, "stored route is no longer valid; skipped"),
        }
    }
    Ok(routes)
}
