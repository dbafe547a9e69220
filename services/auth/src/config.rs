//! The auth service's settings; every flag also reads an `EDD_AUTH_*` (or `EDD_ADMIN_*`) variable.

use std::time::Duration;

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
    /// Failed logins allowed per client IP in the window.
    #[arg(long, env = "EDD_AUTH_LOGIN_LIMIT_IP", default_value_t = 20)]
    pub login_limit_ip: u32,
    /// Failed logins allowed per username in the window.
    #[arg(long, env = "EDD_AUTH_LOGIN_LIMIT_USER", default_value_t = 10)]
    pub login_limit_user: u32,
    /// The sliding window of the login limits, in seconds.
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
    /// Trust the first address in `X-Forwarded-For` as the client (only behind our gateway).
    #[arg(long, env = "EDD_AUTH_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
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
            login_limit_user: 10,
            login_window_secs: 900,
            argon2_m_kib: 19_456,
            argon2_t: 2,
            argon2_p: 1,
            hash_concurrency: 4,
            signup: Signup::Closed,
            admin_username: "admin".into(),
            claim_grace_secs: 60,
            trust_forwarded_for: false,
        }
    }
}
