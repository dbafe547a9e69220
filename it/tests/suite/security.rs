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

/// An envelope claiming `source` with the catalog type that belongs on `subject`.
fn foreign(source: &str, subject: &str) -> Vec<u8> {
    let ty = edd_events::catalog::all()
        .into_iter()
        .find(|info| edd_events::filter_matches(&info.filter(), subject))
        .map_or("edd.unknown.v1", |info| info.ty);
    let template = UserUpdated {
        user_id: Token::new("u1").unwrap(),
        username: "u1".into(),
        display_name: "U1".into(),
        is_admin: true,
    };
    let mut envelope = serde_json::to_value(Envelope::new(source, template)).unwrap();
    envelope["type"] = ty.into();
    serde_json::to_vec(&envelope).unwrap()
}

/// The component any other than `owner` — the `source` a forged event claims.
fn someone_else(owner: &str) -> &'static str {
    if owner == "gateway" {
        "storage"
    } else {
        "gateway"
    }
}

/// A concrete subject on each source-of-truth family (and notify's work stream), for `user`.
fn family_subjects(family: &str, user: &str) -> Vec<String> {
    match family {
        "auth.>" => vec!["auth.key.evil.added".into(), format!("auth.user.{user}.updated")],
        "notify.>" => vec![format!("notify.{user}")],
        "gateway.>" => vec!["gateway.route.x.created".into()],
        "storage.>" => vec!["storage.ns.x.created".into()],
        "inbox.>" => vec![format!("inbox.{user}.read")],
        "gfs.>" => vec!["gfs.file.x.created".into()],
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn garbage_forged_and_oversized_events_from_every_credential_stop_nothing_and_change_nothing() {
    let w = World::builder().storage(&[]).notify(services::notify_config()).gateway().start().await;
    let (ada, session) = w.user("ada").await;
    let ada_token = Token::new(ada.clone()).unwrap();

    // Each component's own credential, on every family it may publish to: the broker lets these in
    // (the component owns the subject), so only the readers' checks stand between them and the
    // platform — a buggy or old component, as the issue puts it.
    let mut messages: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for identity in edd_events::access::IDENTITIES.iter().filter(|i| !i.operator) {
        let row = edd_events::catalog::publishers::PUBLISHERS.iter().find(|p| p.component == identity.name).unwrap();
        for family in row.subjects {
            for subject in family_subjects(family, &ada) {
                messages.push((identity.name, subject.clone(), b"{}".to_vec()));
                messages.push((identity.name, subject.clone(), foreign(someone_else(identity.name), &subject)));
                // Just under the stream's limit, and not an envelope.
                let big = vec![b'x'; edd_events::streams::MAX_EVENT_BYTES as usize - 4096];
                messages.push((identity.name, subject.clone(), big));
            }
        }
    }
    // As the issue tried it: an admin flag and a signing key "from" other services, published with
    // auth's credential; a notification a service that may not send one made up.
    let admin_flag =
        UserUpdated { user_id: ada_token.clone(), username: "ada".into(), display_name: "Ada".into(), is_admin: true };
    messages.push(("auth", format!("auth.user.{ada}.updated"), forged("storage", admin_flag)));
    let key = SigningKeyAdded {
        kid: Token::new("evilkid").unwrap(),
        alg: "EdDSA".into(),
        public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
    };
    messages.push(("auth", "auth.key.evilkid.added".into(), forged("gateway", key)));
    let made_up = Notification {
        user_id: ada_token.clone(),
        title: "Forged".into(),
        message: "from a component that may not send notifications".into(),
        link: None,
        category: "auth".into(),
        scope: None,
    };
    messages.push(("storage", format!("notify.{ada}"), forged("gateway", made_up)));

    let mut seqs = Vec::new();
    let mut connections = std::collections::BTreeMap::new();
    for (identity, subject, payload) in &messages {
        if !connections.contains_key(identity) {
            connections.insert(*identity, w.env.js_as(identity).await.unwrap());
        }
        let js = &connections[identity];
        let ack = js.publish(subject.clone(), payload.clone().into()).await.unwrap().await;
        let ack = ack.unwrap_or_else(|e| panic!("{identity} may publish on {subject}: {e}"));
        seqs.push((subject.clone(), ack.stream, ack.sequence));
    }
    // Over the limit, the broker refuses it: nothing is stored.
    let over = vec![b'x'; edd_events::streams::MAX_EVENT_BYTES as usize + 1];
    let refused = connections["storage"].publish("storage.ns.y.created", over.into()).await;
    assert!(refused.is_err() || refused.unwrap().await.is_err(), "an oversized event was stored");

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
    assert_eq!(routes.status, StatusCode::OK, "{:?}", routes.body);
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
    let dead = eventually(Duration::from_secs(20), "every message dead-lettered", || async {
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

/// The broker is the first line: a component's credential publishes only on what it owns (the
/// server refuses the rest, and nothing reaches the stream), and a connection without one of the
/// platform's identities is not let in.
#[tokio::test]
async fn a_component_publishes_only_what_it_owns_and_strangers_are_refused() {
    let env = edd_it::TestEnv::new().await.unwrap();
    let violations = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = violations.clone();
    let storage = env.nats.credential("storage").unwrap();
    let client = edd_events::options("storage-as-intruder", Some(&storage))
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(env.nats.url())
        .await
        .unwrap();
    let before = |stream: &'static str| {
        let js = env.js.clone();
        async move { js.get_stream(stream).await.unwrap().info().await.unwrap().state.last_sequence }
    };
    let (auth_before, gateway_before) = (before("AUTH").await, before("GATEWAY").await);
    let key = SigningKeyAdded {
        kid: Token::new("evil").unwrap(),
        alg: "EdDSA".into(),
        public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
    };
    let attempts = [
        ("auth.key.evil.added", forged("auth", key)),
        ("auth.user.u1.updated", b"{}".to_vec()),
        ("gateway.route.r1.created", b"{}".to_vec()),
        ("$JS.API.STREAM.DELETE.STORAGE", Vec::new()),
    ];
    for (subject, payload) in &attempts {
        client.publish(*subject, payload.clone().into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let refused = eventually(Duration::from_secs(5), "the server to refuse every publish", || async {
        let seen = violations.lock().unwrap().clone();
        let all = attempts.iter().all(|(subject, _)| seen.iter().any(|v| v.contains(subject)));
        Ok(all.then_some(seen))
    })
    .await
    .unwrap();
    assert!(refused.iter().all(|v| v.to_lowercase().contains("permissions violation")), "{refused:?}");
    // Nothing reached the streams: the next stored message follows the last one before.
    let marker = |subject: &'static str| {
        let js = env.js.clone();
        async move { js.publish(subject, "marker".into()).await.unwrap().await.unwrap().sequence }
    };
    assert_eq!(marker("auth.marker").await, auth_before + 1);
    assert_eq!(marker("gateway.marker").await, gateway_before + 1);
    assert!(env.js.get_stream("STORAGE").await.is_ok(), "storage deleted its stream");

    // No credential, a wrong password, another component's name: refused at connect.
    let url = env.nats.url();
    let anonymous = edd_events::options("anonymous", None).connect(&url).await;
    assert!(anonymous.is_err(), "an anonymous connection was let in");
    let wrong = edd_events::Credential::new("auth", "not-the-password");
    assert!(edd_events::options("wrong", Some(&wrong)).connect(&url).await.is_err(), "a wrong password was let in");
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

/// Each service's database is its own: its role owns that database only, is no superuser, and
/// cannot connect to another's — not to auth's, whose private schema holds the password hashes and
/// signing keys.
#[tokio::test]
async fn a_service_role_owns_only_its_database_and_cannot_reach_auths() {
    let w = World::builder().storage(&[]).start().await;
    let (storage, auth) = (w.storage().db(), &w.env.db);

    let (superuser, createdb, createrole): (bool, bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&storage.pool)
            .await
            .unwrap();
    assert!(!superuser && !createdb && !createrole, "the storage role has administrator powers");

    // Storage's own login, pointed at auth's database: refused at connect.
    let (server, _) = storage.url().rsplit_once('/').unwrap();
    let elsewhere = format!("{server}/{}", auth.name);
    let refused = sqlx::PgPool::connect(&elsewhere).await.expect_err("the storage role connected to auth's database");
    let code = refused.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "{refused}");

    // Auth's private schema belongs to auth's role, and no other role may use it.
    let owner: String =
        sqlx::query_scalar("SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'auth_private'")
            .fetch_one(&auth.pool)
            .await
            .unwrap();
    assert_eq!(owner, auth.name);
    let usage: bool = sqlx::query_scalar("SELECT has_schema_privilege($1, 'auth_private', 'USAGE')")
        .bind(&storage.name)
        .fetch_one(&auth.pool)
        .await
        .unwrap();
    assert!(!usage, "the storage role may use auth_private");
}
