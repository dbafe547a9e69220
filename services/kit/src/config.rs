//! Command-line and environment configuration shared by every service.
//!
//! Every flag also reads an `EDD_*` variable so the same binary runs from a shell, from `edd up`
//! and from a Kubernetes manifest. Secrets come from files when `EDD_<NAME>_FILE` is set, which is
//! how Kubernetes mounts them, and never from flags, which would show up in `ps`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The log filter when none is given.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Flags every service command flattens into its own arguments.
#[derive(clap::Args, Clone)]
pub struct CommonArgs {
    /// NATS server URL.
    #[arg(long, env = "EDD_NATS_URL", default_value = "nats://127.0.0.1:4333")]
    pub nats_url: String,

    /// PostgreSQL connection URL.
    #[arg(long, env = "EDD_DATABASE_URL", default_value = "postgres://edd:edd@127.0.0.1:5432/postgres")]
    pub database_url: String,

    /// Log output format.
    #[arg(long, env = "EDD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info,edd_auth=debug`).
    #[arg(long, env = "EDD_LOG", default_value = DEFAULT_LOG_LEVEL)]
    pub log_level: String,
}

// Hand-written so that logging the configuration never prints the database password.
impl fmt::Debug for CommonArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonArgs")
            .field("nats_url", &redact_url(&self.nats_url))
            .field("database_url", &redact_url(&self.database_url))
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .finish()
    }
}

/// Flags of a service that listens for HTTP.
#[derive(clap::Args, Clone, Debug)]
pub struct HttpArgs {
    /// Address the HTTP API listens on; each service has its own default port.
    #[arg(long, env = "EDD_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
}

impl HttpArgs {
    /// The configured address, or the service's own default.
    pub fn addr_or(&self, default: SocketAddr) -> SocketAddr {
        self.http_addr.unwrap_or(default)
    }
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for the log service and machines.
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read secret file {path} (from {var})")]
    SecretFile {
        var: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("environment variable {var} is not valid UTF-8")]
    NotUnicode { var: String },
    #[error("the NATS credential from {from} is not `user:password`")]
    NatsCredential { from: String },
}

/// Where `edd up` keeps each component's NATS credential, under `EDD_HOME`.
pub const NATS_IDENTITIES_DIR: &str = "nats/identities";

/// The NATS identity of `component`: `EDD_NATS_CREDENTIALS_FILE` (how Kubernetes mounts it) or
/// `EDD_NATS_CREDENTIALS`, one line `user:password`; else the file `edd up` generated for it in
/// `$EDD_HOME/nats/identities/`; else none — an anonymous connection, which the platform's brokers
/// refuse.
pub fn nats_credential(component: &str) -> Result<Option<edd_events::Credential>, ConfigError> {
    if let Some(text) = secret("nats_credentials")? {
        return parse_credential(&text, "EDD_NATS_CREDENTIALS[_FILE]").map(Some);
    }
    let home = std::env::var_os("EDD_HOME").map_or_else(|| PathBuf::from(".edd"), PathBuf::from);
    let path = edd_events::access::credential_path(&home.join(NATS_IDENTITIES_DIR), component);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_credential(&text, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::SecretFile { var: "EDD_HOME".into(), path, source }),
    }
}

fn parse_credential(text: &str, from: &str) -> Result<edd_events::Credential, ConfigError> {
    edd_events::Credential::parse(text).ok_or_else(|| ConfigError::NatsCredential { from: from.to_owned() })
}

/// Reads the secret `name` (e.g. `"admin_password"`): the contents of the file named by
/// `EDD_ADMIN_PASSWORD_FILE` if that is set, else the value of `EDD_ADMIN_PASSWORD`, else `None`.
pub fn secret(name: &str) -> Result<Option<String>, ConfigError> {
    secret_from(name, |var| match std::env::var_os(var) {
        None => Ok(None),
        Some(value) => value.into_string().map(Some).map_err(|_| ConfigError::NotUnicode { var: var.to_owned() }),
    })
}

// Takes the environment as a function so tests need not mutate the process environment,
// which is unsound while other test threads read it.
fn secret_from(
    name: &str,
    env: impl Fn(&str) -> Result<Option<String>, ConfigError>,
) -> Result<Option<String>, ConfigError> {
    let var = format!("EDD_{}", name.to_uppercase().replace('-', "_"));
    let file_var = format!("{var}_FILE");
    if let Some(path) = env(&file_var)? {
        let path = PathBuf::from(path);
        let contents =
            std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile { var: file_var, path, source })?;
        // Editors and `echo` add a final newline that is never part of the secret.
        let secret = contents.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&contents);
        return Ok(Some(secret.to_owned()));
    }
    env(&var)
}

/// Replaces the password in `scheme://user:password@host/...` with `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<Option<String>, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| Ok(vars.get(name).cloned())
    }

    fn temp_file(contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("edd-kit-secret-{}", uuid::Uuid::now_v7()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn secret_absent_is_none() {
        assert_eq!(secret_from("jwt_key", env_of(&[])).unwrap(), None);
    }

    #[test]
    fn secret_from_env_var() {
        let env = env_of(&[("EDD_JWT_KEY", "s3cret")]);
        assert_eq!(secret_from("jwt-key", env).unwrap().as_deref(), Some("s3cret"));
    }

    #[test]
    fn secret_file_wins_and_loses_its_trailing_newline() {
        let path = temp_file("from-file\r\n");
        let env = env_of(&[("EDD_JWT_KEY", "from-env"), ("EDD_JWT_KEY_FILE", path.to_str().unwrap())]);
        let secret = secret_from("jwt_key", env).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(secret.as_deref(), Some("from-file"));
    }

    #[test]
    fn secret_file_keeps_inner_whitespace() {
        let path = temp_file("line one\nline two\n\n");
        let env = env_of(&[("EDD_KEY_FILE", path.to_str().unwrap())]);
        let secret = secret_from("key", env).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(secret.as_deref(), Some("line one\nline two\n"));
    }

    #[test]
    fn unreadable_secret_file_is_an_error() {
        let env = env_of(&[("EDD_KEY_FILE", "/nonexistent/edd/secret")]);
        let err = secret_from("key", env).unwrap_err();
        assert!(matches!(err, ConfigError::SecretFile { ref var, .. } if var == "EDD_KEY_FILE"));
    }

    #[test]
    fn debug_hides_database_password() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            common: CommonArgs,
        }
        let cli = Cli::try_parse_from(["edd", "--database-url", "postgres://u:pw@db:5432/x"]).unwrap();
        let shown = format!("{:?}", cli.common);
        assert!(shown.contains("postgres://u:***@db:5432/x"), "{shown}");
        assert!(!shown.contains("pw"), "{shown}");
    }

    #[test]
    fn redact_leaves_urls_without_password_alone() {
        assert_eq!(redact_url("nats://127.0.0.1:4333"), "nats://127.0.0.1:4333");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
