//! Services under test, each on its own ephemeral port against the test's own NATS and databases:
//! the real auth service, and `probe`, a minimal service built on the kit that guards a `storage`
//! resource with the same extractor and checks every real service uses.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context as _};
use axum::{extract::Path, routing::get, Router};
use edd_auth::{AuthConfig, Deps};
use edd_events::Token;
use edd_kit::{
    auth::{Authorizer, PermissionsProjection, Principal},
    shutdown::Trigger,
    App, Json, Metrics, Problem, Shutdown,
};
use edd_projections::RunnerConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::{eventually, TestDb, TestEnv};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// Settings for tests: cheap Argon2 and generous login limits (the rate-limit test sets its own).
pub fn test_config() -> AuthConfig {
    AuthConfig {
        argon2_m_kib: 1024,
        argon2_t: 1,
        login_limit_ip: 10_000,
        login_limit_user: 10_000,
        ..AuthConfig::default()
    }
}

/// A running service: its URL, and stopping it on drop.
pub struct Running {
    pub url: String,
    trigger: Option<Trigger>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops it like a crash: the task is aborted mid-whatever.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.trigger.take();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn listen() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

/// Starts the auth service on `env`'s NATS and database and waits until the admin can log in.
pub async fn start_auth(env: &TestEnv, config: AuthConfig) -> anyhow::Result<Running> {
    let (listener, url) = listen().await?;
    let (trigger, shutdown) = Shutdown::new();
    let deps = Deps { js: env.js.clone(), pool: env.db.pool.clone() };
    let task = tokio::spawn(async move {
        if let Err(e) = edd_auth::run(config, Some(ADMIN_PASSWORD.into()), deps, listener, shutdown).await {
            tracing::error!(error = %e, "auth service failed");
        }
    });
    let running = Running { url, trigger: Some(trigger), task: Some(task) };
    // Watch the read model rather than trying to log in, which would spend the login rate limit.
    let pool = env.db.pool.clone();
    eventually(Duration::from_secs(30), "auth to create the first admin", || async {
        let admin: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM auth_accounts.users WHERE username = $1 AND deleted_at IS NULL")
                .bind(ADMIN)
                .fetch_optional(&pool)
                .await
                .unwrap_or(None);
        Ok(admin.map(drop))
    })
    .await?;
    let api = Api::new(&running.url);
    eventually(Duration::from_secs(30), "auth to serve", || async {
        Ok((api.call("GET", "/readyz", None, None).await?.status == StatusCode::OK).then_some(()))
    })
    .await?;
    Ok(running)
}

#[derive(Clone)]
struct ProbeState {
    authorizer: Authorizer,
}

impl axum::extract::FromRef<ProbeState> for Authorizer {
    fn from_ref(state: &ProbeState) -> Self {
        state.authorizer.clone()
    }
}

async fn read_file(principal: Principal, Path((owner, id)): Path<(String, String)>) -> Result<Json<Value>, Problem> {
    let owner = Token::new(owner).map_err(|_| Problem::not_found("no such resource"))?;
    principal.require("storage", &owner, Some("files"), Some(&id), "read")?;
    Ok(Json(json!({ "owner": owner, "id": id, "by": principal.kind() })))
}

async fn delete_file(principal: Principal, Path((owner, id)): Path<(String, String)>) -> Result<Json<Value>, Problem> {
    let owner = Token::new(owner).map_err(|_| Problem::not_found("no such resource"))?;
    principal.require("storage", &owner, Some("files"), Some(&id), "delete")?;
    Ok(Json(json!({ "deleted": id })))
}

/// The same work as `read_file` minus authentication: the benchmark's baseline.
async fn open_file(Path((owner, id)): Path<(String, String)>) -> Result<Json<Value>, Problem> {
    let owner = Token::new(owner).map_err(|_| Problem::not_found("no such resource"))?;
    Ok(Json(json!({ "owner": owner, "id": id, "by": "nobody" })))
}

async fn admin_only(principal: Principal) -> Result<Json<Value>, Problem> {
    principal.require_admin()?;
    Ok(Json(json!({ "admin": principal.user_id })))
}

/// The probe's routes, also used by the benchmark: `GET|DELETE /files/{owner}/{id}` (scope
/// `storage.{owner}.files.{id}`), `GET /admin`, and `GET /open/{owner}/{id}`, the same handler without authentication.
pub fn probe_router(authorizer: Authorizer) -> Router {
    let routes = Router::new()
        .route("/files/{owner}/{id}", get(read_file).delete(delete_file))
        .route("/admin", get(admin_only))
        .route("/open/{owner}/{id}", get(open_file))
        .with_state(ProbeState { authorizer });
    App::new("probe", Metrics::new()).router(routes).build()
}

/// A kit service guarding `storage` resources, with its own database and permissions projection.
pub struct Probe {
    pub running: Running,
    pub authorizer: Authorizer,
    pub db: TestDb,
}

/// Starts the probe; it answers 503 until its permissions have caught up (never "allow").
pub async fn start_probe(env: &TestEnv) -> anyhow::Result<Probe> {
    let db = TestDb::create().await?;
    let (listener, url) = listen().await?;
    let (trigger, shutdown) = Shutdown::new();
    let (authorizer, _) = edd_kit::auth::start(
        db.pool.clone(),
        env.js.clone(),
        PermissionsProjection::new("probe/permissions", Some("storage")),
        RunnerConfig::default(),
        shutdown.wait(),
    );
    let router = probe_router(authorizer.clone());
    let task = tokio::spawn(async move {
        let _ = edd_kit::shutdown::serve(listener, router, shutdown.wait()).await;
    });
    Ok(Probe { running: Running { url, trigger: Some(trigger), task: Some(task) }, authorizer, db })
}

/// A small JSON client for the services' HTTP APIs.
#[derive(Clone)]
pub struct Api {
    base: String,
    host: Option<String>,
    http: reqwest::Client,
}

/// A response: status, the body as JSON (`Null` when empty), and the headers that matter to tests.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub set_cookie: Option<String>,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), host: None, http: reqwest::Client::new() }
    }

    /// The same API reached through the gateway: every request carries `Host: host`.
    pub fn via(gateway_url: &str, host: &str) -> Self {
        Self { host: Some(host.to_owned()), ..Self::new(gateway_url) }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).timeout(Duration::from_secs(30));
        if let Some(host) = &self.host {
            req = req.header("host", host);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| format!("calling {path}"))?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (content_type, retry_after, set_cookie) =
            (header("content-type").unwrap_or_default(), header("retry-after"), header("set-cookie"));
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok(Answer { status, body, content_type, retry_after, set_cookie })
    }

    pub async fn get(&self, path: &str, token: &str) -> anyhow::Result<Answer> {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Answer> {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Answer> {
        self.call("PUT", path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> anyhow::Result<Answer> {
        self.call("DELETE", path, Some(token), None).await
    }

    /// Logs in and returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let a =
            self.call("POST", "/api/login", None, Some(json!({ "username": username, "password": password }))).await?;
        if a.status != StatusCode::OK {
            bail!("login as {username} failed: {} {}", a.status, a.body);
        }
        Ok(a.body["token"].as_str().context("login answer has a token")?.to_owned())
    }

    /// Creates a user as `admin_token` and returns its id.
    pub async fn create_user(&self, admin_token: &str, username: &str, password: &str) -> anyhow::Result<String> {
        let a = self.post("/admin/users", admin_token, json!({ "username": username, "password": password })).await?;
        if a.status != StatusCode::CREATED {
            bail!("creating {username} failed: {} {}", a.status, a.body);
        }
        Ok(a.body["id"].as_str().context("user id")?.to_owned())
    }
}

/// The titles of the notifications sent to `user_id`, oldest first.
pub async fn notifications(env: &TestEnv, user_id: &str) -> anyhow::Result<Vec<String>> {
    use futures_util::StreamExt as _;
    let head = edd_events::consume::stream_head(&env.js, "NOTIFY").await?;
    let mut titles = Vec::new();
    if head == 0 {
        return Ok(titles);
    }
    let filter = vec![format!("notify.{user_id}")];
    let mut replay = edd_events::consume::replay(&env.js, "NOTIFY", &filter, 1).await?;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(2), replay.next()).await {
        let stored = item?;
        let event = edd_events::RawEvent::parse(stored.seq, &stored.subject, &stored.payload)?;
        titles.push(event.envelope.data["title"].as_str().unwrap_or_default().to_owned());
        if stored.pending == 0 {
            break;
        }
    }
    Ok(titles)
}

/// A running gateway and the database it owns.
pub struct GatewayUnderTest {
    pub running: Running,
    pub db: TestDb,
}

/// Starts the gateway on `env`'s NATS with its own database, routing `auth.localhost` to `auth_url`.
pub async fn start_gateway(env: &TestEnv, auth_url: &str) -> anyhow::Result<GatewayUnderTest> {
    start_gateway_to(env, &[("auth", auth_url)]).await
}

/// Starts the gateway routing `<service>.localhost` to each `(service, url)` (`auth`, `storage`,
/// `notifications`).
pub async fn start_gateway_to(env: &TestEnv, upstreams: &[(&str, &str)]) -> anyhow::Result<GatewayUnderTest> {
    let db = TestDb::create().await?;
    let running = restart_gateway_to(env, upstreams, &db, |_| {}).await?;
    Ok(GatewayUnderTest { running, db })
}

/// Starts a gateway on `db` (another's, after a crash: what it had projected is still there).
pub async fn restart_gateway(env: &TestEnv, auth_url: &str, db: &TestDb) -> anyhow::Result<Running> {
    restart_gateway_to(env, &[("auth", auth_url)], db, |_| {}).await
}

/// Starts a gateway on `db` routing to `upstreams`, after `adjust` changed its settings.
pub async fn restart_gateway_to(
    env: &TestEnv,
    upstreams: &[(&str, &str)],
    db: &TestDb,
    adjust: impl FnOnce(&mut edd_gateway::GatewayConfig),
) -> anyhow::Result<Running> {
    let (http, url) = listen().await?;
    let (admin, _) = listen().await?;
    let mut config = edd_gateway::GatewayConfig {
        listen_addr: http.local_addr()?,
        https_addr: edd_gateway::config::OptionalAddr(None),
        admin_addr: admin.local_addr()?,
        access_log: edd_gateway::observe::AccessLogTarget::Off,
        ..Default::default()
    };
    for (service, upstream) in upstreams {
        let slot = match *service {
            "auth" => &mut config.upstreams.auth,
            "storage" => &mut config.upstreams.storage,
            "notifications" => &mut config.upstreams.notifications,
            other => bail!("the test gateway does not route {other}"),
        };
        *slot = (*upstream).to_owned();
    }
    adjust(&mut config);
    let listeners = edd_gateway::Listeners { http, https: None, admin };
    let (trigger, shutdown) = Shutdown::new();
    let deps = edd_gateway::Deps { js: env.js.clone(), pool: db.pool.clone() };
    let task = tokio::spawn(async move {
        if let Err(e) = edd_gateway::run(config, deps, listeners, shutdown).await {
            tracing::error!(error = %e, "gateway failed");
        }
    });
    Ok(Running { url, trigger: Some(trigger), task: Some(task) })
}

/// Settings for storage tests: the GFS masters of `gfs`, and a sweeper that runs every second.
pub fn storage_config(gfs: &crate::gfs::GfsCluster) -> edd_storage::StorageConfig {
    edd_storage::StorageConfig { gfs_masters: gfs.master_addrs.clone(), sweep_interval_secs: 1, ..Default::default() }
}

/// Starts the storage service on `env`'s NATS with its own database `db`, as a client of `gfs`,
/// and waits until it is ready (permissions loaded, GFS answering).
pub async fn start_storage(env: &TestEnv, db: &TestDb, config: edd_storage::StorageConfig) -> anyhow::Result<Running> {
    let (listener, url) = listen().await?;
    let (trigger, shutdown) = Shutdown::new();
    let deps = edd_storage::Deps {
        js: env.js.clone(),
        pool: db.pool.clone(),
        gfs_secret: crate::gfs::CLIENT_SECRET.as_bytes().to_vec(),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = edd_storage::run(config, deps, listener, shutdown).await {
            tracing::error!(error = %e, "storage service failed");
        }
    });
    let running = Running { url, trigger: Some(trigger), task: Some(task) };
    let api = Api::new(&running.url);
    eventually(Duration::from_secs(60), "storage to be ready", || async {
        Ok((api.call("GET", "/readyz", None, None).await?.status == StatusCode::OK).then_some(()))
    })
    .await?;
    Ok(running)
}

/// The storage service as a child process (`edd serve storage`), so a test can SIGKILL it mid-upload
/// and start it again on the same port and database.
pub struct StorageProcess {
    pub url: String,
    command: std::process::Command,
    child: Option<tokio::process::Child>,
    log: std::path::PathBuf,
}

impl StorageProcess {
    /// Starts it against `env`'s NATS, the database `db` and the cluster `gfs`, with extra
    /// `EDD_STORAGE_*` settings; waits until it is ready.
    pub async fn start(
        env: &TestEnv,
        db: &TestDb,
        gfs: &crate::gfs::GfsCluster,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = gfs.dir().join(format!("storage-{port}.log"));
        let mut command = std::process::Command::new(crate::gfs::edd_binary()?);
        command
            .args(["--log-format", "pretty", "--log-level", "info", "serve", "storage"])
            .env("EDD_NATS_URL", env.nats.url())
            .env("EDD_DATABASE_URL", db.admin_url())
            .env("EDD_STORAGE_DATABASE", &db.name)
            .env("EDD_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("EDD_GFS_MASTERS", gfs.master_addrs.join(","))
            .env("EDD_GFS_CLIENT_SECRET", crate::gfs::CLIENT_SECRET)
            .env("EDD_HOME", gfs.dir())
            .env("EDD_STORAGE_SWEEP_INTERVAL_SECS", "1");
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut process = Self { url: format!("http://127.0.0.1:{port}"), command, child: None, log };
        process.spawn().await?;
        Ok(process)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command =
            tokio::process::Command::from(std::mem::replace(&mut self.command, std::process::Command::new("true")));
        command.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        let child = command.spawn().context("starting edd serve storage")?;
        self.command = command.into_std();
        self.child = Some(child);
        let api = Api::new(&self.url);
        eventually(Duration::from_secs(60), "storage to be ready", || async {
            Ok(api.call("GET", "/readyz", None, None).await.ok().filter(|a| a.status == StatusCode::OK).map(drop))
        })
        .await
        .with_context(|| format!("storage log:\n{}", self.log()))?;
        Ok(())
    }

    /// SIGKILL: no shutdown, no flush, whatever was in flight is cut.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again with the same settings, port and database.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// Settings for notification tests (the defaults).
pub fn notify_config() -> edd_notify::NotifyConfig {
    edd_notify::NotifyConfig::default()
}

/// A running notification service and the database it owns.
pub struct NotifyUnderTest {
    pub running: Running,
    pub db: TestDb,
}

/// Starts the notification service on `env`'s NATS with its own database, and waits until it is
/// ready (permissions loaded, projections created, live fanout following `NOTIFY`).
pub async fn start_notify(env: &TestEnv, config: edd_notify::NotifyConfig) -> anyhow::Result<NotifyUnderTest> {
    let db = TestDb::create().await?;
    let running = restart_notify(env, config, &db, None).await?;
    Ok(NotifyUnderTest { running, db })
}

/// Starts the notification service on `db` (another's, after a crash), on `addr` when given (the
/// address the killed one had, so a gateway pointing at it finds the new one).
pub async fn restart_notify(
    env: &TestEnv,
    config: edd_notify::NotifyConfig,
    db: &TestDb,
    addr: Option<SocketAddr>,
) -> anyhow::Result<Running> {
    let (listener, url) = match addr {
        None => listen().await?,
        Some(addr) => {
            let listener = eventually(Duration::from_secs(10), "the old address to be free", || async {
                Ok(tokio::net::TcpListener::bind(addr).await.ok())
            })
            .await?;
            (listener, format!("http://{addr}"))
        }
    };
    let (trigger, shutdown) = Shutdown::new();
    let deps = edd_notify::Deps { js: env.js.clone(), pool: db.pool.clone() };
    let task = tokio::spawn(async move {
        if let Err(e) = edd_notify::run(config, deps, listener, shutdown).await {
            tracing::error!(error = %e, "notification service failed");
        }
    });
    let running = Running { url, trigger: Some(trigger), task: Some(task) };
    let api = Api::new(&running.url);
    eventually(Duration::from_secs(30), "the notification service to be ready", || async {
        Ok((api.call("GET", "/readyz", None, None).await?.status == StatusCode::OK).then_some(()))
    })
    .await?;
    Ok(running)
}

/// Publishes a notification for `user_id` the way the other services do; returns its id.
pub async fn publish_notification(
    env: &TestEnv,
    user_id: &str,
    title: &str,
    message: &str,
    category: &str,
    scope: Option<&str>,
) -> anyhow::Result<u64> {
    let note = edd_events::catalog::notify::Notification {
        user_id: Token::new(user_id)?,
        title: title.to_owned(),
        message: message.to_owned(),
        link: None,
        category: category.to_owned(),
        scope: scope.map(str::to_owned),
    };
    Ok(env.events().publish(&edd_events::Envelope::new("storage", note)).await?)
}
