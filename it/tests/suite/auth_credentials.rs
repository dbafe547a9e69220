//! Credentials of every kind (sessions, personal tokens, service-account tokens, forged and expired
//! ones) at a second service (`probe`, built on the kit) that authorizes locally and never calls auth:
//! scopes, ownership, revocations and key rotation.

use std::time::Instant;

use edd_it::{assert_problem, world::scopes};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::auth::{accepted, refused_within, world};

#[tokio::test]
async fn service_accounts_and_tokens_act_within_their_scopes() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;

    // Bad scopes are refused, naming the entry.
    let a = w
        .api
        .post(
            "/api/service-accounts",
            &session,
            json!({"name": "ci", "scopes": scopes(&[("storage.someone-else.files", &["read"])])}),
        )
        .await
        .unwrap();
    assert_problem(&a, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["scope"], "storage.someone-else.files");
    let bad = scopes(&[(&format!("storage.{ada}.files"), &["fly"])]);
    let a = w.api.post("/api/service-accounts", &session, json!({"name": "ci", "scopes": bad})).await.unwrap();
    assert_problem(&a, StatusCode::BAD_REQUEST);

    let read_delete = scopes(&[(&format!("storage.{ada}.files"), &["read", "delete"])]);
    let sa = w.api.post("/api/service-accounts", &session, json!({"name": "ci", "scopes": read_delete})).await.unwrap();
    assert_eq!(sa.status, StatusCode::CREATED, "{:?}", sa.body);
    let sa_id = sa.body["id"].as_str().unwrap().to_owned();
    let t = w
        .api
        .post(
            &format!("/api/service-accounts/{sa_id}/tokens"),
            &session,
            json!({"name": "deploy", "expires_in": "30d"}),
        )
        .await
        .unwrap();
    assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
    let sa_token = t.body["token"].as_str().unwrap().to_owned();
    assert!(sa_token.starts_with("edd_"));
    let listed = w.api.get(&format!("/api/service-accounts/{sa_id}/tokens"), &session).await.unwrap();
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert!(listed.body[0].get("token").is_none(), "the secret is shown once only");
    assert_problem(
        &w.api
            .post(&format!("/api/service-accounts/{sa_id}/tokens"), &session, json!({"name": "x", "expires_in": "7d"}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    );

    // The token works at another service (once its projection has it) for what its scopes allow.
    let file = format!("/files/{ada}/f1");
    accepted(&probe, &file, &sa_token).await;
    assert_eq!(probe.delete(&file, &sa_token).await.unwrap().status, StatusCode::OK);
    assert_eq!(w.api.get("/api/session", &sa_token).await.unwrap().body["kind"], "service_account");
    // API tokens cannot manage the account.
    assert_problem(&w.api.get("/api/tokens", &sa_token).await.unwrap(), StatusCode::FORBIDDEN);
    assert_problem(&probe.get("/admin", &sa_token).await.unwrap(), StatusCode::FORBIDDEN);

    // Narrowing the account's scopes narrows the token already issued.
    let read_only = scopes(&[(&format!("storage.{ada}.files"), &["read"])]);
    let a = w
        .api
        .put(&format!("/api/service-accounts/{sa_id}/scopes"), &session, json!({"scopes": read_only}))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let since = Instant::now();
    refused_within("narrowed scope", since, async || probe.delete(&file, &sa_token).await.unwrap().status).await;
    assert_eq!(probe.get(&file, &sa_token).await.unwrap().status, StatusCode::OK);

    // Personal tokens: scopes of their own, listed without the secret, revocable.
    let pat = w
        .api
        .post(
            "/api/tokens",
            &session,
            json!({"name": "laptop", "scopes": scopes(&[(&format!("storage.{ada}"), &["read"])])}),
        )
        .await
        .unwrap();
    assert_eq!(pat.status, StatusCode::CREATED, "{:?}", pat.body);
    let pat_token = pat.body["token"].as_str().unwrap().to_owned();
    let pat_id = pat.body["id"].as_str().unwrap().to_owned();
    accepted(&probe, &file, &pat_token).await;
    assert_problem(&probe.delete(&file, &pat_token).await.unwrap(), StatusCode::FORBIDDEN);
    let list = w.api.get("/api/tokens", &session).await.unwrap();
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    assert_eq!(w.api.delete(&format!("/api/tokens/{pat_id}"), &session).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_problem(&probe.get(&file, &pat_token).await.unwrap(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.api.delete(&format!("/api/tokens/{pat_id}"), &session).await.unwrap().status, StatusCode::NO_CONTENT);

    // Deleting the service account ends its tokens and notifies the owner.
    assert_eq!(
        w.api.delete(&format!("/api/service-accounts/{sa_id}"), &session).await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    assert_problem(&probe.get(&file, &sa_token).await.unwrap(), StatusCode::UNAUTHORIZED);
    assert_problem(
        &w.api.get(&format!("/api/service-accounts/{sa_id}"), &session).await.unwrap(),
        StatusCode::NOT_FOUND,
    );
    let notes = edd_it::services::notifications(&w.env, &ada).await.unwrap();
    assert_eq!(notes, vec!["Service account created", "Service account deleted"]);
}

#[tokio::test]
async fn another_users_credentials_never_reach_my_resources() {
    let w = world().await;
    let (a_id, a_session) = w.user("alice").await;
    let (b_id, b_session) = w.user("bob").await;
    let (_probe, probe) = w.probe().await;

    // Alice's resources.
    let a_sa = w
        .api
        .post(
            "/api/service-accounts",
            &a_session,
            json!({"name": "a", "scopes": scopes(&[(&format!("storage.{a_id}"), &["read"])])}),
        )
        .await
        .unwrap();
    let a_sa_id = a_sa.body["id"].as_str().unwrap().to_owned();
    let a_pat = w
        .api
        .post(
            "/api/tokens",
            &a_session,
            json!({"name": "a", "scopes": scopes(&[(&format!("storage.{a_id}"), &["read"])])}),
        )
        .await
        .unwrap();
    let a_pat_id = a_pat.body["id"].as_str().unwrap().to_owned();
    let a_sid = w.api.get("/api/session", &a_session).await.unwrap().body["session_id"].as_str().unwrap().to_owned();

    // Bob's three kinds of credential, each with full rights over Bob's own storage.
    let b_scopes = scopes(&[(&format!("storage.{b_id}"), &["create", "read", "update", "delete"])]);
    let b_pat = w.api.post("/api/tokens", &b_session, json!({"name": "b", "scopes": b_scopes.clone()})).await.unwrap();
    let b_sa = w.api.post("/api/service-accounts", &b_session, json!({"name": "b", "scopes": b_scopes})).await.unwrap();
    let b_sa_token = w
        .api
        .post(
            &format!("/api/service-accounts/{}/tokens", b_sa.body["id"].as_str().unwrap()),
            &b_session,
            json!({"name": "b"}),
        )
        .await
        .unwrap();
    let b_creds = [
        ("session", b_session.clone()),
        ("api token", b_pat.body["token"].as_str().unwrap().to_owned()),
        ("sa token", b_sa_token.body["token"].as_str().unwrap().to_owned()),
    ];

    let auth_targets = [
        ("GET", format!("/api/service-accounts/{a_sa_id}")),
        ("DELETE", format!("/api/service-accounts/{a_sa_id}")),
        ("GET", format!("/api/service-accounts/{a_sa_id}/tokens")),
        ("POST", format!("/api/service-accounts/{a_sa_id}/tokens")),
        ("PUT", format!("/api/service-accounts/{a_sa_id}/scopes")),
        ("DELETE", format!("/api/tokens/{a_pat_id}")),
        ("DELETE", format!("/api/settings/sessions/{a_sid}")),
        ("DELETE", format!("/admin/users/{a_id}")),
    ];
    for (_, token) in &b_creds {
        accepted(&probe, &format!("/files/{b_id}/f1"), token).await;
    }
    for (kind, token) in &b_creds {
        for (method, path) in &auth_targets {
            let body = match *method {
                "POST" => Some(json!({"name": "x"})),
                "PUT" => Some(json!({"scopes": scopes(&[(&format!("storage.{b_id}"), &["read"])])})),
                _ => None,
            };
            let a = w.api.call(method, path, Some(token), body).await.unwrap();
            assert!(
                a.status == StatusCode::NOT_FOUND || a.status == StatusCode::FORBIDDEN,
                "bob's {kind} on {method} {path}: {} {:?}",
                a.status,
                a.body
            );
        }
        for method in ["GET", "DELETE"] {
            let a = probe.call(method, &format!("/files/{a_id}/f1"), Some(token), None).await.unwrap();
            assert_problem(&a, StatusCode::NOT_FOUND);
            let own = probe.call(method, &format!("/files/{b_id}/f1"), Some(token), None).await.unwrap();
            assert_eq!(own.status, StatusCode::OK, "bob's {kind} on his own file");
        }
    }
    // A grant naming Alice cannot even be created by Bob.
    let a = w
        .api
        .post(
            "/api/tokens",
            &b_session,
            json!({"name": "x", "scopes": scopes(&[(&format!("storage.{a_id}"), &["read"])])}),
        )
        .await
        .unwrap();
    assert_problem(&a, StatusCode::BAD_REQUEST);
    // Alice's things are untouched.
    assert_eq!(
        w.api.get(&format!("/api/service-accounts/{a_sa_id}"), &a_session).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(w.api.get("/api/session", &a_session).await.unwrap().status, StatusCode::OK);
    assert_eq!(w.api.get("/api/tokens", &a_session).await.unwrap().body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn revocations_reach_another_service_within_milliseconds() {
    let w = world().await;
    let (ada, session) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;
    let file = format!("/files/{ada}/f1");
    let mut report = Vec::new();

    // Logout.
    let other = w.api.login("ada", "password-1").await.unwrap();
    assert_eq!(probe.get(&file, &other).await.unwrap().status, StatusCode::OK);
    assert_eq!(w.api.post("/api/logout", &other, json!({})).await.unwrap().status, StatusCode::NO_CONTENT);
    let t = refused_within("logout", Instant::now(), async || probe.get(&file, &other).await.unwrap().status).await;
    report.push(("logout", t));

    // Session revoked from the settings page.
    let other = w.api.login("ada", "password-1").await.unwrap();
    let sid = w.api.get("/api/session", &other).await.unwrap().body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(probe.get(&file, &other).await.unwrap().status, StatusCode::OK);
    w.api.delete(&format!("/api/settings/sessions/{sid}"), &session).await.unwrap();
    let t =
        refused_within("session revoke", Instant::now(), async || probe.get(&file, &other).await.unwrap().status).await;
    report.push(("session revoke", t));

    // Token revoked.
    let pat = w
        .api
        .post(
            "/api/tokens",
            &session,
            json!({"name": "t", "scopes": scopes(&[(&format!("storage.{ada}"), &["read"])])}),
        )
        .await
        .unwrap();
    let (pat_token, pat_id) =
        (pat.body["token"].as_str().unwrap().to_owned(), pat.body["id"].as_str().unwrap().to_owned());
    accepted(&probe, &file, &pat_token).await;
    w.api.delete(&format!("/api/tokens/{pat_id}"), &session).await.unwrap();
    let t = refused_within("token revoke", Instant::now(), async || probe.get(&file, &pat_token).await.unwrap().status)
        .await;
    report.push(("token revoke", t));

    // Service account deleted.
    let sa = w
        .api
        .post(
            "/api/service-accounts",
            &session,
            json!({"name": "s", "scopes": scopes(&[(&format!("storage.{ada}"), &["read"])])}),
        )
        .await
        .unwrap();
    let sa_id = sa.body["id"].as_str().unwrap().to_owned();
    let sa_token = w
        .api
        .post(&format!("/api/service-accounts/{sa_id}/tokens"), &session, json!({"name": "t"}))
        .await
        .unwrap()
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    accepted(&probe, &file, &sa_token).await;
    w.api.delete(&format!("/api/service-accounts/{sa_id}"), &session).await.unwrap();
    let t =
        refused_within("SA delete", Instant::now(), async || probe.get(&file, &sa_token).await.unwrap().status).await;
    report.push(("SA delete", t));

    for (what, t) in report {
        println!("{what}: refused at probe {:.2} ms after the revoking call answered", t.as_secs_f64() * 1e3);
    }
}

#[tokio::test]
async fn key_rotation_keeps_old_sessions_until_they_expire() {
    let w = world().await;
    let (ada, before) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;
    let file = format!("/files/{ada}/f1");
    let kid = |token: &str| -> String {
        use base64::Engine as _;
        let header = token.split('.').next().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["kid"].as_str().unwrap().to_owned()
    };
    let old_kid = kid(&before);

    let ada_session = w.api.login("ada", "password-1").await.unwrap();
    assert_problem(&w.api.post("/admin/keys/rotate", &ada_session, json!({})).await.unwrap(), StatusCode::FORBIDDEN);
    let rotated = w.api.post("/admin/keys/rotate", &w.admin, json!({})).await.unwrap();
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_kid = rotated.body["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);

    let after = w.api.login("ada", "password-1").await.unwrap();
    assert_eq!(kid(&after), new_kid);
    for token in [&before, &after] {
        accepted(&probe, &file, token).await;
        assert_eq!(w.api.get("/api/session", token).await.unwrap().status, StatusCode::OK);
    }
    let jwks = w.api.call("GET", "/.well-known/jwks.json", None, None).await.unwrap();
    let kids: Vec<&str> = jwks.body["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()), "{kids:?}");
}

#[tokio::test]
async fn tokens_of_the_wrong_type_or_key_are_refused_everywhere() {
    use edd_kit::auth::jwt::{Claims, SigningKey, ISSUER, SESSION, TWO_FACTOR_CHALLENGE};
    let w = world().await;
    let (ada, _) = w.user("ada").await;
    let (_probe, probe) = w.probe().await;
    let file = format!("/files/{ada}/f1");

    let stored = edd_auth::secrets::active_key(&w.env.db.pool).await.unwrap().unwrap();
    let key = SigningKey::from_pkcs8(edd_events::Token::new(stored.kid).unwrap(), &stored.pkcs8).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = |typ: &str| Claims {
        iss: ISSUER.into(),
        sub: ada.clone(),
        sid: "s1".into(),
        typ: typ.into(),
        iat: now,
        exp: now + 600,
    };

    // Signed with the real key, but a 2FA challenge is not a login.
    let challenge = key.sign(&claims(TWO_FACTOR_CHALLENGE));
    // Right type, unknown key.
    let (stranger, _) = SigningKey::generate().unwrap();
    let forged = stranger.sign(&claims(SESSION));
    // Right key and type, but expired.
    let expired = key.sign(&Claims { exp: now - 1, ..claims(SESSION) });
    for token in [&challenge, &forged, &expired] {
        assert_problem(&probe.get(&file, token).await.unwrap(), StatusCode::UNAUTHORIZED);
        assert_problem(&w.api.get("/api/session", token).await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    // The control: the same key mints a working session token, so the refusals above are about type,
    // key and expiry, nothing else.
    assert_eq!(probe.get(&file, &key.sign(&claims(SESSION))).await.unwrap().status, StatusCode::OK);
}
