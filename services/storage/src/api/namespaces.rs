//! `GET/POST /storage/namespaces`, `GET/PUT/DELETE /storage/namespaces/{name}`.

use axum::{extract::State, http::StatusCode};
use edd_events::{
    catalog::storage::{namespace_key, NamespaceCreated, NamespaceDeleted, NamespaceUpdated, Visibility},
    Expected, Token,
};
use edd_kit::Path;
use edd_kit::{auth::Principal, openapi::ToSchema, Json, Problem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    names::check_namespace,
    queries::Namespace,
    state::{after, AppState},
};

/// A namespace with its live files' count and bytes.
#[derive(Serialize, ToSchema)]
pub struct NamespaceView {
    name: String,
    #[schema(value_type = super::VisibilitySchema)]
    visibility: Visibility,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    files: u64,
    bytes: u64,
}

async fn view(state: &AppState, ns: &Namespace) -> Result<NamespaceView, Problem> {
    let (files, bytes) = state.namespace_totals(ns).await?;
    Ok(NamespaceView { name: ns.name.clone(), visibility: ns.visibility, created_at: ns.created_at, files, bytes })
}

/// The caller's namespaces, by name.
#[utoipa::path(
    get,
    path = "/storage/namespaces",
    tag = "namespaces",
    responses((status = 200, body = Vec<NamespaceView>))
)]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<Vec<NamespaceView>>, Problem> {
    principal.require("storage", &principal.user_id, Some("namespaces"), None, "read")?;
    let mut views = Vec::new();
    for ns in state.namespaces_of(&principal.user_id).await? {
        views.push(view(&state, &ns).await?);
    }
    Ok(Json(views))
}

/// The caller's live namespace `name`: another user's is a 404, like a missing one.
async fn own(state: &AppState, principal: &Principal, name: &str, action: &str) -> Result<Namespace, Problem> {
    let ns = state.namespace(name).await?;
    principal.require("storage", &ns.owner, Some("namespaces"), Some(&ns.name), action)?;
    Ok(ns)
}

/// One of the caller's namespaces.
#[utoipa::path(
    get,
    path = "/storage/namespaces/{name}",
    tag = "namespaces",
    params(("name" = String, Path, description = "the namespace's name (any case)")),
    responses((status = 200, body = NamespaceView))
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<NamespaceView>, Problem> {
    let ns = own(&state, &principal, &name, "read").await?;
    Ok(Json(view(&state, &ns).await?))
}

/// A namespace to create.
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateNamespace)]
pub struct CreateRequest {
    /// `[A-Za-z0-9_-]{1,63}`, unique regardless of case, not one of the API's own path segments.
    name: String,
    /// `private` when absent.
    #[serde(default)]
    #[schema(value_type = Option<super::VisibilitySchema>)]
    visibility: Option<Visibility>,
}

/// Creates a namespace owned by the caller (409 when the name is taken).
#[utoipa::path(
    post,
    path = "/storage/namespaces",
    tag = "namespaces",
    request_body = CreateRequest,
    responses((status = 201, body = NamespaceView))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, Json<NamespaceView>), Problem> {
    check_namespace(&req.name)?;
    principal.require("storage", &principal.user_id, Some("namespaces"), Some(&req.name), "create")?;
    let record = state.namespace_record(&req.name).await?;
    if let Some(existing) = record.as_ref().filter(|ns| !ns.deleted) {
        let detail = if existing.owner == principal.user_id {
            format!("you already have a namespace {:?}", existing.name)
        } else {
            format!("the name {:?} is taken", req.name)
        };
        return Err(Problem::conflict(detail));
    }
    let owned = state.namespaces_of(&principal.user_id).await?.len() as u64;
    if owned >= state.config.max_namespaces {
        return Err(Problem::forbidden(format!("you have {owned} namespaces, the most allowed")));
    }
    let ns_key = Token::new(namespace_key(&req.name)).map_err(Problem::internal)?;
    let created = NamespaceCreated {
        ns_key,
        ns_id: Token::random(),
        name: req.name.clone(),
        owner: principal.user_id.clone(),
        visibility: req.visibility.unwrap_or(Visibility::Private),
    };
    state.commit(principal.user_id.as_str(), created, after(record.map(|r| r.seq))).await.map_err(|p| {
        if p.status == StatusCode::CONFLICT {
            Problem::conflict(format!("the name {:?} was just taken", req.name))
        } else {
            p
        }
    })?;
    let ns = state.namespace(&req.name).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &ns).await?)))
}

/// A namespace's new settings.
#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateNamespace)]
pub struct UpdateRequest {
    #[schema(value_type = super::VisibilitySchema)]
    visibility: Visibility,
}

/// Changes a namespace's visibility.
#[utoipa::path(
    put,
    path = "/storage/namespaces/{name}",
    tag = "namespaces",
    params(("name" = String, Path, description = "the namespace's name (any case)")),
    request_body = UpdateRequest,
    responses((status = 200, body = NamespaceView))
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(req): Json<UpdateRequest>,
) -> Result<Json<NamespaceView>, Problem> {
    let ns = own(&state, &principal, &name, "update").await?;
    if ns.visibility != req.visibility {
        let updated =
            NamespaceUpdated { ns_key: ns.ns_key.clone(), ns_id: ns.ns_id.clone(), visibility: req.visibility };
        state.commit(principal.user_id.as_str(), updated, Expected::Exactly(ns.seq)).await?;
    }
    let ns = state.namespace(&name).await?;
    Ok(Json(view(&state, &ns).await?))
}

/// Deletes a namespace with every file in it.
#[utoipa::path(
    delete,
    path = "/storage/namespaces/{name}",
    tag = "namespaces",
    params(("name" = String, Path, description = "the namespace's name (any case)")),
    responses((status = 204, description = "deleted, with its files and their share links"))
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    let ns = own(&state, &principal, &name, "delete").await?;
    delete_namespace(&state, &ns, principal.user_id.as_str(), "requested").await?;
    state.notify(&ns.owner, "Namespace deleted", format!("The namespace {} was deleted.", ns.name), &ns.name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes `ns` with its files: the event first (from then on nothing is visible), then the blobs
/// (what fails here is the sweeper's).
pub async fn delete_namespace(state: &AppState, ns: &Namespace, actor: &str, reason: &str) -> Result<(), Problem> {
    let current = view(state, ns).await?;
    let deleted = NamespaceDeleted {
        ns_key: ns.ns_key.clone(),
        ns_id: ns.ns_id.clone(),
        name: ns.name.clone(),
        owner: ns.owner.clone(),
        reason: reason.into(),
        files: current.files,
        bytes: current.bytes,
    };
    state.commit(actor, deleted, Expected::Exactly(ns.seq)).await?;
    match state.delete_blobs_of(&ns.ns_id).await {
        Ok(n) => tracing::info!(namespace = ns.name, blobs = n, "namespace deleted"),
        Err(e) => tracing::warn!(namespace = ns.name, error = %e, "namespace deleted; blobs left to the sweeper"),
    }
    Ok(())
}
