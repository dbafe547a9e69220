//! Local authorization for every service (ARCHITECTURE §5).
//!
//! - [`scope`]: the scope grammar, its vocabulary and prefix matching;
//! - [`jwt`]: EdDSA session tokens (signing for the auth service, verification for everyone);
//! - [`api_token`]: opaque `edd_…` tokens and their SHA-256;
//! - [`permissions`]: the projection each service runs over the `AUTH` stream;
//! - [`Authorizer`]: that projection in memory, answering "who is this?" in microseconds;
//! - [`Principal`]: the axum extractor and the ownership/scope checks handlers make;
//! - [`cutoff`]: "sessions issued before T are void", revoking all of a user's sessions at once;
//! - [`Presented`] and [`Authorizer::refused`]: live connections that end with their credential.
//!
//! A service wires it up with [`start`], puts the [`Authorizer`] in its state (`FromRef`), and takes
//! a `Principal` in each handler.

pub mod api_token;
mod authorizer;
pub mod cutoff;
pub mod jwt;
mod live;
pub mod permissions;
mod principal;
pub mod scope;

use std::{future::Future, sync::Arc};

use async_nats::jetstream;
use edd_projections::{Handle, RunnerConfig};
use sqlx::PgPool;

pub use authorizer::{AuthError, Authorizer};
pub use live::Presented;
pub use permissions::PermissionsProjection;
pub use principal::{cookie_token, credential, Credential, MaybePrincipal, Principal};

/// Runs `projection` in `pool` and an [`Authorizer`] following it, until `shutdown`.
pub fn start(
    pool: PgPool,
    js: jetstream::Context,
    projection: PermissionsProjection,
    config: RunnerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (Authorizer, Handle) {
    let handle = edd_projections::spawn(pool.clone(), js.clone(), Arc::new(projection), config, shutdown);
    (Authorizer::follow(pool, js, projection, handle.clone()), handle)
}
