//! Revocation that is total and immediate: all of a user's sessions with one event however many
//! there are, a signing key revoked (or retired) ending the tokens it signed even where they were
//! cached, and live connections (notify's WebSocket and SSE, storage's `/sse/progress`) closing
//! within the revocation latency goal instead of at the next ping.

use std::time::{Duration, Instant};

use edd_events::{
    catalog::auth::{SessionCreated, SigningKeyRetired},
    Expected, Token,
};
use edd_it::{
    assert_problem, eventually, fixtures,
    services::{notify_config, ADMIN, ADMIN_PASSWORD},
    world::PASSWORD,
    World,
};
use edd_kit::auth::jwt::{Claims, SigningKey, ISSUER, SESSION};
use edd_notify::NotifyConfig;
use futures_util::{stream, StreamExt as _};
use reqwest::StatusCode;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio_tungstenite::tungstenite::Message;

use super::{
    auth::{accepted, refused_within, world},
    notify::{world_with, Notify as _},
    storage::storage_world,
};

/// More sessions than the old one-event-per-session revoke-all could reach (it took the newest 1,000).
const SESSIONS: usize = 1_500;

/// The `kid` a session token's header names.
fn kid(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["kid"].as_str().unwrap().to_owned()
}

/// `n` sessions of `user` as a login makes them — `SessionCreated` published as auth, a token signed
/// with auth's active key — without `n` password hashes; their tokens.
async fn mint_sessions(w: &World, user: &str, n: usize) -> Vec<String> {
    let stored = edd_auth::secrets::active_key(&w.env.db.pool).await.unwrap().unwrap();
    let key = SigningKey::from_pkcs8(Token::new(stored.kid).unwrap(), &stored.pkcs8).unwrap();
    let now = OffsetDateTime::now_utc();
    let expires_at = now + time::Duration::hours(1);
    let store = w.env.events();
    let ids: Vec<Token> = (0..n).map(|_| Token::random()).collect();
    stream::iter(ids.clone())
        .map(|session_id| {
            let store = &store;
            let created = SessionCreated {
                session_id,
                user_id: Token::new(user).unwrap(),
                expires_at,
                ip: None,
                user_agent: None,
            };
            async move { store.append_one(&fixtures::envelope(created), Expected::NoStream).await.unwrap() }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    ids.iter()
        .map(|sid| {
            key.sign(&Claims {
                iss: ISSUER.into(),
                sub: user.to_owned(),
                sid: sid.to_string(),
                typ: SESSION.into(),
                iat: now.unix_timestamp(),
                exp: expires_at.unix_timestamp(),
            })
        })
        .collect()
}

/// How many of `tokens` `api` answers `GET path` for with each status.
async fn statuses(api: &edd_it::services::Api, path: &str, tokens: &[String]) -> Vec<(StatusCode, usize)> {
    let all: Vec<StatusCode> = stream::iter(tokens)
        .map(|t| async move { api.get(path, t).await.unwrap().status })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut counts: Vec<(StatusCode, usize)> = Vec::new();
    for s in all {
        match counts.iter_mut().find(|(c, _)| *c == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    counts
}

/// How many events the `AUTH` stream holds on subjects matching `filter`.
async fn events_on(w: &World, filter: &str) -> usize {
    let stream = w.env.js.get_stream("AUTH").await.unwrap();
    let subjects = stream.info_with_subjects(filter).await.unwrap();
    subjects.map(|s| s.unwrap().1).fold(0, |a, n| async move { a + n }).await
}

#[tokio::test]
async fn revoking_all_sessions_ends_every_one_with_one_event() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;
    let file = format!("/files/{ada}/f1");
    let tokens = mint_sessions(&w, &ada, SESSIONS).await;
    assert_eq!(statuses(&probe, &file, &tokens).await, vec![(StatusCode::OK, SESSIONS)]);
    assert_eq!(statuses(&w.api, "/api/session", &tokens).await, vec![(StatusCode::OK, SESSIONS)]);
    // Auth lists them all (the login's session as well).
    eventually(Duration::from_secs(20), "auth to record every session", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM auth_accounts.sessions WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(&ada)
                .fetch_one(&w.env.db.pool)
                .await?;
        Ok((n == SESSIONS as i64 + 1).then_some(()))
    })
    .await
    .unwrap();

    let started = Instant::now();
    let a = w.api.post("/api/settings/sessions/revoke-all", &session, json!({})).await.unwrap();
    let answered = started.elapsed();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["revoked"], SESSIONS + 1);
    let at_probe = refused_within("revoke-all", Instant::now(), async || {
        probe.get(&file, &tokens[SESSIONS - 1]).await.unwrap().status
    })
    .await;
    // Every one of them, at the probe and at auth itself, and the session that asked.
    assert_eq!(statuses(&probe, &file, &tokens).await, vec![(StatusCode::UNAUTHORIZED, SESSIONS)]);
    assert_eq!(statuses(&w.api, "/api/session", &tokens).await, vec![(StatusCode::UNAUTHORIZED, SESSIONS)]);
    assert_problem(&w.api.get("/api/session", &session).await.unwrap(), StatusCode::UNAUTHORIZED);
    // With one event, not one per session.
    assert_eq!(events_on(&w, &format!("auth.user.{ada}.sessions_revoked")).await, 1);
    assert_eq!(events_on(&w, "auth.session.*.revoked").await, 0);

    // A login right after the answer is not caught by it, anywhere.
    let fresh = w.api.login("ada", PASSWORD).await.unwrap();
    assert_eq!(w.api.get("/api/session", &fresh).await.unwrap().status, StatusCode::OK);
    accepted(&probe, &file, &fresh).await;
    let listed = w.api.get("/api/settings/sessions", &fresh).await.unwrap();
    assert_eq!(listed.body.as_array().unwrap().len(), 1, "{:?}", listed.body);
    println!(
        "revoke-all of {} sessions: answered in {:.1} ms (one event); refused at the probe {:.2} ms after the answer",
        SESSIONS + 1,
        answered.as_secs_f64() * 1e3,
        at_probe.as_secs_f64() * 1e3
    );
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_with_one_event() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;
    let file = format!("/files/{ada}/f1");
    let others = mint_sessions(&w, &ada, 1_100).await;
    let a = w
        .api
        .put("/api/settings/password", &session, json!({"current_password": PASSWORD, "new_password": "password-2"}))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    assert_eq!(statuses(&probe, &file, &others).await, vec![(StatusCode::UNAUTHORIZED, others.len())]);
    // The session that changed it goes on, here and elsewhere.
    assert_eq!(w.api.get("/api/session", &session).await.unwrap().status, StatusCode::OK);
    assert_eq!(probe.get(&file, &session).await.unwrap().status, StatusCode::OK);
    assert_eq!(events_on(&w, "auth.session.*.revoked").await, 0);
    // The event is part of the user's aggregate: the next change to the user expects it.
    let a = w.api.put("/api/settings/profile", &session, json!({"display_name": "Ada L."})).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    // A later revoke-all ends the kept one too.
    let a = w.api.post("/api/settings/sessions/revoke-all", &session, json!({})).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    refused_within("revoke-all after a password change", Instant::now(), async || {
        probe.get(&file, &session).await.unwrap().status
    })
    .await;
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_retires() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;
    let file = format!("/files/{ada}/f1");
    // Verified once, so cached at both.
    accepted(&probe, &file, &session).await;
    assert_eq!(w.api.get("/api/session", &session).await.unwrap().status, StatusCode::OK);
    // Its key's grace ends (as it does a session lifetime after a rotation).
    let retired = SigningKeyRetired {
        kid: Token::new(kid(&session)).unwrap(),
        accept_until: OffsetDateTime::now_utc() - time::Duration::seconds(1),
    };
    w.env.events().append_one(&fixtures::envelope(retired), Expected::Any).await.unwrap();
    refused_within("retired key", Instant::now(), async || probe.get(&file, &session).await.unwrap().status).await;
    refused_within("retired key at auth", Instant::now(), async || {
        w.api.get("/api/session", &session).await.unwrap().status
    })
    .await;
}

#[tokio::test]
async fn a_revoked_signing_key_ends_its_tokens_at_once_even_cached() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;
    let file = format!("/files/{ada}/f1");
    let old_kid = kid(&session);
    // Used once: verified and cached at the probe and at auth.
    accepted(&probe, &file, &session).await;
    assert_eq!(w.api.get("/api/session", &session).await.unwrap().status, StatusCode::OK);

    assert_problem(
        &w.api.post(&format!("/admin/keys/{old_kid}/revoke"), &session, json!({})).await.unwrap(),
        StatusCode::FORBIDDEN,
    );
    assert_problem(
        &w.api.post("/admin/keys/nosuchkey/revoke", &w.admin, json!({})).await.unwrap(),
        StatusCode::NOT_FOUND,
    );

    let started = Instant::now();
    let a = w.api.post(&format!("/admin/keys/{old_kid}/revoke"), &w.admin, json!({})).await.unwrap();
    let answered = started.elapsed();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["revoked"], old_kid);
    let new_kid = a.body["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid, "the active key was revoked, so a new one was rotated in");
    // Refused at once: at auth on the answer, at the probe within the fast path's latency.
    assert_problem(&w.api.get("/api/session", &session).await.unwrap(), StatusCode::UNAUTHORIZED);
    let at_probe =
        refused_within("key revoke", Instant::now(), async || probe.get(&file, &session).await.unwrap().status).await;
    // The administrator's own session was signed with it too.
    assert_problem(&w.api.get("/api/session", &w.admin).await.unwrap(), StatusCode::UNAUTHORIZED);

    // Logins go on, with the new key; the old one is gone from the key set for good.
    let fresh = w.api.login("ada", PASSWORD).await.unwrap();
    assert_eq!(kid(&fresh), new_kid);
    accepted(&probe, &file, &fresh).await;
    let jwks = w.api.call("GET", "/.well-known/jwks.json", None, None).await.unwrap();
    let kids: Vec<&str> = jwks.body["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, vec![new_kid.as_str()]);
    // Again: a no-op.
    let admin = w.api.login(ADMIN, ADMIN_PASSWORD).await.unwrap();
    let again = w.api.post(&format!("/admin/keys/{old_kid}/revoke"), &admin, json!({})).await.unwrap();
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["kid"], new_kid);
    println!(
        "key revoke: answered in {:.1} ms; refused at the probe {:.2} ms after the answer",
        answered.as_secs_f64() * 1e3,
        at_probe.as_secs_f64() * 1e3
    );
}

/// How long after `answered` (negative: before) `at` came, in ms.
fn after(at: Instant, answered: Instant) -> f64 {
    if at >= answered {
        at.duration_since(answered).as_secs_f64() * 1e3
    } else {
        -(answered.duration_since(at).as_secs_f64() * 1e3)
    }
}

/// Reads a WebSocket until the service closes it; the close code and when it came.
fn closed(mut ws: edd_it::world::WebSocket) -> tokio::task::JoinHandle<(Option<u16>, Instant)> {
    tokio::spawn(async move {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return (frame.map(|f| u16::from(f.code)), Instant::now()),
                Some(Ok(_)) => continue,
                _ => return (None, Instant::now()),
            }
        }
    })
}

/// Well under the ping interval of these tests (60 s), where connections used to notice.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn live_notify_connections_close_when_their_session_is_revoked() {
    let w = world_with(NotifyConfig { ping_interval_secs: 60, ..notify_config() }).await;
    let (_, session) = w.user("ada").await;
    let other = w.auth.login("ada", PASSWORD).await.unwrap();
    w.accepted(&other).await;
    let sid = w.auth.get("/api/session", &other).await.unwrap().body["session_id"].as_str().unwrap().to_owned();

    let ws = closed(w.ws(Some(&other), None).await.unwrap());
    let sse = w.sse(Some(&other), None).await.unwrap();
    let sse = tokio::spawn(async move {
        sse.ended(Duration::from_secs(30)).await;
        Instant::now()
    });
    let kept = closed(w.ws(Some(&session), None).await.unwrap());

    let started = Instant::now();
    let a = w.auth.delete(&format!("/api/settings/sessions/{sid}"), &session).await.unwrap();
    let answered = Instant::now();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let (code, ws_at) = tokio::time::timeout(CLOSE_WITHIN, ws).await.expect("the WebSocket closed in time").unwrap();
    assert_eq!(code, Some(1008));
    let sse_at = tokio::time::timeout(CLOSE_WITHIN, sse).await.expect("the SSE stream ended in time").unwrap();
    assert_eq!(w.metric("notify_connections_revoked_total").await, 2.0);
    // The session's other connections are untouched; all of them end with a revoke-all.
    assert!(!kept.is_finished());
    let all_started = Instant::now();
    let a = w.auth.post("/api/settings/sessions/revoke-all", &session, json!({})).await.unwrap();
    let all_answered = Instant::now();
    assert_eq!(a.status, StatusCode::OK);
    let (code, kept_at) = tokio::time::timeout(CLOSE_WITHIN, kept).await.expect("closed by revoke-all").unwrap();
    assert_eq!(code, Some(1008));
    // The revoking call answers once auth's own readers have the event; the fast path is as quick,
    // so the connections close about when it answers (negative: before).
    println!(
        "session revoke (answered in {:.1} ms): WebSocket closed {:.2} ms, SSE ended {:.2} ms after the request \
         ({:.2} / {:.2} ms after the answer)",
        answered.duration_since(started).as_secs_f64() * 1e3,
        ws_at.duration_since(started).as_secs_f64() * 1e3,
        sse_at.duration_since(started).as_secs_f64() * 1e3,
        after(ws_at, answered),
        after(sse_at, answered)
    );
    println!(
        "revoke-all (answered in {:.1} ms, waiting for the next second): WebSocket closed {:.2} ms after the request",
        all_answered.duration_since(all_started).as_secs_f64() * 1e3,
        kept_at.duration_since(all_started).as_secs_f64() * 1e3
    );
}

#[tokio::test]
async fn a_progress_stream_ends_when_its_session_is_revoked() {
    let w = storage_world(&[]).await;
    let (_, session) = w.user("alice").await;
    let other = w.auth.login("alice", PASSWORD).await.unwrap();
    w.accepted(&other).await;
    let sid = w.auth.get("/api/session", &other).await.unwrap().body["session_id"].as_str().unwrap().to_owned();

    // A watcher of a transfer that has not started: the stream stays open until it ends.
    // From the service itself: what is measured is its reaction, not the gateway's.
    let resp = w
        .http
        .get(format!("{}/sse/progress?id=t1", w.storage().url))
        .bearer_auth(&other)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut first = String::new();
    while !first.contains("\"done\":false") {
        let chunk = tokio::time::timeout(CLOSE_WITHIN, body.next())
            .await
            .unwrap_or_else(|_| panic!("the first event, got {first:?}"))
            .unwrap()
            .unwrap();
        first.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ended = tokio::spawn(async move {
        while let Some(Ok(_)) = body.next().await {}
        Instant::now()
    });

    let started = Instant::now();
    let a = w.auth.delete(&format!("/api/settings/sessions/{sid}"), &session).await.unwrap();
    let answered = Instant::now();
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let at = tokio::time::timeout(CLOSE_WITHIN, ended).await.expect("the progress stream ended in time").unwrap();
    println!(
        "session revoke (answered in {:.1} ms): /sse/progress ended {:.2} ms after the request ({:.2} ms after the answer)",
        answered.duration_since(started).as_secs_f64() * 1e3,
        at.duration_since(started).as_secs_f64() * 1e3,
        after(at, answered)
    );
}
