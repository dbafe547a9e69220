//! Share links: `POST /storage/share`, `GET /storage/shares`, `DELETE /storage/shares/{id}`, and
//! the public `GET /storage/shared/{id}?key=…`.
//!
//! A link is a random 256-bit key; the log holds only its SHA-256 and the expiry. That gives what
//! an HMAC-signed URL gives (unforgeable, expiring) plus revocation, with no signing key to
//! distribute or rotate. The key travels in the query string, which the gateway never logs.
//!
//! A link names the stored bytes it was made for (the file's blob), not the path: once the file is
//! overwritten or deleted the link is gone (410), and whatever is uploaded at the path later is
//! another file that the link never reaches.

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::Response,
};
use base64::Engine as _;
use edd_events::{
    catalog::storage::{ShareCreated, ShareRevoked},
    Expected, Token,
};
use edd_kit::{
    auth::Principal,
    openapi::{IntoParams, ToSchema},
    Json, Problem,
};
use edd_kit::{Path, Query};
use ring::rand::SecureRandom as _;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{
    require_files,
    serve::{file_response, Disposition, FileRequestHeaders, FileResponses, Reader},
};
use crate::{names::check_path, queries::ShareInfo, state::AppState, transfer::hex};

/// A share link's lifetime when the request names none.
const DEFAULT_SHARE_SECS: u64 = 24 * 3600;

/// A file to share.
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateShare)]
pub struct CreateRequest {
    namespace: String,
    path: String,
    /// The link's lifetime: 24 hours when absent, at most the configured maximum (30 days by default).
    #[serde(default)]
    #[schema(minimum = 1)]
    expires_in_secs: Option<u64>,
}

/// A new share link. Its key is in `url` only: it is not kept, so this is the one time it is shown.
#[derive(Serialize, ToSchema)]
#[schema(as = ShareLink)]
pub struct Created {
    id: String,
    /// The link, on the host the request came to (or the configured public URL).
    url: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    expires_at: OffsetDateTime,
}

fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Creates a share link to a file: anyone holding it may read the file until it expires.
#[utoipa::path(
    post,
    path = "/storage/share",
    tag = "shares",
    request_body = CreateRequest,
    responses((status = 201, body = Created))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, Json<Created>), Problem> {
    check_path(&req.path)?;
    let ns = state.namespace(&req.namespace).await?;
    // A link hands out read access to anyone: it takes the right to read and to create.
    require_files(&principal, &ns, "read")?;
    require_files(&principal, &ns, "create")?;
    let file = state.file(&ns, &req.path).await?;
    let secs = req.expires_in_secs.unwrap_or(DEFAULT_SHARE_SECS);
    if secs == 0 || secs > state.config.max_share_secs {
        return Err(Problem::bad_request(format!("expires_in_secs is 1 to {}", state.config.max_share_secs))
            .with_extension("field", "expires_in_secs"));
    }
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut key).map_err(|_| Problem::internal("no randomness"))?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    let share_id = Token::random();
    let expires_at = OffsetDateTime::now_utc() + Duration::seconds(secs as i64);
    let created = ShareCreated {
        share_id: share_id.clone(),
        ns_id: ns.ns_id.clone(),
        namespace: ns.name.clone(),
        path: req.path.clone(),
        owner: ns.owner.clone(),
        key_sha256: sha256_hex(key.as_bytes()),
        expires_at,
        // The link serves these bytes only: replaced meanwhile, or later, it ends.
        blob: Some(file.blob),
    };
    state.commit(principal.user_id.as_str(), created, Expected::NoStream).await?;
    let base = match &state.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
            format!("{scheme}://{host}")
        }
    };
    let url = format!("{base}/storage/shared/{share_id}?key={key}");
    Ok((StatusCode::CREATED, Json(Created { id: share_id.to_string(), url, expires_at })))
}

/// The caller's links, newest first (the keys are not kept, so not shown).
#[utoipa::path(get, path = "/storage/shares", tag = "shares", responses((status = 200, body = Vec<ShareInfo>)))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<Vec<ShareInfo>>, Problem> {
    principal.require("storage", &principal.user_id, Some("files"), None, "read")?;
    Ok(Json(state.shares_of(&principal.user_id).await?))
}

/// Revokes one of the caller's share links (revoking a revoked one is no error).
#[utoipa::path(
    delete,
    path = "/storage/shares/{id}",
    tag = "shares",
    params(("id" = String, Path, description = "the link's id")),
    responses((status = 204, description = "revoked"))
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let share = state.share(&id).await?.ok_or_else(|| Problem::not_found("no such share link"))?;
    let owner = Token::new(share.owner.clone()).map_err(Problem::internal)?;
    principal.require("storage", &owner, Some("files"), Some(&share.namespace), "delete")?;
    if !share.revoked {
        let share_id = Token::new(id).map_err(Problem::internal)?;
        state
            .commit(principal.user_id.as_str(), ShareRevoked { share_id, owner }, Expected::Exactly(share.seq))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `?key=` of a share link.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FetchQuery {
    /// The link's key (a missing or wrong one is a 404, like an unknown link).
    #[serde(default)]
    key: String,
}

/// The shared file, for anyone holding the link (no credential).
///
/// Every failure before the key is checked is the same 404, so links cannot be probed.
#[utoipa::path(
    get,
    path = "/storage/shared/{id}",
    tag = "shares",
    params(("id" = String, Path, description = "the link's id"), FetchQuery, FileRequestHeaders),
    security(()),
    responses(
        FileResponses,
        (status = 410, description = "the link was revoked or expired, or its file was replaced or deleted",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn fetch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FetchQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let unknown = || Problem::not_found("no such share link");
    if q.key.is_empty() || q.key.len() > 64 {
        return Err(unknown());
    }
    let share = state.share(&id).await?.ok_or_else(unknown)?;
    if sha256_hex(q.key.as_bytes()) != share.key_sha256 {
        return Err(unknown());
    }
    if share.revoked {
        return Err(Problem::new(StatusCode::GONE)
            .with_detail("this share link was revoked, or the file it was made for was replaced or deleted"));
    }
    if share.expires_at <= OffsetDateTime::now_utc() {
        return Err(Problem::new(StatusCode::GONE).with_detail("this share link has expired"));
    }
    let ns = state.namespace(&share.namespace).await?;
    if ns.ns_id.as_str() != share.ns_id {
        return Err(Problem::new(StatusCode::GONE).with_detail("the shared file's namespace was deleted"));
    }
    // A link is to the bytes it was made for, not to whatever is at the path now.
    let file = match state.file_record(&ns, &share.path).await? {
        Some(file) if !file.deleted && share.blob.as_deref() == Some(file.blob.as_str()) => file,
        _ => {
            return Err(
                Problem::new(StatusCode::GONE).with_detail("the file this link was made for was replaced or deleted")
            );
        }
    };
    let reader = Reader { user: None, progress: None };
    file_response(
        &state,
        &file,
        edd_events::catalog::storage::Visibility::Private,
        &headers,
        Disposition::Inline,
        reader,
    )
}
