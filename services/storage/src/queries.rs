//! Every read of the catalog (`storage/catalog`) that handlers and commands make.

use edd_events::{catalog::storage::Visibility, Token};
use edd_kit::{openapi::ToSchema, Problem};
use serde::Serialize;
use sqlx::Row;
use time::OffsetDateTime;

use crate::{projection::SCHEMA, state::AppState};

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
    let visibility: String = row.try_get("visibility")?;
    Ok(Namespace {
        ns_key: token(row, "ns_key")?,
        ns_id: token(row, "ns_id")?,
        name: row.try_get("name")?,
        owner: token(row, "owner")?,
        visibility: if visibility == "public" { Visibility::Public } else { Visibility::Private },
        created_at: row.try_get("created_at")?,
        deleted: row.try_get("deleted")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
    })
}

pub fn file_from_row(row: &sqlx::postgres::PgRow) -> Result<File, Problem> {
    Ok(File {
        path: row.try_get("path")?,
        blob: row.try_get("blob")?,
        blob_id: row.try_get("blob_id")?,
        size: row.try_get::<i64, _>("size")? as u64,
        sha256: row.try_get("sha256")?,
        content_type: row.try_get("content_type")?,
        created_at: row.try_get("created_at")?,
        modified_at: row.try_get("modified_at")?,
        deleted: row.try_get("deleted")?,
        seq: row.try_get::<i64, _>("seq")? as u64,
    })
}

pub const NAMESPACE_COLUMNS: &str = "ns_key, ns_id, name, owner, visibility, created_at, deleted, seq";
pub const FILE_COLUMNS: &str = "path, blob, blob_id, size, sha256, content_type, created_at, modified_at, deleted, seq";

impl AppState {
    /// The namespace called `name` (any case), live or deleted.
    pub async fn namespace_record(&self, name: &str) -> Result<Option<Namespace>, Problem> {
        let key = edd_events::catalog::storage::namespace_key(name);
        let row = sqlx::query(&format!("SELECT {NAMESPACE_COLUMNS} FROM {SCHEMA}.namespaces WHERE ns_key = $1"))
            .bind(&key)
            .fetch_optional(&self.pool)
            .await?;
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
        .await?;
        rows.iter().map(namespace_from_row).collect()
    }

    /// The file at `path` in `ns`, live or deleted.
    pub async fn file_record(&self, ns: &Namespace, path: &str) -> Result<Option<File>, Problem> {
        let key = edd_events::catalog::storage::file_key(path);
        let row = sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM {SCHEMA}.files WHERE ns_id = $1 AND file_key = $2"))
            .bind(ns.ns_id.as_str())
            .bind(&key)
            .fetch_optional(&self.pool)
            .await?;
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
        .await?;
        let bytes: i64 = row.try_get("bytes")?;
        let files: i64 = row.try_get("files")?;
        Ok((bytes as u64, files as u64))
    }

    /// Up to `limit` live files of `ns` under `prefix` with paths after `after`, in path order, and
    /// the cursor for the next page (absent on the last).
    pub async fn files_page(
        &self,
        ns: &Namespace,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<File>, Option<String>), Problem> {
        // `starts_with` rather than LIKE, so `%` and `_` in a prefix mean themselves.
        let rows = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM {SCHEMA}.files
             WHERE ns_id = $1 AND NOT deleted AND starts_with(path, $2) AND path > $3
             ORDER BY path LIMIT $4"
        ))
        .bind(ns.ns_id.as_str())
        .bind(prefix)
        .bind(after.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut files = rows.iter().map(file_from_row).collect::<Result<Vec<_>, _>>()?;
        let next = (files.len() as i64 > limit).then(|| {
            files.truncate(limit as usize);
            files.last().map(|f| f.path.clone())
        });
        Ok((files, next.flatten()))
    }

    /// Live files and bytes in `ns`.
    pub async fn namespace_totals(&self, ns: &Namespace) -> Result<(u64, u64), Problem> {
        let row = sqlx::query(&format!(
            "SELECT count(*) AS files, coalesce(sum(size), 0)::bigint AS bytes FROM {SCHEMA}.files
             WHERE ns_id = $1 AND NOT deleted"
        ))
        .bind(ns.ns_id.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get::<i64, _>("files")? as u64, row.try_get::<i64, _>("bytes")? as u64))
    }

    /// `owner`'s share links, newest first (at most 1,000).
    pub async fn shares_of(&self, owner: &Token) -> Result<Vec<ShareInfo>, Problem> {
        let rows = sqlx::query(&format!(
            "SELECT share_id, namespace, path, created_at, expires_at, revoked FROM {SCHEMA}.shares
             WHERE owner = $1 ORDER BY created_at DESC LIMIT 1000"
        ))
        .bind(owner.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ShareInfo {
                    id: row.try_get("share_id")?,
                    namespace: row.try_get("namespace")?,
                    path: row.try_get("path")?,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    revoked: row.try_get("revoked")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Problem::from)
    }

    /// The share link `id`, live or not.
    pub async fn share(&self, id: &str) -> Result<Option<Share>, Problem> {
        let row = sqlx::query(&format!(
            "SELECT ns_id, namespace, path, owner, key_sha256, expires_at, revoked, seq, blob FROM {SCHEMA}.shares
             WHERE share_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Share {
            ns_id: row.try_get("ns_id")?,
            namespace: row.try_get("namespace")?,
            path: row.try_get("path")?,
            owner: row.try_get("owner")?,
            key_sha256: row.try_get("key_sha256")?,
            expires_at: row.try_get("expires_at")?,
            revoked: row.try_get("revoked")?,
            seq: row.try_get::<i64, _>("seq")? as u64,
            blob: row.try_get("blob")?,
        }))
    }

    /// Every live namespace with its totals, by name, for administrators.
    pub async fn all_namespaces(&self, limit: i64, offset: i64) -> Result<Vec<AdminNamespace>, Problem> {
        let rows = sqlx::query(&format!(
            "SELECT n.name, n.owner, n.visibility, n.created_at,
                    count(f.path) AS files, coalesce(sum(f.size), 0)::bigint AS bytes
             FROM {SCHEMA}.namespaces n LEFT JOIN {SCHEMA}.files f ON f.ns_id = n.ns_id AND NOT f.deleted
             WHERE NOT n.deleted GROUP BY n.ns_key ORDER BY n.name LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AdminNamespace {
                    name: row.try_get("name")?,
                    owner: row.try_get("owner")?,
                    visibility: row.try_get("visibility")?,
                    created_at: row.try_get("created_at")?,
                    files: row.try_get("files")?,
                    bytes: row.try_get("bytes")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Problem::from)
    }
}

/// A share link as its owner sees it (without its key, which is not kept).
#[derive(Serialize, ToSchema)]
pub struct ShareInfo {
    pub id: String,
    pub namespace: String,
    pub path: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
}

/// A share link as the catalog has it.
pub struct Share {
    pub ns_id: String,
    pub namespace: String,
    pub path: String,
    pub owner: String,
    pub key_sha256: String,
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
    pub seq: u64,
    /// The bytes the link serves; `None` for a link to a file that was gone or replaced before
    /// links named their bytes (it serves nothing).
    pub blob: Option<String>,
}

/// Any user's namespace with its live files' count and bytes, for administrators.
#[derive(Serialize, ToSchema)]
pub struct AdminNamespace {
    pub name: String,
    /// The owner's user id.
    pub owner: String,
    #[schema(value_type = crate::api::VisibilitySchema)]
    pub visibility: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[schema(minimum = 0)]
    pub files: i64,
    #[schema(minimum = 0)]
    pub bytes: i64,
}
