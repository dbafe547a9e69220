//! A private PostgreSQL database per test, owned by a login role of its own (as every service's is),
//! both dropped afterwards.

use std::str::FromStr;

use anyhow::Context as _;
use sqlx::{postgres::PgConnectOptions, ConnectOptions, PgPool};

pub struct TestDb {
    /// The database's name, and its owner role's.
    pub name: String,
    /// Connected as the owner role, as the service that gets this database would be.
    pub pool: PgPool,
    admin_url: String,
    url: String,
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
        let password = edd_events::Credential::random(&name).password().to_owned();
        let url = edd_projections::db::provision(&admin_url, &name, &password)
            .await
            .with_context(|| format!("creating test database {name}"))?;
        let pool = edd_projections::db::connect(&url, 10).await?;
        Ok(Self { name, pool, admin_url, url })
    }

    /// The administrator's URL of the server this database lives on (operator tools use it).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// This database's own URL, with its owner role's password: what a service process is given.
    pub fn url(&self) -> &str {
        &self.url
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
                        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{name}\"")).execute(&mut conn).await;
                    }
                }
            });
        })
        .join();
    }
}
