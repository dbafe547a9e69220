//! The auth service's durability: its projections rebuilt from the log give the same tables, a crash
//! mid-burst loses nothing acknowledged, and a service whose permissions have not loaded refuses.

use std::time::Duration;

use edd_it::{assert_problem, eventually, services::Api, world::scopes};
use reqwest::StatusCode;
use serde_json::json;

use super::auth::{accepted, world};

#[tokio::test]
async fn auth_projections_rebuild_to_the_same_tables() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    w.user("bob").await;
    w.api.put("/api/settings/profile", &session, json!({"display_name": "Ada"})).await.unwrap();
    let sa = w
        .api
        .post(
            "/api/service-accounts",
            &session,
            json!({"name": "s", "scopes": scopes(&[(&format!("storage.{ada}"), &["read"])])}),
        )
        .await
        .unwrap();
    let sa_id = sa.body["id"].as_str().unwrap();
    w.api.post(&format!("/api/service-accounts/{sa_id}/tokens"), &session, json!({"name": "t"})).await.unwrap();
    w.api
        .put(
            &format!("/api/service-accounts/{sa_id}/scopes"),
            &session,
            json!({"scopes": scopes(&[(&format!("compute.{ada}"), &["read"])])}),
        )
        .await
        .unwrap();
    w.api
        .post(
            "/api/tokens",
            &session,
            json!({"name": "p", "scopes": scopes(&[(&format!("registry.{ada}"), &["read"])])}),
        )
        .await
        .unwrap();
    w.api.post("/api/logout", &session, json!({})).await.unwrap();
    w.api.post("/admin/keys/rotate", &w.admin, json!({})).await.unwrap();

    let tables = [
        ("auth_accounts", ["users", "sessions", "service_accounts", "tokens"].as_slice()),
        ("auth_permissions", ["users", "service_accounts", "tokens", "revoked_sessions", "signing_keys"].as_slice()),
    ];
    let dump = |schema: &'static str, table: &'static str| {
        let pool = w.env.db.pool.clone();
        async move {
            let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT t::text FROM {schema}.{table} t ORDER BY 1"))
                .fetch_all(&pool)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.0).collect::<Vec<_>>()
        }
    };
    let mut before = Vec::new();
    for (schema, names) in tables {
        for t in names {
            before.push(dump(schema, t).await);
        }
    }
    assert!(before.iter().all(|rows| !rows.is_empty()), "every table has rows to compare: {before:?}");

    for projection in edd_auth::projections() {
        let mut progress = |_: edd_projections::rebuild::Progress| {};
        edd_projections::rebuild::rebuild(&w.env.db.pool, &w.env.js, projection.as_ref(), 100, &mut progress)
            .await
            .unwrap();
    }
    let mut after = Vec::new();
    for (schema, names) in tables {
        for t in names {
            after.push(dump(schema, t).await);
        }
    }
    assert_eq!(before, after);
    // And the service keeps working on the rebuilt tables.
    assert_eq!(w.api.get("/admin/users", &w.admin).await.unwrap().body.as_array().unwrap().len(), 3);
}

/// The auth process dies (its task is aborted mid-flight) and comes back on the same database:
/// sessions and tokens acknowledged before survive, the signing key survives, and nothing was
/// applied twice.
#[tokio::test]
async fn auth_restart_loses_nothing_acknowledged() {
    let mut w = world().await;
    let (ada, session) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        let t = w
            .api
            .post(
                "/api/tokens",
                &session,
                json!({"name": format!("t{i}"), "scopes": scopes(&[(&format!("storage.{ada}"), &["read"])])}),
            )
            .await
            .unwrap();
        assert_eq!(t.status, StatusCode::CREATED);
        tokens.push(t.body["token"].as_str().unwrap().to_owned());
    }
    // Kill it while a burst of token creations is in flight.
    let api = w.api.clone();
    let s = session.clone();
    let read = scopes(&[(&format!("storage.{ada}"), &["read"])]);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = answered.clone();
    let burst = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..200 {
            match api.post("/api/tokens", &s, json!({"name": format!("b{i}"), "scopes": read})).await {
                Ok(a) if a.status == StatusCode::CREATED => {
                    acknowledged.push(a.body["token"].as_str().unwrap().to_owned())
                }
                _ => {}
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        acknowledged
    });
    eventually(Duration::from_secs(30), "the burst to get going", || async {
        Ok((answered.load(std::sync::atomic::Ordering::SeqCst) >= 3).then_some(()))
    })
    .await
    .unwrap();
    w.auth_service.kill().await.unwrap();
    let acknowledged = burst.await.unwrap();
    assert!(acknowledged.len() >= 3 && acknowledged.len() < 200, "{} acknowledged", acknowledged.len());

    w.auth_service.restart().await.unwrap();
    // The old session token is still valid: same key, same revocation state.
    assert_eq!(w.api.get("/api/session", &session).await.unwrap().status, StatusCode::OK);
    let listed = w.api.get("/api/tokens", &session).await.unwrap();
    let names: Vec<&str> = listed.body.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    let mut dedup = names.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), names.len(), "a token applied twice: {names:?}");
    assert!(names.len() >= 5 + acknowledged.len(), "{} listed, {} acknowledged", names.len(), 5 + acknowledged.len());
    for token in tokens.iter().chain(&acknowledged) {
        assert_eq!(w.api.get("/api/session", token).await.unwrap().status, StatusCode::OK);
        accepted(&probe, &format!("/files/{ada}/x"), token).await;
    }
}

/// Until a service's permissions have caught up it refuses with 503, never allows; NATS being down
/// at start is exactly that case.
#[tokio::test]
async fn a_service_fails_closed_until_its_permissions_load() {
    let mut w = world().await;
    let (ada, session) = w.user("ada").await;
    w.env.nats.kill().await.unwrap();
    let probe = edd_it::services::start_probe(&w.env).await.unwrap();
    let api = Api::new(&probe.running.url);
    let a = api.get(&format!("/files/{ada}/f1"), &session).await.unwrap();
    assert_problem(&a, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.retry_after.is_some());
    w.env.nats.restart().await.unwrap();
    eventually(Duration::from_secs(30), "probe to load permissions after NATS returns", || async {
        Ok((api.get(&format!("/files/{ada}/f1"), &session).await?.status == StatusCode::OK).then_some(()))
    })
    .await
    .unwrap();
    // Wrong credentials are still refused once loaded.
    assert_problem(
        &api.get(&format!("/files/{ada}/f1"), "edd_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
    );
}
