//! The auth service through its HTTP API on real NATS and PostgreSQL, and local authorization at a
//! second service (`probe`, built on the kit) that never calls auth.

use std::time::{Duration, Instant};

use edd_auth::{AuthConfig, Signup};
use edd_it::{
    assert_problem, eventually, eventually_every,
    services::{test_config, Api, ADMIN, ADMIN_PASSWORD},
    world::scopes,
    World,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The auth service alone, with the test settings or `config`.
pub(crate) async fn world() -> World {
    World::builder().start().await
}

pub(crate) async fn world_with(config: AuthConfig) -> World {
    World::builder().auth(config).start().await
}

/// Waits until another service accepts `token` on `path`: a credential created at auth reaches other
/// services through their permissions projection, milliseconds later (only auth reads its own writes).
pub(crate) async fn accepted(api: &Api, path: &str, token: &str) {
    eventually(Duration::from_secs(10), "the credential to be accepted", || async {
        Ok((api.get(path, token).await?.status == StatusCode::OK).then_some(()))
    })
    .await
    .unwrap();
}

/// Waits until `check` says refused, returning how long it took from `since`; asks again as soon as
/// it has answered, so the time is the service's, not a polling interval's.
pub(crate) async fn refused_within(what: &str, since: Instant, check: impl AsyncFn() -> StatusCode) -> Duration {
    let last = std::cell::Cell::new(None);
    let deadline = since + Duration::from_secs(10);
    eventually_every(Duration::ZERO, deadline.saturating_duration_since(Instant::now()), what, || async {
        let status = check().await;
        last.set(Some(status));
        Ok((status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN).then(|| since.elapsed()))
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: still {} after 10 s", last.get().map_or("unasked".into(), |s| s.to_string())))
}

#[tokio::test]
async fn login_session_logout() {
    let w = world().await;
    let me = w.api.get("/api/session", &w.admin).await.unwrap();
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["username"], ADMIN);
    assert_eq!(me.body["user"]["is_admin"], true);
    assert_eq!(me.body["kind"], "session");

    let login = w
        .api
        .call("POST", "/api/login", None, Some(json!({"username": ADMIN, "password": ADMIN_PASSWORD})))
        .await
        .unwrap();
    let cookie = login.set_cookie.unwrap();
    assert!(cookie.starts_with("token=") && cookie.contains("HttpOnly"), "{cookie}");

    for body in
        [json!({"username": ADMIN, "password": "wrong-password"}), json!({"username": "nobody", "password": "x"})]
    {
        let a = w.api.call("POST", "/api/login", None, Some(body)).await.unwrap();
        assert_problem(&a, StatusCode::UNAUTHORIZED);
        assert_eq!(a.body["detail"], "invalid username or password");
    }
    let a = w.api.call("POST", "/api/login", None, Some(json!({"username": ADMIN}))).await.unwrap();
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY);
    let a = w.api.call("GET", "/api/session", None, None).await.unwrap();
    assert_problem(&a, StatusCode::UNAUTHORIZED);
    let a = w.api.get("/api/session", "not-a-token").await.unwrap();
    assert_problem(&a, StatusCode::UNAUTHORIZED);

    assert_eq!(w.api.post("/api/logout", &w.admin, json!({})).await.unwrap().status, StatusCode::NO_CONTENT);
    let a = w.api.get("/api/session", &w.admin).await.unwrap();
    assert_problem(&a, StatusCode::UNAUTHORIZED);
    assert_eq!(a.body["detail"], "token has been revoked");
    // The health endpoints need no credential; the JWKS is public.
    assert_eq!(w.api.call("GET", "/healthz", None, None).await.unwrap().status, StatusCode::OK);
    let jwks = w.api.call("GET", "/.well-known/jwks.json", None, None).await.unwrap();
    assert_eq!(jwks.body["keys"][0]["crv"], "Ed25519");
}

#[tokio::test]
async fn admin_manages_users() {
    let w = world().await;
    let (ada, ada_token) = w.user("ada").await;

    let a = w.api.post("/admin/users", &w.admin, json!({"username": "ADA", "password": "password-1"})).await.unwrap();
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY); // uppercase is not a valid username
    let a = w.api.post("/admin/users", &w.admin, json!({"username": "ada", "password": "password-2"})).await.unwrap();
    assert_problem(&a, StatusCode::CONFLICT);
    let a = w.api.post("/admin/users", &w.admin, json!({"username": "bob", "password": "short"})).await.unwrap();
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.body["field"], "password");
    let a = w.api.call("POST", "/admin/users", Some(&w.admin), None).await.unwrap();
    assert_problem(&a, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let users = w.api.get("/admin/users", &w.admin).await.unwrap();
    assert_eq!(users.body.as_array().unwrap().len(), 2);
    assert_problem(&w.api.get("/admin/users", &ada_token).await.unwrap(), StatusCode::FORBIDDEN);
    assert_problem(&w.api.get("/admin/sessions", &ada_token).await.unwrap(), StatusCode::FORBIDDEN);
    let sessions = w.api.get("/admin/sessions", &w.admin).await.unwrap();
    assert!(sessions.body.as_array().unwrap().iter().any(|s| s["username"] == "ada"));

    let admin_id = w.api.get("/api/session", &w.admin).await.unwrap().body["user"]["id"].as_str().unwrap().to_owned();
    assert_problem(&w.api.delete(&format!("/admin/users/{admin_id}"), &w.admin).await.unwrap(), StatusCode::CONFLICT);
    assert_problem(&w.api.delete("/admin/users/nope", &w.admin).await.unwrap(), StatusCode::NOT_FOUND);
    assert_eq!(w.api.delete(&format!("/admin/users/{ada}"), &w.admin).await.unwrap().status, StatusCode::NO_CONTENT);

    // The deleted user's session stops working and the name is free again.
    assert_problem(&w.api.get("/api/session", &ada_token).await.unwrap(), StatusCode::UNAUTHORIZED);
    assert!(w.api.login("ada", "password-1").await.is_err());
    let again = w.api.create_user(&w.admin, "ada", "password-3").await.unwrap();
    assert_ne!(again, ada);
    w.api.login("ada", "password-3").await.unwrap();
}

#[tokio::test]
async fn settings_profile_password_sessions() {
    let w = world().await;
    let (_, first) = w.user("ada").await;
    let second = w.api.login("ada", "password-1").await.unwrap();

    let a = w.api.put("/api/settings/profile", &first, json!({"display_name": "Ada L."})).await.unwrap();
    assert_eq!(a.body["display_name"], "Ada L.");
    assert_problem(
        &w.api.put("/api/settings/profile", &first, json!({"display_name": ""})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    );

    let sessions = w.api.get("/api/settings/sessions", &first).await.unwrap();
    let list = sessions.body.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    // Someone else's session id is not found, not forbidden.
    let admin_sessions = w.api.get("/api/settings/sessions", &w.admin).await.unwrap();
    let admin_sid = admin_sessions.body[0]["id"].as_str().unwrap().to_owned();
    assert_problem(
        &w.api.delete(&format!("/api/settings/sessions/{admin_sid}"), &first).await.unwrap(),
        StatusCode::NOT_FOUND,
    );

    let wrong = json!({"current_password": "nope-nope", "new_password": "password-2"});
    assert_problem(&w.api.put("/api/settings/password", &first, wrong).await.unwrap(), StatusCode::FORBIDDEN);
    let right = json!({"current_password": "password-1", "new_password": "password-2"});
    assert_eq!(w.api.put("/api/settings/password", &first, right).await.unwrap().status, StatusCode::NO_CONTENT);
    // The other session is gone, this one stays; only the new password works.
    assert_problem(&w.api.get("/api/session", &second).await.unwrap(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.api.get("/api/session", &first).await.unwrap().status, StatusCode::OK);
    assert!(w.api.login("ada", "password-1").await.is_err());
    let third = w.api.login("ada", "password-2").await.unwrap();

    let third_sid = w.api.get("/api/session", &third).await.unwrap().body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(
        w.api.delete(&format!("/api/settings/sessions/{third_sid}"), &first).await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    assert_problem(&w.api.get("/api/session", &third).await.unwrap(), StatusCode::UNAUTHORIZED);

    let _fourth = w.api.login("ada", "password-2").await.unwrap();
    let a = w.api.post("/api/settings/sessions/revoke-all", &first, json!({})).await.unwrap();
    assert_eq!(a.body["revoked"], 2);
    assert_problem(&w.api.get("/api/session", &first).await.unwrap(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signup_is_closed_by_default_and_works_when_open() {
    let w = world().await;
    let body = json!({"username": "eve", "password": "password-1"});
    assert_problem(&w.api.call("POST", "/api/signup", None, Some(body.clone())).await.unwrap(), StatusCode::FORBIDDEN);
    drop(w);

    let w = world_with(AuthConfig { signup: Signup::Open, ..test_config() }).await;
    let a = w.api.call("POST", "/api/signup", None, Some(body.clone())).await.unwrap();
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(a.body["is_admin"], false);
    w.api.login("eve", "password-1").await.unwrap();
    assert_problem(&w.api.call("POST", "/api/signup", None, Some(body)).await.unwrap(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let w = world_with(AuthConfig { login_limit_user: 3, login_limit_ip: 5, ..test_config() }).await;
    w.api.create_user(&w.admin, "ada", "password-1").await.unwrap();
    let attempt = |user: &str, pw: &str| {
        let api = w.api.clone();
        let body = json!({"username": user, "password": pw});
        async move { api.call("POST", "/api/login", None, Some(body)).await.unwrap() }
    };
    for _ in 0..3 {
        assert_eq!(attempt("ada", "wrong-pass").await.status, StatusCode::UNAUTHORIZED);
    }
    // The username's budget is spent: even the right password waits.
    let limited = attempt("ada", "password-1").await;
    assert_problem(&limited, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.retry_after.unwrap().parse::<u64>().unwrap() > 0);
    // Other usernames from the same address have the IP's remaining budget (5 - 3 = 2).
    assert_eq!(attempt("nobody", "x-x-x-x-x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(attempt("nobody2", "x-x-x-x-x").await.status, StatusCode::UNAUTHORIZED);
    assert_problem(&attempt("admin", ADMIN_PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
}

/// The CLI against the real service: login (password on stdin), whoami, a token, logout; the stored
/// session file is private.
#[tokio::test]
async fn the_cli_logs_in_creates_a_token_and_logs_out() {
    use std::os::unix::fs::PermissionsExt as _;
    let w = world().await;
    let dir = std::env::temp_dir().join(format!("edd-cli-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    let edd = edd_it::gfs::edd_binary().unwrap();
    let run = async |args: &[&str], stdin: Option<&str>| {
        let mut child = tokio::process::Command::new(&edd)
            .args(args)
            .env("EDD_CONFIG", &config)
            .env("EDD_AUTH_URL", &w.auth_service.url)
            .env_remove("EDD_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            use tokio::io::AsyncWriteExt as _;
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(&["login", "--username", ADMIN, "--password-stdin"], Some("wrong-password\n")).await;
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) =
        run(&["login", "--username", ADMIN, "--password-stdin"], Some(&format!("{ADMIN_PASSWORD}\n"))).await;
    assert!(ok, "{out}{err}");
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);

    let (ok, out, _) = run(&["whoami", "--json"], None).await;
    assert!(ok);
    let me: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(me["user"]["username"], ADMIN);
    let id = me["user"]["id"].as_str().unwrap().to_owned();

    let (ok, token, err) = run(&["tokens", "create", "ci", "--scope", &format!("registry.{id}=read")], None).await;
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert_eq!(w.api.get("/api/session", &token).await.unwrap().body["kind"], "api_token");
    let (ok, _, err) = run(&["tokens", "create", "ci", "--scope", "registry.someone=read"], None).await;
    assert!(!ok && err.contains("registry.someone"), "{err}");

    let (ok, _, _) = run(&["logout"], None).await;
    assert!(ok);
    let (ok, _, err) = run(&["whoami"], None).await;
    assert!(!ok && err.contains("edd login"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A crash between claiming a username and creating the user leaves a claim with no user. Within the
/// grace period the name stays taken (the creation may still be in flight); after it, asking for the
/// name releases the abandoned claim. A name held by a real user is never released this way.
#[tokio::test]
async fn an_abandoned_username_claim_is_released_after_the_grace_period() {
    let kind = edd_events::Token::new("username").unwrap();
    let body = json!({"username": "ghost", "password": "password-1"});

    let w = world().await;
    w.env.events().claim("auth", &kind, "ghost", "never-created").await.unwrap();
    assert_problem(&w.api.post("/admin/users", &w.admin, body.clone()).await.unwrap(), StatusCode::CONFLICT);
    drop(w);

    let w = world_with(AuthConfig { claim_grace_secs: 0, ..test_config() }).await;
    w.env.events().claim("auth", &kind, "ghost", "never-created").await.unwrap();
    let created = w.api.post("/admin/users", &w.admin, body.clone()).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    w.api.login("ghost", "password-1").await.unwrap();
    assert_problem(&w.api.post("/admin/users", &w.admin, body).await.unwrap(), StatusCode::CONFLICT);
}

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
