//! One bad message never stops the platform: garbage and forged events on the source-of-truth
//! streams are quarantined by every reader (a dead letter naming where each came from) and change
//! nothing, while every service keeps answering.

use std::time::Duration;

use edd_events::{
    catalog::{
        auth::{SigningKeyAdded, UserUpdated},
        notify::Notification,
    },
    Envelope, Token,
};
use edd_it::{eventually, services, World};
use reqwest::StatusCode;

use crate::storage::Storage as _;

fn forged<E: edd_events::Event>(source: &str, data: E) -> Vec<u8> {
    serde_json::to_vec(&Envelope::new(source, data)).unwrap()
}

#[tokio::test]
async fn garbage_and_forged_events_on_every_stream_stop_nothing_and_change_nothing() {
    let w = World::builder().storage(&[]).notify(services::notify_config()).gateway().start().await;
    let (ada, session) = w.user("ada").await;
    let ada_token = Token::new(ada.clone()).unwrap();

    // As the issue tried it: two bytes on a key subject; an admin flag and a signing key "from" other
    // services; garbage on the GFS log, the storage catalog, the routes, the inboxes; a notification
    // a service that may not send one made up.
    let messages: Vec<(String, Vec<u8>)> = vec![
        ("auth.key.evil.added".into(), b"{}".to_vec()),
        (
            format!("auth.user.{ada}.updated"),
            forged(
                "storage",
                UserUpdated {
                    user_id: ada_token.clone(),
                    username: "ada".into(),
                    display_name: "Ada".into(),
                    is_admin: true,
                },
            ),
        ),
        (
            "auth.key.evilkid.added".into(),
            forged(
                "gateway",
                SigningKeyAdded {
                    kid: Token::new("evilkid").unwrap(),
                    alg: "EdDSA".into(),
                    public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                },
            ),
        ),
        ("gfs.file.x.created".into(), b"{}".to_vec()),
        ("storage.ns.x.created".into(), b"{}".to_vec()),
        ("gateway.route.x.created".into(), b"{}".to_vec()),
        (format!("inbox.{ada}.read"), b"{}".to_vec()),
        (
            format!("notify.{ada}"),
            forged(
                "gateway",
                Notification {
                    user_id: ada_token.clone(),
                    title: "Forged".into(),
                    message: "from a component that may not send notifications".into(),
                    link: None,
                    category: "auth".into(),
                    scope: None,
                },
            ),
        ),
    ];
    let mut seqs = Vec::new();
    for (subject, payload) in &messages {
        let ack = w.env.js.publish(subject.clone(), payload.clone().into()).await.unwrap().await.unwrap();
        seqs.push((subject.clone(), ack.stream, ack.sequence));
    }

    // Every service keeps answering every kind of request, on state the messages did not change.
    let again = w.auth.login("ada", edd_it::world::PASSWORD).await.unwrap();
    assert_eq!(w.auth.get("/api/session", &again).await.unwrap().status, StatusCode::OK);
    let admin_only = w.auth.get("/admin/users", &again).await.unwrap();
    assert_eq!(admin_only.status, StatusCode::FORBIDDEN, "a forged admin flag was applied: {:?}", admin_only.body);
    w.create_namespace(&session, "after-garbage", "private").await;
    let (status, body) = w.upload(&session, "/storage/after-garbage/a.txt", "still works").await;
    assert_eq!(status, StatusCode::CREATED, "{body}\nGFS:\n{}\nstorage:\n{}", w.gfs().logs(), w.storage().log());
    let read = w.get("/storage/after-garbage/a.txt", Some(&session), &[]).await;
    assert_eq!(read.text().await.unwrap(), "still works");
    let routes = w.via("gateway.localhost").get("/api/routes", &w.admin).await.unwrap();
    assert_eq!(routes.status, StatusCode::OK);
    let notifications = w.via("notifications.localhost");
    let inbox = eventually(Duration::from_secs(10), "the upload's notification", || async {
        let a = notifications.get("/api/notifications", &session).await?;
        let list = a.body["notifications"].as_array().cloned().unwrap_or_default();
        Ok(list.iter().any(|n| n["title"] == "File uploaded").then_some(list))
    })
    .await
    .unwrap();
    assert!(inbox.iter().all(|n| n["title"] != "Forged"), "a forged notification reached the inbox: {inbox:?}");

    // Each message is in the dead letters, with where it came from.
    let dead = eventually(Duration::from_secs(15), "every message dead-lettered", || async {
        let stream = w.env.js.get_stream("DEADLETTER").await?;
        let state = stream.cached_info().state.clone();
        let mut origins = std::collections::BTreeSet::new();
        for n in state.first_sequence..=state.last_sequence {
            let Ok(m) = stream.get_raw_message(n).await else { continue };
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
            origins.insert((header("Edd-Original-Stream"), header("Edd-Original-Sequence")));
        }
        let missing: Vec<_> = seqs
            .iter()
            .filter(|(subject, stream, seq)| {
                // The GFS master records what it passes over in its log, not in DEADLETTER.
                !subject.starts_with("gfs.") && !origins.contains(&(stream.clone(), seq.to_string()))
            })
            .collect();
        Ok(missing.is_empty().then_some(origins))
    })
    .await;
    assert!(dead.is_ok(), "not every message was dead-lettered: {dead:?}");
}

/// The first administrator is made once: deleted by another admin, it does not come back with its
/// old password when auth restarts (the service is ready only once its bootstrap has run).
#[tokio::test]
async fn a_deleted_bootstrap_admin_does_not_come_back_on_restart() {
    let mut w = World::builder().start().await;
    let body = serde_json::json!({"username": "root2", "password": edd_it::world::PASSWORD, "is_admin": true});
    let created = w.auth.post("/admin/users", &w.admin, body).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let root2 = w.auth.login("root2", edd_it::world::PASSWORD).await.unwrap();
    let first = w.auth.get("/api/session", &w.admin).await.unwrap().body["user"]["id"].as_str().unwrap().to_owned();
    let deleted = w.auth.call("DELETE", &format!("/admin/users/{first}"), Some(&root2), None).await.unwrap();
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);

    w.auth_service.restart().await.unwrap();
    let again = w.auth.call(
        "POST",
        "/api/login",
        None,
        Some(serde_json::json!({"username": services::ADMIN, "password": services::ADMIN_PASSWORD})),
    );
    assert_eq!(again.await.unwrap().status, StatusCode::UNAUTHORIZED, "the deleted bootstrap admin came back");
    assert_eq!(w.auth.get("/api/session", &root2).await.unwrap().status, StatusCode::OK);
}

/// Text PostgreSQL cannot store (a NUL) is the client's bad input, not a server error (schemathesis
/// found it on `/api/login`).
#[tokio::test]
async fn a_nul_in_a_login_is_a_bad_request_not_a_server_error() {
    let w = World::builder().start().await;
    let body = serde_json::json!({"username": "ad\u{0}a", "password": "password-1"});
    let a = w.auth.call("POST", "/api/login", None, Some(body)).await.unwrap();
    edd_it::assert_problem(&a, StatusCode::BAD_REQUEST);
}
