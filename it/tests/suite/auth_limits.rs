//! Password guessing and cross-site requests against the real auth service: the login limits under
//! parallel requests and behind the gateway (each real client counted on its own, no username
//! locked by someone else), the CSRF rule for cookie-authenticated changes, and `Secure` cookies
//! over HTTPS.
//!
//! Distinct clients are distinct loopback addresses: Linux routes all of 127.0.0.0/8 to `lo`, so a
//! client bound to 127.0.0.2 and one bound to 127.0.0.3 reach the gateway from two addresses, and
//! the gateway tells auth which in `X-Forwarded-For`.

use std::{net::IpAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use edd_auth::AuthConfig;
use edd_gateway::{server::Transport, tls::CertStore, Options, Route};
use edd_it::{
    assert_problem,
    services::{test_config, Answer, Api, ADMIN, ADMIN_PASSWORD},
    world::PASSWORD,
    World,
};
use edd_kit::forwarded::TrustedProxies;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use reqwest::{Method, StatusCode};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};

use super::{
    gateway::{start_with, test_limits},
    gateway_tls::{certificate, temp_dir, trusting_any_certificate},
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The test settings with the login limits of a real platform (20 failures per client address, 5
/// per username and client before the delay).
fn real_limits() -> AuthConfig {
    let real = AuthConfig::default();
    AuthConfig { login_limit_ip: real.login_limit_ip, login_limit_user: real.login_limit_user, ..test_config() }
}

async fn login(api: &Api, username: &str, password: &str) -> Answer {
    api.call("POST", "/api/login", None, Some(json!({ "username": username, "password": password }))).await.unwrap()
}

fn count(answers: &[Answer], status: StatusCode) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

/// 200 wrong logins at once from one client: only the client's budget (5) is verified, the rest
/// are refused before any Argon2 work. With the real Argon2 cost, so that the verifications are
/// slow enough for every request to arrive while the first ones still run.
#[tokio::test]
async fn parallel_wrong_logins_verify_at_most_the_limit() {
    let real = AuthConfig::default();
    let config = AuthConfig {
        login_limit_ip: 5,
        login_limit_user: 1_000,
        argon2_m_kib: real.argon2_m_kib,
        argon2_t: real.argon2_t,
        ..test_config()
    };
    let w = World::builder().auth(config).start().await;
    let answers = join_all((0..200).map(|i| {
        let api = w.auth.clone();
        async move { login(&api, &format!("nobody{i}"), "wrong-password").await }
    }))
    .await;
    assert_eq!(
        (count(&answers, StatusCode::UNAUTHORIZED), count(&answers, StatusCode::TOO_MANY_REQUESTS)),
        (5, 195),
        "verified, refused"
    );
    // The budget is spent for this client, whoever it names.
    assert_problem(&login(&w.auth, ADMIN, ADMIN_PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
}

/// Parallel guesses of one user's password, by password change and by login: at most the
/// (username, client) allowance is verified each way.
#[tokio::test]
async fn parallel_guesses_of_one_password_verify_at_most_the_allowance() {
    let w = World::builder().auth(AuthConfig { login_limit_user: 3, ..test_config() }).start().await;
    let (_, session) = w.user("ada").await;

    // A stolen session guessing the current password, from 127.0.0.2.
    let thief = Api::new(&w.auth_service.url).from_address(ip("127.0.0.2")).unwrap();
    let answers = join_all((0..50).map(|i| {
        let (api, session) = (thief.clone(), session.clone());
        let body = json!({ "current_password": format!("guess-{i}"), "new_password": "stolen-password-1" });
        async move { api.put("/api/settings/password", &session, body).await.unwrap() }
    }))
    .await;
    assert_eq!(
        (count(&answers, StatusCode::FORBIDDEN), count(&answers, StatusCode::TOO_MANY_REQUESTS)),
        (3, 47),
        "password changes verified, refused"
    );

    // Logins guessing it, from 127.0.0.3.
    let guesser = Api::new(&w.auth_service.url).from_address(ip("127.0.0.3")).unwrap();
    let answers = join_all((0..50).map(|i| {
        let api = guesser.clone();
        async move { login(&api, "ada", &format!("guess-{i}")).await }
    }))
    .await;
    assert_eq!(
        (count(&answers, StatusCode::UNAUTHORIZED), count(&answers, StatusCode::TOO_MANY_REQUESTS)),
        (3, 47),
        "logins verified, refused"
    );
    // Ada herself, from her own address, is not slowed by either.
    w.auth.login("ada", PASSWORD).await.unwrap();
}

/// Behind the gateway, every request reaches auth from the gateway's address; auth counts the
/// client the gateway names. 25 failed logins from one client spend that client's budget only.
#[tokio::test]
async fn behind_the_gateway_each_client_has_its_own_budget() {
    let w = World::builder().auth(real_limits()).gateway().start().await;
    w.auth.create_user(&w.admin, "ada", PASSWORD).await.unwrap();
    let a = w.auth.clone().from_address(ip("127.0.0.2")).unwrap();
    let b = w.auth.clone().from_address(ip("127.0.0.3")).unwrap();

    let mut answers = Vec::new();
    for i in 0..25 {
        answers.push(login(&a, &format!("made-up-{i}"), "wrong-password").await);
    }
    assert_eq!((count(&answers, StatusCode::UNAUTHORIZED), count(&answers, StatusCode::TOO_MANY_REQUESTS)), (20, 5));
    // A cannot pick a fresh budget by claiming another address: the gateway writes the header.
    let spoofed = a.request(Method::POST, "/api/login").header("x-forwarded-for", "198.51.100.7").json(&json!({
        "username": "made-up-again", "password": "wrong-password"
    }));
    assert_problem(&a.send(spoofed).await.unwrap(), StatusCode::TOO_MANY_REQUESTS);

    // Another client signs in at once, and its session records where it came from.
    let signed_in = login(&b, "ada", PASSWORD).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{:?}", signed_in.body);
    let token = signed_in.body["token"].as_str().unwrap();
    let sessions = b.get("/api/settings/sessions", token).await.unwrap();
    let current = sessions.body.as_array().unwrap().iter().find(|s| s["current"] == true).unwrap().clone();
    assert_eq!(current["ip"], "127.0.0.3", "{current}");
}

/// Ten wrong passwords for a named user from one client slow that client down, never the user:
/// from elsewhere the right password works at once. The delay grows with each failure past the
/// allowance.
#[tokio::test]
async fn a_named_user_is_not_locked_out_by_someone_elses_guesses() {
    let w = World::builder().auth(real_limits()).gateway().start().await;
    w.auth.create_user(&w.admin, "ada", PASSWORD).await.unwrap();
    let attacker = w.auth.clone().from_address(ip("127.0.0.2")).unwrap();
    let owner = w.auth.clone().from_address(ip("127.0.0.3")).unwrap();

    let mut answers = Vec::new();
    for i in 0..10 {
        answers.push(login(&attacker, "ada", &format!("guess-{i}")).await);
    }
    let signed_in = login(&owner, "ada", PASSWORD).await;
    assert_eq!(signed_in.status, StatusCode::OK, "the owner is not locked out: {:?}", signed_in.body);

    // The attacker: 5 guesses checked, then each waits (the first delay is a second), also when
    // 40 more come at once.
    answers.extend(
        join_all((10..50).map(|i| {
            let attacker = attacker.clone();
            async move { login(&attacker, "ada", &format!("guess-{i}")).await }
        }))
        .await,
    );
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(statuses[5..], [429; 45], "{statuses:?}");
    assert!(answers[5..].iter().all(|a| a.retry_after.as_deref() == Some("1")), "{:?}", answers[5]);

    // After the delay the attacker's next guess is checked, and the one after it waits twice as long.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_problem(&login(&attacker, "ada", "guess-after-1s").await, StatusCode::UNAUTHORIZED);
    let waits = login(&attacker, "ada", "guess-at-once").await;
    assert_problem(&waits, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(waits.retry_after.as_deref(), Some("2"));
}

/// Without a trusted proxy (the default, a service reached directly), what a client says in
/// `X-Forwarded-For` or `X-Forwarded-Proto` is not believed.
#[tokio::test]
async fn a_direct_client_cannot_name_its_address_or_scheme() {
    let w = World::builder().auth(AuthConfig { login_limit_ip: 3, ..test_config() }).start().await;
    let claims_https = w.auth.request(Method::POST, "/api/login").header("x-forwarded-proto", "https").json(&json!({
        "username": ADMIN, "password": ADMIN_PASSWORD
    }));
    let answer = w.auth.send(claims_https).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(!answer.set_cookie.unwrap().contains("Secure"), "plain HTTP is not HTTPS because a client says so");

    for i in 0..3 {
        assert_problem(&login(&w.auth, &format!("nobody{i}"), "wrong-password").await, StatusCode::UNAUTHORIZED);
    }
    for i in 0..3 {
        let spoofed = w
            .auth
            .request(Method::POST, "/api/login")
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({ "username": format!("nobody-else{i}"), "password": "wrong-password" }));
        assert_problem(&w.auth.send(spoofed).await.unwrap(), StatusCode::TOO_MANY_REQUESTS);
    }
}

/// The session token a login's `Set-Cookie` carries.
fn cookie_token(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().strip_prefix("token=").unwrap().to_owned()
}

/// A request authenticated by the session cookie that changes state needs `X-Requested-With`;
/// reads, bearer requests and requests with the header are served as before.
#[tokio::test]
async fn cookie_requests_that_change_state_need_x_requested_with() {
    let w = World::builder().start().await;
    let signed_in = login(&w.auth, ADMIN, ADMIN_PASSWORD).await;
    let cookie = format!("token={}", cookie_token(&signed_in.set_cookie.unwrap()));
    let session_id = signed_in.body["session_id"].as_str().unwrap().to_owned();
    let with_cookie = |method: Method, path: &str| w.auth.request(method, path).header("cookie", cookie.as_str());

    let forged = [
        with_cookie(Method::POST, "/api/logout"),
        with_cookie(Method::POST, "/api/settings/sessions/revoke-all"),
        with_cookie(Method::POST, "/admin/keys/rotate"),
        with_cookie(Method::PUT, "/api/settings/profile").json(&json!({ "display_name": "Forged" })),
        with_cookie(Method::POST, "/api/tokens").json(&json!({ "name": "forged", "scopes": {} })),
        with_cookie(Method::DELETE, &format!("/api/settings/sessions/{session_id}")),
    ];
    for request in forged {
        let refused = w.auth.send(request).await.unwrap();
        assert_problem(&refused, StatusCode::FORBIDDEN);
        assert_eq!(refused.body["header"], "X-Requested-With", "{:?}", refused.body);
    }
    // Nothing happened: the session lives, the name is unchanged, no token was made.
    let me = w.auth.send(with_cookie(Method::GET, "/api/session")).await.unwrap();
    assert_eq!(me.status, StatusCode::OK, "a read with the cookie needs nothing more");
    assert_eq!(me.body["user"]["display_name"], ADMIN);
    let tokens = w.auth.get("/api/tokens", &w.admin).await.unwrap();
    assert_eq!(tokens.body.as_array().unwrap().len(), 0, "{:?}", tokens.body);

    // A bearer request needs no header (the CLI, scripts, services).
    let by_bearer =
        w.auth.put("/api/settings/profile", &w.admin, json!({ "display_name": "By bearer" })).await.unwrap();
    assert_eq!(by_bearer.status, StatusCode::OK, "{:?}", by_bearer.body);
    // With the header, the cookie request is served.
    let renamed = with_cookie(Method::PUT, "/api/settings/profile")
        .header("x-requested-with", "edd")
        .json(&json!({ "display_name": "Renamed" }));
    assert_eq!(w.auth.send(renamed).await.unwrap().status, StatusCode::OK);
    let out = w.auth.send(with_cookie(Method::POST, "/api/logout").header("x-requested-with", "edd")).await.unwrap();
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_problem(&w.auth.send(with_cookie(Method::GET, "/api/session")).await.unwrap(), StatusCode::UNAUTHORIZED);
}

/// What an HTTPS request through the gateway got back.
struct HttpsAnswer {
    status: StatusCode,
    set_cookie: Option<String>,
    body: Value,
}

/// One HTTP/1.1 request over TLS to `addr` for `host`.
async fn https(
    addr: std::net::SocketAddr,
    host: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> HttpsAnswer {
    let config = trusting_any_certificate(&[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut request = hyper::Request::builder().method(method.as_str()).uri(path).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let response = sender.send_request(request.body(Full::new(body)).unwrap()).await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let set_cookie = response.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    HttpsAnswer { status, set_cookie, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

/// Over HTTPS (TLS ended at the gateway, which says so in `X-Forwarded-Proto`), the session cookie
/// is `Secure`, set and cleared; over plain HTTP it is not (a browser would drop it).
#[tokio::test]
async fn the_session_cookie_is_secure_over_https() {
    let w = World::builder()
        .auth(AuthConfig { trusted_proxies: TrustedProxies::loopback(), ..test_config() })
        .start()
        .await;
    let dir = temp_dir();
    let (files, _) = certificate(&dir, "auth", &["auth.localhost"]);
    let store = CertStore::load(vec![files]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(store.server_config().unwrap());
    let routes = vec![Route::new("auth", "auth.localhost", "/", &w.auth_service.url, false).unwrap()];
    let gw = start_with(routes, Options::default(), Transport::Tls(acceptor), test_limits()).await;

    let credentials = json!({ "username": ADMIN, "password": ADMIN_PASSWORD });
    let signed_in = https(gw.addr, "auth.localhost", Method::POST, "/api/login", &[], Some(credentials.clone())).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{:?}", signed_in.body);
    let set = signed_in.set_cookie.unwrap();
    assert!(set.contains("; Secure;") && set.contains("HttpOnly") && set.contains("SameSite=Lax"), "{set}");

    let cookie = format!("token={}", cookie_token(&set));
    let headers = [("cookie", cookie.as_str()), ("x-requested-with", "edd")];
    let out = https(gw.addr, "auth.localhost", Method::POST, "/api/logout", &headers, None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{:?}", out.body);
    let cleared = out.set_cookie.unwrap();
    assert!(
        cleared.starts_with("token=;") && cleared.contains("; Secure;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    let plain = login(&w.auth, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(!plain.set_cookie.unwrap().contains("Secure"), "plain HTTP");
    let _ = std::fs::remove_dir_all(dir);
}
