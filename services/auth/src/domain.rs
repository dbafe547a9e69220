//! Rules for names and passwords, and the commands shared by several endpoints.

use axum::http::StatusCode;
use edd_events::{
    catalog::auth::{ScopeMap, SessionRevoked, SessionsRevoked, TokenCreated, UserCreated},
    AppendError, Expected, Token,
};
use edd_kit::{
    auth::{api_token, scope},
    Problem,
};
use time::{Duration, OffsetDateTime};

use crate::{
    queries::{self, User},
    secrets,
    state::AppState,
};

pub const MAX_PASSWORD_BYTES: usize = 256;
pub const MIN_PASSWORD_BYTES: usize = 8;
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_SERVICE_ACCOUNTS: i64 = 100;
pub const MAX_TOKENS: i64 = 200;

/// 3–32 characters: lowercase letters, digits, `-`, `_`, starting with a letter.
pub fn check_username(username: &str) -> Result<(), Problem> {
    let ok = (3..=32).contains(&username.len())
        && username.starts_with(|c: char| c.is_ascii_lowercase())
        && username.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Problem::unprocessable(
            "usernames are 3-32 characters: lowercase letters, digits, '-' and '_', starting with a letter",
        )
        .with_extension("field", "username"))
    }
}

pub fn check_password(password: &str) -> Result<(), Problem> {
    if (MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
        Ok(())
    } else {
        Err(Problem::unprocessable(format!("passwords are {MIN_PASSWORD_BYTES}-{MAX_PASSWORD_BYTES} bytes"))
            .with_extension("field", "password"))
    }
}

/// A display name, service-account or token name: 1–64 characters, no control characters.
pub fn check_name(field: &'static str, name: &str) -> Result<(), Problem> {
    let len = name.chars().count();
    if (1..=MAX_NAME_CHARS).contains(&len) && !name.chars().any(char::is_control) && name.trim() == name {
        Ok(())
    } else {
        Err(Problem::unprocessable(format!(
            "{field} must be 1-{MAX_NAME_CHARS} characters without control characters or surrounding spaces"
        ))
        .with_extension("field", field))
    }
}

/// A scope map granted by `owner`, or a 400 naming the bad entry.
pub fn check_scopes(scopes: &edd_events::catalog::auth::ScopeMap, owner: &Token) -> Result<(), Problem> {
    scope::validate(scopes, owner).map_err(|e| {
        let problem = Problem::bad_request(e.to_string());
        match e.scope() {
            Some(s) => problem.with_extension("scope", s),
            None => problem,
        }
    })
}

/// `30d`, `90d`, `365d` or `never` (default `90d`) → the expiry time.
pub fn expiry(expires_in: Option<&str>) -> Result<Option<OffsetDateTime>, Problem> {
    let days = match expires_in.unwrap_or("90d") {
        "30d" => 30,
        "90d" => 90,
        "365d" => 365,
        "never" => return Ok(None),
        other => {
            return Err(Problem::unprocessable(format!("expires_in {other:?} must be one of 30d, 90d, 365d, never"))
                .with_extension("field", "expires_in"))
        }
    };
    Ok(Some(OffsetDateTime::now_utc() + Duration::days(days)))
}

/// Creates a user: claims the name (409 if taken), stores the password hash, appends `UserCreated`.
pub async fn create_user(
    state: &AppState,
    actor: &str,
    username: &str,
    password: String,
    display_name: Option<String>,
    is_admin: bool,
) -> Result<User, Problem> {
    check_username(username)?;
    check_password(&password)?;
    let display_name = display_name.unwrap_or_else(|| username.to_owned());
    check_name("display_name", &display_name)?;

    let user_id = Token::random();
    claim_username(state, username, &user_id).await?;
    let phc = state.hasher.hash(password).await.map_err(Problem::internal)?;
    secrets::set_password(&state.pool, user_id.as_str(), &phc).await?;
    let created = UserCreated { user_id: user_id.clone(), username: username.to_owned(), display_name, is_admin };
    state.commit(actor, created, Expected::NoStream).await?;
    queries::user_by_id(&state.pool, user_id.as_str())
        .await?
        .ok_or_else(|| Problem::internal("created user is not in the projection"))
}

/// Claims `username` for `user_id`; 409 if a user holds it. A claim whose user never appeared
/// (the command that made it crashed) is released once older than the grace period, then retried.
async fn claim_username(state: &AppState, username: &str, user_id: &Token) -> Result<(), Problem> {
    let kind = Token::new("username").map_err(Problem::internal)?;
    let taken = || Problem::conflict(format!("the username {username:?} is taken")).with_extension("field", "username");
    match state.store.claim("auth", &kind, username, user_id.as_str()).await {
        Ok(_) => return Ok(()),
        Err(AppendError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(holder) = state.store.claim_holder(&kind, username).await.map_err(Problem::from)? else {
        return Err(taken()); // released meanwhile by someone else's command; let the caller retry
    };
    let grace = time::Duration::seconds(state.config.claim_grace_secs as i64);
    let abandoned = OffsetDateTime::now_utc() - holder.made_at >= grace
        && !queries::user_ever_existed(&state.pool, &holder.owner).await?;
    if !abandoned {
        return Err(taken());
    }
    tracing::warn!(username, owner = %holder.owner, "releasing a username claim whose user was never created");
    match state.store.release_stale("auth", &kind, username, &holder).await {
        Ok(_) | Err(AppendError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    match state.store.claim("auth", &kind, username, user_id.as_str()).await {
        Ok(_) => Ok(()),
        Err(AppendError::Conflict { .. }) => Err(taken()),
        Err(e) => Err(e.into()),
    }
}

/// Revokes `session_id` (a no-op if it already is); 404 unless it belongs to `owner` (when given).
pub async fn revoke_session(
    state: &AppState,
    actor: &str,
    session_id: &str,
    owner: Option<&str>,
) -> Result<(), Problem> {
    let session = queries::session_by_id(&state.pool, session_id)
        .await?
        .filter(|s| owner.is_none_or(|o| o == s.user_id))
        .ok_or_else(|| Problem::not_found("no such session"))?;
    if session.revoked {
        return Ok(());
    }
    let revoked = SessionRevoked {
        session_id: Token::new(session.id).map_err(Problem::internal)?,
        user_id: Token::new(session.user_id).map_err(Problem::internal)?,
        expires_at: session.expires_at,
    };
    match state.commit(actor, revoked, Expected::Exactly(session.seq as u64)).await {
        Ok(_) => Ok(()),
        // Revoked concurrently: the outcome the caller asked for.
        Err(p) if p.status == StatusCode::CONFLICT => Ok(()),
        Err(p) => Err(p),
    }
}

/// Revokes every session of `user_id` except `keep` with one event, however many there are;
/// returns how many were active.
///
/// The event voids tokens issued before the next whole second (a token's `iat` is whole seconds),
/// and the command answers only once that second has come: every token issued before the request
/// is void, and none issued after the answer is (at most a second's wait).
pub async fn revoke_sessions(
    state: &AppState,
    actor: &str,
    user_id: &str,
    keep: Option<&str>,
) -> Result<usize, Problem> {
    let active = queries::count_active_sessions(&state.pool, user_id, keep).await?;
    let before = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() + 1)
        .map_err(Problem::internal)?;
    let revoked = SessionsRevoked {
        user_id: Token::new(user_id).map_err(Problem::internal)?,
        before,
        keep: keep.map(Token::new).transpose().map_err(Problem::internal)?,
    };
    state.commit(actor, revoked, Expected::Any).await?;
    let left = before - OffsetDateTime::now_utc();
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
    Ok(usize::try_from(active).unwrap_or_default())
}

/// A token just issued: what the projection shows of it, and its secret (never stored; only its
/// SHA-256 goes into the log).
pub struct IssuedToken {
    pub info: queries::TokenInfo,
    pub secret: String,
}

/// Issues an API token for `owner` (a personal one with `scopes`, or one acting as
/// `service_account_id` with the account's scopes), within the per-user limit.
pub async fn issue_token(
    state: &AppState,
    owner: &Token,
    name: String,
    scopes: Option<ScopeMap>,
    service_account_id: Option<Token>,
    expires_in: Option<&str>,
) -> Result<IssuedToken, Problem> {
    check_name("name", &name)?;
    let expires_at = expiry(expires_in)?;
    let (tokens, _) = queries::counts(&state.pool, owner.as_str()).await?;
    if tokens >= MAX_TOKENS {
        return Err(Problem::unprocessable(format!("at most {MAX_TOKENS} live tokens per user; revoke some first")));
    }
    let secret = api_token::generate().map_err(|_| Problem::internal("no randomness for a token"))?;
    let token_id = Token::random();
    let created = TokenCreated {
        token_id: token_id.clone(),
        owner: owner.clone(),
        name,
        sha256: api_token::sha256_hex(&secret),
        scopes,
        service_account_id,
        expires_at,
    };
    state.commit(owner.as_str(), created, Expected::NoStream).await?;
    let info = queries::token_of(&state.pool, owner.as_str(), token_id.as_str())
        .await?
        .ok_or_else(|| Problem::internal("created token is not in the projection"))?;
    Ok(IssuedToken { info, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["ada", "a-b_c9", "x23456789012345678901234567890ab"] {
            assert!(check_username(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Ada", "9lives", "a.b", "a b", "x234567890123456789012345678901234"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiries() {
        assert!(expiry(None).unwrap().is_some());
        assert_eq!(expiry(Some("never")).unwrap(), None);
        assert!(expiry(Some("7d")).is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("name", "ci deploy").is_ok());
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", " x").is_err());
        assert!(check_name("name", "a\nb").is_err());
        assert!(check_name("name", &"x".repeat(65)).is_err());
    }
}
