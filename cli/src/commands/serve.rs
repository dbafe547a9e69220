//! `edd serve <service>`: one component in the foreground, as Kubernetes runs it (one image, one
//! argument per Deployment) and as failure tests start and kill single components.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use edd_kit::{HttpArgs, Shutdown};

#[derive(Subcommand)]
pub enum ServeCommand {
    /// The auth service (users, sessions, service accounts, API tokens); database auth_db.
    Auth(ServeAuthArgs),
    /// The gateway (routing by host and path to the services); database gateway_db.
    Gateway(Box<ServeGatewayArgs>),
    /// The notification service (inboxes, mutes, live WebSocket/SSE); database notifications_db.
    Notify(ServeNotifyArgs),
    /// The storage service (namespaces and files on GFS); database sfs_db.
    Storage(ServeStorageArgs),
}

#[derive(Args)]
pub struct ServeStorageArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    config: edd_storage::StorageConfig,
    /// Where `edd up` keeps the GFS client secret, when `EDD_GFS_CLIENT_SECRET[_FILE]` is not set.
    #[arg(long, env = "EDD_HOME", default_value = ".edd")]
    home: std::path::PathBuf,
    /// The service's database on the server EDD_DATABASE_URL names.
    #[arg(long, env = "EDD_STORAGE_DATABASE", default_value = "sfs_db")]
    database: String,
}

#[derive(Args)]
pub struct ServeGatewayArgs {
    #[command(flatten)]
    config: edd_gateway::GatewayConfig,
}

#[derive(Args)]
pub struct ServeNotifyArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    config: edd_notify::NotifyConfig,
}

#[derive(Args)]
pub struct ServeAuthArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    config: edd_auth::AuthConfig,
}

/// Where the auth service listens unless told otherwise.
pub const AUTH_ADDR: &str = "127.0.0.1:18081";
/// Where the notification service listens unless told otherwise.
pub const NOTIFY_ADDR: &str = "127.0.0.1:18084";
/// Where the storage service listens unless told otherwise.
pub const STORAGE_ADDR: &str = "127.0.0.1:18082";

pub async fn run(common: &edd_kit::CommonArgs, cmd: ServeCommand) -> Result<()> {
    match cmd {
        ServeCommand::Auth(args) => serve_auth(common, args).await,
        ServeCommand::Gateway(args) => serve_gateway(common, *args).await,
        ServeCommand::Notify(args) => serve_notify(common, args).await,
        ServeCommand::Storage(args) => serve_storage(common, args).await,
    }
}

/// Connects to NATS as `component` (its own identity, see [`edd_kit::nats_credential`]) and waits
/// for the streams it reads; services never create streams (the operator does: `edd up`).
pub(crate) async fn backbone(common: &edd_kit::CommonArgs, component: &str) -> Result<async_nats::jetstream::Context> {
    let credential = edd_kit::nats_credential(component)?;
    let client = edd_events::connect(&common.nats_url, &format!("edd-{component}"), credential.as_ref()).await?;
    let js = async_nats::jetstream::new(client);
    let reads = edd_events::access::identity(component).map(|i| i.reads).unwrap_or_default();
    edd_events::streams::require(&js, reads, std::time::Duration::from_secs(30)).await?;
    Ok(js)
}

/// The service's own database with its own role: `EDD_DATABASE_URL_FILE` (how Kubernetes mounts
/// it) or `EDD_DATABASE_URL` must name database `name`, as `edd up` or `edd db provision` made it.
/// An administrator's URL (another database, or a superuser) is refused: a service reads only its
/// own data.
pub(crate) async fn database(common: &edd_kit::CommonArgs, name: &str) -> Result<sqlx::PgPool> {
    let url = edd_kit::secret("database_url")?.unwrap_or_else(|| common.database_url.clone());
    let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&url)
        .context("EDD_DATABASE_URL is not a PostgreSQL URL")?;
    if options.get_database() != Some(name) {
        anyhow::bail!(
            "EDD_DATABASE_URL names database {:?}: this service connects only to its own database {name}, \
             with its own role (`edd up` provisions it; elsewhere `edd db provision {name}`)",
            options.get_database().unwrap_or("")
        );
    }
    let pool = edd_projections::db::connect(&url, 10).await?;
    let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&pool)
        .await
        .context("reading the service role's attributes")?;
    if superuser {
        anyhow::bail!(
            "EDD_DATABASE_URL logs in as a superuser: give the service its own role (`edd db provision {name}`)"
        );
    }
    Ok(pool)
}

/// Stops on SIGINT/SIGTERM.
fn on_signal() -> Shutdown {
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        edd_kit::shutdown::signal().await;
        trigger.trigger();
    });
    shutdown
}

async fn serve_gateway(common: &edd_kit::CommonArgs, args: ServeGatewayArgs) -> Result<()> {
    let js = backbone(common, "gateway").await?;
    let pool = database(common, "gateway_db").await?;
    let config = args.config;
    let listeners = edd_gateway::Listeners::bind(&config).await.context(
        "cannot bind the gateway's listeners (set EDD_GATEWAY_HTTP_ADDR, EDD_GATEWAY_HTTPS_ADDR, EDD_GATEWAY_ADMIN_ADDR)",
    )?;
    edd_gateway::run(config, edd_gateway::Deps { js, pool }, listeners, on_signal()).await?;
    Ok(())
}

async fn serve_auth(common: &edd_kit::CommonArgs, args: ServeAuthArgs) -> Result<()> {
    let js = backbone(common, "auth").await?;
    let pool = database(common, "auth_db").await?;
    let admin_password = edd_kit::secret("ADMIN_PASSWORD")?;
    let addr = args.http.addr_or(AUTH_ADDR.parse::<SocketAddr>()?);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    edd_auth::run(args.config, admin_password, edd_auth::Deps { js, pool }, listener, on_signal()).await?;
    Ok(())
}

async fn serve_storage(common: &edd_kit::CommonArgs, args: ServeStorageArgs) -> Result<()> {
    let js = backbone(common, "storage").await?;
    let pool = database(common, &args.database).await?;
    let gfs_secret = super::gfs::client_secret(&args.home, false)?;
    let addr = args.http.addr_or(STORAGE_ADDR.parse::<SocketAddr>()?);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    edd_storage::run(args.config, edd_storage::Deps { js, pool, gfs_secret }, listener, on_signal()).await?;
    Ok(())
}

async fn serve_notify(common: &edd_kit::CommonArgs, args: ServeNotifyArgs) -> Result<()> {
    let js = backbone(common, "notify").await?;
    let pool = database(common, "notifications_db").await?;
    let addr = args.http.addr_or(NOTIFY_ADDR.parse::<SocketAddr>()?);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    edd_notify::run(args.config, edd_notify::Deps { js, pool }, listener, on_signal()).await?;
    Ok(())
}
