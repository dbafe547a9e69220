//! The HTTP API on `notifications.<base domain>` (see `docs/notify.md`). Every route needs a
//! credential; a user only ever sees their own inbox, and another user's notification id is a 404.
//! API tokens need `notifications.<user>.inbox` with `read` (lists, counts, live) or `update`
//! (read marks, mutes).

use axum::{body::Bytes, extract::State, http::StatusCode};
use edd_events::catalog::inbox::{MuteRemoved, MuteSet, NotificationsRead};
use edd_kit::{
    auth::Principal,
    openapi::{routes, ApiRouter, IntoParams, ToSchema},
    Json, Path, Problem, Query,
};
use serde::{Deserialize, Serialize};

use crate::{
    live,
    queries::{self, Item, Mute},
    state::AppState,
};

/// Default and largest page of `GET /api/notifications`.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;
/// Longest mute scope, in characters.
pub const MAX_SCOPE_CHARS: usize = 128;

/// The API, each route with its documentation (see `edd_kit::openapi`): one `routes!` per path.
pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(unread_count))
        .routes(routes!(read_all))
        .routes(routes!(read_one))
        .routes(routes!(mutes, mute, unmute))
        .routes(routes!(live::websocket))
        .routes(routes!(live::sse))
}

/// The caller may do `action` on their own inbox.
pub fn require(principal: &Principal, action: &str) -> Result<(), Problem> {
    principal.require("notifications", &principal.user_id, Some("inbox"), None, action)
}

/// Which page of the inbox `GET /api/notifications` lists. Both are parsed by hand, so that a bad
/// value is a 400 naming it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// How many notifications to list, newest first; more than 200 lists 200.
    #[param(value_type = Option<i64>, minimum = 1, default = 50)]
    limit: Option<String>,
    /// How many of the newest to skip.
    #[param(value_type = Option<i64>, minimum = 0, default = 0)]
    offset: Option<String>,
}

/// A page of the caller's inbox.
#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    /// Visible notifications (muted ones are hidden), newest first.
    notifications: Vec<Item>,
    /// How many visible notifications are unread in the whole inbox, not only on this page.
    #[schema(minimum = 0)]
    unread: i64,
}

/// How many visible notifications the caller has not read.
#[derive(Serialize, ToSchema)]
pub struct UnreadCount {
    #[schema(minimum = 0)]
    count: i64,
}

/// The caller's mutes, by category then scope (a category-wide mute before the scoped ones).
#[derive(Serialize, ToSchema)]
pub struct MuteList {
    mutes: Vec<Mute>,
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

/// Lists the caller's notifications, newest first, with the unread count.
///
/// Muted notifications are left out (they come back when the mute is lifted); `read` is each
/// one's read state. Needs `read` on `notifications.<user>.inbox`.
#[utoipa::path(
    get,
    path = "/api/notifications",
    tag = "notifications",
    params(Page),
    responses((status = 200, body = NotificationList))
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Json<NotificationList>, Problem> {
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
    Ok(Json(NotificationList { notifications: items, unread }))
}

/// Counts the caller's unread notifications (muted ones not counted).
#[utoipa::path(
    get,
    path = "/api/notifications/unread-count",
    tag = "notifications",
    responses((status = 200, body = UnreadCount))
)]
async fn unread_count(State(state): State<AppState>, principal: Principal) -> Result<Json<UnreadCount>, Problem> {
    require(&principal, "read")?;
    let count = queries::unread(&state.pool, principal.user_id.as_str()).await?;
    Ok(Json(UnreadCount { count }))
}

/// Marks one of the caller's notifications read.
///
/// Idempotent: marking a read one again changes nothing. Needs `update` on
/// `notifications.<user>.inbox`.
#[utoipa::path(
    post,
    path = "/api/notifications/{id}/read",
    tag = "notifications",
    params((
        "id" = i64,
        Path,
        minimum = 1,
        description = "the notification's id; one that is not the caller's, or not a number, is a 404"
    )),
    responses((status = 204, description = "read; the list and the count show it when this answers"))
)]
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

/// Marks all of the caller's notifications read.
///
/// Marks everything up to the newest notification the service holds when it runs (one published a
/// moment earlier but not yet stored stays unread). Needs `update` on `notifications.<user>.inbox`.
#[utoipa::path(
    post,
    path = "/api/notifications/read-all",
    tag = "notifications",
    responses((status = 204, description = "all read; the list and the count show it when this answers"))
)]
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

/// Lists the caller's mutes.
#[utoipa::path(get, path = "/api/notifications/mutes", tag = "mutes", responses((status = 200, body = MuteList)))]
async fn mutes(State(state): State<AppState>, principal: Principal) -> Result<Json<MuteList>, Problem> {
    require(&principal, "read")?;
    let mutes = queries::mutes(&state.pool, principal.user_id.as_str()).await?;
    Ok(Json(MuteList { mutes }))
}

/// A mute as clients send it: a category, and optionally one scope within it.
#[derive(Deserialize, ToSchema)]
pub struct MuteBody {
    /// The category: 1 to 32 of `a-z`, `0-9`, `_` and `-`.
    #[schema(pattern = "^[a-z0-9_-]{1,32}$", min_length = 1, max_length = 32)]
    category: String,
    /// One scope within the category, at most 128 characters without control characters; none,
    /// `null` or `""` means the whole category.
    #[serde(default)]
    #[schema(max_length = 128)]
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

/// Mutes a category, or one scope within it, for the caller.
///
/// Muted notifications are kept but left out of the list, the unread count and live delivery until
/// the mute is lifted; once this answers, no live push ignores it. Idempotent. At most 100 mutes
/// per user (a 409 beyond). Needs `update` on `notifications.<user>.inbox`.
#[utoipa::path(
    put,
    path = "/api/notifications/mutes",
    tag = "mutes",
    request_body = MuteBody,
    responses((status = 204, description = "muted"))
)]
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

/// Lifts one of the caller's mutes.
///
/// The mute is given as a JSON body or, without a body, as `?category=&scope=`. Lifts exactly that
/// mute: without a scope the category-wide one, not the scoped ones. Lifting a mute the caller
/// does not have changes nothing. Needs `update` on `notifications.<user>.inbox`.
#[utoipa::path(
    delete,
    path = "/api/notifications/mutes",
    tag = "mutes",
    params(
        ("category" = Option<String>, Query, description = "the mute's category, when there is no body"),
        ("scope" = Option<String>, Query, description = "the mute's scope, when there is no body; none or empty: the category-wide mute")
    ),
    // A reference, not `Option<MuteBody>`: the body is optional, but a JSON `null` is no mute.
    request_body(
        content = ref("#/components/schemas/MuteBody"),
        description = "the mute; or leave the body empty and use the query"
    ),
    responses((status = 204, description = "lifted, or there was no such mute"))
)]
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

    /// The typed answers are the JSON the handlers built by hand before they were documented.
    #[test]
    fn answers_keep_their_json() {
        use serde_json::json;
        let created_at = time::macros::datetime!(2026-11-21 10:00:00.123456 UTC);
        let item = Item {
            id: 42,
            title: "File uploaded".into(),
            message: "a.txt in photos".into(),
            link: None,
            category: "storage".into(),
            scope: Some("photos".into()),
            created_at,
            read: false,
        };
        let list = NotificationList { notifications: vec![item], unread: 1 };
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"notifications": [{"id": 42, "title": "File uploaded", "message": "a.txt in photos", "link": null,
                "category": "storage", "scope": "photos", "created_at": "2026-11-21T10:00:00.123456Z", "read": false}],
                "unread": 1})
        );
        assert_eq!(serde_json::to_value(UnreadCount { count: 3 }).unwrap(), json!({"count": 3}));
        let mutes = MuteList { mutes: vec![Mute { category: "storage".into(), scope: None }] };
        assert_eq!(serde_json::to_value(&mutes).unwrap(), json!({"mutes": [{"category": "storage", "scope": null}]}));
    }

    #[test]
    fn page_numbers() {
        assert_eq!(number("limit", None, 50).unwrap(), 50);
        assert_eq!(number("limit", Some("7"), 50).unwrap(), 7);
        assert!(number("limit", Some("-1"), 50).is_err());
        assert!(number("limit", Some("x"), 50).is_err());
    }
}
