//! The HTTP API on `notifications.<base domain>` (see `docs/notify.md`). Every route needs a
//! credential; a user only ever sees their own inbox, and another user's notification id is a 404.
//! API tokens need `notifications.<user>.inbox` with `read` (lists, counts, live) or `update`
//! (read marks, mutes).

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Router,
};
use edd_events::catalog::inbox::{MuteRemoved, MuteSet, NotificationsRead};
use edd_kit::{auth::Principal, Json, Problem};
use edd_kit::{Path, Query};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{live, queries, state::AppState};

/// Default and largest page of `GET /api/notifications`.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;
/// Longest mute scope, in characters.
pub const MAX_SCOPE_CHARS: usize = 128;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/notifications", get(list))
        .route("/api/notifications/unread-count", get(unread_count))
        .route("/api/notifications/read-all", post(read_all))
        .route("/api/notifications/{id}/read", post(read_one))
        .route("/api/notifications/mutes", get(mutes).put(mute).delete(unmute))
        .route("/ws/notifications", get(live::websocket))
        .route("/sse/notifications", get(live::sse))
        .with_state(state)
}

/// The caller may do `action` on their own inbox.
pub fn require(principal: &Principal, action: &str) -> Result<(), Problem> {
    principal.require("notifications", &principal.user_id, Some("inbox"), None, action)
}

#[derive(Deserialize)]
pub struct Page {
    limit: Option<String>,
    offset: Option<String>,
}

fn number(name: &str, value: Option<&str>, default: i64) -> Result<i64, Problem> {
    match value {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Problem::bad_request(format!("{name} must be a whole number ≥ 0"))),
    }
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Json<Value>, Problem> {
    require(&principal, "read")?;
    let limit = number("limit", page.limit.as_deref(), DEFAULT_LIMIT)?;
    if limit == 0 {
        return Err(Problem::bad_request("limit must be at least 1"));
    }
    let limit = limit.min(MAX_LIMIT);
    let offset = number("offset", page.offset.as_deref(), 0)?;
    let user = principal.user_id.as_str();
    let (items, unread) =
        tokio::try_join!(queries::list(&state.pool, user, limit, offset), queries::unread(&state.pool, user))
            .map_err(Problem::internal)?;
    Ok(Json(json!({ "notifications": items, "unread": unread })))
}

async fn unread_count(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, Problem> {
    require(&principal, "read")?;
    let count = queries::unread(&state.pool, principal.user_id.as_str()).await?;
    Ok(Json(json!({ "count": count })))
}

async fn read_one(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    require(&principal, "update")?;
    let not_found = || Problem::not_found("no such notification");
    let id = id.parse::<u64>().ok().filter(|id| i64::try_from(*id).is_ok()).ok_or_else(not_found)?;
    let read = queries::read_state(&state.pool, principal.user_id.as_str(), id as i64).await?.ok_or_else(not_found)?;
    if !read {
        let event = NotificationsRead { user_id: principal.user_id.clone(), ids: vec![id], up_to: None };
        state.commit(principal.user_id.as_str(), event).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn read_all(State(state): State<AppState>, principal: Principal) -> Result<StatusCode, Problem> {
    require(&principal, "update")?;
    let newest = queries::newest(&state.pool, principal.user_id.as_str()).await?;
    if let Some((up_to, true)) = newest {
        let event =
            NotificationsRead { user_id: principal.user_id.clone(), ids: Vec::new(), up_to: Some(up_to as u64) };
        state.commit(principal.user_id.as_str(), event).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn mutes(State(state): State<AppState>, principal: Principal) -> Result<Json<Value>, Problem> {
    require(&principal, "read")?;
    let mutes = queries::mutes(&state.pool, principal.user_id.as_str()).await?;
    Ok(Json(json!({ "mutes": mutes })))
}

/// A mute as clients send it: a category, and optionally one scope within it.
#[derive(Deserialize)]
pub struct MuteBody {
    category: String,
    #[serde(default)]
    scope: Option<String>,
}

/// Checks a mute and normalizes an empty scope to none.
fn checked(body: MuteBody) -> Result<(String, Option<String>), Problem> {
    let category = body.category;
    let valid = (1..=32).contains(&category.len())
        && category.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(
            Problem::bad_request("category must be 1 to 32 of a-z, 0-9, _ and -").with_extension("field", "category")
        );
    }
    let scope = body.scope.filter(|s| !s.is_empty());
    if let Some(scope) = &scope {
        if scope.chars().count() > MAX_SCOPE_CHARS || scope.chars().any(char::is_control) {
            return Err(Problem::bad_request(format!(
                "scope must be at most {MAX_SCOPE_CHARS} characters, without control characters"
            ))
            .with_extension("field", "scope"));
        }
    }
    Ok((category, scope))
}

/// Mutes one user may hold.
const MAX_MUTES: usize = 100;

async fn mute(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<MuteBody>,
) -> Result<StatusCode, Problem> {
    require(&principal, "update")?;
    let (category, scope) = checked(body)?;
    let user = principal.user_id.as_str();
    let existing = queries::mutes(&state.pool, user).await?;
    if !existing.iter().any(|m| m.category == category && m.scope == scope) {
        // Every replica keeps every mute in memory, and the INBOX stream keeps them forever.
        if existing.len() >= MAX_MUTES {
            return Err(Problem::conflict(format!("at most {MAX_MUTES} mutes per user; lift one first"))
                .with_extension("max_mutes", MAX_MUTES));
        }
        let event = MuteSet { user_id: principal.user_id.clone(), category, scope };
        state.commit(user, event).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/notifications/mutes` with the mute as a JSON body or as query parameters. Lifts
/// exactly that mute (a category-wide mute is lifted without a scope).
async fn unmute(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    require(&principal, "update")?;
    let body: MuteBody = if body.iter().all(u8::is_ascii_whitespace) {
        let category = query
            .get("category")
            .cloned()
            .ok_or_else(|| Problem::bad_request("give the mute as a JSON body or as ?category=&scope="))?;
        MuteBody { category, scope: query.get("scope").cloned() }
    } else {
        serde_json::from_slice(&body).map_err(|e| Problem::bad_request(format!("the body is not a mute: {e}")))?
    };
    let (category, scope) = checked(body)?;
    let user = principal.user_id.as_str();
    let existing = queries::mutes(&state.pool, user).await?;
    if existing.iter().any(|m| m.category == category && m.scope == scope) {
        let event = MuteRemoved { user_id: principal.user_id.clone(), category, scope };
        state.commit(user, event).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(category: &str, scope: Option<&str>) -> MuteBody {
        MuteBody { category: category.to_owned(), scope: scope.map(str::to_owned) }
    }

    #[test]
    fn mutes_are_checked() {
        assert_eq!(checked(body("storage", Some(""))).unwrap(), ("storage".into(), None));
        assert!(checked(body("a_b-9", Some("ns1"))).is_ok());
        assert!(checked(body("", None)).is_err());
        assert!(checked(body("Storage", None)).is_err());
        assert!(checked(body(&"a".repeat(33), None)).is_err());
        assert!(checked(body("x", Some(&"é".repeat(128)))).is_ok());
        assert!(checked(body("x", Some(&"é".repeat(129)))).is_err());
        assert!(checked(body("x", Some("a\nb"))).is_err());
    }

    #[test]
    fn page_numbers() {
        assert_eq!(number("limit", None, 50).unwrap(), 50);
        assert_eq!(number("limit", Some("7"), 50).unwrap(), 7);
        assert!(number("limit", Some("-1"), 50).is_err());
        assert!(number("limit", Some("x"), 50).is_err());
    }
}
