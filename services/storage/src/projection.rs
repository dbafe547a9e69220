//! `storage/catalog`: namespaces, files and share links, projected from the `STORAGE` stream.
//!
//! Deleted namespaces and files stay as tombstones carrying the sequence of their last event, so
//! the next command on the same name knows what to expect (optimistic concurrency), and so a name
//! deleted and taken again starts clean (a new `ns_id`). A file uploaded into a namespace that was
//! deleted meanwhile is recorded by nothing: its blob is the sweeper's.

use edd_events::{
    catalog::storage::{
        file_key, FileDeleted, FileUploaded, NamespaceCreated, NamespaceDeleted, NamespaceUpdated, ShareCreated,
        ShareRevoked,
    },
    RawEvent,
};
use edd_projections::{ApplyError, Outcome, Projection};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;

pub const NAME: &str = "storage/catalog";
/// The schema the live projection's tables are in.
pub const SCHEMA: &str = "storage_catalog";

pub struct CatalogProjection;

impl Projection for CatalogProjection {
    fn name(&self) -> &'static str {
        NAME
    }
    fn stream(&self) -> &'static str {
        "STORAGE"
    }
    fn filters(&self) -> Vec<String> {
        vec!["storage.>".into()]
    }
    fn migrations(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE namespaces (
                ns_key text PRIMARY KEY,
                ns_id text NOT NULL UNIQUE,
                name text NOT NULL,
                owner text NOT NULL,
                visibility text NOT NULL,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                deleted boolean NOT NULL DEFAULT false,
                seq bigint NOT NULL
            )",
            "CREATE INDEX namespaces_owner ON namespaces (owner) WHERE NOT deleted",
            "CREATE TABLE files (
                ns_id text NOT NULL,
                file_key text NOT NULL,
                namespace text NOT NULL,
                path text NOT NULL,
                owner text NOT NULL,
                blob text NOT NULL,
                blob_id text NOT NULL,
                size bigint NOT NULL,
                sha256 text NOT NULL,
                content_type text NOT NULL,
                created_at timestamptz NOT NULL,
                modified_at timestamptz NOT NULL,
                deleted boolean NOT NULL DEFAULT false,
                seq bigint NOT NULL,
                PRIMARY KEY (ns_id, file_key)
            )",
            "CREATE INDEX files_listing ON files (ns_id, path) WHERE NOT deleted",
            "CREATE INDEX files_owner ON files (owner) WHERE NOT deleted",
            "CREATE INDEX files_blob ON files (blob) WHERE NOT deleted",
            "CREATE TABLE shares (
                share_id text PRIMARY KEY,
                ns_id text NOT NULL,
                namespace text NOT NULL,
                path text NOT NULL,
                owner text NOT NULL,
                key_sha256 text NOT NULL,
                expires_at timestamptz NOT NULL,
                created_at timestamptz NOT NULL,
                revoked boolean NOT NULL DEFAULT false,
                seq bigint NOT NULL
            )",
            "CREATE INDEX shares_owner ON shares (owner, created_at)",
            // The bytes a link serves (`ShareCreated::blob`). Links applied before it was recorded
            // name the file's blob if nothing was written at their path since; else none (ended).
            "ALTER TABLE shares ADD COLUMN blob text",
            "UPDATE shares s SET blob = f.blob FROM files f
             WHERE f.ns_id = s.ns_id AND f.path = s.path AND NOT f.deleted AND f.seq < s.seq",
        ]
    }
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RawEvent,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            let seq = event.stream_seq as i64;
            let at = event.envelope.time;
            if event.is::<NamespaceCreated>() {
                let e: NamespaceCreated = event.decode()?;
                sqlx::query(
                    "INSERT INTO namespaces (ns_key, ns_id, name, owner, visibility, created_at, updated_at, seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
                     ON CONFLICT (ns_key) DO UPDATE SET ns_id = $2, name = $3, owner = $4, visibility = $5,
                        created_at = $6, updated_at = $6, deleted = false, seq = $7
                     WHERE namespaces.seq < $7",
                )
                .bind(e.ns_key.as_str())
                .bind(e.ns_id.as_str())
                .bind(&e.name)
                .bind(e.owner.as_str())
                .bind(e.visibility.as_str())
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            } else if event.is::<NamespaceUpdated>() {
                let e: NamespaceUpdated = event.decode()?;
                sqlx::query(
                    "UPDATE namespaces SET visibility = $3, updated_at = $4, seq = $5
                     WHERE ns_key = $1 AND ns_id = $2 AND seq < $5",
                )
                .bind(e.ns_key.as_str())
                .bind(e.ns_id.as_str())
                .bind(e.visibility.as_str())
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            } else if event.is::<NamespaceDeleted>() {
                let e: NamespaceDeleted = event.decode()?;
                sqlx::query(
                    "UPDATE namespaces SET deleted = true, updated_at = $3, seq = $4
                     WHERE ns_key = $1 AND ns_id = $2 AND seq < $4",
                )
                .bind(e.ns_key.as_str())
                .bind(e.ns_id.as_str())
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM files WHERE ns_id = $1").bind(e.ns_id.as_str()).execute(&mut *tx).await?;
                sqlx::query("UPDATE shares SET revoked = true WHERE ns_id = $1")
                    .bind(e.ns_id.as_str())
                    .execute(&mut *tx)
                    .await?;
            } else if event.is::<FileUploaded>() {
                let e: FileUploaded = event.decode()?;
                // Only into a namespace that exists (an upload racing its namespace's deletion lands
                // nowhere), keeping the first upload's creation time across overwrites.
                sqlx::query(
                    "INSERT INTO files (ns_id, file_key, namespace, path, owner, blob, blob_id, size, sha256,
                        content_type, created_at, modified_at, seq)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12
                     WHERE EXISTS (SELECT 1 FROM namespaces WHERE ns_id = $1 AND NOT deleted)
                     ON CONFLICT (ns_id, file_key) DO UPDATE SET blob = $6, blob_id = $7, size = $8, sha256 = $9,
                        content_type = $10, modified_at = $11, seq = $12,
                        created_at = CASE WHEN files.deleted THEN $11 ELSE files.created_at END, deleted = false
                     WHERE files.seq < $12",
                )
                .bind(e.ns_id.as_str())
                .bind(e.file_key.as_str())
                .bind(&e.namespace)
                .bind(&e.path)
                .bind(e.owner.as_str())
                .bind(&e.blob)
                .bind(&e.blob_id)
                .bind(i64::try_from(e.size).map_err(|_| ApplyError::Invalid("file size beyond i64".into()))?)
                .bind(&e.sha256)
                .bind(&e.content_type)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                // A link is to the bytes it was made for: an overwrite ends it, like a delete.
                sqlx::query(
                    "UPDATE shares SET revoked = true
                     WHERE ns_id = $1 AND path = $2 AND seq < $3 AND NOT revoked AND blob IS DISTINCT FROM $4",
                )
                .bind(e.ns_id.as_str())
                .bind(&e.path)
                .bind(seq)
                .bind(&e.blob)
                .execute(&mut *tx)
                .await?;
            } else if event.is::<FileDeleted>() {
                let e: FileDeleted = event.decode()?;
                sqlx::query(
                    "UPDATE files SET deleted = true, modified_at = $3, seq = $4
                     WHERE ns_id = $1 AND file_key = $2 AND seq < $4",
                )
                .bind(e.ns_id.as_str())
                .bind(e.file_key.as_str())
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                // A link is to this file: one uploaded later at the same path is another file.
                sqlx::query(
                    "UPDATE shares SET revoked = true WHERE ns_id = $1 AND path = $2 AND seq < $3 AND NOT revoked",
                )
                .bind(e.ns_id.as_str())
                .bind(&e.path)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            } else if event.is::<ShareCreated>() {
                let e: ShareCreated = event.decode()?;
                // A link recorded without its bytes is to the file live at its path when it was
                // made: the one this table holds now, as it applies events in order.
                sqlx::query(
                    "INSERT INTO shares (share_id, ns_id, namespace, path, owner, key_sha256, expires_at,
                        created_at, seq, blob)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10,
                        (SELECT blob FROM files WHERE ns_id = $2 AND file_key = $11 AND NOT deleted)))
                     ON CONFLICT (share_id) DO NOTHING",
                )
                .bind(e.share_id.as_str())
                .bind(e.ns_id.as_str())
                .bind(&e.namespace)
                .bind(&e.path)
                .bind(e.owner.as_str())
                .bind(&e.key_sha256)
                .bind(e.expires_at)
                .bind(at)
                .bind(seq)
                .bind(&e.blob)
                .bind(file_key(&e.path))
                .execute(&mut *tx)
                .await?;
            } else if event.is::<ShareRevoked>() {
                let e: ShareRevoked = event.decode()?;
                sqlx::query("UPDATE shares SET revoked = true, seq = $2 WHERE share_id = $1 AND seq < $2")
                    .bind(e.share_id.as_str())
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
            } else {
                return Ok(Outcome::Skipped);
            }
            Ok(Outcome::Applied)
        })
    }
}
