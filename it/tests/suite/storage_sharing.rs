//! Sharing and the catalog: share links (keyed, revocable, expiring, bound to one file), multipart
//! uploads, the catalog rebuilt from the log, and uploads announced live to the owner's WebSocket
//! unless storage's notifications are muted.

use std::time::Duration;

use edd_it::{eventually, services, world::next_json, World};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::storage::{body_bytes, sha256, storage_world, Storage as _};

#[tokio::test]
async fn share_links_multipart_uploads_and_a_rebuilt_catalog() {
    let w = storage_world(&[]).await;
    let (_, token) = w.user("gina").await;
    w.create_namespace(&token, "docs", "private").await;

    // Multipart: two files under a directory, types from the parts.
    let boundary = "XyZ123";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.json\"\r\nContent-Type: application/json\r\n\r\n{{\"a\":1}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.bin\"\r\n\r\nBBBB\r\n--{boundary}--\r\n"
    );
    let resp = w
        .request(reqwest::Method::POST, "/storage/upload?namespace=docs&dir=up", Some(&token))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let stored: Value = resp.json().await.unwrap();
    assert_eq!(stored[0]["path"], "up/a.json");
    assert_eq!(stored[0]["content_type"], "application/json");
    assert_eq!(stored[1]["path"], "up/b.bin");
    assert_eq!(stored[1]["sha256"], sha256(b"BBBB"));

    // A share link reads the file without credentials, only with its key, until revoked.
    let a = w
        .api
        .post("/storage/share", &token, json!({"namespace": "docs", "path": "up/a.json", "expires_in_secs": 3600}))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let link = a.body["url"].as_str().unwrap().to_owned();
    let id = a.body["id"].as_str().unwrap().to_owned();
    let path = &link[link.find("/storage/shared/").unwrap()..];
    let resp = w.get(path, None, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_bytes(resp).await, b"{\"a\":1}");
    let forged = format!("{}x", &path[..path.len() - 1]);
    assert_eq!(w.get(&forged, None, &[]).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(w.get(&format!("/storage/shared/{id}"), None, &[]).await.status(), StatusCode::NOT_FOUND);
    let listed = w.api.get("/storage/shares", &token).await.unwrap();
    assert_eq!(listed.body[0]["id"], id.as_str());
    assert!(listed.body[0].get("key").is_none());
    assert_eq!(w.api.delete(&format!("/storage/shares/{id}"), &token).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(w.get(path, None, &[]).await.status(), StatusCode::GONE);
    // Expired links stop working on their own.
    let a = w
        .api
        .post("/storage/share", &token, json!({"namespace": "docs", "path": "up/b.bin", "expires_in_secs": 1}))
        .await
        .unwrap();
    let link = a.body["url"].as_str().unwrap().to_owned();
    let path = link[link.find("/storage/shared/").unwrap()..].to_owned();
    eventually(Duration::from_secs(10), "the link to expire", || async {
        Ok((w.get(&path, None, &[]).await.status() == StatusCode::GONE).then_some(()))
    })
    .await
    .unwrap();

    // A link is to one file: deleted and uploaded again at the same path, it no longer serves.
    let a = w.api.post("/storage/share", &token, json!({"namespace": "docs", "path": "up/a.json"})).await.unwrap();
    let link = a.body["url"].as_str().unwrap().to_owned();
    let path = link[link.find("/storage/shared/").unwrap()..].to_owned();
    assert_eq!(w.get(&path, None, &[]).await.status(), StatusCode::OK);
    assert_eq!(w.api.delete("/storage/docs/up/a.json", &token).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(w.upload(&token, "/storage/docs/up/a.json", "{\"a\":2}").await.0, StatusCode::CREATED);
    assert_eq!(w.get(&path, None, &[]).await.status(), StatusCode::GONE);
    // Overwritten in place, likewise: the link served the old bytes, never the new ones.
    let a = w.api.post("/storage/share", &token, json!({"namespace": "docs", "path": "up/a.json"})).await.unwrap();
    let link = a.body["url"].as_str().unwrap().to_owned();
    let overwritten = link[link.find("/storage/shared/").unwrap()..].to_owned();
    assert_eq!(body_bytes(w.get(&overwritten, None, &[]).await).await, b"{\"a\":2}");
    assert_eq!(w.upload(&token, "/storage/docs/up/a.json?overwrite=true", "{\"a\":3}").await.0, StatusCode::OK);
    let resp = w.get(&overwritten, None, &[]).await;
    assert_eq!(resp.status(), StatusCode::GONE);
    assert_ne!(body_bytes(resp).await, b"{\"a\":3}");
    let listed = w.api.get("/storage/shares", &token).await.unwrap();
    assert_eq!(listed.body[0]["revoked"], true, "{:?}", listed.body);
    // A link made now is to the new bytes.
    let a = w.api.post("/storage/share", &token, json!({"namespace": "docs", "path": "up/a.json"})).await.unwrap();
    let link = a.body["url"].as_str().unwrap().to_owned();
    let current = link[link.find("/storage/shared/").unwrap()..].to_owned();
    assert_eq!(body_bytes(w.get(&current, None, &[]).await).await, b"{\"a\":3}");
    // A link recorded before links named their bytes is to the file at its path when it was made:
    // it serves that file, and an overwrite ends it too.
    let (ns_id, owner): (String, String) =
        sqlx::query_as("SELECT ns_id, owner FROM storage_catalog.namespaces WHERE name = 'docs'")
            .fetch_one(&w.storage().db().pool)
            .await
            .unwrap();
    let (share_id, key) = (edd_events::Token::random(), "an-old-style-link-key");
    let old = edd_events::catalog::storage::ShareCreated {
        share_id: share_id.clone(),
        ns_id: edd_events::Token::new(ns_id).unwrap(),
        namespace: "docs".into(),
        path: "up/a.json".into(),
        owner: edd_events::Token::new(owner).unwrap(),
        key_sha256: sha256(key.as_bytes()),
        expires_at: time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
        blob: None,
    };
    w.env
        .events()
        .append_one(&edd_events::Envelope::new("storage", old), edd_events::Expected::NoStream)
        .await
        .unwrap();
    let old_link = format!("/storage/shared/{share_id}?key={key}");
    let served = eventually(Duration::from_secs(10), "the old-style link to be applied", || async {
        let resp = w.get(&old_link, None, &[]).await;
        Ok((resp.status() == StatusCode::OK).then_some(resp))
    })
    .await
    .unwrap();
    assert_eq!(body_bytes(served).await, b"{\"a\":3}");
    assert_eq!(w.upload(&token, "/storage/docs/up/a.json?overwrite=true", "{\"a\":4}").await.0, StatusCode::OK);
    assert_eq!(w.get(&old_link, None, &[]).await.status(), StatusCode::GONE);
    assert_eq!(w.get(&current, None, &[]).await.status(), StatusCode::GONE);

    // Some history, then a rebuild of the catalog from the log gives the same tables.
    w.create_namespace(&token, "tmp", "public").await;
    assert_eq!(w.upload(&token, "/storage/tmp/x", "x").await.0, StatusCode::CREATED);
    assert_eq!(w.api.delete("/storage/namespaces/tmp", &token).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(w.api.delete("/storage/docs/up/b.bin", &token).await.unwrap().status, StatusCode::NO_CONTENT);
    let before = catalog_dump(&w).await;
    let report = edd_projections::rebuild::rebuild(
        &w.storage().db().pool,
        &w.env.js,
        &edd_storage::projection::CatalogProjection,
        100,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(report.events >= 8, "{report:?}");
    assert_eq!(catalog_dump(&w).await, before);
    // And the service goes on serving from the rebuilt tables.
    let listed = w.api.get("/storage/files?namespace=docs", &token).await.unwrap();
    assert_eq!(listed.body["files"].as_array().unwrap().len(), 1);
}

/// Every row of the catalog's tables, as text, in a stable order.
async fn catalog_dump(w: &World) -> Vec<String> {
    let mut rows = Vec::new();
    for (table, order) in [("namespaces", "ns_key"), ("files", "ns_id, file_key"), ("shares", "share_id")] {
        let sql = format!("SELECT t::text FROM storage_catalog.{table} t ORDER BY {order}");
        let text: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&w.storage().db().pool).await.unwrap();
        rows.extend(text.into_iter().map(|r| format!("{table}: {r}")));
    }
    rows
}

#[tokio::test]
async fn an_upload_is_announced_on_an_open_websocket_unless_storage_is_muted() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let w = World::builder().storage(&[]).notify(services::notify_config()).gateway().start().await;
    let (hana, token) = w.user("hana").await;
    let notes = w.via("notifications.localhost");
    eventually(Duration::from_secs(15), "the notification service to accept the session", || async {
        Ok((notes.get("/api/notifications/unread-count", &token).await?.status == StatusCode::OK).then_some(()))
    })
    .await
    .unwrap();
    let mut request =
        format!("{}/ws/notifications", w.gateway().url.replacen("http://", "ws://", 1)).into_client_request().unwrap();
    request.headers_mut().insert("host", "notifications.localhost".parse().unwrap());
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    w.create_namespace(&token, "hn", "private").await;
    assert_eq!(w.upload(&token, "/storage/hn/a.txt", "hello").await.0, StatusCode::CREATED);
    let note = next_json(&mut ws).await;
    assert_eq!(note["title"], "File uploaded", "{note}");
    assert_eq!(note["category"], "storage");
    assert_eq!(note["scope"], "hn");

    // Muted: storage's notifications no longer arrive; others still do, in order.
    let a = notes.put("/api/notifications/mutes", &token, json!({"category": "storage"})).await.unwrap();
    assert!(a.status.is_success(), "{:?}", a.body);
    assert_eq!(w.upload(&token, "/storage/hn/b.txt", "muted").await.0, StatusCode::CREATED);
    assert_eq!(w.api.delete("/storage/hn/a.txt", &token).await.unwrap().status, StatusCode::NO_CONTENT);
    services::publish_notification(&w.env, &hana, "Ping", "not muted", "test", None).await.unwrap();
    let note = next_json(&mut ws).await;
    assert_eq!(note["title"], "Ping", "a muted storage notification arrived first: {note}");
    // They were sent (the inbox holds them), only hidden.
    let titles = services::notifications(&w.env, &hana).await.unwrap();
    assert_eq!(titles, ["File uploaded", "File uploaded", "File deleted", "Ping"]);
}
