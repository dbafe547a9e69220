//! The notification service end to end, through the gateway (`notifications.localhost`), with the
//! real auth service, NATS and PostgreSQL: live delivery over WebSocket and SSE, mutes, the inbox
//! API, ownership and credential kinds, and the CLI. Connection limits, origins, slow and dead clients
//! are in `notify_live`; rebuilds, a crash mid-publish and a deleted user's inbox in `notify_recovery`.

use std::{pin::Pin, time::Duration};

use bytes::Bytes;
use edd_it::{
    assert_problem, eventually,
    services::{notify_config, publish_notification},
    world::{next_json, WebSocket},
    World,
};
use edd_notify::NotifyConfig;
use futures_util::{Stream, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest as _, http::HeaderValue},
    MaybeTlsStream,
};

pub(crate) const HOST: &str = "notifications.localhost";

pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// A notification world: the notification service (`config`), the auth service, and the gateway
/// in front of both.
pub(crate) async fn world_with(config: NotifyConfig) -> World {
    World::builder().notify(config).gateway().start().await
}

pub(crate) async fn world() -> World {
    world_with(notify_config()).await
}

/// The notification service of a world, through its gateway.
pub(crate) trait Notify {
    async fn publish(&self, user: &str, title: &str, category: &str, scope: Option<&str>) -> u64;
    async fn list(&self, token: &str, query: &str) -> Value;
    async fn unread(&self, token: &str) -> i64;
    /// Waits until the inbox lists notification `id` (the inbox projection follows the stream).
    async fn listed(&self, token: &str, id: u64) -> Value;
    async fn ws(&self, token: Option<&str>, origin: Option<&str>) -> Result<WebSocket, u16>;
    async fn sse(&self, token: Option<&str>, origin: Option<&str>) -> Result<Sse, u16>;
    /// A counter from the notification service's own `/metrics`.
    async fn metric(&self, name: &str) -> f64;
}

impl Notify for World {
    async fn publish(&self, user: &str, title: &str, category: &str, scope: Option<&str>) -> u64 {
        publish_notification(&self.env, user, title, &format!("about {title}"), category, scope).await.unwrap()
    }

    async fn list(&self, token: &str, query: &str) -> Value {
        let a = self.api.get(&format!("/api/notifications{query}"), token).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        a.body
    }

    async fn unread(&self, token: &str) -> i64 {
        self.api.get("/api/notifications/unread-count", token).await.unwrap().body["count"].as_i64().unwrap()
    }

    async fn listed(&self, token: &str, id: u64) -> Value {
        eventually(WAIT, "the notification to be listed", || async {
            let body = self.list(token, "?limit=200").await;
            Ok(body["notifications"].as_array().unwrap().iter().find(|n| n["id"] == id).cloned())
        })
        .await
        .unwrap()
    }

    async fn ws(&self, token: Option<&str>, origin: Option<&str>) -> Result<WebSocket, u16> {
        ws_connect(&self.gateway().url, token, origin, None).await
    }

    async fn sse(&self, token: Option<&str>, origin: Option<&str>) -> Result<Sse, u16> {
        sse_connect(&self.gateway().url, token, origin).await
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.notify().url)).await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok())).unwrap_or(0.0)
    }
}

/// Opens `GET /ws/notifications` through the gateway; a refusal is its HTTP status.
pub(crate) async fn ws_connect(
    gateway: &str,
    token: Option<&str>,
    origin: Option<&str>,
    stream: Option<TcpStream>,
) -> Result<WebSocket, u16> {
    let url = format!("{}/ws/notifications", gateway.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("host", HeaderValue::from_static(HOST));
    if let Some(token) = token {
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(origin) = origin {
        headers.insert("origin", origin.parse().unwrap());
    }
    let result = match stream {
        Some(stream) => tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await,
        None => tokio_tungstenite::connect_async(request).await,
    };
    match result {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("WebSocket connection failed: {e}"),
    }
}

/// A `text/event-stream` reader over reqwest.
pub(crate) struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

pub(crate) async fn sse_connect(gateway: &str, token: Option<&str>, origin: Option<&str>) -> Result<Sse, u16> {
    let mut request = reqwest::Client::new()
        .get(format!("{gateway}/sse/notifications"))
        .header("host", HOST)
        .header("accept", "text/event-stream");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    if response.status() != StatusCode::OK {
        return Err(response.status().as_u16());
    }
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    Ok(Sse { body: Box::pin(response.bytes_stream()), buffer: String::new() })
}

impl Sse {
    /// Waits until the service ends the stream (keep-alives and events are read past); panics
    /// after `within`.
    pub(crate) async fn ended(mut self, within: Duration) {
        tokio::time::timeout(within, async { while let Some(Ok(_)) = self.body.next().await {} })
            .await
            .expect("the SSE stream to end in time");
    }

    /// The next event's data, parsed (keep-alive comments are skipped).
    pub(crate) async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data.join("\n")).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next()).await.expect("an SSE event in time");
            let chunk = chunk.expect("the stream to go on").unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

pub(crate) fn ids(list: &Value) -> Vec<u64> {
    list["notifications"].as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn notifications_arrive_on_websocket_and_sse_as_listed() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let mut ws = w.ws(Some(&session), None).await.unwrap();
    let mut sse = w.sse(Some(&session), None).await.unwrap();
    // Browsers cannot set headers on a WebSocket: the token may come as ?token=.
    let query_url = format!("{}/ws/notifications?token={session}", w.gateway().url.replacen("http://", "ws://", 1));
    let mut request = query_url.into_client_request().unwrap();
    request.headers_mut().insert("host", HeaderValue::from_static(HOST));
    let (mut by_query, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let id = w.publish(&ada, "File uploaded", "storage", Some("photos")).await;
    let pushed = next_json(&mut ws).await;
    assert_eq!(pushed["id"], id);
    assert_eq!(pushed["title"], "File uploaded");
    assert_eq!(pushed["message"], "about File uploaded");
    assert_eq!(pushed["category"], "storage");
    assert_eq!(pushed["scope"], "photos");
    assert_eq!(pushed["read"], false);
    assert_eq!(sse.next().await, pushed, "SSE carries the same JSON");
    assert_eq!(next_json(&mut by_query).await, pushed);
    // The list item is the very same JSON.
    assert_eq!(w.listed(&session, id).await, pushed);
    assert_eq!(w.unread(&session).await, 1);
}

#[tokio::test]
async fn muted_notifications_are_not_pushed_listed_or_counted_until_unmuted() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let mut ws = w.ws(Some(&session), None).await.unwrap();

    let mute = |category: &str, scope: Option<&str>| json!({ "category": category, "scope": scope });
    let a = w.api.put("/api/notifications/mutes", &session, mute("storage", Some("photos"))).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    // Idempotent.
    let a = w.api.put("/api/notifications/mutes", &session, mute("storage", Some("photos"))).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    for bad in [mute("Storage", None), mute("", None), mute(&"x".repeat(33), None), mute("a", Some(&"s".repeat(129)))] {
        assert_problem(&w.api.put("/api/notifications/mutes", &session, bad).await.unwrap(), StatusCode::BAD_REQUEST);
    }

    let muted = w.publish(&ada, "in photos", "storage", Some("photos")).await;
    let other = w.publish(&ada, "in docs", "storage", Some("docs")).await;
    assert_eq!(next_json(&mut ws).await["id"], other, "the muted scope is skipped, the other scope arrives");
    w.listed(&session, other).await;
    assert_eq!(ids(&w.list(&session, "").await), vec![other]);
    assert_eq!(w.unread(&session).await, 1);

    // A category-wide mute hides every scope.
    assert_eq!(
        w.api.put("/api/notifications/mutes", &session, mute("storage", None)).await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    let hidden = w.publish(&ada, "in music", "storage", None).await;
    let marker = w.publish(&ada, "signed in", "auth", None).await;
    assert_eq!(next_json(&mut ws).await["id"], marker);
    w.listed(&session, marker).await;
    assert_eq!(ids(&w.list(&session, "").await), vec![marker]);
    assert_eq!(w.unread(&session).await, 1);
    let mutes = w.api.get("/api/notifications/mutes", &session).await.unwrap();
    assert_eq!(
        mutes.body,
        json!({"mutes": [{"category": "storage", "scope": null}, {"category": "storage", "scope": "photos"}]})
    );

    // Lifting the category-wide mute (JSON body) leaves the photos one (then lifted by query).
    let a =
        w.api.call("DELETE", "/api/notifications/mutes", Some(&session), Some(mute("storage", None))).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(ids(&w.list(&session, "").await), vec![marker, hidden, other]);
    let a = w.api.delete("/api/notifications/mutes?category=storage&scope=photos", &session).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(ids(&w.list(&session, "").await), vec![marker, hidden, other, muted]);
    assert_eq!(w.unread(&session).await, 4);
    assert_eq!(w.api.get("/api/notifications/mutes", &session).await.unwrap().body, json!({"mutes": []}));
    let again = w.publish(&ada, "photos again", "storage", Some("photos")).await;
    assert_eq!(next_json(&mut ws).await["id"], again, "unmuted: pushed again");
}

#[tokio::test]
async fn inbox_lists_newest_first_pages_and_reads() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let mut published = Vec::new();
    for i in 0..7 {
        published.push(w.publish(&ada, &format!("n{i}"), "storage", None).await);
    }
    let newest = *published.last().unwrap();
    w.listed(&session, newest).await;
    let mut newest_first = published.clone();
    newest_first.reverse();

    assert_eq!(ids(&w.list(&session, "").await), newest_first);
    let page = w.list(&session, "?limit=3").await;
    assert_eq!(ids(&page), newest_first[..3]);
    assert_eq!(page["unread"], 7);
    assert_eq!(ids(&w.list(&session, "?limit=3&offset=3").await), newest_first[3..6]);
    assert_eq!(ids(&w.list(&session, "?limit=3&offset=6").await), newest_first[6..]);
    assert!(ids(&w.list(&session, "?offset=7").await).is_empty());
    assert_eq!(ids(&w.list(&session, "?limit=1000").await).len(), 7, "a big limit is capped, not refused");
    for bad in ["?limit=0", "?limit=x", "?offset=-1"] {
        assert_problem(
            &w.api.get(&format!("/api/notifications{bad}"), &session).await.unwrap(),
            StatusCode::BAD_REQUEST,
        );
    }
    assert_eq!(w.unread(&session).await, 7);

    // Read one: answered once it shows.
    let one = published[2];
    let a = w.api.post(&format!("/api/notifications/{one}/read"), &session, json!({})).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    assert_eq!(w.unread(&session).await, 6);
    let list = w.list(&session, "").await;
    let read: Vec<u64> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["read"] == true)
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(read, vec![one]);
    // Again: still fine, nothing changes.
    let a = w.api.post(&format!("/api/notifications/{one}/read"), &session, json!({})).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    for missing in ["999999", "x", "-1"] {
        let a = w.api.post(&format!("/api/notifications/{missing}/read"), &session, json!({})).await.unwrap();
        assert_problem(&a, StatusCode::NOT_FOUND);
    }

    // Read all: everything up to the newest; a later one is unread again.
    let a = w.api.post("/api/notifications/read-all", &session, json!({})).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(w.unread(&session).await, 0);
    assert!(w.list(&session, "").await["notifications"].as_array().unwrap().iter().all(|n| n["read"] == true));
    let later = w.publish(&ada, "later", "storage", None).await;
    w.listed(&session, later).await;
    assert_eq!(w.unread(&session).await, 1);
    assert_eq!(w.list(&session, "?limit=1").await["notifications"][0]["read"], false);
}

#[tokio::test]
async fn users_see_only_their_own_and_credentials_need_the_notifications_scope() {
    let w = world().await;
    let (ada, ada_session) = w.user("ada").await;
    let (bob, bob_session) = w.user("bob").await;
    let mut bob_ws = w.ws(Some(&bob_session), None).await.unwrap();

    let adas = w.publish(&ada, "for ada", "storage", None).await;
    let bobs = w.publish(&bob, "for bob", "storage", None).await;
    assert_eq!(next_json(&mut bob_ws).await["id"], bobs, "bob never gets ada's");
    w.listed(&ada_session, adas).await;
    w.listed(&bob_session, bobs).await;
    assert_eq!(ids(&w.list(&bob_session, "").await), vec![bobs]);
    let a = w.api.post(&format!("/api/notifications/{adas}/read"), &bob_session, json!({})).await.unwrap();
    assert_problem(&a, StatusCode::NOT_FOUND);
    assert_eq!(w.unread(&ada_session).await, 1, "bob's attempt changed nothing");

    // No credential: 401 everywhere, live endpoints included.
    let none = w.api.call("GET", "/api/notifications", None, None).await.unwrap();
    assert_problem(&none, StatusCode::UNAUTHORIZED);
    assert_eq!(w.ws(None, None).await.err(), Some(401));
    assert_eq!(w.sse(None, None).await.err(), Some(401));

    // API tokens: without the notifications scope 403; read only reads; read+update does all.
    let storage_only = w.token(&ada_session, "t", json!({ format!("storage.{ada}"): ["read"] })).await;
    let read_only = w.token(&ada_session, "t", json!({ format!("notifications.{ada}.inbox"): ["read"] })).await;
    let full = w.token(&ada_session, "t", json!({ format!("notifications.{ada}"): ["read", "update"] })).await;
    w.accepted(&read_only).await;
    w.accepted(&full).await;
    eventually(WAIT, "the storage-only token to be known (then refused)", || async {
        Ok((w.api.get("/api/notifications", &storage_only).await?.status == StatusCode::FORBIDDEN).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(w.ws(Some(&storage_only), None).await.err(), Some(403));
    assert_eq!(w.sse(Some(&storage_only), None).await.err(), Some(403));
    assert_eq!(ids(&w.list(&read_only, "").await), vec![adas]);
    let a = w.api.post(&format!("/api/notifications/{adas}/read"), &read_only, json!({})).await.unwrap();
    assert_problem(&a, StatusCode::FORBIDDEN);
    assert_problem(
        &w.api.put("/api/notifications/mutes", &read_only, json!({"category": "x"})).await.unwrap(),
        StatusCode::FORBIDDEN,
    );
    let mut token_ws = w.ws(Some(&read_only), None).await.unwrap();
    let a = w.api.post(&format!("/api/notifications/{adas}/read"), &full, json!({})).await.unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(w.unread(&ada_session).await, 0);

    // A service account's token, likewise.
    let sa_id = w.service_account(&ada_session, "bot", json!({ format!("notifications.{ada}.inbox"): ["read"] })).await;
    let sa_token = w.service_account_token(&ada_session, &sa_id, json!({"name": "t"})).await;
    w.accepted(&sa_token).await;
    // (Creating the service account sent ada an `auth` notification of its own.)
    let listed = ids(&w.list(&sa_token, "").await);
    assert!(listed.contains(&adas) && !listed.contains(&bobs), "{listed:?}");
    assert_problem(
        &w.api.post("/api/notifications/read-all", &sa_token, json!({})).await.unwrap(),
        StatusCode::FORBIDDEN,
    );
    let mut sa_sse = w.sse(Some(&sa_token), None).await.unwrap();
    let next = w.publish(&ada, "for the bot", "storage", None).await;
    let not_auth = |v: &Value| v["category"] != "auth";
    let mut from_sse = sa_sse.next().await;
    while !not_auth(&from_sse) {
        from_sse = sa_sse.next().await;
    }
    assert_eq!(from_sse["id"], next);
    let mut from_ws = next_json(&mut token_ws).await;
    while !not_auth(&from_ws) {
        from_ws = next_json(&mut token_ws).await;
    }
    assert_eq!(from_ws["id"], next);
    assert!(tokio::time::timeout(Duration::from_millis(300), bob_ws.next()).await.is_err(), "bob's socket stays quiet");
}

/// The CLI: ls, read, mute, unmute and watch against the service through the gateway.
#[tokio::test]
async fn the_cli_lists_reads_mutes_and_watches() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let first = w.publish(&ada, "hello", "storage", Some("docs")).await;
    w.listed(&session, first).await;
    let edd = edd_it::gfs::edd_binary().unwrap();
    // `notifications.localhost` does not resolve on every machine: the CLI talks to the service directly.
    let url = w.notify().url.clone();
    let run = async |args: &[&str]| {
        let out = tokio::process::Command::new(&edd)
            .args(args)
            .env("EDD_TOKEN", &session)
            .env("EDD_NOTIFICATIONS_URL", &url)
            .env("EDD_AUTH_URL", "http://auth.localhost:1")
            .env("EDD_CONFIG", "/nonexistent/edd-config.json")
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["notifications", "ls"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("hello") && out.contains("storage/docs") && out.contains("1 unread"), "{out}");
    let (ok, out, _) = run(&["notifications", "ls", "--json"]).await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["notifications"][0]["id"], first);
    let (ok, _, err) = run(&["notifications", "read", &first.to_string()]).await;
    assert!(ok, "{err}");
    assert_eq!(w.unread(&session).await, 0);
    let (ok, _, err) = run(&["notifications", "mute", "storage", "--scope", "docs"]).await;
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["notifications", "mutes"]).await;
    assert!(ok && out.contains("docs"), "{out}");
    let (ok, _, err) = run(&["notifications", "unmute", "storage", "--scope", "docs"]).await;
    assert!(ok, "{err}");
    assert_eq!(w.api.get("/api/notifications/mutes", &session).await.unwrap().body, json!({"mutes": []}));
    let (ok, _, err) = run(&["notifications", "read", "--all"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["notifications", "read"]).await;
    assert!(!ok && err.contains("--all"), "{err}");

    // watch --json: one JSON object per line as they arrive.
    let mut child = tokio::process::Command::new(&edd)
        .args(["notifications", "watch", "--json"])
        .env("EDD_TOKEN", &session)
        .env("EDD_NOTIFICATIONS_URL", &url)
        .env("EDD_CONFIG", "/nonexistent/edd-config.json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    eventually(WAIT, "the watcher to connect", || async {
        let n = w.metric("notify_live_connections").await;
        Ok((n >= 1.0).then_some(()))
    })
    .await
    .unwrap();
    let id = w.publish(&ada, "live", "auth", None).await;
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["id"], id);
    assert_eq!(v["title"], "live");
    child.kill().await.unwrap();
}
