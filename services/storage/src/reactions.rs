//! Work the storage service does on its own: deleting a deleted user's namespaces, and sweeping GFS
//! for blobs no file refers to (uploads cut off by a crash, blobs a failed delete left behind).

use std::{collections::HashSet, time::Duration};

use edd_events::{
    catalog::auth::UserDeleted,
    consume::{stream_head, Outcome, Reactor, ReactorConfig},
    RawEvent,
};
use edd_kit::Shutdown;
use sqlx::Row;
use time::OffsetDateTime;

use crate::{
    api::delete_namespace,
    projection::SCHEMA,
    state::{AppState, GFS_NAMESPACE},
};

/// The durable consumer that reacts to `auth.user.{id}.deleted`.
pub const USER_DELETED_CONSUMER: &str = "storage-user-deleted";

/// Deletes every namespace (and so every file and blob) of each deleted user, once per deletion:
/// each namespace's deletion is its own event, so a redelivery finds less to do, never double work.
pub async fn follow_user_deletions(state: AppState, shutdown: Shutdown) {
    let mut config = ReactorConfig::new("AUTH", USER_DELETED_CONSUMER, &["auth.user.*.deleted"]);
    // Deleting a user's blobs can take a while; a redelivery meanwhile would only conflict.
    config.ack_wait = Duration::from_secs(300);
    loop {
        let reactor = Reactor::new(state.commits.store().jetstream().clone(), config.clone());
        let handler = |event: RawEvent| {
            let state = state.clone();
            async move {
                if !event.is::<UserDeleted>() {
                    return Ok(Outcome::Skipped);
                }
                let deleted: UserDeleted = event.decode().map_err(|e| e.to_string())?;
                // Every namespace the user created before being deleted is in the catalog first.
                let head =
                    stream_head(state.commits.store().jetstream(), "STORAGE").await.map_err(|e| e.to_string())?;
                state.catalog.wait_for(head, Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
                for ns in state.namespaces_of(&deleted.user_id).await.map_err(|p| format!("{p:?}"))? {
                    delete_namespace(&state, &ns, "storage", "user_deleted").await.map_err(|p| format!("{p:?}"))?;
                    tracing::info!(user = %deleted.user_id, namespace = ns.name, "deleted a deleted user's namespace");
                }
                Ok(Outcome::Handled)
            }
        };
        match reactor.run(handler, shutdown.wait()).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "user-deletion consumer stopped; restarting"),
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Every `interval`, deletes the blobs no live file refers to: at once when their namespace is
/// gone, once created `grace` ago otherwise (an upload still running is younger than that, since
/// uploads have a deadline shorter than the grace).
pub async fn sweep_forever(state: AppState, interval: Duration, grace: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match sweep(&state, grace).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(blobs = n, "swept unreferenced blobs"),
            Err(e) => tracing::warn!(error = %e, "sweep failed; trying again later"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("the catalog is behind the log; not sweeping on a stale view")]
    Behind,
    #[error(transparent)]
    Gfs(#[from] edd_gfs::client::GfsError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Log(#[from] edd_events::consume::ConsumeError),
}

/// One pass; returns how many blobs it deleted.
pub async fn sweep(state: &AppState, grace: Duration) -> Result<u64, SweepError> {
    // Decide only on a catalog that has everything the log had when the pass began.
    let head = stream_head(state.commits.store().jetstream(), "STORAGE").await?;
    state.catalog.wait_for(head, Duration::from_secs(30)).await.map_err(|_| SweepError::Behind)?;
    let cutoff = OffsetDateTime::now_utc() - grace;
    let mut after: Option<String> = None;
    let mut deleted = 0;
    loop {
        let (files, next) = state.gfs.list(GFS_NAMESPACE, "", after.as_deref(), 1000).await?;
        let Some(last) = files.last() else { return Ok(deleted) };
        after = Some(last.path.clone());
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let ns_ids: Vec<String> = files.iter().filter_map(|f| namespace_of(&f.path).map(str::to_owned)).collect();
        let referenced: HashSet<String> =
            sqlx::query(&format!("SELECT blob FROM {SCHEMA}.files WHERE blob = ANY($1) AND NOT deleted"))
                .bind(&paths)
                .fetch_all(&state.pool)
                .await?
                .iter()
                .map(|r| r.try_get("blob"))
                .collect::<Result<_, _>>()?;
        let live: HashSet<String> =
            sqlx::query(&format!("SELECT ns_id FROM {SCHEMA}.namespaces WHERE ns_id = ANY($1) AND NOT deleted"))
                .bind(&ns_ids)
                .fetch_all(&state.pool)
                .await?
                .iter()
                .map(|r| r.try_get("ns_id"))
                .collect::<Result<_, _>>()?;
        for file in &files {
            if referenced.contains(&file.path) {
                continue;
            }
            let namespace_live = namespace_of(&file.path).is_some_and(|ns| live.contains(ns));
            if namespace_live && file.created > cutoff {
                continue;
            }
            match state.gfs.delete(GFS_NAMESPACE, &file.path).await {
                Ok(()) | Err(edd_gfs::client::GfsError::NotFound(_)) => deleted += 1,
                Err(e) => return Err(e.into()),
            }
        }
        if next.is_none() {
            return Ok(deleted);
        }
    }
}

/// The `ns_id` a blob path `/<ns_id>/<name>` belongs to.
fn namespace_of(blob: &str) -> Option<&str> {
    blob.strip_prefix('/')?.split_once('/').map(|(ns, _)| ns)
}
