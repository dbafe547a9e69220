//! `edd-it`: the integration harness and the end-to-end suite of Edd Cloud.
//!
//! Every test gets real parts of its own: a private `nats-server` (≥ 2.11, on an ephemeral port, with
//! its own JetStream directory) and a private PostgreSQL database on the configured server. Nothing is
//! mocked and nothing is shared between tests, so they run in parallel.
//!
//! Where the parts come from:
//! - NATS: the binary at `EDD_NATS_SERVER_BIN` (exported by `deploy/local/test.sh`), else
//!   `.edd/bin/nats-server` in the repository, else an error saying how to get one.
//! - PostgreSQL: the server at `EDD_IT_DATABASE_URL`, else `EDD_DATABASE_URL`, else the local default.
//!   The role must be allowed to create databases.
//!
//! (testcontainers would be the third source where a Docker engine exists; none does on the machines
//! this project runs its CI on, so the harness does not carry that dependency.)

pub mod bench;
pub mod fixtures;
pub mod gfs;
pub mod grpc;
mod nats;
mod postgres;
pub mod services;
pub mod world;

pub use nats::{NatsServer, SUPERUSER};
pub use postgres::TestDb;
pub use services::Service;
pub use world::{assert_problem, World};

use std::time::Duration;

use anyhow::Context as _;

/// A test's private platform backbone: its own NATS (with every stream created) and its own database.
pub struct TestEnv {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub db: TestDb,
}

impl TestEnv {
    pub async fn new() -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let client = edd_events::connect(&nats.url(), "edd-it", Some(nats.superuser()))
            .await
            .context("connecting to test NATS")?;
        let js = async_nats::jetstream::new(client.clone());
        edd_events::streams::ensure_streams(&js, edd_events::streams::ALL, 1).await?;
        let db = TestDb::create().await?;
        Ok(Self { nats, client, js, db })
    }

    pub fn events(&self) -> edd_events::EventStore {
        edd_events::EventStore::new(self.js.clone())
    }

    /// JetStream as component `name`, with only its permissions: what a service started by the
    /// harness connects with.
    pub async fn js_as(&self, name: &str) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.nats.connect_as(name).await?))
    }
}

/// How often [`eventually`] asks.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` every [`POLL`] until it returns `Some`, or fails after `timeout` (with the last error
/// `check` gave). Tests wait on conditions, never on fixed sleeps; this is the one polling loop of the
/// harness and the suite.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    eventually_every(POLL, timeout, what, check).await
}

/// [`eventually`], asking every `interval`; `Duration::ZERO` asks again as soon as the runtime has
/// run the other tasks (for a test that measures how soon something happens).
pub async fn eventually_every<T, F, Fut>(
    interval: Duration,
    timeout: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        if interval.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(interval).await;
        }
    }
}
