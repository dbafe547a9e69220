//! What every handler shares: the commit path (a [`Committer`] waiting on the accounts projection
//! and the authorizer), the database, the password hasher, login limits and the signing key.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::FromRef;
use edd_events::{
    catalog::{
        auth::{SigningKeyAdded, SigningKeyRetired, SigningKeyRevoked},
        notify::Notification,
    },
    Event, EventStore, Expected, Token,
};
use edd_kit::{
    auth::{jwt::SigningKey, Authorizer},
    Committer, Problem,
};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{config::AuthConfig, password::Hasher, ratelimit::PasswordLimits, secrets};

#[derive(Clone)]
pub struct AppState {
    pub commits: Committer,
    pub store: EventStore,
    pub pool: PgPool,
    pub authorizer: Authorizer,
    pub config: Arc<AuthConfig>,
    pub hasher: Hasher,
    /// Every password check (login, password change) reserves an attempt here first.
    pub limits: Arc<PasswordLimits>,
    signer: Arc<Mutex<Option<Arc<SigningKey>>>>,
}

impl FromRef<AppState> for Authorizer {
    fn from_ref(state: &AppState) -> Self {
        state.authorizer.clone()
    }
}

impl AppState {
    /// `commits` must follow the accounts projection and the authorizer.
    pub fn new(commits: Committer, pool: PgPool, authorizer: Authorizer, config: AuthConfig, hasher: Hasher) -> Self {
        let window = Duration::from_secs(config.login_window_secs);
        Self {
            store: commits.store().clone(),
            commits,
            limits: Arc::new(PasswordLimits::new(config.login_limit_ip, config.login_limit_user, window)),
            pool,
            authorizer,
            config: Arc::new(config),
            hasher,
            signer: Arc::new(Mutex::new(None)),
        }
    }

    /// Appends `data` for `actor` and waits until the projections that read it have applied it.
    pub async fn commit<E: Event>(&self, actor: &str, data: E, expected: Expected) -> Result<u64, Problem> {
        self.commits.commit(actor, data, expected).await
    }

    /// Sends `user` a notification; best effort, the command it reports on has already happened.
    pub async fn notify(&self, user: &Token, title: &str, message: String) {
        let note = Notification {
            user_id: user.clone(),
            title: title.to_owned(),
            message,
            link: None,
            category: "auth".into(),
            scope: None,
        };
        self.commits.publish(note).await;
    }

    /// The key new session tokens are signed with. Read from the private table (one indexed row)
    /// so a rotation on any replica takes effect on all of them at the next login.
    pub async fn signer(&self) -> Result<Arc<SigningKey>, Problem> {
        let stored = secrets::active_key(&self.pool)
            .await?
            .ok_or_else(|| Problem::unavailable("no signing key yet").with_retry_after(1))?;
        if let Some(key) = self.signer.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if key.kid().as_str() == stored.kid {
                return Ok(key.clone());
            }
        }
        let kid = Token::new(stored.kid).map_err(Problem::internal)?;
        let key = Arc::new(SigningKey::from_pkcs8(kid, &stored.pkcs8).map_err(Problem::internal)?);
        *self.signer.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        Ok(key)
    }

    /// At start: make sure there is an active key and that its public half is in the log.
    pub async fn ensure_signing_key(&self) -> Result<(), Problem> {
        let (candidate, pkcs8) = SigningKey::generate().map_err(Problem::internal)?;
        let stored = secrets::StoredKey { kid: candidate.kid().to_string(), pkcs8 };
        let active = secrets::ensure_active_key(&self.pool, stored).await?;
        let kid = Token::new(active.kid.clone()).map_err(Problem::internal)?;
        let key = SigningKey::from_pkcs8(kid, &active.pkcs8).map_err(Problem::internal)?;
        self.publish_key(&key).await
    }

    /// Publishes `key`'s public half; idempotent (a key is added once).
    async fn publish_key(&self, key: &SigningKey) -> Result<(), Problem> {
        let added = SigningKeyAdded { kid: key.kid().clone(), alg: "EdDSA".into(), public_key: key.public_key() };
        match self.commit("auth", added, Expected::NoStream).await {
            Ok(_) => Ok(()),
            Err(p) if p.status == axum::http::StatusCode::CONFLICT => Ok(()),
            Err(p) => Err(p),
        }
    }

    /// Rotates the signing key: the new public key is published (and applied) before anything is
    /// signed with it; the old key is retired but verifies its tokens until they expire.
    pub async fn rotate_key(&self, actor: &str) -> Result<Token, Problem> {
        let (key, pkcs8) = SigningKey::generate().map_err(Problem::internal)?;
        let stored = secrets::StoredKey { kid: key.kid().to_string(), pkcs8 };
        secrets::insert_pending_key(&self.pool, &stored).await?;
        self.publish_key(&key).await?;
        let old = secrets::activate_key(&self.pool, &stored.kid).await?;
        if let Some(old) = old.and_then(|k| Token::new(k).ok()) {
            let accept_until = OffsetDateTime::now_utc() + self.config.session_ttl();
            self.commit(actor, SigningKeyRetired { kid: old, accept_until }, Expected::Any).await?;
        }
        Ok(key.kid().clone())
    }

    /// Revokes key `kid` at once (a compromise): every token it signed stops working everywhere.
    /// When it is the active key, a new one is rotated in first, so logins go on. Returns the
    /// active key's id; 404 for a key that is not ours.
    pub async fn revoke_key(&self, actor: &str, kid: &Token) -> Result<Token, Problem> {
        let key_state = secrets::key_state(&self.pool, kid.as_str())
            .await?
            .ok_or_else(|| Problem::not_found("no such signing key"))?;
        if key_state == "active" {
            self.rotate_key(actor).await?;
        }
        self.commit(actor, SigningKeyRevoked { kid: kid.clone() }, Expected::Any).await?;
        let active = secrets::active_key(&self.pool)
            .await?
            .ok_or_else(|| Problem::unavailable("no signing key yet").with_retry_after(1))?;
        Token::new(active.kid).map_err(Problem::internal)
    }
}
