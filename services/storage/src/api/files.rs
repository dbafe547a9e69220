//! Files: list, upload (raw body or multipart), read inline or as an attachment, delete.

use axum::{
    body::Body,
    extract::{Multipart, State},
    http::{header, HeaderMap, StatusCode},
    response::Response,
};
use edd_kit::{
    auth::{MaybePrincipal, Principal},
    Json, Path, Problem, Query,
};
use serde::{Deserialize, Serialize};

use super::{
    page_size, require_files,
    serve::{file_response, Disposition, Reader},
    FileView,
};
use crate::{
    commands::{self, Upload},
    queries::Namespace,
    state::AppState,
};

/// `?namespace=&prefix=&after=&limit=` of a file listing (the owner's, or an administrator's).
#[derive(Deserialize)]
pub struct ListQuery {
    pub namespace: String,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Serialize)]
pub struct FilePage {
    files: Vec<FileView>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// One page of a namespace's files in path order.
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

#[derive(Deserialize, Default)]
pub struct UploadQuery {
    #[serde(default)]
    overwrite: bool,
    /// A transfer id to follow at `/sse/progress?id=`.
    #[serde(default)]
    progress: Option<String>,
}

/// `POST /storage/{namespace}/{path…}`: the body is the file.
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

#[derive(Deserialize)]
pub struct MultipartQuery {
    namespace: String,
    /// A directory the uploaded files go under.
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    progress: Option<String>,
}

/// Files a multipart request may carry.
const MAX_PARTS: usize = 100;

/// `POST /storage/upload?namespace=`: each part with a file name is a file (under `dir`).
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

#[derive(Deserialize, Default)]
pub struct ReadQuery {
    #[serde(default)]
    progress: Option<String>,
}

/// `GET /storage/{namespace}/{path…}`: the file, shown inline.
pub async fn inline(
    state: State<AppState>,
    principal: MaybePrincipal,
    path: Path<(String, String)>,
    query: Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    read(state, principal, path, query, headers, Disposition::Inline).await
}

/// `GET /storage/download/{namespace}/{path…}`: the file, as an attachment.
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

/// `DELETE /storage/{namespace}/{path…}`.
pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path((namespace, path)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    commands::delete_file(&state, &principal, &namespace, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}
