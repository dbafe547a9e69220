//! What every handler shares: the commit path (a [`Committer`] waiting on the catalog), the
//! database, GFS, transfer progress and upload slots; notifications and blob clean-up.

use std::sync::Arc;

use axum::extract::FromRef;
use edd_events::{catalog::notify::Notification, Event, Expected, Token};
use edd_gfs::client::{GfsClient, GfsError};
use edd_kit::{auth::Authorizer, Committer, Problem};
use edd_projections::Handle;
use sqlx::PgPool;

use crate::{config::StorageConfig, progress::Progress};

/// The GFS namespace holding every blob; blobs are `/<ns_id>/<random>`.
pub const GFS_NAMESPACE: &str = "storage";

#[derive(Clone)]
pub struct AppState {
    /// Appends as `storage` and waits until `storage/catalog` shows the event.
    pub commits: Committer,
    pub pool: PgPool,
    pub authorizer: Authorizer,
    /// `storage/catalog`, which reactions wait on before acting on what it lacks.
    pub catalog: Handle,
    pub gfs: GfsClient,
    pub config: Arc<StorageConfig>,
    pub progress: Progress,
    pub uploads: Arc<crate::transfer::UploadSlots>,
}

impl FromRef<AppState> for Authorizer {
    fn from_ref(state: &AppState) -> Self {
        state.authorizer.clone()
    }
}

/// The expectation of a command that creates an aggregate whose last event (if any) is `seq`.
pub fn after(seq: Option<u64>) -> Expected {
    seq.map_or(Expected::NoStream, Expected::Exactly)
}

impl AppState {
    /// Appends `data` for `actor` and waits until the catalog shows it.
    pub async fn commit<E: Event>(&self, actor: &str, data: E, expected: Expected) -> Result<u64, Problem> {
        self.commits.commit(actor, data, expected).await
    }

    /// Tells `user` about something that happened in `namespace`; best effort, the change itself
    /// is already recorded.
    pub async fn notify(&self, user: &Token, title: &str, message: String, namespace: &str) {
        let note = Notification {
            user_id: user.clone(),
            title: title.to_owned(),
            message,
            link: None,
            category: "storage".into(),
            scope: Some(namespace.to_owned()),
        };
        self.commits.publish(note).await;
    }

    /// Deletes a blob; a failure is logged and left to the sweeper.
    pub async fn delete_blob(&self, blob: &str) {
        match self.gfs.delete(GFS_NAMESPACE, blob).await {
            Ok(()) | Err(GfsError::NotFound(_)) => {}
            Err(e) => tracing::warn!(blob, error = %e, "could not delete a blob; the sweeper will"),
        }
    }

    /// Deletes every blob of the namespace incarnation `ns_id`.
    pub async fn delete_blobs_of(&self, ns_id: &Token) -> Result<u64, GfsError> {
        let prefix = format!("/{ns_id}/");
        let mut deleted = 0;
        loop {
            let (files, next) = self.gfs.list(GFS_NAMESPACE, &prefix, None, 1000).await?;
            if files.is_empty() {
                return Ok(deleted);
            }
            for file in files {
                match self.gfs.delete(GFS_NAMESPACE, &file.path).await {
                    Ok(()) | Err(GfsError::NotFound(_)) => deleted += 1,
                    Err(e) => return Err(e),
                }
            }
            if next.is_none() {
                return Ok(deleted);
            }
        }
    }
}
