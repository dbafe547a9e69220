//! Talking to the auth service: where it is, which credential to send, and the config file that
//! remembers both between commands.
//!
//! The URL is `--auth-url`/`EDD_AUTH_URL` when given, else the one `edd login` stored, else
//! [`DEFAULT_AUTH_URL`]. The credential is `EDD_TOKEN` when set (an API token, for scripts), else the
//! session `edd login` stored. The config file holds a secret, so it is written `0600` in a `0700`
//! directory, through a temporary file renamed into place.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use reqwest::{header, Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where `edd up` runs the auth service.
pub const DEFAULT_AUTH_URL: &str = "http://127.0.0.1:18081";

/// The global `--auth-url`.
#[derive(clap::Args, Clone, Debug)]
pub struct AuthArgs {
    /// Auth service URL [default: the one `edd login` used, else http://127.0.0.1:18081].
    #[arg(long, env = "EDD_AUTH_URL", global = true)]
    pub auth_url: Option<String>,
}

impl AuthArgs {
    /// The URL to talk to: given explicitly, else the one logged in to, else the default.
    pub fn url(&self, config: &Config) -> String {
        let url = self.auth_url.as_deref().or(config.url.as_deref()).unwrap_or(DEFAULT_AUTH_URL);
        url.trim_end_matches('/').to_owned()
    }

    /// A client that sends `EDD_TOKEN`, else the stored session.
    ///
    /// The stored session is only sent to the URL it was issued by, so pointing `--auth-url`
    /// elsewhere never hands it to another server.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let config = match config_path() {
            Ok(path) => Config::load(&path)?,
            Err(_) => Config::default(),
        };
        let url = self.url(&config);
        let credential = match (env_token(), config.token) {
            (Some(token), _) => Credential::Env(token),
            (None, Some(token)) => match config.url.as_deref().map(|u| u.trim_end_matches('/')) {
                Some(stored) if stored != url => {
                    return Err(
                        ApiError::NotLoggedIn { url, note: format!(" (the stored session is for {stored})") }.into()
                    )
                }
                _ => Credential::Stored(token),
            },
            (None, None) => return Err(ApiError::NotLoggedIn { url, note: String::new() }.into()),
        };
        Ok(ApiClient::new(&url, Some(credential))?)
    }

    /// A client of another service of the same platform (`storage`, `notifications`), with the same
    /// credential: at `explicit` when given, else at [`service_url`] of the auth URL.
    pub fn service_client(&self, service: &str, explicit: Option<&str>) -> anyhow::Result<ApiClient> {
        let auth = self.client()?;
        let url = match explicit {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => service_url(auth.base.as_str(), service).with_context(|| {
                format!("cannot tell where the {service} service is from {}; pass its URL", auth.base)
            })?,
        };
        let invalid = |reason: String| ApiError::InvalidUrl { url: url.clone(), reason };
        let mut client = ApiClient::new(&url, auth.token)?;
        client.http = reqwest::Client::builder()
            .user_agent(concat!("edd-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            // Transfers take as long as they take; reads inside them are bounded instead.
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(client)
    }
}

/// Where `edd up` runs each service, by its gateway host name.
const LOCAL_PORTS: &[(&str, u16)] = &[("auth", 18081), ("storage", 18082), ("notifications", 18084)];

/// The URL of `service` on the platform whose auth service is at `auth_url`: through the gateway
/// (`http://auth.example.com:8080` → `http://storage.example.com:8080`), or on `edd up`'s local
/// ports (`http://127.0.0.1:18081` → `http://127.0.0.1:18082`).
pub fn service_url(auth_url: &str, service: &str) -> Option<String> {
    let mut url = Url::parse(auth_url).ok()?;
    let host = url.host_str()?.to_owned();
    if let Some(domain) = host.strip_prefix("auth.") {
        url.set_host(Some(&format!("{service}.{domain}"))).ok()?;
    } else if url.port() == Some(LOCAL_PORTS[0].1) {
        let port = LOCAL_PORTS.iter().find(|(name, _)| *name == service)?.1;
        url.set_port(Some(port)).ok()?;
    } else {
        return None;
    }
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// `EDD_TOKEN`, when set and not empty.
pub fn env_token() -> Option<String> {
    std::env::var("EDD_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The CLI's config file: `$EDD_CONFIG`, else `$XDG_CONFIG_HOME/edd/config.json`, else
/// `~/.config/edd/config.json`.
pub fn config_path() -> anyhow::Result<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v: &OsString| !v.is_empty());
    resolve_config_path(var("EDD_CONFIG"), var("XDG_CONFIG_HOME"), var("HOME"))
        .context("cannot tell where the config file goes: set EDD_CONFIG or HOME")
}

fn resolve_config_path(edd_config: Option<OsString>, xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    if let Some(path) = edd_config {
        return Some(path.into());
    }
    // The XDG spec says relative values are to be ignored.
    let xdg = xdg.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = xdg.or_else(|| home.map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("edd").join("config.json"))
}

/// What `edd login` remembers.
#[derive(Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Keys this version does not know, kept as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Config {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: Self =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a valid config file", path.display()))?;
        if config.token.is_some() {
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    eprintln!("warning: {} holds a token but has mode {mode:o}; chmod 600 it", path.display());
                }
            }
        }
        Ok(config)
    }

    /// Writes the file (mode `0600`, its directory `0700` when created here), replacing it whole.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            let mut json = serde_json::to_vec_pretty(self)?;
            json.push(b'\n');
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(|| format!("writing {}", path.display()))
    }
}

/// The credential a request carries, and where it came from (for the hints on 401 and 403).
pub enum Credential {
    Env(String),
    Stored(String),
}

/// An error answer or a failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API's `application/problem+json` answer.
    #[error("{} {title}{}{hint}", .status.as_u16(), extras(.detail, .scope, .retry_after))]
    Problem {
        status: StatusCode,
        title: String,
        detail: Option<String>,
        scope: Option<String>,
        retry_after: Option<u64>,
        hint: String,
    },
    #[error("the service is not reachable at {url} ({reason}); is the platform running? Start it with `edd up`")]
    Unreachable { url: String, reason: String },
    #[error("not logged in to {url}{note}: run `edd login`, or set EDD_TOKEN to an API token")]
    NotLoggedIn { url: String, note: String },
    #[error("invalid auth URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{status} from {url}, and not the JSON expected: {body}")]
    BadResponse { url: String, status: StatusCode, body: String },
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// `: <detail> (scope: <scope>) (retry after <n>s)`, each part only when present.
fn extras(detail: &Option<String>, scope: &Option<String>, retry_after: &Option<u64>) -> String {
    let mut out = String::new();
    if let Some(detail) = detail {
        out.push_str(&format!(": {detail}"));
    }
    if let Some(scope) = scope {
        out.push_str(&format!(" (scope: {scope})"));
    }
    if let Some(secs) = retry_after {
        out.push_str(&format!(" (retry after {secs}s)"));
    }
    out
}

/// The members of a problem details body the CLI prints.
#[derive(Deserialize)]
struct ProblemBody {
    title: Option<String>,
    detail: Option<String>,
    scope: Option<Value>,
}

/// A client of one auth service, with or without a credential.
pub struct ApiClient {
    base: Url,
    token: Option<Credential>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<Credential>) -> Result<Self, ApiError> {
        let invalid = |reason: String| ApiError::InvalidUrl { url: base.to_owned(), reason };
        let url = Url::parse(base).map_err(|e| invalid(e.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" => return Err(invalid("this edd is built without TLS; use http:// (or a local proxy)".into())),
            other => return Err(invalid(format!("scheme {other:?} is not http"))),
        }
        if url.cannot_be_a_base() {
            return Err(invalid("not a base URL".into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("edd-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ApiError::Http { url: base.to_owned(), source })?;
        Ok(Self { base: url, token, http })
    }

    pub async fn get(&self, path: &[&str]) -> Result<Value, ApiError> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &[&str], body: &Value) -> Result<Value, ApiError> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// A POST without a body (`/api/logout`).
    pub async fn post_empty(&self, path: &[&str]) -> Result<Value, ApiError> {
        self.send(Method::POST, path, None).await
    }

    pub async fn put(&self, path: &[&str], body: &Value) -> Result<Value, ApiError> {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &[&str]) -> Result<Value, ApiError> {
        self.send(Method::DELETE, path, None).await
    }

    /// The underlying HTTP client and the credential, for streaming transfers the JSON helpers do
    /// not cover.
    pub fn raw(&self) -> (&reqwest::Client, Option<&str>) {
        let token = match &self.token {
            Some(Credential::Env(t) | Credential::Stored(t)) => Some(t.as_str()),
            None => None,
        };
        (&self.http, token)
    }

    /// Turns a non-2xx answer into the same error the JSON helpers give.
    pub async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, ApiError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let url = response.url().clone();
        let bytes = response.bytes().await.map_err(|source| ApiError::Http { url: url.to_string(), source })?;
        Err(match serde_json::from_slice::<ProblemBody>(&bytes) {
            Ok(problem) => ApiError::Problem {
                status,
                title: problem.title.or_else(|| status.canonical_reason().map(str::to_owned)).unwrap_or_default(),
                detail: problem.detail.filter(|d| !d.is_empty()),
                scope: problem.scope.map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned)),
                retry_after: None,
                hint: self.hint(status),
            },
            Err(_) => ApiError::BadResponse {
                url: url.to_string(),
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(160).collect(),
            },
        })
    }

    /// The base URL plus `path`'s segments, each percent-encoded (ids come from the command line).
    pub fn url(&self, path: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        url
    }

    /// Sends one request; a `2xx` answer is its JSON body (`null` when empty), anything else an error.
    async fn send(&self, method: Method, path: &[&str], body: Option<&Value>) -> Result<Value, ApiError> {
        self.send_to(method, self.url(path), body).await
    }

    /// A GET with query parameters (`?namespace=…&limit=…`).
    pub async fn get_query(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let mut url = self.url(path);
        url.query_pairs_mut().extend_pairs(query);
        self.send_to(Method::GET, url, None).await
    }

    async fn send_to(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Value, ApiError> {
        let mut request = self.http.request(method, url.clone()).header(header::ACCEPT, "application/json");
        if let Some(Credential::Env(token) | Credential::Stored(token)) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source: reqwest::Error| {
            if source.is_connect() {
                ApiError::Unreachable {
                    url: self.base.as_str().trim_end_matches('/').to_owned(),
                    reason: root_cause(&source),
                }
            } else {
                ApiError::Http { url: url.to_string(), source }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = response.bytes().await.map_err(transport)?;
        let bad_response = || ApiError::BadResponse {
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(&bytes)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(160)
                .collect(),
        };
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|_| bad_response());
        }
        let problem: ProblemBody = serde_json::from_slice(&bytes).map_err(|_| bad_response())?;
        Err(ApiError::Problem {
            status,
            title: problem.title.or_else(|| status.canonical_reason().map(str::to_owned)).unwrap_or_default(),
            detail: problem.detail.filter(|d| !d.is_empty()),
            scope: problem.scope.map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned)),
            retry_after,
            hint: self.hint(status),
        })
    }

    /// What to do about a refused credential.
    fn hint(&self, status: StatusCode) -> String {
        match (status, &self.token) {
            (StatusCode::UNAUTHORIZED, Some(Credential::Stored(_))) => "; log in again with `edd login`".into(),
            (StatusCode::UNAUTHORIZED, Some(Credential::Env(_))) => {
                "; the token in EDD_TOKEN was refused: replace it, or unset it and run `edd login`".into()
            }
            (StatusCode::FORBIDDEN, Some(Credential::Env(token))) if token.starts_with("edd_") => {
                "; EDD_TOKEN holds an API token, and account commands need a session: unset it and run `edd login`"
                    .into()
            }
            _ => String::new(),
        }
    }
}

/// The innermost cause, e.g. "Connection refused (os error 111)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!("edd-cli-{name}-{}-{nanos}", std::process::id()))
    }

    #[test]
    fn config_round_trip_is_private() {
        let dir = temp_dir("config");
        let path = dir.join("nested").join("config.json");
        // The only test that touches EDD_CONFIG; nothing else in this binary reads it.
        std::env::set_var("EDD_CONFIG", &path);
        assert_eq!(config_path().unwrap(), path);

        assert!(Config::load(&path).unwrap() == Config::default(), "a missing file is an empty config");
        let mut config = Config {
            url: Some("http://127.0.0.1:18081".into()),
            token: Some("eyJ.secret".into()),
            username: Some("alice".into()),
            expires_at: Some("2030-01-01T00:00:00Z".into()),
            other: Map::new(),
        };
        config.other.insert("future".into(), serde_json::json!({"kept": true}));
        config.save(&path).unwrap();
        config.save(&path).unwrap(); // replacing works too
        let loaded = Config::load(&path).unwrap();
        assert!(loaded == config);
        assert_eq!(loaded.token.as_deref(), Some("eyJ.secret"));

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_path_precedence() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(resolve_config_path(os("/x/c.json"), os("/xdg"), os("/home/a")), Some("/x/c.json".into()));
        assert_eq!(resolve_config_path(None, os("/xdg"), os("/home/a")), Some("/xdg/edd/config.json".into()));
        assert_eq!(resolve_config_path(None, os("rel"), os("/home/a")), Some("/home/a/.config/edd/config.json".into()));
        assert_eq!(resolve_config_path(None, None, None), None);
    }

    #[test]
    fn urls_resolve_and_encode_segments() {
        let args = AuthArgs { auth_url: None };
        let mut config = Config::default();
        assert_eq!(args.url(&config), DEFAULT_AUTH_URL);
        config.url = Some("http://auth.local:9000/".into());
        assert_eq!(args.url(&config), "http://auth.local:9000");
        let explicit = AuthArgs { auth_url: Some("http://other".into()) };
        assert_eq!(explicit.url(&config), "http://other");

        let client = ApiClient::new("http://h:1/prefix/", None).unwrap();
        assert_eq!(client.url(&["api", "tokens", "a/b?c"]).as_str(), "http://h:1/prefix/api/tokens/a%2Fb%3Fc");
        assert!(ApiClient::new("https://h", None).is_err());
        assert!(ApiClient::new("not a url", None).is_err());
    }

    #[test]
    fn problems_print_status_title_detail_and_scope() {
        let problem = ApiError::Problem {
            status: StatusCode::BAD_REQUEST,
            title: "Bad Request".into(),
            detail: Some("unknown action".into()),
            scope: Some("storage.u1.files".into()),
            retry_after: None,
            hint: String::new(),
        };
        assert_eq!(problem.to_string(), "400 Bad Request: unknown action (scope: storage.u1.files)");
    }
}
