//! Local authentication: a bearer credential in, a [`Principal`] out, without a network call.
//!
//! The [`Authorizer`] keeps the permissions projection's tables in memory. It follows the projection
//! (each committed batch moves the runner's position; the rows with a larger `seq` are loaded), so
//! the durable, rebuildable read model stays the source and memory is only a copy of it.
//!
//! Revocations take a faster path as well: the authorizer also subscribes to the revoking events on
//! core NATS and applies them to memory the moment they are published. Revocation is monotonic
//! (a revoked session, token, service account or user never comes back), so applying it early can
//! only refuse sooner, never allow wrongly; the projection brings the same fact a few ms later.
//!
//! Revoking every session of a user is one event and one value per user (a [`Cutoff`]: "issued
//! before T is void"), and a revoked signing key voids every token it signed, cached or not. Every
//! change that can refuse a credential bumps a generation ([`Authorizer::refused`] waits on it), so
//! long-lived connections end the moment their credential does.
//!
//! Until the projection has caught up with everything in the stream at start-up, every request is
//! refused with 503 — never allowed on a partial view.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use async_nats::jetstream;
use edd_events::{
    catalog::auth::{
        IdentityDeleted, IdentityUpdated, ScopeMap, SessionRevoked, SessionsRevoked, SigningKeyRevoked, TokenRevoked,
        UserDeleted,
    },
    Event, RawEvent, Token,
};
use edd_projections::{schema_name, Handle, Projection};
use futures_util::StreamExt;
use sqlx::{types::Json, PgPool, Row};
use time::OffsetDateTime;

use super::{
    api_token,
    cutoff::Cutoff,
    jwt::{self, Claims, JwtError, VerifyingKey},
    permissions::{PermissionsProjection, FILTERS},
    principal::{Credential, Principal},
    scope,
};

/// Verified session tokens remembered at most; the cache is emptied when full.
const VERIFIED_CACHE_CAPACITY: usize = 16_384;

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Missing,
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("unknown token")]
    Unknown,
    #[error("token has been revoked")]
    Revoked,
    #[error("token has expired")]
    Expired,
    #[error("the account behind this token no longer exists")]
    NoAccount,
    #[error("permissions are still loading; retry shortly")]
    NotReady,
}

#[derive(Clone, Copy, Debug)]
struct User {
    is_admin: bool,
    deleted: bool,
}

#[derive(Clone, Debug)]
struct ApiToken {
    token_id: Token,
    owner: Token,
    service_account: Option<Token>,
    scopes: Arc<ScopeMap>,
    expires_at: Option<i64>,
    revoked: bool,
}

#[derive(Clone, Debug)]
struct ServiceAccount {
    user_id: Token,
    scopes: Arc<ScopeMap>,
    version: i64,
    deleted: bool,
}

/// A session token whose signature has been checked, with its ids already validated.
struct Verified {
    claims: Claims,
    /// The key that signed it, checked again on every use (it may be revoked since).
    kid: String,
    user_id: Token,
    session_id: Token,
}

/// What the authorizer knows: a copy of the permissions projection.
#[derive(Default)]
struct State {
    keys: HashMap<String, VerifyingKey>,
    /// Keys revoked (compromised): nothing they signed is accepted, whenever it was verified.
    revoked_keys: HashSet<String>,
    /// User id → which of their sessions are void by issue time (revoke-all, password change).
    cutoffs: HashMap<String, Cutoff>,
    users: HashMap<String, User>,
    /// By SHA-256 hex.
    tokens: HashMap<String, ApiToken>,
    /// Token ids revoked by the fast path, possibly before their row arrived.
    revoked_tokens: HashSet<String>,
    service_accounts: HashMap<String, ServiceAccount>,
    /// Session id → when its token would have expired anyway.
    revoked_sessions: HashMap<String, i64>,
}

struct Inner {
    root: Option<&'static str>,
    state: RwLock<State>,
    verified: Mutex<HashMap<String, Arc<Verified>>>,
    ready: AtomicBool,
    /// The projection position whose rows are in memory.
    loaded: tokio::sync::watch::Sender<u64>,
    /// Bumped whenever memory changes in a way that may refuse a credential accepted before.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Inner {
    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Authenticates requests from memory. Cheap to clone; share one per service.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Authorizer {
    /// Follows `projection`, which a runner with `handle` keeps applying in `pool`: waits for it to
    /// catch up, loads it, and from then on loads what each commit changed. Also subscribes to the
    /// revoking events on `nats`. Background tasks end when the runner stops.
    pub fn follow(pool: PgPool, js: jetstream::Context, projection: PermissionsProjection, handle: Handle) -> Self {
        let inner = Arc::new(Inner {
            root: projection.root,
            state: RwLock::new(State::default()),
            verified: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
            loaded: tokio::sync::watch::channel(0).0,
            generation: tokio::sync::watch::channel(0).0,
        });
        tokio::spawn(fast_revocations(inner.clone(), js.client(), handle.clone()));
        tokio::spawn(follow_projection(inner.clone(), pool, js, projection, handle));
        Self { inner }
    }

    /// Whether the permissions have loaded; until then every credential is refused with 503.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// [`Self::is_ready`] as a `/readyz` check: `App::readiness("permissions", move || a.clone().readiness())`.
    pub async fn readiness(self) -> Result<(), &'static str> {
        if self.is_ready() {
            Ok(())
        } else {
            Err("permissions projection still catching up")
        }
    }

    /// Waits until [`Self::is_ready`], up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Where memory stands: once it has reached an event's sequence, a credential created by that
    /// event authenticates here. What [`crate::Committer::follow_authorizer`] waits on.
    pub fn watermark(&self) -> edd_projections::Watermark {
        edd_projections::Watermark::new("permissions (in memory)", self.inner.loaded.subscribe())
    }

    /// Waits until memory holds the projection's state at stream sequence `seq` (or later).
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<(), edd_projections::WaitError> {
        self.watermark().wait_for(seq, timeout).await
    }

    /// Changes whenever a credential accepted before may be refused now (any revocation, on the
    /// fast path or from the projection): what [`Self::refused`] waits on.
    pub(super) fn generation(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// The public keys currently accepted, as a JWK set (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        let state = self.read();
        let now = now();
        let mut keys: Vec<_> = state
            .keys
            .iter()
            .filter(|(kid, key)| {
                key.accept_until.is_none_or(|until| until >= now) && !state.revoked_keys.contains(kid.as_str())
            })
            .map(|(kid, key)| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": kid, "x": key.public_key(),
                })
            })
            .collect();
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        serde_json::json!({ "keys": keys })
    }

    /// Authenticates a bearer credential: a session JWT or an `edd_…` API token.
    pub fn authenticate(&self, credential: &str) -> Result<Principal, AuthError> {
        if !self.is_ready() {
            return Err(AuthError::NotReady);
        }
        if api_token::looks_like(credential) {
            self.authenticate_api_token(credential)
        } else {
            self.authenticate_session(credential)
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that grants
        // access (every update is a single insert), so a poisoned lock is still usable.
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn authenticate_api_token(&self, credential: &str) -> Result<Principal, AuthError> {
        let sha = api_token::sha256_hex(credential);
        let state = self.read();
        let token = state.tokens.get(&sha).ok_or(AuthError::Unknown)?;
        if token.revoked || state.revoked_tokens.contains(token.token_id.as_str()) {
            return Err(AuthError::Revoked);
        }
        if token.expires_at.is_some_and(|exp| now() >= exp) {
            return Err(AuthError::Expired);
        }
        let user = live_user(&state, token.owner.as_str())?;
        let credential = match &token.service_account {
            Some(sa_id) => {
                let sa = state.service_accounts.get(sa_id.as_str()).ok_or(AuthError::NoAccount)?;
                if sa.deleted || sa.user_id != token.owner {
                    return Err(AuthError::NoAccount);
                }
                Credential::ServiceAccount {
                    token_id: token.token_id.clone(),
                    service_account_id: sa_id.clone(),
                    scopes: sa.scopes.clone(),
                }
            }
            None => Credential::ApiToken { token_id: token.token_id.clone(), scopes: token.scopes.clone() },
        };
        Ok(Principal {
            user_id: token.owner.clone(),
            is_admin: user.is_admin,
            expires_at: token.expires_at,
            credential,
        })
    }

    fn authenticate_session(&self, credential: &str) -> Result<Principal, AuthError> {
        let now = now();
        let cached = self.inner.verified.lock().unwrap_or_else(|e| e.into_inner()).get(credential).cloned();
        let state = self.read();
        let verified = match cached {
            Some(verified) => {
                // The signature was checked once; the key's standing is checked every time, so
                // retiring or revoking it ends its tokens here as well.
                usable_key(&state, &verified.kid, now)?;
                jwt::check(&verified.claims, now, jwt::SESSION)?;
                verified
            }
            None => {
                let kid = std::cell::RefCell::new(String::new());
                let claims = jwt::verify(
                    credential,
                    |k| {
                        k.clone_into(&mut kid.borrow_mut());
                        usable_key(&state, k, now).ok()
                    },
                    now,
                    jwt::SESSION,
                )?;
                let user_id = Token::new(claims.sub.as_str()).map_err(|_| AuthError::Unknown)?;
                let session_id = Token::new(claims.sid.as_str()).map_err(|_| AuthError::Unknown)?;
                let verified = Arc::new(Verified { claims, kid: kid.into_inner(), user_id, session_id });
                let mut cache = self.inner.verified.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= VERIFIED_CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(credential.to_owned(), verified.clone());
                verified
            }
        };
        if state.revoked_sessions.contains_key(&verified.claims.sid)
            || state
                .cutoffs
                .get(verified.user_id.as_str())
                .is_some_and(|c| c.voids(&verified.claims.sid, verified.claims.iat))
        {
            return Err(AuthError::Revoked);
        }
        let user = live_user(&state, verified.user_id.as_str())?;
        Ok(Principal {
            user_id: verified.user_id.clone(),
            is_admin: user.is_admin,
            expires_at: Some(verified.claims.exp),
            credential: Credential::Session { session_id: verified.session_id.clone() },
        })
    }
}

/// The key `kid`, if it may verify a token now: known, not revoked, not retired past its grace.
fn usable_key<'s>(state: &'s State, kid: &str, now: i64) -> Result<&'s VerifyingKey, JwtError> {
    let key = state.keys.get(kid).ok_or(JwtError::UnknownKey)?;
    if state.revoked_keys.contains(kid) || key.accept_until.is_some_and(|until| now > until) {
        return Err(JwtError::UnknownKey);
    }
    Ok(key)
}

fn live_user(state: &State, user_id: &str) -> Result<User, AuthError> {
    match state.users.get(user_id) {
        Some(user) if !user.deleted => Ok(*user),
        _ => Err(AuthError::NoAccount),
    }
}

/// Waits for the projection to reach the stream's state at start, then mirrors it.
async fn follow_projection(
    inner: Arc<Inner>,
    pool: PgPool,
    js: jetstream::Context,
    projection: PermissionsProjection,
    handle: Handle,
) {
    let schema = schema_name(projection.name());
    let target = loop {
        match last_matching_seq(&js, projection.stream()).await {
            Ok(seq) => break seq,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the AUTH stream yet; permissions not ready");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    while handle.wait_for(target, Duration::from_secs(60)).await.is_err() {
        tracing::warn!(
            projection = projection.name(),
            target,
            position = handle.position(),
            "permissions still catching up"
        );
    }
    let mut position = handle.watch();
    let mut loaded: i64 = -1;
    loop {
        let reached = *position.borrow_and_update() as i64;
        match load_changes(&inner, &pool, &schema, loaded).await {
            Ok(()) => {
                loaded = reached;
                inner.loaded.send_replace(reached as u64);
                if !inner.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!(projection = projection.name(), position = reached, "permissions loaded");
                }
            }
            Err(e) => {
                // Until the leader has run the migrations the tables do not exist (42P01): expected.
                let missing = matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01"));
                if missing {
                    tracing::debug!("permissions tables not created yet");
                } else {
                    tracing::warn!(error = %e, "cannot load permission changes; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if position.changed().await.is_err() {
            return; // the runner stopped
        }
    }
}

/// The highest sequence of any event the projection reads, as of now.
async fn last_matching_seq(js: &jetstream::Context, stream: &str) -> Result<u64, String> {
    let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let mut last = 0;
    for filter in FILTERS {
        match stream.get_last_raw_message_by_subject(filter).await {
            Ok(msg) => last = last.max(msg.sequence),
            Err(e) if matches!(e.kind(), jetstream::stream::LastRawMessageErrorKind::NoMessageFound) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(last)
}

fn unix(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(|t| t.unix_timestamp())
}

/// Loads rows changed after `since` (all of them when -1) into memory.
async fn load_changes(inner: &Inner, pool: &PgPool, schema: &str, since: i64) -> Result<(), sqlx::Error> {
    let users = sqlx::query(&format!("SELECT user_id, is_admin, deleted FROM {schema}.users WHERE seq > $1"))
        .bind(since)
        .fetch_all(pool)
        .await?;
    let accounts = sqlx::query(&format!(
        "SELECT id, user_id, scopes, version, deleted FROM {schema}.service_accounts WHERE seq > $1"
    ))
    .bind(since)
    .fetch_all(pool)
    .await?;
    let tokens = sqlx::query(&format!(
        "SELECT token_id, sha256, owner, service_account_id, scopes, expires_at, revoked FROM {schema}.tokens WHERE seq > $1"
    ))
    .bind(since)
    .fetch_all(pool)
    .await?;
    let sessions = sqlx::query(&format!(
        "SELECT session_id, expires_at FROM {schema}.revoked_sessions WHERE seq > $1 AND expires_at > now()"
    ))
    .bind(since)
    .fetch_all(pool)
    .await?;
    let keys = sqlx::query(&format!(
        "SELECT kid, public_key, accept_until, revoked FROM {schema}.signing_keys WHERE seq > $1"
    ))
    .bind(since)
    .fetch_all(pool)
    .await?;
    let cutoffs =
        sqlx::query(&format!("SELECT user_id, before, keep, keep_floor FROM {schema}.session_cutoffs WHERE seq > $1"))
            .bind(since)
            .fetch_all(pool)
            .await?;
    let changed = [&users, &accounts, &tokens, &sessions, &keys, &cutoffs].iter().any(|rows| !rows.is_empty());

    let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
    for row in users {
        let id: String = row.try_get("user_id")?;
        let deleted: bool = row.try_get("deleted")?;
        let user = state.users.entry(id).or_insert(User { is_admin: false, deleted });
        user.is_admin = row.try_get("is_admin")?;
        user.deleted |= deleted;
    }
    for row in accounts {
        let id: String = row.try_get("id")?;
        let Ok(user_id) = Token::new(row.try_get::<String, _>("user_id")?) else { continue };
        let Json(scopes): Json<ScopeMap> = row.try_get("scopes")?;
        let version: i64 = row.try_get("version")?;
        let deleted: bool = row.try_get("deleted")?;
        match state.service_accounts.get_mut(&id) {
            Some(sa) => {
                sa.deleted |= deleted;
                if version >= sa.version {
                    sa.version = version;
                    sa.scopes = Arc::new(scopes);
                }
            }
            None => {
                state
                    .service_accounts
                    .insert(id, ServiceAccount { user_id, scopes: Arc::new(scopes), version, deleted });
            }
        }
    }
    for row in tokens {
        let Ok(token_id) = Token::new(row.try_get::<String, _>("token_id")?) else { continue };
        let Ok(owner) = Token::new(row.try_get::<String, _>("owner")?) else { continue };
        let service_account = row.try_get::<Option<String>, _>("service_account_id")?.and_then(|s| Token::new(s).ok());
        let scopes: Option<Json<ScopeMap>> = row.try_get("scopes")?;
        let revoked = row.try_get::<bool, _>("revoked")? || state.revoked_tokens.contains(token_id.as_str());
        let token = ApiToken {
            token_id,
            owner,
            service_account,
            scopes: Arc::new(scopes.map(|j| j.0).unwrap_or_default()),
            expires_at: unix(row.try_get("expires_at")?),
            revoked,
        };
        let sha: String = row.try_get("sha256")?;
        let previously_revoked = state.tokens.get(&sha).is_some_and(|t| t.revoked);
        state.tokens.insert(sha, ApiToken { revoked: token.revoked || previously_revoked, ..token });
    }
    for row in sessions {
        let id: String = row.try_get("session_id")?;
        let expires: OffsetDateTime = row.try_get("expires_at")?;
        state.revoked_sessions.insert(id, expires.unix_timestamp());
    }
    for row in keys {
        let kid: String = row.try_get("kid")?;
        let public_key: String = row.try_get("public_key")?;
        let accept_until = unix(row.try_get("accept_until")?);
        if row.try_get::<bool, _>("revoked")? {
            state.revoked_keys.insert(kid.clone());
        }
        match VerifyingKey::from_public_key(&public_key, accept_until) {
            Some(key) => {
                state.keys.insert(kid, key);
            }
            None => tracing::error!(kid, "signing key in the permissions projection is not an Ed25519 key; ignored"),
        }
    }
    for row in cutoffs {
        let user_id: String = row.try_get("user_id")?;
        let loaded = Cutoff {
            before: row.try_get("before")?,
            keep: row.try_get("keep")?,
            keep_floor: row.try_get("keep_floor")?,
        };
        merge_cutoff(&mut state, user_id, loaded);
    }
    let now = now();
    state.revoked_sessions.retain(|_, expires| *expires > now);
    drop(state);
    if changed {
        inner.bump();
    }
    Ok(())
}

fn merge_cutoff(state: &mut State, user_id: String, cutoff: Cutoff) {
    let merged = match state.cutoffs.remove(&user_id) {
        Some(known) => known.merge(cutoff),
        None => cutoff,
    };
    state.cutoffs.insert(user_id, merged);
}

/// Applies revoking events to memory as they are published, ahead of the projection.
async fn fast_revocations(inner: Arc<Inner>, client: async_nats::Client, handle: Handle) {
    let subjects = [
        "auth.session.*.revoked",
        "auth.token.*.revoked",
        "auth.identity.*.deleted",
        "auth.identity.*.updated",
        "auth.user.*.deleted",
        "auth.user.*.sessions_revoked",
        "auth.key.*.revoked",
    ];
    let mut subscriptions = Vec::new();
    for subject in subjects {
        match client.subscribe(subject).await {
            Ok(sub) => subscriptions.push(sub),
            Err(e) => {
                tracing::warn!(subject, error = %e, "no fast revocation path; relying on the projection");
                return;
            }
        }
    }
    let mut messages = futures_util::stream::select_all(subscriptions);
    let mut stopped = handle.watch();
    loop {
        let msg = tokio::select! {
            msg = messages.next() => match msg { Some(m) => m, None => return },
            changed = stopped.changed() => match changed { Ok(()) => continue, Err(_) => return },
        };
        // The stream sequence is unknown on this path; it is only used for logging. Only auth's
        // own events count: a forged revocation must not log anyone out.
        let Ok(event) = edd_events::catalog::publishers::check(0, msg.subject.as_str(), &msg.payload) else { continue };
        apply_revocation(&inner, &event);
    }
}

fn apply_revocation(inner: &Inner, event: &RawEvent) {
    let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
    match event.ty() {
        SessionRevoked::TYPE => {
            if let Ok(e) = event.decode::<SessionRevoked>() {
                state.revoked_sessions.insert(e.session_id.to_string(), e.expires_at.unix_timestamp());
            }
        }
        TokenRevoked::TYPE => {
            if let Ok(e) = event.decode::<TokenRevoked>() {
                state.revoked_tokens.insert(e.token_id.to_string());
            }
        }
        IdentityDeleted::TYPE => {
            if let Ok(e) = event.decode::<IdentityDeleted>() {
                let sa = state.service_accounts.entry(e.service_account_id.to_string()).or_insert(ServiceAccount {
                    user_id: e.user_id.clone(),
                    scopes: Arc::default(),
                    version: e.version as i64,
                    deleted: true,
                });
                sa.deleted = true;
                sa.scopes = Arc::default();
            }
        }
        IdentityUpdated::TYPE => {
            // Only a narrowing may go ahead of the projection; widening waits for it, so the fast
            // path can never grant what the durable read model does not.
            if let Ok(e) = event.decode::<IdentityUpdated>() {
                if let Some(sa) = state.service_accounts.get_mut(e.service_account_id.as_str()) {
                    let scopes = scope::restrict(&e.scopes, inner.root);
                    if (e.version as i64) > sa.version && is_narrowing(&sa.scopes, &scopes) {
                        sa.scopes = Arc::new(scopes);
                        sa.version = e.version as i64;
                    }
                }
            }
        }
        UserDeleted::TYPE => {
            if let Ok(e) = event.decode::<UserDeleted>() {
                state.users.entry(e.user_id.to_string()).or_insert(User { is_admin: false, deleted: true }).deleted =
                    true;
            }
        }
        SessionsRevoked::TYPE => {
            if let Ok(e) = event.decode::<SessionsRevoked>() {
                merge_cutoff(&mut state, e.user_id.to_string(), Cutoff::of_event(e.before, e.keep.map(String::from)));
            }
        }
        SigningKeyRevoked::TYPE => {
            if let Ok(e) = event.decode::<SigningKeyRevoked>() {
                state.revoked_keys.insert(e.kid.to_string());
            }
        }
        _ => return,
    }
    drop(state);
    inner.bump();
}

/// Whether every grant in `new` was already granted by `old`.
fn is_narrowing(old: &ScopeMap, new: &ScopeMap) -> bool {
    new.iter().all(|(grant, actions)| actions.iter().all(|a| scope::allows(old, grant, a)))
}
