//! Per-service databases, each owned by a login role of its own (ARCHITECTURE: a service reads
//! only its own database). The operator provisions them with the administrator's URL
//! ([`provision`]); a service connects with its own URL ([`connect`]).

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

/// Makes sure database `name` and its owner role (also called `name`) exist on the server of
/// `admin_url`, and returns a pool that acts **as that role** (`SET ROLE`), so whatever an operator
/// command creates there belongs to the service, as if the service had made it.
///
/// A service itself never holds the administrator's URL: it gets the URL [`provision`] returns and
/// connects with [`connect`].
pub async fn ensure_database(admin_url: &str, name: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let admin = setup(admin_url, name, None).await?;
    // `-c role=…` at connection start is `SET ROLE` for the whole session, and it travels with
    // the options to every connection made from them (a projection runner's dedicated one too).
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(admin.database(name).options([("role", name)]))
        .await
        .map_err(|source| DbError::Unreachable { url: redact(admin_url), source })?;
    Ok(pool)
}

/// Gives the service that owns database `name` its own login: role `name` with `password`, owner of
/// that database and of nothing else, no superuser, no `CREATEDB`/`CREATEROLE`, and the only role
/// (besides superusers) that may connect to it. Returns the service's URL. Idempotent: run it on
/// every start (it also sets the password, so a rotated one takes effect).
pub async fn provision(admin_url: &str, name: &str, password: &str) -> Result<String, DbError> {
    setup(admin_url, name, Some(password)).await?;
    let admin = PgConnectOptions::from_str(admin_url).map_err(DbError::Url)?;
    let port = admin.get_port();
    let host = admin.get_host();
    let host = if host.starts_with('/') { "localhost".to_owned() } else { host.to_owned() };
    Ok(format!("postgres://{name}:{password}@{host}:{port}/{name}"))
}

/// A pool to a service's own database with its own role (the URL [`provision`] returned).
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url).map_err(DbError::Url)?.disable_statement_logging();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|source| DbError::Unreachable { url: redact(url), source })
}

/// The role, the database and their privileges, as the administrator.
async fn setup(admin_url: &str, name: &str, password: Option<&str>) -> Result<PgConnectOptions, DbError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(DbError::Name(name.to_owned()));
    }
    let admin = PgConnectOptions::from_str(admin_url).map_err(DbError::Url)?.disable_statement_logging();
    let redacted = redact(admin_url);
    let mut conn = sqlx::PgConnection::connect_with(&admin)
        .await
        .map_err(|source| DbError::Unreachable { url: redacted.clone(), source })?;
    // Two processes provisioning at once (replicas starting together) would race on the same
    // catalog rows ("tuple concurrently updated"): one at a time, until the hand-over is done.
    // The lock ends with this connection.
    sqlx::query("SELECT pg_advisory_lock(hashtext('edd.provision'))").execute(&mut conn).await?;
    // Names were validated above and passwords are quoted as literals: identifiers and DDL
    // arguments cannot be bound as parameters.
    let login = match password {
        Some(p) => format!("LOGIN PASSWORD {}", quote_literal(p)),
        None => String::new(),
    };
    let role_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    let attributes = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
    let role = if role_exists {
        format!("ALTER ROLE \"{name}\" {attributes} {login}")
    } else {
        format!("CREATE ROLE \"{name}\" {attributes} {login}")
    };
    match sqlx::query(&role).execute(&mut conn).await {
        Ok(_) => {}
        // Another replica created it between our check and our create.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42710") | Some("23505")) => {}
        Err(e) => return Err(e.into()),
    }
    let owner: Option<String> =
        sqlx::query_scalar("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut conn)
            .await?;
    match owner.as_deref() {
        None => match sqlx::query(&format!("CREATE DATABASE \"{name}\" OWNER \"{name}\"")).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = name, "created database"),
            Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e.into()),
        },
        Some(o) if o == name => {}
        Some(_) => {
            sqlx::query(&format!("ALTER DATABASE \"{name}\" OWNER TO \"{name}\"")).execute(&mut conn).await?;
        }
    }
    sqlx::query(&format!("REVOKE ALL ON DATABASE \"{name}\" FROM PUBLIC")).execute(&mut conn).await?;
    let handed = hand_over(&admin, name).await;
    let _ = conn.close().await;
    handed?;
    Ok(admin)
}

/// A database made before services had roles of their own holds objects the administrator
/// owns; the service's role takes them over (schemas, tables with their sequences, views).
async fn hand_over(admin: &PgConnectOptions, name: &str) -> Result<(), DbError> {
    let mut conn = sqlx::PgConnection::connect_with(&admin.clone().database(name)).await?;
    let statement = format!(
        r#"DO $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT nspname FROM pg_namespace
                     WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
                       AND nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema' LOOP
                EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r.nspname, '{name}');
            END LOOP;
            -- Sequences owned by a column (serial, identity) move with their table.
            FOR r IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
                       AND c.relkind IN ('r', 'p', 'v', 'S')
                       AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
                       AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))) LOOP
                EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', r.nspname, r.relname, '{name}');
            END LOOP;
        END $$"#
    );
    sqlx::query(&statement).execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(())
}

/// `text` as an SQL string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
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
