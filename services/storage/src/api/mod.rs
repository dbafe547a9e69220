//! The HTTP API on `storage.<domain>` (paths as the original's clients call them; see `docs/storage.md`).
//! Handlers are thin: parse, check ownership and scope, call a command or a query.

mod admin;
mod files;
mod namespaces;

pub use namespaces::delete_namespace;
mod serve;
mod shares;
mod status;

use axum::{
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
    Router,
};
use edd_kit::{auth::Principal, Problem};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{queries::Namespace, state::AppState};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/storage/namespaces", get(namespaces::list).post(namespaces::create))
        .route("/storage/namespaces/{name}", get(namespaces::show).put(namespaces::update).delete(namespaces::remove))
        .route("/storage/files", get(files::list))
        .route("/storage/upload", post(files::upload_multipart).layer(DefaultBodyLimit::disable()))
        .route("/storage/download/{namespace}/{*path}", get(files::download))
        .route("/storage/share", post(shares::create))
        .route("/storage/shares", get(shares::list))
        .route("/storage/shares/{id}", delete(shares::revoke))
        .route("/storage/shared/{id}", get(shares::fetch))
        .route("/storage/status", get(status::status))
        .route("/storage/usage", get(status::usage))
        .route("/storage/{namespace}/{*path}", get(files::inline).post(files::upload_raw).delete(files::remove))
        .route("/sse/progress", get(status::progress))
        .route("/admin/namespaces", get(admin::namespaces))
        .route("/admin/files", get(admin::files))
        .with_state(state)
}

/// Checks `action` on the files of `ns` for `principal` (404 for another user's namespace).
pub fn require_files(principal: &Principal, ns: &Namespace, action: &str) -> Result<(), Problem> {
    principal.require("storage", &ns.owner, Some("files"), Some(&ns.name), action)
}

/// A page size from the query: `default` when absent, at most `max`.
pub fn page_size(limit: Option<u32>, default: u32, max: u32) -> Result<i64, Problem> {
    match limit {
        None => Ok(i64::from(default)),
        Some(n) if (1..=max).contains(&n) => Ok(i64::from(n)),
        Some(_) => Err(Problem::bad_request(format!("limit is 1 to {max}")).with_extension("field", "limit")),
    }
}

/// A file as the API shows it.
#[derive(Serialize)]
pub struct FileView {
    pub namespace: String,
    pub path: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub modified_at: OffsetDateTime,
}

impl FileView {
    pub fn new(namespace: &str, file: &crate::queries::File) -> Self {
        Self {
            namespace: namespace.to_owned(),
            path: file.path.clone(),
            size: file.size,
            content_type: file.content_type.clone(),
            sha256: file.sha256.clone(),
            created_at: file.created_at,
            modified_at: file.modified_at,
        }
    }
}
