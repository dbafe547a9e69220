//! The auth service through its HTTP API on real NATS and PostgreSQL: logins and sessions, users,
//! settings, signup, the login rate limit, username claims and the CLI. Credentials at another
//! service are in `auth_credentials`, restarts and rebuilds in `auth_recovery`.

use std::time::{Duration, Instant};

use edd_auth::{AuthConfig, Signup};
use edd_it::{
    assert_problem, eventually, eventually_every,
    services::{test_config, Api, ADMIN, ADMIN_PASSWORD},
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
    // From this client the username now waits (a second, doubling): even the right password. (Other
    // clients are not slowed: `auth_limits`.)
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
