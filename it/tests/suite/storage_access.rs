//! Who reaches what in storage: another user with any kind of credential, tokens scoped narrower
//! than their owner, public namespaces, the administrators' views; and a deleted user's namespaces
//! and files going with them.

use std::time::Duration;

use edd_it::{eventually, world::scopes, World};
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::storage::{body_bytes, header, piece, storage_world, Storage as _};

/// Every route on alice's private namespace, as (method, path, body).
fn alices_routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/storage/namespaces/secret", None),
        ("PUT", "/storage/namespaces/secret", Some(json!({"visibility": "public"}))),
        ("DELETE", "/storage/namespaces/secret", None),
        ("GET", "/storage/files?namespace=secret", None),
        ("GET", "/storage/secret/doc.txt", None),
        ("GET", "/storage/download/secret/doc.txt", None),
        ("POST", "/storage/secret/new.txt", None),
        ("DELETE", "/storage/secret/doc.txt", None),
        ("POST", "/storage/share", Some(json!({"namespace": "secret", "path": "doc.txt"}))),
    ]
}

async fn call(w: &World, method: &str, path: &str, token: Option<&str>, body: &Option<Value>) -> StatusCode {
    let mut req = w.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), path, token);
    req = match body {
        Some(body) => req.json(body),
        None if method == "POST" => req.body("intruder"),
        None => req,
    };
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn another_user_reaches_nothing_of_alices_with_any_kind_of_token() {
    let w = storage_world(&[]).await;
    let (alice, alice_session) = w.user("alice").await;
    let (bob, bob_session) = w.user("bob").await;
    w.create_namespace(&alice_session, "secret", "private").await;
    let (status, body) = w.upload(&alice_session, "/storage/secret/doc.txt", "top secret").await;
    assert_eq!(status, StatusCode::CREATED, "{body} {}", w.storage().log());

    // Bob's three kinds of credential, each with every storage right over his own things.
    let all = scopes(&[(&format!("storage.{bob}"), &["create", "read", "update", "delete"])]);
    let bob_token = w.token(&bob_session, "t", all.clone()).await;
    let sa_id = w.service_account(&bob_session, "ci", all).await;
    let bob_sa = w.service_account_token(&bob_session, &sa_id, json!({"name": "d", "expires_in": "30d"})).await;
    w.accepted(&bob_token).await;
    w.accepted(&bob_sa).await;

    for (method, path, body) in alices_routes() {
        for (kind, token) in [("session", &bob_session), ("api token", &bob_token), ("service account", &bob_sa)] {
            let status = call(&w, method, path, Some(token), &body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "bob's {kind}: {method} {path}");
        }
        // Anonymous reads of a private file are 404 like bob's (existence not confirmed); the rest
        // need a credential before anything else.
        let anonymous =
            if method == "GET" && path.ends_with("doc.txt") { StatusCode::NOT_FOUND } else { StatusCode::UNAUTHORIZED };
        assert_eq!(call(&w, method, path, None, &body).await, anonymous, "anonymous: {method} {path}");
    }
    // Bob does not see alice's namespace among his, nor can he take its name in any case.
    let mine = w.api.get("/storage/namespaces", &bob_session).await.unwrap();
    assert_eq!(mine.body, json!([]));
    let a = w.api.post("/storage/namespaces", &bob_session, json!({"name": "SECRET"})).await.unwrap();
    assert_eq!(a.status, StatusCode::CONFLICT, "{:?}", a.body);

    // Alice's own token without the storage scope: 403 naming the scope; read-only reads but no more.
    let unscoped = w.token(&alice_session, "none", scopes(&[(&format!("compute.{alice}"), &["read"])])).await;
    let read_only = scopes(&[(&format!("storage.{alice}.files.secret"), &["read"])]);
    let reader = w.token(&alice_session, "ro", read_only).await;
    w.accepted(&reader).await;
    eventually(Duration::from_secs(10), "the unscoped token to be known", || async {
        Ok((w.get("/storage/secret/doc.txt", Some(&unscoped), &[]).await.status() == StatusCode::FORBIDDEN)
            .then_some(()))
    })
    .await
    .unwrap();
    let resp = w.get("/storage/secret/doc.txt", Some(&reader), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_bytes(resp).await, b"top secret");
    assert_eq!(w.upload(&reader, "/storage/secret/other.txt", "x").await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&w, "DELETE", "/storage/secret/doc.txt", Some(&reader), &None).await, StatusCode::FORBIDDEN);
    assert_eq!(call(&w, "GET", "/storage/namespaces", Some(&reader), &None).await, StatusCode::FORBIDDEN);
    // A token that may create files but not delete them cannot destroy one by overwriting it.
    let create_only = scopes(&[(&format!("storage.{alice}.files.secret"), &["create", "read"])]);
    let creator = w.token(&alice_session, "co", create_only).await;
    w.accepted(&creator).await;
    assert_eq!(w.upload(&creator, "/storage/secret/fresh.txt", "new").await.0, StatusCode::CREATED);
    assert_eq!(w.upload(&creator, "/storage/secret/doc.txt?overwrite=true", "gone").await.0, StatusCode::FORBIDDEN);

    // Anyone signed in sees the file system's health; only administrators see where its master is.
    let status = w.api.get("/storage/status", &bob_session).await.unwrap();
    assert_eq!(status.status, StatusCode::OK, "{:?}", status.body);
    assert_eq!(status.body["healthy"], true);
    assert_eq!(status.body["chunkservers_live"], 3);
    assert!(status.body.get("active_master").is_none());
    let status = w.api.get("/storage/status", &w.admin).await.unwrap();
    assert_eq!(status.body["active_master"], w.gfs().master_addrs[0].as_str());

    // Public: anyone with the link reads; nobody else lists, writes or deletes.
    let a = w.api.put("/storage/namespaces/secret", &alice_session, json!({"visibility": "public"})).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["visibility"], "public");
    let resp = w.get("/storage/secret/doc.txt", None, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "cache-control"), "public, no-cache");
    assert_eq!(w.get("/storage/secret/doc.txt", Some(&bob_token), &[]).await.status(), StatusCode::OK);
    assert_eq!(
        call(&w, "GET", "/storage/files?namespace=secret", Some(&bob_session), &None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(&w, "POST", "/storage/secret/x.txt", Some(&bob_session), &None).await, StatusCode::NOT_FOUND);
    assert_eq!(call(&w, "DELETE", "/storage/secret/doc.txt", Some(&bob_sa), &None).await, StatusCode::NOT_FOUND);
    assert_eq!(w.api.get("/storage/namespaces", &bob_session).await.unwrap().body, json!([]));

    // Admin views list everything, to administrators only.
    assert_eq!(w.api.get("/admin/namespaces", &bob_session).await.unwrap().status, StatusCode::FORBIDDEN);
    let all = w.api.get("/admin/namespaces", &w.admin).await.unwrap();
    assert_eq!(all.body[0]["name"], "secret");
    assert_eq!(all.body[0]["owner"], alice);
    let files = w.api.get("/admin/files?namespace=secret", &w.admin).await.unwrap();
    assert_eq!(files.body["files"][0]["path"], "doc.txt");
}

#[tokio::test]
async fn deleting_a_user_deletes_their_namespaces_and_files_from_gfs() {
    let w = storage_world(&[]).await;
    let (erin, token) = w.user("erin").await;
    let (_, frank) = w.user("frank").await;
    for ns in ["e1", "e2"] {
        w.create_namespace(&token, ns, "private").await;
        for i in 0..3 {
            assert_eq!(
                w.upload(&token, &format!("/storage/{ns}/f{i}"), piece(i, 0, 100_000)).await.0,
                StatusCode::CREATED
            );
        }
    }
    w.create_namespace(&frank, "frank", "private").await;
    assert_eq!(w.upload(&frank, "/storage/frank/keep", "mine").await.0, StatusCode::CREATED);
    let chunks = w.chunks().await;
    assert_eq!(w.blobs().await.len(), 7);

    let a = w.auth.delete(&format!("/admin/users/{erin}"), &w.admin).await.unwrap();
    assert!(a.status.is_success(), "{:?}", a.body);
    eventually(Duration::from_secs(30), "erin's blobs to be deleted", || async {
        Ok((w.blobs().await.len() == 1).then_some(()))
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "GFS chunk count to drop", || async {
        Ok((w.chunks().await <= chunks - 6).then_some(()))
    })
    .await
    .unwrap();
    let all = w.api.get("/admin/namespaces", &w.admin).await.unwrap();
    let names: Vec<_> = all.body.as_array().unwrap().iter().map(|n| n["name"].clone()).collect();
    assert_eq!(names, vec![json!("frank")]);
    // The deletions are events, one per namespace, saying why.
    let deleted = stored_events(&w, "storage.ns.*.deleted").await;
    assert_eq!(deleted.len(), 2);
    assert!(deleted.iter().all(|e| e["data"]["reason"] == "user_deleted" && e["data"]["files"] == 3));
    // The names are free again.
    let a = w.api.post("/storage/namespaces", &frank, json!({"name": "e1"})).await.unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(a.body["files"], 0);
}

/// The envelopes stored under `filter` in STORAGE.
async fn stored_events(w: &World, filter: &str) -> Vec<Value> {
    let head = edd_events::consume::stream_head(&w.env.js, "STORAGE").await.unwrap();
    let mut out = Vec::new();
    let mut replay = edd_events::consume::replay(&w.env.js, "STORAGE", &[filter.to_owned()], 1).await.unwrap();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(2), replay.next()).await {
        let stored = item.unwrap();
        out.push(serde_json::from_slice(&stored.payload).unwrap());
        if stored.pending == 0 || stored.seq >= head {
            break;
        }
    }
    out
}
