//! Commands that are more than one append: each checks what the request may do, does the side
//! effects on GFS in an order a crash cannot break, and records the outcome as an event through
//! the commit path. Handlers in `api/` extract, call one of these, and map the answer.

use axum::http::StatusCode;
use edd_events::{
    catalog::storage::{file_key, FileDeleted, FileUploaded},
    Expected, Token,
};
use edd_kit::{auth::Principal, Problem};
use futures_util::Stream;

use crate::{
    api::require_files,
    names::{check_path, content_type},
    progress::{check_id, Tracker},
    queries::File,
    state::{after, AppState},
    transfer::{self, insufficient_storage, Limits},
};

/// What an upload is, before its bytes arrive.
pub struct Upload<'a> {
    pub principal: &'a Principal,
    pub namespace: &'a str,
    pub path: String,
    /// The `Content-Type` the client sent, if any.
    pub declared_type: Option<String>,
    /// The length the client announced, checked against the limits before a byte is stored.
    pub declared_len: Option<u64>,
    /// Whether an existing file may be replaced.
    pub overwrite: bool,
    /// A transfer id to report progress under.
    pub progress: Option<&'a str>,
}

/// A stored upload: whether the file is new, its namespace and the file as the catalog has it.
pub struct Uploaded {
    pub created: bool,
    pub namespace: String,
    pub file: File,
}

/// Stores one upload: checks (path, scope, overwrite, quota, upload slots), streams the bytes to a
/// new blob, records the file (or deletes the blob if that fails), retires the blob it replaces and
/// tells the owner.
pub async fn upload<S, E>(state: &AppState, req: Upload<'_>, body: S) -> Result<Uploaded, Problem>
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
    let appended = match state.commits.append(req.principal.user_id.as_str(), uploaded, expected).await {
        Ok(appended) => appended,
        Err(problem) => {
            state.delete_blob(&stored.blob).await;
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
    appended.visible().await?;
    let file = state.file(&ns, &req.path).await?;
    state
        .notify(
            &ns.owner,
            "File uploaded",
            format!("{} ({} bytes) was uploaded to {}.", req.path, stored.size, ns.name),
            &ns.name,
        )
        .await;
    Ok(Uploaded { created: live.is_none(), namespace: ns.name, file })
}

/// Deletes the live file at `path` in `namespace`, then its blob, and tells the owner.
pub async fn delete_file(state: &AppState, principal: &Principal, namespace: &str, path: &str) -> Result<(), Problem> {
    let ns = state.namespace(namespace).await?;
    require_files(principal, &ns, "delete")?;
    let file = state.file(&ns, path).await?;
    let deleted = FileDeleted {
        ns_id: ns.ns_id.clone(),
        file_key: Token::new(file_key(path)).map_err(Problem::internal)?,
        namespace: ns.name.clone(),
        path: path.to_owned(),
        owner: ns.owner.clone(),
        blob: file.blob.clone(),
        size: file.size,
    };
    state.commit(principal.user_id.as_str(), deleted, Expected::Exactly(file.seq)).await?;
    state.delete_blob(&file.blob).await;
    state.notify(&ns.owner, "File deleted", format!("{path} was deleted from {}.", ns.name), &ns.name).await;
    Ok(())
}
