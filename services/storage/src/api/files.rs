//! Files: list, upload (raw body or multipart), read inline or as an attachment, delete.

use axum::{
    body::Body,
    extract::{Multipart, Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::Response,
};
use edd_events::{
    catalog::storage::{file_key, FileDeleted, FileUploaded},
    Envelope, Expected, Token,
};
use edd_kit::{
    auth::{MaybePrincipal, Principal},
    Json, Problem,
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use super::{
    page_size, require_files,
    serve::{file_response, Disposition, Reader},
    FileView,
};
use crate::{
    names::{check_path, content_type},
    progress::{check_id, Tracker},
    projection::SCHEMA,
    state::{after, file_from_row, AppState, Namespace, FILE_COLUMNS},
    transfer::{self, insufficient_storage, Limits},
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

pub async fn page(
    state: &AppState,
    ns: &Namespace,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<FilePage, Problem> {
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
    .fetch_all(&state.pool)
    .await
    .map_err(Problem::internal)?;
    let mut files = rows.iter().map(file_from_row).collect::<Result<Vec<_>, _>>()?;
    let next = (files.len() as i64 > limit).then(|| {
        files.truncate(limit as usize);
        files.last().map(|f| f.path.clone())
    });
    Ok(FilePage { files: files.iter().map(|f| FileView::new(&ns.name, f)).collect(), next: next.flatten() })
}

#[derive(Deserialize, Default)]
pub struct UploadQuery {
    #[serde(default)]
    overwrite: bool,
    /// A transfer id to follow at `/sse/progress?id=`.
    #[serde(default)]
    progress: Option<String>,
}

/// What an upload is, before its bytes arrive.
struct UploadRequest<'a> {
    principal: &'a Principal,
    namespace: &'a str,
    path: String,
    declared_type: Option<String>,
    declared_len: Option<u64>,
    overwrite: bool,
    progress: Option<&'a str>,
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
    let request = UploadRequest {
        principal: &principal,
        namespace: &namespace,
        path,
        declared_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned),
        declared_len: headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()),
        overwrite: q.overwrite,
        progress: q.progress.as_deref(),
    };
    let (created, view) = store(&state, request, body.into_data_stream()).await?;
    Ok(created_response(created, view))
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
        let request = UploadRequest {
            principal: &principal,
            namespace: &q.namespace,
            path,
            declared_type: field.content_type().map(str::to_owned),
            declared_len: None,
            overwrite: q.overwrite,
            progress: q.progress.as_deref(),
        };
        let (created, view) = match store(&state, request, field).await {
            Ok(done) => done,
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

/// Stores one upload: checks, streams the bytes to a new blob, records the file, retires the blob
/// it replaces. Returns whether the file is new.
async fn store<S, E>(state: &AppState, req: UploadRequest<'_>, body: S) -> Result<(bool, FileView), Problem>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    check_path(&req.path)?;
    let ns = state.namespace(req.namespace).await?;
    require_files(req.principal, &ns, "create")?;
    let _slot =
        state.uploads.try_start(&req.principal.user_id, state.config.max_uploads_per_user, state.config.max_uploads)?;
    let existing = state.file_record(&ns, &req.path).await?;
    let live = existing.as_ref().filter(|f| !f.deleted);
    if live.is_some() && !req.overwrite {
        return Err(Problem::conflict(format!(
            "{} already exists in {}; pass overwrite=true to replace it",
            req.path, ns.name
        )));
    }
    if live.is_some() {
        // Replacing destroys the old content: it takes the right to delete as well.
        require_files(req.principal, &ns, "delete")?;
    }

    let (used, _) = state.usage(&ns.owner).await?;
    let used = used.saturating_sub(live.map_or(0, |f| f.size));
    let quota = state.config.quota_bytes;
    let limits = Limits {
        max_upload: state.config.max_upload_bytes,
        quota_room: quota.saturating_sub(used),
        quota,
        idle: state.config.idle_timeout(),
        deadline: tokio::time::Instant::now() + state.config.upload_deadline(),
    };
    if let Some(len) = req.declared_len {
        limits.check_declared(len)?;
    } else if limits.quota_room == 0 {
        return Err(insufficient_storage(format!("your {quota}-byte quota is used up")));
    }

    let mut tracker = match req.progress {
        Some(id) => {
            check_id(id)?;
            state.progress.start(&req.principal.user_id, id, req.declared_len)
        }
        None => Tracker::none(),
    };
    let stored = match transfer::upload(state, &ns, body, limits, &mut tracker).await {
        Ok(stored) => stored,
        Err(problem) => {
            tracker.finish(Some(problem.detail.clone().unwrap_or_else(|| problem.title.clone())));
            return Err(problem);
        }
    };
    // Uploads that finished while this one ran count now: checked again just before recording, one
    // finished upload of the owner at a time, so concurrent uploads cannot together pass the quota
    // (on one replica; across replicas, only ones finishing in the same instant could).
    let _commit = state.uploads.commit_lock(&ns.owner).await;
    let (used_now, _) = state.usage(&ns.owner).await?;
    let room_now = quota.saturating_sub(used_now.saturating_sub(live.map_or(0, |f| f.size)));
    if stored.size > room_now {
        state.delete_blob(&stored.blob).await;
        let problem = insufficient_storage(format!(
            "the upload is {} bytes and {room_now} bytes of your {quota}-byte quota are left after the \
             uploads that finished meanwhile",
            stored.size
        ))
        .with_extension("quota_bytes", quota)
        .with_extension("available_bytes", room_now);
        tracker.finish(problem.detail.clone());
        return Err(problem);
    }

    let uploaded = FileUploaded {
        ns_id: ns.ns_id.clone(),
        file_key: Token::new(file_key(&req.path)).map_err(Problem::internal)?,
        namespace: ns.name.clone(),
        path: req.path.clone(),
        owner: ns.owner.clone(),
        blob: stored.blob.clone(),
        blob_id: stored.blob_id.clone(),
        size: stored.size,
        sha256: stored.sha256.clone(),
        content_type: content_type(req.declared_type.as_deref(), &req.path),
    };
    // Only over what was checked: a file created or replaced meanwhile is a conflict, so the checks
    // above (the delete right, the quota credit) hold for what is actually replaced.
    let expected = after(existing.as_ref().map(|f| f.seq));
    let envelope = Envelope::new("storage", uploaded).actor(req.principal.user_id.as_str());
    let seq = match state.store.append_one(&envelope, expected).await {
        Ok(seq) => seq,
        Err(e) => {
            state.delete_blob(&stored.blob).await;
            let problem = Problem::from(e);
            tracker.finish(Some(problem.detail.clone().unwrap_or_default()));
            return Err(if problem.status == StatusCode::CONFLICT {
                Problem::conflict(format!("{} was changed by another upload at the same time; retry", req.path))
            } else {
                problem
            });
        }
    };
    tracker.finish(None);
    if let Some(old) = live {
        state.delete_blob(&old.blob).await;
    }
    state.settle(seq).await?;
    let file = state.file(&ns, &req.path).await?;
    state
        .notify(
            &ns.owner,
            "File uploaded",
            format!("{} ({} bytes) was uploaded to {}.", req.path, stored.size, ns.name),
            &ns.name,
        )
        .await;
    Ok((live.is_none(), FileView::new(&ns.name, &file)))
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
    let ns = state.namespace(&namespace).await?;
    require_files(&principal, &ns, "delete")?;
    let file = state.file(&ns, &path).await?;
    let deleted = FileDeleted {
        ns_id: ns.ns_id.clone(),
        file_key: Token::new(file_key(&path)).map_err(Problem::internal)?,
        namespace: ns.name.clone(),
        path: path.clone(),
        owner: ns.owner.clone(),
        blob: file.blob.clone(),
        size: file.size,
    };
    state.commit(principal.user_id.as_str(), deleted, Expected::Exactly(file.seq)).await?;
    state.delete_blob(&file.blob).await;
    state.notify(&ns.owner, "File deleted", format!("{path} was deleted from {}.", ns.name), &ns.name).await;
    Ok(StatusCode::NO_CONTENT)
}
