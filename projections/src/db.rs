//! Per-service databases: created on first start, then connected to with a pool.

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgPool,
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL: {0}")]
    Url(sqlx::Error),
    #[error("database name {0:?} must be lowercase letters, digits and '_'")]
    Name(String),
    #[error("PostgreSQL at {url} is unreachable: {source}")]
    Unreachable { url: String, source: sqlx::Error },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Makes sure database `name` exists on the server of `admin_url` and returns a pool to it.
pub async fn ensure_database(admin_url: &str, name: &str, max_connections: u32) -> Result<PgPool, DbError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(DbError::Name(name.to_owned()));
    }
    let admin = PgConnectOptions::from_str(admin_url).map_err(DbError::Url)?.disable_statement_logging();
    let redacted = redact(admin_url);
    let mut conn = sqlx::PgConnection::connect_with(&admin)
        .await
        .map_err(|source| DbError::Unreachable { url: redacted.clone(), source })?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        // The name was validated above; identifiers cannot be bound as parameters.
        match sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = name, "created database"),
            // Another replica created it between our check and our create.
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("42P04") || e.code().as_deref() == Some("23505") => {}
            Err(e) => return Err(e.into()),
        }
    }
    let _ = conn.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(admin.database(name))
        .await
        .map_err(|source| DbError::Unreachable { url: redacted, source })?;
    Ok(pool)
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(super::redact("postgres://edd:secret@h:5432/db"), "postgres://edd@h:5432/db");
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}
