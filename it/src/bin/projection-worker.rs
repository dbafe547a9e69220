//! A projection runner in a process of its own, so failure tests can SIGKILL it mid-batch.
//!
//! Environment: `EDD_IT_NATS_URL`, `EDD_NATS_CREDENTIALS_FILE`, `EDD_IT_ADMIN_URL`, `EDD_IT_DB`, `EDD_IT_INSTANCE`,
//! `EDD_IT_BATCH` (events per batch), `EDD_IT_SLOW_MS` (sleep inside each batch).

use std::sync::Arc;

use anyhow::Context as _;
use edd_it::fixtures::CountingProjection;
use edd_projections::{Runner, RunnerConfig};

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let credential = edd_kit::nats_credential("auth")?;
    let nats = edd_events::connect(&var("EDD_IT_NATS_URL")?, "projection-worker", credential.as_ref()).await?;
    let js = async_nats::jetstream::new(nats);
    let pool = edd_projections::ensure_database(&var("EDD_IT_ADMIN_URL")?, &var("EDD_IT_DB")?, 4).await?;
    let config = RunnerConfig {
        batch_size: var("EDD_IT_BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(100),
        standby_poll: std::time::Duration::from_millis(100),
        instance: var("EDD_IT_INSTANCE")?,
        ..Default::default()
    };
    let slow_ms = var("EDD_IT_SLOW_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let projection = Arc::new(CountingProjection { name: "it/counting", slow_ms });
    let (runner, _handle) = Runner::new(pool, js, projection, config);
    runner.run(std::future::pending()).await?;
    Ok(())
}
