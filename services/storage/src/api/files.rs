//! Files: list, upload (raw body or multipart), read inline or as an attachment, delete.

use axum::{
    body::Body,
    extract::{Multipart, State},
    http::{header, HeaderMap, StatusCode},
    response::Response,
};
use edd_kit::{
    auth::{MaybePrincipal, Principal},
    openapi::{IntoParams, ToSchema},
    Json, Path, Problem, Query,
};
use serde::{Deserialize, Serialize};

use super::{
    page_size, require_files,
    serve::{file_response, Disposition, FileRequestHeaders, FileResponses, Reader},
    FileBytes, FileView,
};
use crate::{
    commands::{self, Upload},
    queries::Namespace,
    state::AppState,
};

/// `?namespace=&prefix=&after=&limit=` of a file listing (the owner's, or an administrator's).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The namespace's name.
    pub namespace: String,
    /// Only paths starting with this (taken literally).
    #[serde(default)]
    #[param(value_type = String)]
    pub prefix: Option<String>,
    /// Only paths after this one: the previous page's `next`.
    #[serde(default)]
    #[param(value_type = String)]
    pub after: Option<String>,
    /// Files per page, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(value_type = u32, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// One page of a namespace's files, in path order.
#[derive(Serialize, ToSchema)]
pub struct FilePage {
    files: Vec<FileView>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    next: Option<String>,
}

/// One page of a namespace's files in path order.
#[utoipa::path(
    get,
    path = "/storage/files",
    tag = "files",
    params(ListQuery),
    responses((status = 200, body = FilePage))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ListQuery>,
) -> Result<Json<FilePage>, Problem> {
    let ns = state.namespace(&q.namespace).await?;
    require_files(&principal, &ns, "read")?;
    let limit = page_size(q.limit, 100, 1000)?;
    Ok(Json(page(&state, &ns, q.prefix.as_deref().unwrap_or(""), q.after.as_deref(), limit).await?))
}

/// One page of `ns`'s files under `prefix`, after `after`, as views.
pub async fn page(
    state: &AppState,
    ns: &Namespace,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<FilePage, Problem> {
    let (files, next) = state.files_page(ns, prefix, after, limit).await?;
    Ok(FilePage { files: files.iter().map(|f| FileView::new(&ns.name, f)).collect(), next })
}

/// `?overwrite=&progress=` of a raw upload.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Replace an existing file (which takes the right to delete too); else an existing file is a 409.
    #[serde(default)]
    overwrite: bool,
    /// A transfer id to follow at `/sse/progress?id=`: 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[serde(default)]
    #[param(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    progress: Option<String>,
}

/// Uploads a file: the request body is the file, its `Content-Type` the file's type.
///
/// A `Content-Length` over the upload limit or the quota is refused before a byte is stored; a body
/// without one is refused the moment it passes them.
#[utoipa::path(
    post,
    path = "/storage/{namespace}/{path}",
    tag = "files",
    params(
        ("namespace" = String, Path, description = "the namespace's name"),
        ("path" = String, Path, description = FILE_PATH),
        UploadQuery,
    ),
    request_body(
        content = FileBytes,
        content_type = "*/*",
        description = "the file's bytes; the `Content-Type` is stored as the file's type (when absent or \
                       generic, it is guessed from the path's extension)"
    ),
    responses(
        (status = 201, description = "stored: a new file", body = FileView, headers(("ETag" = String, description = "the file's SHA-256 (hex) in quotes"))),
        (status = 200, description = "stored: the file replaced (`overwrite=true`)", body = FileView,
            headers(("ETag" = String, description = "the file's SHA-256 (hex) in quotes"))),
        (status = 408, description = UPLOAD_TIMEOUT, body = Problem, content_type = "application/problem+json"),
        (status = 507, description = QUOTA_EXCEEDED, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_raw(
    State(state): State<AppState>,
    principal: Principal,
    Path((namespace, path)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, HeaderMap, Json<FileView>), Problem> {
    let request = Upload {
        principal: &principal,
        namespace: &namespace,
        path,
        declared_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned),
        declared_len: headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()),
        overwrite: q.overwrite,
        progress: q.progress.as_deref(),
    };
    let done = commands::upload(&state, request, body.into_data_stream()).await?;
    Ok(created_response(done.created, FileView::new(&done.namespace, &done.file)))
}

fn created_response(created: bool, view: FileView) -> (StatusCode, HeaderMap, Json<FileView>) {
    let mut headers = HeaderMap::new();
    if let Ok(etag) = format!("\"{}\"", view.sha256).parse() {
        headers.insert(header::ETAG, etag);
    }
    (if created { StatusCode::CREATED } else { StatusCode::OK }, headers, Json(view))
}

/// `?namespace=&dir=&overwrite=&progress=` of a multipart upload.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MultipartQuery {
    /// The namespace's name.
    namespace: String,
    /// A directory the uploaded files go under.
    #[serde(default)]
    #[param(value_type = String)]
    dir: Option<String>,
    /// Replace existing files (which takes the right to delete too); else an existing file is a 409.
    #[serde(default)]
    overwrite: bool,
    /// A transfer id to follow at `/sse/progress?id=`: 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[serde(default)]
    #[param(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    progress: Option<String>,
}

/// A multipart upload's body: every part with a file name is a file, stored at `dir/<file name>`
/// (whatever the part's field name); parts without one are ignored.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a schema only: the body is read part by part")]
pub struct MultipartUpload {
    /// Up to 100 files; each part's `Content-Type` is stored as its file's type.
    files: Vec<FileBytes>,
}

/// The `{path}` parameter: served as a wildcard (`{*path}`), which OpenAPI cannot write.
pub const FILE_PATH: &str = "the file's path, `/`-separated segments: it is the rest of the URL path, so \
                             its `/`s may be sent as they are or as `%2F`";
const UPLOAD_TIMEOUT: &str = "the body stalled (nothing arrived for the idle timeout) or took longer than \
                              the upload deadline; nothing was stored";
const QUOTA_EXCEEDED: &str = "*Quota exceeded*: the upload does not fit in what is left of the owner's \
                              quota (`quota_bytes`, `available_bytes`)";

/// Files a multipart request may carry.
const MAX_PARTS: usize = 100;

/// Uploads files as a multipart form: each part with a file name is a file (under `dir`).
///
/// Parts are stored in order; an error names the files already stored (`stored`), so a retry can
/// skip them.
#[utoipa::path(
    post,
    path = "/storage/upload",
    tag = "files",
    params(MultipartQuery),
    request_body(content = MultipartUpload, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "stored, at least one a new file", body = Vec<FileView>),
        (status = 200, description = "stored, every one replacing a file (`overwrite=true`)", body = Vec<FileView>),
        (status = 408, description = UPLOAD_TIMEOUT, body = Problem, content_type = "application/problem+json"),
        (status = 507, description = QUOTA_EXCEEDED, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_multipart(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<MultipartQuery>,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<Vec<FileView>>), Problem> {
    let mut stored = Vec::new();
    let mut any_created = false;
    let bad = |e: axum::extract::multipart::MultipartError| Problem::bad_request(format!("bad multipart body: {e}"));
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let Some(name) = field.file_name().map(str::to_owned) else { continue };
        if stored.len() == MAX_PARTS {
            return Err(Problem::bad_request(format!("at most {MAX_PARTS} files per request")));
        }
        let path = match q.dir.as_deref().map(|d| d.trim_matches('/')).filter(|d| !d.is_empty()) {
            Some(dir) => format!("{dir}/{name}"),
            None => name,
        };
        let request = Upload {
            principal: &principal,
            namespace: &q.namespace,
            path,
            declared_type: field.content_type().map(str::to_owned),
            declared_len: None,
            overwrite: q.overwrite,
            progress: q.progress.as_deref(),
        };
        let (created, view) = match commands::upload(&state, request, field).await {
            Ok(done) => (done.created, FileView::new(&done.namespace, &done.file)),
            // Parts before this one are stored: say which, so a retry can skip them.
            Err(problem) => {
                let paths: Vec<String> = stored.iter().map(|v: &FileView| v.path.clone()).collect();
                return Err(problem.with_extension("stored", paths));
            }
        };
        any_created |= created;
        stored.push(view);
    }
    if stored.is_empty() {
        return Err(Problem::bad_request("the multipart body has no file part (a part with a filename)"));
    }
    Ok((if any_created { StatusCode::CREATED } else { StatusCode::OK }, Json(stored)))
}

/// `?progress=` of a read.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// A transfer id to follow at `/sse/progress?id=` (an authenticated caller's): 1 to 64 of
    /// `A-Z a-z 0-9 _ -`.
    #[serde(default)]
    #[param(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    progress: Option<String>,
}

/// A file, shown inline (sandboxed); anyone may read a public namespace's files.
#[utoipa::path(
    get,
    path = "/storage/{namespace}/{path}",
    tag = "files",
    params(
        ("namespace" = String, Path, description = "the namespace's name"),
        ("path" = String, Path, description = FILE_PATH),
        ReadQuery,
        FileRequestHeaders,
    ),
    security((), ("bearer" = [])),
    responses(FileResponses)
)]
pub async fn inline(
    state: State<AppState>,
    principal: MaybePrincipal,
    path: Path<(String, String)>,
    query: Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    read(state, principal, path, query, headers, Disposition::Inline).await
}

/// A file, as an attachment; anyone may read a public namespace's files.
#[utoipa::path(
    get,
    path = "/storage/download/{namespace}/{path}",
    tag = "files",
    params(
        ("namespace" = String, Path, description = "the namespace's name"),
        ("path" = String, Path, description = FILE_PATH),
        ReadQuery,
        FileRequestHeaders,
    ),
    security((), ("bearer" = [])),
    responses(FileResponses)
)]
pub async fn download(
    state: State<AppState>,
    principal: MaybePrincipal,
    path: Path<(String, String)>,
    query: Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    read(state, principal, path, query, headers, Disposition::Attachment).await
}

async fn read(
    State(state): State<AppState>,
    MaybePrincipal(principal): MaybePrincipal,
    Path((namespace, path)): Path<(String, String)>,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
    disposition: Disposition,
) -> Result<Response, Problem> {
    let ns = state.namespace(&namespace).await?;
    let public = ns.visibility == edd_events::catalog::storage::Visibility::Public;
    match &principal {
        // Anyone may read a public namespace's files; the owner's token scopes still apply to the owner.
        Some(p) if !public || p.user_id == ns.owner => require_files(p, &ns, "read")?,
        Some(_) => {}
        None if public => {}
        // Like another user's: a private namespace's existence is not confirmed to strangers.
        None => return Err(Problem::not_found(format!("no namespace {namespace:?}"))),
    }
    let file = state.file(&ns, &path).await?;
    let reader = Reader { user: principal.as_ref().map(|p| &p.user_id), progress: q.progress.as_deref() };
    file_response(&state, &file, ns.visibility, &headers, disposition, reader)
}

/// Deletes a file (its share links with it).
#[utoipa::path(
    delete,
    path = "/storage/{namespace}/{path}",
    tag = "files",
    params(
        ("namespace" = String, Path, description = "the namespace's name"),
        ("path" = String, Path, description = FILE_PATH),
    ),
    responses((status = 204, description = "deleted"))
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path((namespace, path)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    commands::delete_file(&state, &principal, &namespace, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}
