//! The auth service's settings; every flag also reads an `EDD_AUTH_*` (or `EDD_ADMIN_*`) variable.

use std::time::Duration;

use edd_kit::forwarded::TrustedProxies;

/// Whether anyone may create an account.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signup {
    Closed,
    Open,
}

#[derive(clap::Args, Clone)]
pub struct AuthConfig {
    /// How long a session token is valid, in seconds.
    #[arg(long, env = "EDD_AUTH_SESSION_TTL_SECS", default_value_t = 86_400)]
    pub session_ttl_secs: u64,
    /// Failed password checks (logins and password changes) allowed per client address in the
    /// window (an IPv6 client is its /64); then `429` until the oldest leaves the window.
    #[arg(long, env = "EDD_AUTH_LOGIN_LIMIT_IP", default_value_t = 20)]
    pub login_limit_ip: u32,
    /// Failed password checks for one username from one client address before each further
    /// attempt from there waits (1 s, doubling with each failure, at most the window). Other
    /// clients of the same user are not slowed.
    #[arg(long, env = "EDD_AUTH_LOGIN_LIMIT_USER", default_value_t = 5)]
    pub login_limit_user: u32,
    /// How long a failed password check counts against its client, in seconds.
    #[arg(long, env = "EDD_AUTH_LOGIN_WINDOW_SECS", default_value_t = 900)]
    pub login_window_secs: u64,
    /// Argon2id memory cost in KiB (OWASP: 19456 with t=2, p=1).
    #[arg(long, env = "EDD_AUTH_ARGON2_M_KIB", default_value_t = 19_456)]
    pub argon2_m_kib: u32,
    /// Argon2id iterations.
    #[arg(long, env = "EDD_AUTH_ARGON2_T", default_value_t = 2)]
    pub argon2_t: u32,
    /// Argon2id lanes.
    #[arg(long, env = "EDD_AUTH_ARGON2_P", default_value_t = 1)]
    pub argon2_p: u32,
    /// Password hashes computed at once (each takes `argon2_m_kib` of memory).
    #[arg(long, env = "EDD_AUTH_HASH_CONCURRENCY", default_value_t = 4)]
    pub hash_concurrency: usize,
    /// Self sign-up at `POST /api/signup`.
    #[arg(long, env = "EDD_AUTH_SIGNUP", value_enum, default_value_t = Signup::Closed)]
    pub signup: Signup,
    /// The first administrator, created at start if no user has this name. Its password comes from
    /// `EDD_ADMIN_PASSWORD_FILE` or `EDD_ADMIN_PASSWORD`.
    #[arg(long, env = "EDD_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,
    /// A username claim older than this whose user never appeared (its command crashed between the
    /// claim and the user's creation) is released when someone asks for the name.
    #[arg(long, env = "EDD_AUTH_CLAIM_GRACE_SECS", default_value_t = 60)]
    pub claim_grace_secs: u64,
    /// The platform's gateways: peers (addresses or CIDR networks, comma-separated) whose
    /// `X-Forwarded-For` names the client and whose `X-Forwarded-Proto` names the scheme. Empty
    /// (`none`, the default of `edd serve auth`): no peer is believed, so a client that reaches
    /// the service directly cannot choose the address it is counted as. `edd up`, which puts its
    /// gateway in front on this machine, trusts loopback unless this is set.
    #[arg(long, env = "EDD_AUTH_TRUSTED_PROXIES", default_value = "none")]
    pub trusted_proxies: TrustedProxies,
    /// When the session cookie is `Secure`: `auto` when the client came over HTTPS (as a trusted
    /// proxy says), `always` for a platform served over HTTPS only.
    #[arg(long, env = "EDD_AUTH_SECURE_COOKIE", value_enum, default_value_t = SecureCookie::Auto)]
    pub secure_cookie: SecureCookie,
}

/// When the session cookie carries `Secure`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecureCookie {
    /// When the request came over HTTPS, as a trusted proxy's `X-Forwarded-Proto` says.
    Auto,
    /// Always (a browser then keeps the cookie only from HTTPS pages).
    Always,
}

impl AuthConfig {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl_secs: 86_400,
            login_limit_ip: 20,
            login_limit_user: 5,
            login_window_secs: 900,
            argon2_m_kib: 19_456,
            argon2_t: 2,
            argon2_p: 1,
            hash_concurrency: 4,
            signup: Signup::Closed,
            admin_username: "admin".into(),
            claim_grace_secs: 60,
            trusted_proxies: TrustedProxies::default(),
            secure_cookie: SecureCookie::Auto,
        }
    }
}
