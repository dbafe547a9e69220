//! One module per top-level command.

pub mod account;
pub mod admin;
pub mod api;
pub mod events;
pub mod gfs;
pub mod notifications;
pub mod projections;
pub mod serve;
pub mod service_accounts;
pub mod storage;
pub mod tokens;
pub mod up;

/// Connects to NATS with a deadline, so a wrong URL is a clear error rather than a hang.
pub async fn connect_nats(url: &str) -> anyhow::Result<async_nats::jetstream::Context> {
    let connect = async_nats::ConnectOptions::new()
        .name("edd-cli")
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url);
    let client = connect
        .await
        .map_err(|e| anyhow::anyhow!("NATS at {url} is unreachable: {e} (is the platform up? deploy/local/up.sh)"))?;
    Ok(async_nats::jetstream::new(client))
}
