//! One module per top-level command.

pub mod account;
pub mod admin;
pub mod api;
pub mod db;
pub mod events;
pub mod gfs;
pub mod nats;
pub mod notifications;
pub mod projections;
pub mod serve;
pub mod service_accounts;
pub mod storage;
pub mod tokens;
pub mod up;

/// Connects to NATS as the operator (`edd`: `EDD_NATS_CREDENTIALS[_FILE]`, else the credential
/// `edd up` generated) with a deadline, so a wrong URL is a clear error rather than a hang.
pub async fn connect_nats(url: &str) -> anyhow::Result<async_nats::jetstream::Context> {
    let credential = edd_kit::nats_credential(edd_events::access::OPERATOR)?;
    connect_nats_as(url, "edd-cli", credential.as_ref()).await
}

/// [`connect_nats`] with a given identity.
pub async fn connect_nats_as(
    url: &str,
    name: &str,
    credential: Option<&edd_events::Credential>,
) -> anyhow::Result<async_nats::jetstream::Context> {
    let connect =
        edd_events::options(name, credential).connection_timeout(std::time::Duration::from_secs(5)).connect(url);
    let client = connect
        .await
        .map_err(|e| anyhow::anyhow!("NATS at {url} is unreachable: {e} (is the platform up? deploy/local/up.sh)"))?;
    Ok(async_nats::jetstream::new(client))
}
