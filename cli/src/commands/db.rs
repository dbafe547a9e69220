//! `edd db`: each service's database and its own login role, provisioned with the
//! administrator's URL (`EDD_DATABASE_URL`); the services get only their own URL.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Subcommand;
use edd_events::access::write_private;

use crate::platform;

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create (or bring up to date) the database and the login role of each named service's
    /// database (default: all), with a generated password kept in `<home>/postgres` (0600); prints
    /// the file holding each service's URL, for its EDD_DATABASE_URL_FILE.
    Provision {
        /// Databases, e.g. auth_db sfs_db (default: every service's).
        databases: Vec<String>,
        #[arg(long, env = "EDD_HOME", default_value = ".edd")]
        home: PathBuf,
    },
}

pub async fn run(common: &edd_kit::CommonArgs, cmd: DbCommand) -> Result<()> {
    match cmd {
        DbCommand::Provision { databases, home } => {
            let names: Vec<&str> = if databases.is_empty() {
                platform::SERVICES.iter().map(|s| s.database).collect()
            } else {
                databases.iter().map(String::as_str).collect()
            };
            for name in names {
                provision(&common.database_url, &home, name).await?;
                println!("{name}: {}", url_path(&home, name).display());
            }
            Ok(())
        }
    }
}

/// Where the URL of database `name` (with its role's password) is kept.
pub fn url_path(home: &Path, name: &str) -> PathBuf {
    home.join("postgres").join(format!("{name}.url"))
}

/// Provisions database `name` and its role; the password is generated once and kept in
/// `<home>/postgres/<name>.password`, the service's URL written to [`url_path`] (both 0600).
pub async fn provision(admin_url: &str, home: &Path, name: &str) -> Result<String> {
    let dir = home.join("postgres");
    edd_events::access::private_dir(&dir)?;
    let password_file = dir.join(format!("{name}.password"));
    let password = match std::fs::read_to_string(&password_file) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_owned(),
        _ => {
            let password = edd_events::Credential::random(name).password().to_owned();
            write_private(&password_file, password.as_bytes())?;
            password
        }
    };
    let url = edd_projections::db::provision(admin_url, name, &password)
        .await
        .context("PostgreSQL is needed (deploy/local/up.sh installs and starts one)")?;
    write_private(&url_path(home, name), url.as_bytes())?;
    Ok(url)
}
