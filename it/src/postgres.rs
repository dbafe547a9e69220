//! A private PostgreSQL database per test, dropped afterwards.

use std::str::FromStr;

use anyhow::Context as _;
use sqlx::{postgres::PgConnectOptions, ConnectOptions, PgPool};

pub struct TestDb {
    pub name: String,
    pub pool: PgPool,
    admin_url: String,
}

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("EDD_IT_DATABASE_URL")
        .or_else(|_| std::env::var("EDD_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://edd:edd@127.0.0.1:5432/postgres".to_owned())
}

impl TestDb {
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = admin_url();
        let name = format!("edd_it_{}", uuid::Uuid::now_v7().simple());
        let pool = edd_projections::ensure_database(&admin_url, &name, 10)
            .await
            .with_context(|| format!("creating test database {name}"))?;
        Ok(Self { name, pool, admin_url })
    }

    /// The server URL this database lives on (child processes call `ensure_database` with it).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside async; do the cleanup on a thread of its own, best effort. FORCE ends the
        // connections still open (a runner task of a failed test), so this never waits on them.
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(opts) = PgConnectOptions::from_str(&admin) {
                    if let Ok(mut conn) = opts.connect().await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}
