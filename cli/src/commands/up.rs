//! `edd up`: the whole platform on this machine, in the foreground.
//!
//! Uses the NATS and PostgreSQL it is pointed at; when NATS is not reachable and a `nats-server`
//! binary is known (`deploy/local/up.sh` installs one), starts it as a child with its data under
//! `.edd/nats`, with every component's identity (generated in `.edd/nats/identities`, 0600) and no
//! anonymous access. Then it creates the streams and every service's database, runs every service that
//! exists, prints where everything is, and on Ctrl-C stops it all in order.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use tokio::process::{Child, Command};

use crate::platform;

#[derive(Args)]
pub struct UpArgs {
    /// Where the platform's operator endpoint (/healthz, /readyz, /metrics) listens.
    #[arg(long, env = "EDD_HTTP_ADDR", default_value = "127.0.0.1:18090")]
    http_addr: SocketAddr,
    /// nats-server (≥ 2.11) to start when NATS is not reachable.
    #[arg(long, env = "EDD_NATS_SERVER_BIN")]
    nats_server_bin: Option<PathBuf>,
    /// Local state (NATS data when started here).
    #[arg(long, env = "EDD_HOME", default_value = ".edd")]
    home: PathBuf,
    /// Stream replicas (1 on a laptop, 3 on a cluster).
    #[arg(long, env = "EDD_STREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Where the auth service listens.
    #[arg(long, env = "EDD_AUTH_ADDR", default_value = super::serve::AUTH_ADDR)]
    auth_addr: SocketAddr,
    #[command(flatten)]
    auth: edd_auth::AuthConfig,
    #[command(flatten)]
    gateway: edd_gateway::GatewayConfig,
    /// Where the GFS master listens (the three chunkservers take 19080, 19180 and 19280).
    #[arg(long, env = "EDD_GFS_MASTER_ADDR", default_value = super::gfs::MASTER_ADDR)]
    gfs_master_addr: String,
    #[command(flatten)]
    gfs: super::gfs::MasterTiming,
    /// Where the notification service listens.
    #[arg(long, env = "EDD_NOTIFY_ADDR", default_value = super::serve::NOTIFY_ADDR)]
    notify_addr: SocketAddr,
    #[command(flatten)]
    notify: edd_notify::NotifyConfig,
    /// Where the storage service listens.
    #[arg(long, env = "EDD_STORAGE_ADDR", default_value = super::serve::STORAGE_ADDR)]
    storage_addr: SocketAddr,
    #[command(flatten)]
    storage: edd_storage::StorageConfig,
}

pub async fn run(common: &edd_kit::CommonArgs, args: UpArgs) -> Result<()> {
    // Every component's NATS identity, kept across runs; the server's authorization is generated
    // from the catalog on every start, so a new permission needs no manual step.
    let identities = args.home.join(edd_kit::config::NATS_IDENTITIES_DIR);
    let credentials = edd_events::access::generate(&identities, &[])
        .with_context(|| format!("writing the NATS identities in {}", identities.display()))?;
    let as_component = Identities { url: common.nats_url.clone(), credentials };
    let operator = as_component.credential(edd_events::access::OPERATOR)?;
    let mut nats_child = None;
    let js = match super::connect_nats_as(&common.nats_url, "edd-up", Some(&operator)).await {
        Ok(js) => {
            refuse_open_broker(&common.nats_url).await?;
            js
        }
        Err(e) => {
            let Some(bin) = &args.nats_server_bin else {
                bail!("{e}\nset EDD_NATS_SERVER_BIN to a nats-server >= 2.11 to have edd up start one, or run deploy/local/up.sh");
            };
            let config = edd_events::access::server_config_path(&identities);
            nats_child = Some(start_nats(bin, &common.nats_url, &args.home, &config).await?);
            connect_with_retry(&common.nats_url, &operator).await?
        }
    };
    println!("==> NATS {}  (identities: {})", common.nats_url, identities.display());
    edd_events::streams::ensure_streams(&js, edd_events::streams::ALL, args.replicas).await?;
    println!("==> streams: {}", edd_events::streams::ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", "));

    let mut pools = Vec::new();
    for service in platform::SERVICES {
        // Each service gets its own role and only its own database; the administrator's URL
        // stays here.
        let url = super::db::provision(&common.database_url, &args.home, service.database).await?;
        let pool = edd_projections::db::connect(&url, 5).await?;
        pools.push((service, pool));
    }
    println!(
        "==> PostgreSQL {} (databases, each with its own role: {})",
        edd_projections::db::redact(&common.database_url),
        platform::SERVICES.iter().map(|s| s.database).collect::<Vec<_>>().join(", ")
    );

    // Each service runs its own projections.
    let (trigger, shutdown) = edd_kit::Shutdown::new();
    let services = Vec::new();
    let auth_pool = pools.iter().find(|(s, _)| s.name == "auth").map(|(_, p)| p.clone()).context("auth_db")?;
    let (admin_password, generated) = admin_password(&args.home)?;
    let auth_listener = tokio::net::TcpListener::bind(args.auth_addr)
        .await
        .with_context(|| format!("cannot listen on {} (set EDD_AUTH_ADDR)", args.auth_addr))?;
    let auth_url = format!("http://{}", auth_listener.local_addr()?);
    let admin_username = args.auth.admin_username.clone();
    let mut services: Vec<tokio::task::JoinHandle<Result<()>>> = services;
    let (js_gateway, shutdown_gateway) = (as_component.connect("gateway").await?, shutdown.clone());
    let auth_deps = edd_auth::Deps { js: as_component.connect("auth").await?, pool: auth_pool };
    let mut auth_config = args.auth;
    if auth_config.trusted_proxies.is_empty() && std::env::var_os("EDD_AUTH_TRUSTED_PROXIES").is_none() {
        // The gateway below connects to auth from loopback: believe the client address and scheme
        // it forwards, so each client has its own login limits and HTTPS gets `Secure` cookies.
        // (A process on this machine that calls auth's port directly can then name its address;
        // `EDD_AUTH_TRUSTED_PROXIES=none` turns this off.)
        auth_config.trusted_proxies = edd_kit::forwarded::TrustedProxies::loopback();
    }
    let auth_shutdown = shutdown.clone();
    let password = admin_password.clone();
    services.push(tokio::spawn(async move {
        edd_auth::run(auth_config, Some(password), auth_deps, auth_listener, auth_shutdown)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }));
    println!("==> auth {auth_url}  (edd login --auth-url {auth_url})");

    let mut storage_config = args.storage;
    if storage_config.public_url.is_none() {
        // Share links name the gateway's storage host, not this process's own port.
        let gateway = &args.gateway;
        storage_config.public_url =
            Some(format!("http://storage.{}:{}", gateway.base_domain, gateway.listen_addr.port()));
    }
    let storage_url = start_storage(
        &args.home,
        &pools,
        (args.storage_addr, storage_config, &args.gfs_master_addr),
        &as_component.connect("storage").await?,
        &shutdown,
        &mut services,
    )
    .await?;

    let js_notify = as_component.connect("notify").await?;
    let notify_url =
        start_notify(&pools, (args.notify_addr, args.notify), &js_notify, &shutdown, &mut services).await?;

    let gateway_pool = pools.iter().find(|(s, _)| s.name == "gateway").map(|(_, p)| p.clone()).context("gateway_db")?;
    let mut gateway_config = args.gateway;
    gateway_config.upstreams.auth = auth_url.clone();
    gateway_config.upstreams.notifications = notify_url;
    gateway_config.upstreams.storage = storage_url;
    if std::env::var_os("EDD_GATEWAY_TLS_DEV_DIR").is_none() {
        gateway_config.tls_dev_dir = args.home.join("tls");
    }
    if std::env::var_os("EDD_GATEWAY_ACCESS_LOG").is_none() {
        // The terminal shows what the platform does, not every request.
        gateway_config.access_log = edd_gateway::observe::AccessLogTarget::File(args.home.join("gateway-access.log"));
    }
    let listeners = edd_gateway::Listeners::bind(&gateway_config).await.context(
        "cannot bind the gateway's listeners (set EDD_GATEWAY_HTTP_ADDR, EDD_GATEWAY_HTTPS_ADDR, EDD_GATEWAY_ADMIN_ADDR)",
    )?;
    let gateway_addr = listeners.http.local_addr()?;
    let https_addr = listeners.https.as_ref().map(|l| l.local_addr()).transpose()?;
    let base = gateway_config.base_domain.clone();
    let gateway_tls_dir = gateway_config.tls_dev_dir.clone();
    services.push(tokio::spawn(async move {
        let deps = edd_gateway::Deps { js: js_gateway, pool: gateway_pool };
        edd_gateway::run(gateway_config, deps, listeners, shutdown_gateway).await.map_err(|e| anyhow::anyhow!(e))
    }));
    println!(
        "==> gateway http://{gateway_addr}  (hosts: <service>.{base}; e.g. curl http://auth.{base}:{}/healthz)",
        gateway_addr.port()
    );
    if let Some(https) = https_addr {
        println!(
            "==> gateway https://{https}  (development certificate; curl --cacert {} https://auth.{base}:{}/healthz)",
            gateway_tls_dir.join("dev-cert.pem").display(),
            https.port()
        );
    }
    if generated {
        println!(
            "==> admin login: {admin_username} / {admin_password}  (generated, kept in {})",
            args.home.join("admin-password").display()
        );
    } else {
        println!(
            "==> admin login: {admin_username}, password from EDD_ADMIN_PASSWORD[_FILE] or {}",
            args.home.join("admin-password").display()
        );
    }

    let gfs_master = (args.gfs_master_addr.as_str(), args.gfs, args.replicas);
    let gfs_nats = (common.nats_url.as_str(), as_component.credential("gfs-master")?);
    start_gfs(gfs_master, &args.home, gfs_nats, &shutdown, &mut services).await?;

    let metrics = edd_kit::Metrics::new();
    let client = js.client();
    let db = Arc::new(pools[0].1.clone());
    let app = edd_kit::App::new("edd", metrics)
        .readiness("nats", move || {
            let state = client.connection_state();
            async move {
                match state {
                    async_nats::connection::State::Connected => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .readiness("postgres", move || {
            let db = db.clone();
            async move { sqlx::query("SELECT 1").execute(&*db).await.map(|_| ()) }
        })
        .build();
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (set EDD_HTTP_ADDR)", args.http_addr))?;
    let addr = listener.local_addr()?;
    println!("==> operator endpoint http://{addr}/healthz  /readyz  /metrics");
    println!("==> services: gateway, auth, storage, notifications, GFS");
    println!("==> ready. Ctrl-C stops everything.");

    let server = tokio::spawn(edd_kit::shutdown::serve(listener, app, shutdown.wait()));
    tokio::select! {
        () = edd_kit::shutdown::signal() => {}
        ended = futures_util::future::select_all(&mut services) => {
            eprintln!("==> a service stopped: {:?}", ended.0);
        }
    }
    println!("==> stopping");
    trigger.trigger();
    for service in services {
        let _ = service.await;
    }
    let _ = server.await;
    if let Some(mut child) = nats_child {
        stop_child(&mut child).await;
    }
    println!("==> stopped");
    Ok(())
}

/// The storage service on `addr`, a client of the GFS master `edd up` starts; returns its URL.
async fn start_storage(
    home: &std::path::Path,
    pools: &[(&platform::Service, sqlx::PgPool)],
    (addr, mut config, gfs_master): (SocketAddr, edd_storage::StorageConfig, &str),
    js: &async_nats::jetstream::Context,
    shutdown: &edd_kit::Shutdown,
    services: &mut Vec<tokio::task::JoinHandle<Result<()>>>,
) -> Result<String> {
    let pool = pools.iter().find(|(s, _)| s.name == "storage").map(|(_, p)| p.clone()).context("sfs_db")?;
    if std::env::var_os("EDD_GFS_MASTERS").is_none() {
        config.gfs_masters = vec![gfs_master.to_owned()];
    }
    let gfs_secret = super::gfs::client_secret(home, true)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (set EDD_STORAGE_ADDR)"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let deps = edd_storage::Deps { js: js.clone(), pool, gfs_secret };
    let stop = shutdown.clone();
    services.push(tokio::spawn(async move {
        edd_storage::run(config, deps, listener, stop).await.map_err(|e| anyhow::anyhow!("storage: {e}"))
    }));
    println!("==> storage {url}");
    Ok(url)
}

/// One GFS master and three chunkservers, each chunkserver with its own data directory under
/// `<home>/gfs/`, sharing the cluster key and client secret generated in `<home>/gfs/`.
async fn start_gfs(
    (master_addr, timing, replicas): (&str, super::gfs::MasterTiming, usize),
    home: &std::path::Path,
    (nats_url, nats_credential): (&str, edd_events::Credential),
    shutdown: &edd_kit::Shutdown,
    services: &mut Vec<tokio::task::JoinHandle<Result<()>>>,
) -> Result<()> {
    use super::gfs;
    let listener = tokio::net::TcpListener::bind(master_addr)
        .await
        .with_context(|| format!("cannot listen on {master_addr} (set EDD_GFS_MASTER_ADDR)"))?;
    let master_addr = listener.local_addr()?.to_string();
    let mut config =
        gfs::master_config("master-1".into(), master_addr.clone(), nats_url, home, (timing, replicas), true)?;
    config.nats_credential = Some(nats_credential);
    let stop = shutdown.wait();
    services.push(tokio::spawn(async move {
        edd_gfs::master::service::run(config, listener, stop).await.map_err(|e| anyhow::anyhow!("gfs master: {e}"))
    }));
    for (n, addr) in gfs::CHUNKSERVER_ADDRS.iter().enumerate() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (GFS chunkserver {})", n + 1))?;
        let data_dir = home.join("gfs").join(format!("chunkserver-{}", n + 1));
        let config = gfs::chunkserver_config(
            data_dir,
            listener.local_addr()?.to_string(),
            vec![master_addr.clone()],
            home,
            Duration::from_secs(1),
            true,
        )?;
        let stop = shutdown.wait();
        services.push(tokio::spawn(async move {
            edd_gfs::chunkserver::run(config, listener, stop).await.map_err(|e| anyhow::anyhow!("gfs chunkserver: {e}"))
        }));
    }
    println!(
        "==> GFS master {master_addr}, chunkservers {}  (data {}; edd gfs status)",
        gfs::CHUNKSERVER_ADDRS.join(", "),
        home.join("gfs").display()
    );
    Ok(())
}

/// The notification service on `addr`; returns its URL for the gateway.
async fn start_notify(
    pools: &[(&platform::Service, sqlx::PgPool)],
    (addr, config): (SocketAddr, edd_notify::NotifyConfig),
    js: &async_nats::jetstream::Context,
    shutdown: &edd_kit::Shutdown,
    services: &mut Vec<tokio::task::JoinHandle<Result<()>>>,
) -> Result<String> {
    let pool = pools.iter().find(|(s, _)| s.name == "notify").map(|(_, p)| p.clone()).context("notifications_db")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (set EDD_NOTIFY_ADDR)"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let deps = edd_notify::Deps { js: js.clone(), pool };
    let stop = shutdown.clone();
    services.push(tokio::spawn(async move {
        edd_notify::run(config, deps, listener, stop).await.map_err(|e| anyhow::anyhow!(e))
    }));
    println!("==> notifications {url}  (edd notifications ls | watch)");
    Ok(url)
}

/// The first admin's password: `EDD_ADMIN_PASSWORD[_FILE]`, else `<home>/admin-password`, else a new
/// random one written there (mode 0600). Returns whether it was generated now.
fn admin_password(home: &std::path::Path) -> Result<(String, bool)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(password) = edd_kit::secret("ADMIN_PASSWORD")? {
        return Ok((password, false));
    }
    let path = home.join("admin-password");
    if let Ok(password) = std::fs::read_to_string(&path) {
        return Ok((password.trim().to_owned(), false));
    }
    std::fs::create_dir_all(home)?;
    let password = format!("{}{}", edd_events::Token::random(), edd_events::Token::random());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{password}")?;
    Ok((password, true))
}

/// The platform's identities, for connecting each in-process component as itself.
struct Identities {
    url: String,
    credentials: std::collections::BTreeMap<String, edd_events::Credential>,
}

impl Identities {
    fn credential(&self, component: &str) -> Result<edd_events::Credential> {
        self.credentials.get(component).cloned().with_context(|| format!("no NATS identity for {component}"))
    }

    /// JetStream as `component`, with only that component's permissions.
    async fn connect(&self, component: &str) -> Result<async_nats::jetstream::Context> {
        let credential = self.credential(component)?;
        let client = edd_events::connect(&self.url, &format!("edd-{component}"), Some(&credential)).await?;
        Ok(async_nats::jetstream::new(client))
    }
}

/// A broker that lets anyone in would let anyone write the log: refuse to run on it.
async fn refuse_open_broker(url: &str) -> Result<()> {
    let anonymous =
        edd_events::options("edd-up-probe", None).connection_timeout(Duration::from_secs(3)).connect(url).await;
    if anonymous.is_ok() {
        bail!(
            "NATS at {url} accepts anonymous connections, so anyone could write the platform's log. \
             Stop it (deploy/local/down.sh stops one that an older up.sh started) and let edd up start \
             NATS with the platform's identities, or configure it with `edd nats config`"
        );
    }
    Ok(())
}

async fn start_nats(bin: &PathBuf, url: &str, home: &std::path::Path, config: &std::path::Path) -> Result<Child> {
    let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap_or(4333);
    let dir = home.join("nats");
    std::fs::create_dir_all(&dir)?;
    println!(
        "==> starting {} on 127.0.0.1:{port} (data {}, authorization {})",
        bin.display(),
        dir.display(),
        config.display()
    );
    // The broker's log is for the operator only (0600), like every file under .edd with logs or secrets.
    let log = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(home.join("nats.log"))?
    };
    Command::new(bin)
        .arg("-c")
        .arg(config)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

async fn connect_with_retry(url: &str, operator: &edd_events::Credential) -> Result<async_nats::jetstream::Context> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match super::connect_nats_as(url, "edd-up", Some(operator)).await {
            Ok(js) if js.query_account().await.is_ok() => return Ok(js),
            _ if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => bail!("NATS at {url} has no JetStream"),
            Err(e) => return Err(e),
        }
    }
}

/// SIGTERM, then SIGKILL if it does not exit within five seconds.
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        // Ask nicely first: nats-server flushes JetStream on SIGTERM.
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
