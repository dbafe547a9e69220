//! What every handler shares, the one way a command writes (append, then wait until the catalog
//! shows it), and the catalog reads handlers make.

use std::{sync::Arc, time::Duration};

use axum::extract::FromRef;
use edd_events::{
    catalog::{notify::Notification, storage::Visibility},
    Envelope, Event, EventStore, Expected, Token,
};
use edd_gfs::client::{GfsClient, GfsError};
use edd_kit::{auth::Authorizer, Problem};
use edd_projections::Handle;
use sqlx::{PgPool, Row};
use time::OffsetDateTime;

use crate::{config::StorageConfig, progress::Progress, projection::SCHEMA};

/// The GFS namespace holding every blob; blobs are `/<ns_id>/<random>`.
pub const GFS_NAMESPACE: &str = "storage";
/// How long a command waits for the catalog before answering 503.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub pool: PgPool,
    pub authorizer: Authorizer,
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

/// A namespace as the catalog has it (possibly a tombstone).
#[derive(Clone, Debug)]
pub struct Namespace {
    pub ns_key: Token,
    pub ns_id: Token,
    pub name: String,
    pub owner: Token,
    pub visibility: Visibility,
    pub created_at: OffsetDateTime,
    pub deleted: bool,
    pub seq: u64,
}

/// A file as the catalog has it (possibly a tombstone).
#[derive(Clone, Debug)]
pub struct File {
    pub path: String,
    pub blob: String,
    pub blob_id: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
    pub created_at: OffsetDateTime,
    pub modified_at: OffsetDateTime,
    pub deleted: bool,
    pub seq: u64,
}

fn token(row: &sqlx::postgres::PgRow, column: &str) -> Result<Token, Problem> {
    let value: String = row.try_get(column).map_err(Problem::internal)?;
    Token::new(value).map_err(Problem::internal)
}

fn namespace_from_row(row: &sqlx::postgres::PgRow) -> Result<Namespace, Problem> {
    let visibility: String = row.try_get("visibility").map_err(Problem::internal)?;
    Ok(Namespace {
        ns_key: token(row, "ns_key")?,
        ns_id: token(row, "ns_id")?,
        name: row.try_get("name").map_err(Problem::internal)?,
        owner: token(row, "owner")?,
        visibility: if visibility == "public" { Visibility::Public } else { Visibility::Private },
        created_at: row.try_get("created_at").map_err(Problem::internal)?,
        deleted: row.try_get("deleted").map_err(Problem::internal)?,
        seq: row.try_get::<i64, _>("seq").map_err(Problem::internal)? as u64,
    })
}

pub fn file_from_row(row: &sqlx::postgres::PgRow) -> Result<File, Problem> {
    Ok(File {
        path: row.try_get("path").map_err(Problem::internal)?,
        blob: row.try_get("blob").map_err(Problem::internal)?,
        blob_id: row.try_get("blob_id").map_err(Problem::internal)?,
        size: row.try_get::<i64, _>("size").map_err(Problem::internal)? as u64,
        sha256: row.try_get("sha256").map_err(Problem::internal)?,
        content_type: row.try_get("content_type").map_err(Problem::internal)?,
        created_at: row.try_get("created_at").map_err(Problem::internal)?,
        modified_at: row.try_get("modified_at").map_err(Problem::internal)?,
        deleted: row.try_get("deleted").map_err(Problem::internal)?,
        seq: row.try_get::<i64, _>("seq").map_err(Problem::internal)? as u64,
    })
}

pub const NAMESPACE_COLUMNS: &str = "ns_key, ns_id, name, owner, visibility, created_at, deleted, seq";
pub const FILE_COLUMNS: &str = "path, blob, blob_id, size, sha256, content_type, created_at, modified_at, deleted, seq";

/// The expectation of a command that creates an aggregate whose last event (if any) is `seq`.
pub fn after(seq: Option<u64>) -> Expected {
    seq.map_or(Expected::NoStream, Expected::Exactly)
}

/// GFS failures as the client sees them: the file system being away is a 503 to retry.
pub fn gfs_problem(e: GfsError) -> Problem {
    match e {
        GfsError::NotFound(_) => Problem::not_found("the file's data is missing"),
        GfsError::Unavailable(_) | GfsError::Timeout(_) | GfsError::ResourceExhausted(_) => {
            tracing::warn!(error = %e, "GFS unavailable");
            Problem::unavailable("the file system is unavailable; retry shortly").with_retry_after(2)
        }
        e => {
            tracing::error!(error = %e, "GFS failed");
            Problem::internal(e)
        }
    }
}

impl AppState {
    /// Appends `data` for `actor` and waits until the catalog shows it.
    pub async fn commit<E: Event>(&self, actor: &str, data: E, expected: Expected) -> Result<u64, Problem> {
        let envelope = Envelope::new("storage", data).actor(actor);
        let seq = self.store.append_one(&envelope, expected).await.map_err(Problem::from)?;
        self.settle(seq).await?;
        Ok(seq)
    }

    pub async fn settle(&self, seq: u64) -> Result<(), Problem> {
        self.catalog.wait_for(seq, SETTLE_TIMEOUT).await.map_err(|e| {
            tracing::warn!(error = %e, "catalog slow to apply a command");
            Problem::unavailable("the change is recorded but not visible yet; read it again shortly")
                .with_retry_after(1)
        })
    }

    /// The namespace called `name` (any case), live or deleted.
    pub async fn namespace_record(&self, name: &str) -> Result<Option<Namespace>, Problem> {
        let key = edd_events::catalog::storage::namespace_key(name);
        let row = sqlx::query(&format!("SELECT {NAMESPACE_COLUMNS} FROM {SCHEMA}.namespaces WHERE ns_key = $1"))
            .bind(&key)
            .fetch_optional(&self.pool)
            .await
            .map_err(Problem::internal)?;
        row.as_ref().map(namespace_from_row).transpose()
    }

    /// The live namespace called `name`, or 404.
    pub async fn namespace(&self, name: &str) -> Result<Namespace, Problem> {
        match self.namespace_record(name).await? {
            Some(ns) if !ns.deleted => Ok(ns),
            _ => Err(Problem::not_found(format!("no namespace {name:?}"))),
        }
    }

    /// The live namespaces of `owner`, by name.
    pub async fn namespaces_of(&self, owner: &Token) -> Result<Vec<Namespace>, Problem> {
        let rows = sqlx::query(&format!(
            "SELECT {NAMESPACE_COLUMNS} FROM {SCHEMA}.namespaces WHERE owner = $1 AND NOT deleted ORDER BY name LIMIT 10000"
        ))
        .bind(owner.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(Problem::internal)?;
        rows.iter().map(namespace_from_row).collect()
    }

    /// The file at `path` in `ns`, live or deleted.
    pub async fn file_record(&self, ns: &Namespace, path: &str) -> Result<Option<File>, Problem> {
        let key = edd_events::catalog::storage::file_key(path);
        let row = sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM {SCHEMA}.files WHERE ns_id = $1 AND file_key = $2"))
            .bind(ns.ns_id.as_str())
            .bind(&key)
            .fetch_optional(&self.pool)
            .await
            .map_err(Problem::internal)?;
        row.as_ref().map(file_from_row).transpose()
    }

    /// The live file at `path`, or 404.
    pub async fn file(&self, ns: &Namespace, path: &str) -> Result<File, Problem> {
        match self.file_record(ns, path).await? {
            Some(f) if !f.deleted => Ok(f),
            _ => Err(Problem::not_found(format!("no file {path:?} in {}", ns.name))),
        }
    }

    /// Bytes `owner` stores, and in how many files, across their live namespaces.
    pub async fn usage(&self, owner: &Token) -> Result<(u64, u64), Problem> {
        let row = sqlx::query(&format!(
            "SELECT coalesce(sum(size), 0)::bigint AS bytes, count(*) AS files FROM {SCHEMA}.files
             WHERE owner = $1 AND NOT deleted"
        ))
        .bind(owner.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(Problem::internal)?;
        let bytes: i64 = row.try_get("bytes").map_err(Problem::internal)?;
        let files: i64 = row.try_get("files").map_err(Problem::internal)?;
        Ok((bytes as u64, files as u64))
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
        if let Err(e) = self.store.publish(&Envelope::new("storage", note)).await {
            tracing::error!(error = %e, "could not send a notification");
        }
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
