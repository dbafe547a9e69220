//! `auth-bench`: what authorization costs and how fast revocation travels, each against a baseline
//! measured in the same process (a bare handler; raw Argon2id verification).
//!
//! Run: `cargo build --release -p edd-it --bin auth-bench && $CARGO_TARGET_DIR/release/auth-bench [TRIALS]`
//! with `EDD_NATS_SERVER_BIN` and PostgreSQL as for the tests.

use std::time::{Duration, Instant};

use axum::{body::Body, http::Request, Router};
use edd_auth::AuthConfig;
use edd_events::Token;
use edd_it::{
    services::{start_auth, start_probe, test_config, Api, ADMIN, ADMIN_PASSWORD},
    TestEnv,
};
use edd_kit::auth::jwt::{Claims, SigningKey, ISSUER, SESSION};
use reqwest::StatusCode;
use serde_json::json;
use tower::ServiceExt as _;

const REQUESTS: usize = 20_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let trials: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let env = TestEnv::new().await?;
    // The documented default cost, so login figures are what a deployment gets.
    let config = AuthConfig { argon2_m_kib: 19_456, argon2_t: 2, ..test_config() };
    let auth = start_auth(&env, config).await?;
    let api = Api::new(&auth.url);
    let admin = api.login(ADMIN, ADMIN_PASSWORD).await?;
    let user_id = api.create_user(&admin, "bench", "password-1").await?;
    let session = api.login("bench", "password-1").await?;
    let probe = start_probe(&env).await?;
    anyhow::ensure!(probe.authorizer.wait_ready(Duration::from_secs(30)).await, "probe permissions never loaded");
    let probe_api = Api::new(&probe.running.url);

    println!("edd auth bench — {REQUESTS} in-process requests per row, {trials} revocation trials\n");
    println!("{:<52} {:>12} {:>12} {:>8}  goal", "measure", "edd", "baseline", "ratio");

    // 1. Authorization cost in a kit service, in process (no sockets): a bare handler vs the same
    //    handler behind the Principal extractor and a scope check.
    let router = edd_it::services::probe_router(probe.authorizer.clone());
    let file = format!("/files/{user_id}/f1");
    let bare = per_request(&router, &format!("/open/{user_id}/f1"), |_| None).await?;
    let warm = per_request(&router, &file, |_| Some(session.clone())).await?;
    let stored = edd_auth::secrets::active_key(&env.db.pool).await?.ok_or_else(|| anyhow::anyhow!("no key"))?;
    let key = SigningKey::from_pkcs8(Token::new(stored.kid)?, &stored.pkcs8)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Distinct valid tokens (one per request), so every request misses the verified-token cache.
    let cold_tokens: Vec<String> = (0..REQUESTS)
        .map(|i| {
            key.sign(&Claims {
                iss: ISSUER.into(),
                sub: user_id.clone(),
                sid: format!("bench{i}"),
                typ: SESSION.into(),
                iat: now,
                exp: now + 3600,
            })
        })
        .collect();
    let cold = per_request(&router, &file, |i| Some(cold_tokens[i].clone())).await?;
    let pat = api
        .post("/api/tokens", &session, json!({"name": "bench", "scopes": {format!("storage.{user_id}"): ["read"]}}))
        .await?
        .body["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_ok(&probe_api, &file, &pat).await?;
    let api_token = per_request(&router, &file, |_| Some(pat.clone())).await?;
    row("same handler, no auth (µs/request)", bare, bare, "");
    row("session JWT, cold: verify + checks (µs added)", cold - bare, bare, "≤ 80 µs added");
    row("session JWT, warm: cached (µs added)", warm - bare, bare, "≤ 5 µs added");
    row("API token: SHA-256 + lookup (µs added)", api_token - bare, bare, "");

    // 2. Revocation → refused at another service.
    let mut samples = Vec::with_capacity(trials);
    for _ in 0..trials {
        let token = api.login("bench", "password-1").await?;
        wait_ok(&probe_api, &file, &token).await?;
        let answered = {
            let a = api.post("/api/logout", &token, json!({})).await?;
            anyhow::ensure!(a.status == StatusCode::NO_CONTENT, "logout failed: {:?}", a.body);
            Instant::now()
        };
        loop {
            let status = probe_api.get(&file, &token).await?.status;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            anyhow::ensure!(answered.elapsed() < Duration::from_secs(10), "never refused");
        }
        samples.push(answered.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p99) = percentiles(samples);
    // Baseline: one HTTP round trip to the probe, the resolution of the measurement itself.
    let mut rtt = Vec::new();
    for _ in 0..trials {
        let t = Instant::now();
        probe_api.get(&file, &session).await?;
        rtt.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (r50, r99) = percentiles(rtt);
    row("logout → refused at probe p50 (ms) vs probe RTT", p50, r50, "");
    row("logout → refused at probe p99 (ms) vs probe RTT", p99, r99, "p99 ≤ 50 ms");

    // 3. Logins at the default Argon2id cost vs a bare verification of the same hash.
    let hasher = edd_auth::password::Hasher::new(19_456, 2, 1, 4)?;
    let phc = hasher.hash("password-1".into()).await?;
    let mut verify = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        hasher.verify("password-1".into(), Some(phc.clone())).await?;
        verify.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut login = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        api.login("bench", "password-1").await?;
        login.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (v50, _) = percentiles(verify);
    let (l50, l99) = percentiles(login);
    row("login latency p50 (ms) vs Argon2id verify", l50, v50, "report");
    row("login latency p99 (ms) vs Argon2id verify p50", l99, v50, "report");
    // Unknown usernames must cost what wrong passwords cost (no user enumeration by timing).
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for i in 0..40 {
        // Alternate the order, so allocator and cache warm-up favour neither side.
        for unknown_first in [i % 2 == 0, i % 2 != 0] {
            let t = Instant::now();
            if unknown_first {
                let _ = api.login(&format!("nobody{i}"), "password-1").await;
                unknown.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                let _ = api.login("bench", "wrong-password").await;
                wrong.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let (u50, _) = percentiles(unknown);
    let (w50, _) = percentiles(wrong);
    row("failed login p50 (ms): unknown user vs wrong password", u50, w50, "≈ 1.0×");
    let started = Instant::now();
    let n = 40;
    let logins = futures_util::future::join_all((0..n).map(|_| api.login("bench", "password-1"))).await;
    anyhow::ensure!(logins.iter().all(|l| l.is_ok()), "a concurrent login failed");
    let rate = n as f64 / started.elapsed().as_secs_f64();
    row("login throughput, 40 concurrent (logins/s) vs 1/verify", rate, 1e3 / v50, "report");
    Ok(())
}

fn row(name: &str, ours: f64, base: f64, goal: &str) {
    println!("{name:<52} {ours:>12.2} {base:>12.2} {:>7.2}×  {goal}", ours / base);
}

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

/// Mean µs per request through `router`, each request carrying `token(i)`.
async fn per_request(router: &Router, path: &str, token: impl Fn(usize) -> Option<String>) -> anyhow::Result<f64> {
    let requests: Vec<Request<Body>> = (0..REQUESTS)
        .map(|i| {
            let mut req = Request::get(path);
            if let Some(t) = token(i) {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            req.body(Body::empty())
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for req in requests {
        let resp = router.clone().oneshot(req).await?;
        anyhow::ensure!(resp.status() == StatusCode::OK, "{path}: {}", resp.status());
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / REQUESTS as f64)
}

async fn wait_ok(api: &Api, path: &str, token: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get(path, token).await?.status != StatusCode::OK {
        anyhow::ensure!(Instant::now() < deadline, "token never accepted at the probe");
    }
    Ok(())
}
