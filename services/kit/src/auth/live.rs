//! Long-lived requests (WebSockets, server-sent events): they authenticate once, at the start, so
//! they keep the credential ([`Presented`]) and end when it stops working ([`Authorizer::refused`]),
//! within the fast revocation path's latency rather than at the next ping.

use std::future::Future;

use axum::{extract::FromRequestParts, http::request::Parts};

use super::{
    authorizer::{AuthError, Authorizer},
    principal::{credential, Principal},
};
use crate::Problem;

/// The raw credential of the request, kept to re-check it during a connection's life. Its `Debug`
/// does not show it.
pub struct Presented(pub String);

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presented(…)")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Presented {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        credential(parts).map(|c| Self(c.to_owned())).ok_or_else(|| Problem::unauthorized("no credential"))
    }
}

impl Authorizer {
    /// Resolves once `credential` no longer authenticates, or `allowed` no longer holds of its
    /// principal (another user, a scope taken away): at the revocation that ends it (any kind: a
    /// session, all of a user's sessions, a token, a service account, a user, a signing key), or at
    /// its expiry. While this replica's permissions are not loaded (a rebuild) nobody is cut off.
    pub fn refused(
        &self,
        credential: String,
        allowed: impl Fn(&Principal) -> bool + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let authorizer = self.clone();
        let mut generation = self.generation();
        async move {
            loop {
                generation.borrow_and_update();
                let expires_at = match authorizer.authenticate(&credential) {
                    Ok(p) if allowed(&p) => p.expires_at,
                    Err(AuthError::NotReady) => None,
                    _ => return,
                };
                let expiry = async {
                    match expires_at {
                        Some(at) => {
                            let left = at.saturating_sub(time::OffsetDateTime::now_utc().unix_timestamp());
                            tokio::time::sleep(std::time::Duration::from_secs(left.max(0) as u64)).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = generation.changed() => if changed.is_err() { std::future::pending::<()>().await },
                    _ = expiry => {}
                }
            }
        }
    }
}
