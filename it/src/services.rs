//! Services under test, each on its own ephemeral port against the test's own NATS and databases,
//! each a [`Service`] (in this process, or a child process): the real auth, gateway, storage and
//! notification services, and `probe`, a minimal service built on the kit that guards a `storage`
//! resource with the same extractor and checks every real service uses.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

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

/// A service under test: in this process (a task serving on its own port) or a child process
/// (`edd serve …`, `edd gfs …`), with the database it owns if it owns one. Either way it is killed
/// like a crash ([`kill`](Self::kill)), started again on the same port with the same database and
/// settings ([`restart`](Self::restart)), and stopped on drop.
pub struct Service {
    pub url: String,
    name: String,
    /// Wait this long for `GET /readyz` to answer 200 after every start.
    ready: Option<Duration>,
    run: Run,
    /// Dropped last, once the service is stopped.
    db: Option<TestDb>,
}

/// Starts an in-process service serving `listener`; it stops when `shutdown` fires.
type StartTask = Box<dyn FnMut(tokio::net::TcpListener, Shutdown) -> anyhow::Result<JoinHandle<()>> + Send>;

enum Run {
    Task { start: StartTask, trigger: Option<Trigger>, task: Option<JoinHandle<()>> },
    Process { command: Box<std::process::Command>, child: Option<tokio::process::Child>, log: PathBuf },
}

impl Service {
    /// A service in this process, on an ephemeral port: `start` spawns it on a listener, now and at
    /// every restart.
    pub async fn task(
        name: &str,
        start: impl FnMut(tokio::net::TcpListener, Shutdown) -> anyhow::Result<JoinHandle<()>> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (listener, url) = listen().await?;
        let mut service = Service {
            url,
            name: name.to_owned(),
            ready: None,
            run: Run::Task { start: Box::new(start), trigger: None, task: None },
            db: None,
        };
        service.launch_task(listener)?;
        Ok(service)
    }

    /// A child process of `command` (its output appended to `log`), listening at `url`. Started now;
    /// not waited for (see [`ready`](Self::ready)).
    pub fn process(name: &str, url: String, command: std::process::Command, log: PathBuf) -> anyhow::Result<Self> {
        let mut service = Service {
            url,
            name: name.to_owned(),
            ready: None,
            run: Run::Process { command: Box::new(command), child: None, log },
            db: None,
        };
        service.spawn_process()?;
        Ok(service)
    }

    /// The service owns `db`: it is dropped with the service and kept across restarts.
    pub fn owning(mut self, db: TestDb) -> Self {
        self.db = Some(db);
        self
    }

    /// Waits (now and after every restart) until `GET /readyz` answers 200, `timeout` at most.
    pub async fn ready(mut self, timeout: Duration) -> anyhow::Result<Self> {
        self.ready = Some(timeout);
        self.wait_ready().await?;
        Ok(self)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database the service owns.
    pub fn db(&self) -> &TestDb {
        self.db.as_ref().unwrap_or_else(|| panic!("{} owns no database", self.name))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        let authority = self.url.split_once("://").map_or(self.url.as_str(), |(_, rest)| rest);
        authority.parse().unwrap_or_else(|e| panic!("{}'s address {authority}: {e}", self.name))
    }

    /// Stops it like a crash: an in-process task is aborted mid-whatever, a process is SIGKILLed (no
    /// shutdown, no flush, whatever was in flight is cut).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        match &mut self.run {
            Run::Process { child, .. } => {
                if let Some(mut child) = child.take() {
                    child.kill().await?;
                }
            }
            Run::Task { .. } => self.start_kill(),
        }
        Ok(())
    }

    /// Kills it (if it still runs) and starts it again on the same port, with the same settings and
    /// database; waits until it is ready when it was waited for at the start.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        match self.run {
            Run::Task { .. } => {
                let addr = self.addr();
                let listener = crate::eventually(Duration::from_secs(10), "the old address to be free", || async {
                    Ok(tokio::net::TcpListener::bind(addr).await.ok())
                })
                .await?;
                self.launch_task(listener)?;
            }
            Run::Process { .. } => self.spawn_process()?,
        }
        self.wait_ready().await
    }

    /// Starts a killed child process again, not waiting for it.
    pub(crate) fn respawn(&mut self) -> anyhow::Result<()> {
        match self.run {
            Run::Process { .. } => self.spawn_process(),
            Run::Task { .. } => bail!("{} runs in this process: restart() it", self.name),
        }
    }

    /// What the process wrote so far (nothing for a service in this process: its logs are the test's).
    pub fn log(&self) -> String {
        match &self.run {
            Run::Process { log, .. } => std::fs::read_to_string(log).unwrap_or_default(),
            Run::Task { .. } => String::new(),
        }
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB; `None` in this process.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let Run::Process { child, .. } = &self.run else { return None };
        let pid = child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Stops it without waiting for a process to be gone (for a `Drop`).
    pub(crate) fn start_kill(&mut self) {
        match &mut self.run {
            Run::Task { trigger, task, .. } => {
                if let Some(task) = task.take() {
                    task.abort();
                }
                trigger.take();
            }
            Run::Process { child, .. } => {
                if let Some(child) = child.as_mut() {
                    let _ = child.start_kill();
                }
            }
        }
    }

    fn launch_task(&mut self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        let Run::Task { start, trigger, task } = &mut self.run else { bail!("{} is a process", self.name) };
        let (new_trigger, shutdown) = Shutdown::new();
        *task = Some(start(listener, shutdown)?);
        *trigger = Some(new_trigger);
        Ok(())
    }

    fn spawn_process(&mut self) -> anyhow::Result<()> {
        let Run::Process { command, child, log } = &mut self.run else { bail!("{} runs in this process", self.name) };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut tokio_command =
            tokio::process::Command::from(std::mem::replace(&mut **command, std::process::Command::new("true")));
        tokio_command.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        let spawned = tokio_command.spawn().with_context(|| format!("starting {}", self.name));
        **command = tokio_command.into_std();
        *child = Some(spawned?);
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let Some(timeout) = self.ready else { return Ok(()) };
        let api = Api::new(&self.url);
        crate::eventually(timeout, &format!("{} to be ready", self.name), || async {
            Ok((api.call("GET", "/readyz", None, None).await?.status == StatusCode::OK).then_some(()))
        })
        .await
        .with_context(|| match self.log() {
            log if log.is_empty() => format!("{} never became ready", self.name),
            log => format!("{} log:\n{log}", self.name),
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.start_kill();
    }
}

async fn listen() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

/// Starts the auth service on `env`'s NATS and database and waits until the admin can log in.
pub async fn start_auth(env: &TestEnv, config: AuthConfig) -> anyhow::Result<Service> {
    let (js, pool) = (env.js_as("auth").await?, env.db.pool.clone());
    let service = Service::task("auth", move |listener, shutdown| {
        let (config, deps) = (config.clone(), Deps { js: js.clone(), pool: pool.clone() });
        Ok(tokio::spawn(async move {
            if let Err(e) = edd_auth::run(config, Some(ADMIN_PASSWORD.into()), deps, listener, shutdown).await {
                tracing::error!(error = %e, "auth service failed");
            }
        }))
    })
    .await?;
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
    service.ready(Duration::from_secs(30)).await
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
    pub running: Service,
    pub authorizer: Authorizer,
}

/// Starts the probe; it answers 503 until its permissions have caught up (never "allow").
pub async fn start_probe(env: &TestEnv) -> anyhow::Result<Probe> {
    let db = TestDb::create().await?;
    // The probe reads permissions as a service does; it borrows storage's identity.
    let (js, pool) = (env.js_as("storage").await?, db.pool.clone());
    let started = Arc::new(Mutex::new(None));
    let authorizer = started.clone();
    let running = Service::task("probe", move |listener, shutdown| {
        let (authorizer_now, _) = edd_kit::auth::start(
            pool.clone(),
            js.clone(),
            PermissionsProjection::new("probe/permissions", Some("storage")),
            RunnerConfig::default(),
            shutdown.wait(),
        );
        let router = probe_router(authorizer_now.clone());
        *authorizer.lock().unwrap_or_else(|e| e.into_inner()) = Some(authorizer_now);
        Ok(tokio::spawn(async move {
            let _ = edd_kit::shutdown::serve(listener, router, shutdown.wait()).await;
        }))
    })
    .await?
    .owning(db);
    let authorizer = started.lock().unwrap_or_else(|e| e.into_inner()).take().context("the probe's authorizer")?;
    Ok(Probe { running, authorizer })
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

    /// The same API called from the local address `ip` (any of 127.0.0.0/8 on Linux), so that a
    /// service or the gateway sees another client.
    pub fn from_address(self, ip: std::net::IpAddr) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().local_address(ip).build()?;
        Ok(Self { http, ..self })
    }

    /// A request to `path` (with the `Host` of [`via`](Self::via)) to finish by hand: headers,
    /// cookies; send it with [`send`](Self::send).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).timeout(Duration::from_secs(30));
        if let Some(host) = &self.host {
            req = req.header("host", host);
        }
        req
    }

    /// Sends a request made with [`request`](Self::request).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let resp = req.send().await?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (content_type, retry_after, set_cookie) =
            (header("content-type").unwrap_or_default(), header("retry-after"), header("set-cookie"));
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok(Answer { status, body, content_type, retry_after, set_cookie })
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.request(method, path);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await.with_context(|| format!("calling {path}"))
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

/// Starts the gateway on `env`'s NATS with its own database, routing `auth.localhost` to `auth_url`.
pub async fn start_gateway(env: &TestEnv, auth_url: &str) -> anyhow::Result<Service> {
    start_gateway_to(env, &[("auth", auth_url)]).await
}

/// Starts the gateway routing `<service>.localhost` to each `(service, url)` (`auth`, `storage`,
/// `notifications`).
pub async fn start_gateway_to(env: &TestEnv, upstreams: &[(&str, &str)]) -> anyhow::Result<Service> {
    start_gateway_with(env, upstreams, |_| {}).await
}

/// Starts the gateway with its own database, routing to `upstreams`, after `adjust` changed its
/// settings (at every restart too).
pub async fn start_gateway_with(
    env: &TestEnv,
    upstreams: &[(&str, &str)],
    adjust: impl Fn(&mut edd_gateway::GatewayConfig) + Send + 'static,
) -> anyhow::Result<Service> {
    let mut base = edd_gateway::GatewayConfig {
        https_addr: edd_gateway::config::OptionalAddr(None),
        access_log: edd_gateway::observe::AccessLogTarget::Off,
        ..Default::default()
    };
    for (service, upstream) in upstreams {
        let slot = match *service {
            "auth" => &mut base.upstreams.auth,
            "storage" => &mut base.upstreams.storage,
            "notifications" => &mut base.upstreams.notifications,
            other => bail!("the test gateway does not route {other}"),
        };
        *slot = (*upstream).to_owned();
    }
    let db = TestDb::create().await?;
    let (js, pool) = (env.js_as("gateway").await?, db.pool.clone());
    let service = Service::task("gateway", move |http, shutdown| {
        let admin = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        admin.set_nonblocking(true)?;
        let admin = tokio::net::TcpListener::from_std(admin)?;
        let mut config = edd_gateway::GatewayConfig {
            listen_addr: http.local_addr()?,
            admin_addr: admin.local_addr()?,
            ..base.clone()
        };
        adjust(&mut config);
        let listeners = edd_gateway::Listeners { http, https: None, admin };
        let deps = edd_gateway::Deps { js: js.clone(), pool: pool.clone() };
        Ok(tokio::spawn(async move {
            if let Err(e) = edd_gateway::run(config, deps, listeners, shutdown).await {
                tracing::error!(error = %e, "gateway failed");
            }
        }))
    })
    .await?;
    Ok(service.owning(db))
}

/// Settings for storage tests: the GFS masters of `gfs`, and a sweeper that runs every second.
pub fn storage_config(gfs: &crate::gfs::GfsCluster) -> edd_storage::StorageConfig {
    edd_storage::StorageConfig { gfs_masters: gfs.master_addrs.clone(), sweep_interval_secs: 1, ..Default::default() }
}

/// Starts the storage service in this process on `env`'s NATS with its own database, as a client of
/// `gfs`, and waits until it is ready (permissions loaded, GFS answering).
pub async fn start_storage(env: &TestEnv, config: edd_storage::StorageConfig) -> anyhow::Result<Service> {
    let db = TestDb::create().await?;
    let (js, pool) = (env.js_as("storage").await?, db.pool.clone());
    let service = Service::task("storage", move |listener, shutdown| {
        let deps = edd_storage::Deps {
            js: js.clone(),
            pool: pool.clone(),
            gfs_secret: crate::gfs::CLIENT_SECRET.as_bytes().to_vec(),
        };
        let config = config.clone();
        Ok(tokio::spawn(async move {
            if let Err(e) = edd_storage::run(config, deps, listener, shutdown).await {
                tracing::error!(error = %e, "storage service failed");
            }
        }))
    })
    .await?;
    service.owning(db).ready(Duration::from_secs(60)).await
}

/// Starts the storage service as a child process (`edd serve storage`, so a test can SIGKILL it
/// mid-upload and start it again on the same port and database) against `env`'s NATS, a database of
/// its own and the cluster `gfs`, with extra `EDD_STORAGE_*` settings; waits until it is ready.
pub async fn start_storage_process(
    env: &TestEnv,
    gfs: &crate::gfs::GfsCluster,
    settings: &[(&str, String)],
) -> anyhow::Result<Service> {
    let db = TestDb::create().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = gfs.dir().join(format!("storage-{port}.log"));
    let mut command = std::process::Command::new(crate::gfs::edd_binary()?);
    command
        .args(["--log-format", "pretty", "--log-level", "info", "serve", "storage"])
        .env("EDD_NATS_URL", env.nats.url())
        .env("EDD_NATS_CREDENTIALS_FILE", env.nats.credential_file("storage"))
        .env("EDD_DATABASE_URL", db.url())
        .env("EDD_STORAGE_DATABASE", &db.name)
        .env("EDD_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("EDD_GFS_MASTERS", gfs.master_addrs.join(","))
        .env("EDD_GFS_CLIENT_SECRET", crate::gfs::CLIENT_SECRET)
        .env("EDD_HOME", gfs.dir())
        .env("EDD_STORAGE_SWEEP_INTERVAL_SECS", "1");
    for (name, value) in settings {
        command.env(name, value);
    }
    Service::process("storage", format!("http://127.0.0.1:{port}"), command, log)?
        .owning(db)
        .ready(Duration::from_secs(60))
        .await
}

/// Settings for notification tests (the defaults).
pub fn notify_config() -> edd_notify::NotifyConfig {
    edd_notify::NotifyConfig::default()
}

/// Starts the notification service on `env`'s NATS with its own database, and waits until it is
/// ready (permissions loaded, projections created, live fanout following `NOTIFY`).
pub async fn start_notify(env: &TestEnv, config: edd_notify::NotifyConfig) -> anyhow::Result<Service> {
    let db = TestDb::create().await?;
    let (js, pool) = (env.js_as("notify").await?, db.pool.clone());
    let service = Service::task("the notification service", move |listener, shutdown| {
        let (config, deps) = (config.clone(), edd_notify::Deps { js: js.clone(), pool: pool.clone() });
        Ok(tokio::spawn(async move {
            if let Err(e) = edd_notify::run(config, deps, listener, shutdown).await {
                tracing::error!(error = %e, "notification service failed");
            }
        }))
    })
    .await?;
    service.owning(db).ready(Duration::from_secs(30)).await
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
