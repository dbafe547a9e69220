//! The HTTP API on `storage.<domain>` (paths as the original's clients call them; see `docs/storage.md`).
//! Handlers are thin: parse, check ownership and scope, call a command or a query.

mod admin;
mod files;
mod namespaces;

pub use namespaces::delete_namespace;
mod serve;
mod shares;
mod status;

use axum::extract::DefaultBodyLimit;
use edd_kit::{
    auth::Principal,
    openapi::{routes, ApiRouter, ToSchema},
    Problem,
};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa_axum::router::{UtoipaMethodRouter, UtoipaMethodRouterExt as _};

use crate::{queries::Namespace, state::AppState};

/// The API, each route with its documentation (see `edd_kit::openapi`).
pub fn routes() -> ApiRouter<AppState> {
    let router = ApiRouter::new()
        .routes(routes!(namespaces::list, namespaces::create))
        .routes(routes!(namespaces::show, namespaces::update, namespaces::remove))
        .routes(routes!(files::list))
        .routes(routes!(files::upload_multipart).layer(DefaultBodyLimit::disable()))
        .routes(routes!(shares::create))
        .routes(routes!(shares::list))
        .routes(routes!(shares::revoke))
        .routes(routes!(shares::fetch))
        .routes(routes!(status::status))
        .routes(routes!(status::usage))
        .routes(routes!(status::progress))
        .routes(routes!(admin::namespaces))
        .routes(routes!(admin::files));
    let router = wildcard(router, routes!(files::download));
    wildcard(router, routes!(files::inline, files::upload_raw, files::remove))
}

/// Registers `routes` whose document path ends in `{path}` (a file's path, which has `/`s in it):
/// axum serves them at the wildcard `…/{*path}`, the document names them `…/{path}` (an OpenAPI
/// path template has no wildcard). utoipa-axum routes a path exactly as documented, so these two
/// are the only routes added by hand; their documentation is still the handlers' own.
fn wildcard(router: ApiRouter<AppState>, routes: UtoipaMethodRouter<AppState>) -> ApiRouter<AppState> {
    let (schemas, paths, methods) = routes;
    let mut router = paths.paths.keys().fold(router, |router, path| {
        let served = match path.strip_suffix("{path}") {
            Some(prefix) => format!("{prefix}{{*path}}"),
            None => path.clone(),
        };
        router.route(&served, methods.clone())
    });
    // The rest is what `ApiRouter::routes` does with the document.
    let api = router.get_openapi_mut();
    for (path, item) in paths.paths {
        match api.paths.paths.get_mut(&path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                api.paths.paths.insert(path, item);
            }
        }
    }
    api.components.get_or_insert_with(Default::default).schemas.extend(schemas);
    router
}

/// A file's bytes as they are: a body of any content type (the schema of uploads and downloads).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code, reason = "a schema only: bodies are streamed")]
pub struct FileBytes(Vec<u8>);

/// Who may read a namespace's files without a credential: `private` (only the owner, and tokens
/// the owner granted) or `public` (anyone with the link; the namespace is never listed to others).
/// The schema of `edd_events::catalog::storage::Visibility`.
#[derive(ToSchema)]
#[schema(as = Visibility, rename_all = "lowercase")]
#[allow(dead_code, reason = "a schema only: values are edd_events' Visibility")]
pub enum VisibilitySchema {
    Private,
    Public,
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
#[derive(Serialize, ToSchema)]
pub struct FileView {
    pub namespace: String,
    pub path: String,
    /// In bytes.
    pub size: u64,
    /// Declared at upload, else guessed from the extension, else `application/octet-stream`.
    pub content_type: String,
    /// The SHA-256 of the bytes, hex; the file's `ETag` is it in quotes.
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
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

#[cfg(test)]
mod tests {
    /// Every route the API serves is in the document, each path a valid template whose parameters
    /// are all declared.
    #[test]
    fn every_route_is_documented_with_its_path_parameters() {
        let api = super::routes().split_for_parts().1;
        let mut operations = 0;
        for (path, item) in &api.paths.paths {
            assert!(!path.contains('*'), "{path}: a wildcard is no OpenAPI path template");
            let names: Vec<&str> = path.split('{').skip(1).filter_map(|p| p.split_once('}')).map(|(n, _)| n).collect();
            for operation in [&item.get, &item.put, &item.post, &item.delete].into_iter().flatten() {
                operations += 1;
                let declared: Vec<&str> = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter_map(|p| match p {
                        utoipa::openapi::RefOr::T(p) => Some(p),
                        utoipa::openapi::RefOr::Ref(_) => None,
                    })
                    .filter(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Path)
                    .map(|p| p.name.as_str())
                    .collect();
                assert_eq!(declared, names, "{path}");
            }
        }
        assert_eq!((api.paths.paths.len(), operations), (15, 20));
    }
}
