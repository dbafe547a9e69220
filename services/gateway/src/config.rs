//! The gateway's settings; every flag also reads an `EDD_GATEWAY_*` variable (`EDD_BASE_DOMAIN`
//! for the base domain). [`GatewayConfig::default`] is what the flags default to.

use std::{net::SocketAddr, path::PathBuf, str::FromStr};

use crate::{observe::AccessLogTarget, tls::CertFiles};

/// A listener address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl FromStr for OptionalAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            Ok(Self(None))
        } else {
            s.parse().map(|a| Self(Some(a)))
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct GatewayConfig {
    /// The public HTTP listener (HTTP/1.1 and h2c).
    #[arg(long = "gateway-http-addr", env = "EDD_GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:18080")]
    pub listen_addr: SocketAddr,
    /// The public HTTPS listener (HTTP/1.1 and h2 by ALPN), or `off`.
    #[arg(long = "gateway-https-addr", env = "EDD_GATEWAY_HTTPS_ADDR", default_value = "127.0.0.1:18443")]
    pub https_addr: OptionalAddr,
    /// Certificates as `CERT.pem:KEY.pem`, repeatable (comma-separated in the variable); chosen by
    /// SNI. None: a self-signed development certificate for the base domain is made in
    /// `--tls-dev-dir`.
    #[arg(long = "tls-cert", env = "EDD_GATEWAY_TLS_CERTS", value_delimiter = ',')]
    pub tls_certs: Vec<CertFiles>,
    /// Where the development certificate is kept.
    #[arg(long, env = "EDD_GATEWAY_TLS_DEV_DIR", default_value = ".edd/tls")]
    pub tls_dev_dir: PathBuf,
    /// How often certificate files are checked for changes.
    #[arg(long, env = "EDD_GATEWAY_TLS_RELOAD_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 2)]
    pub tls_reload_secs: u64,
    /// Answer plain HTTP with a redirect to HTTPS.
    #[arg(long, env = "EDD_GATEWAY_REDIRECT_HTTPS")]
    pub redirect_https: bool,
    /// Where the gateway's own admin API (`/api/routes`) listens; routed as `gateway.<base domain>`.
    #[arg(long = "gateway-admin-addr", env = "EDD_GATEWAY_ADMIN_ADDR", default_value = "127.0.0.1:18089")]
    pub admin_addr: SocketAddr,
    /// The platform's hosts are `<service>.<base domain>`.
    #[arg(long, env = "EDD_BASE_DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    #[command(flatten)]
    pub upstreams: Upstreams,
    /// Largest request head in bytes (HTTP/1.1 clients get 431 beyond it).
    #[arg(long, env = "EDD_GATEWAY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Largest request body on routes that set none (413 beyond it).
    #[arg(long, env = "EDD_GATEWAY_MAX_BODY_BYTES", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 1 << 30)]
    pub max_body_bytes: u64,
    /// Largest upload through the storage host (files are streamed, never held in memory); keep it
    /// at or above the storage service's own largest upload.
    #[arg(long, env = "EDD_GATEWAY_STORAGE_MAX_BODY_BYTES", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 64 << 30)]
    pub storage_max_body_bytes: u64,
    /// Largest request body through the registry host (one image layer).
    #[arg(long, env = "EDD_GATEWAY_REGISTRY_MAX_BODY_BYTES", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 16 << 30)]
    pub registry_max_body_bytes: u64,
    /// Seconds a client has to send its request head or finish its TLS handshake.
    #[arg(long, env = "EDD_GATEWAY_HEADER_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a connection may move no byte before it is closed.
    #[arg(long, env = "EDD_GATEWAY_IDLE_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Seconds to wait for an upstream's response head (504 after).
    #[arg(long, env = "EDD_GATEWAY_UPSTREAM_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 60)]
    pub upstream_timeout_secs: u64,
    /// Open connections one client address may hold (0: no limit).
    #[arg(long, env = "EDD_GATEWAY_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Requests per second one client address may send, sustained (0: no limit).
    #[arg(long, env = "EDD_GATEWAY_REQUESTS_PER_SEC_PER_IP", default_value_t = 1000)]
    pub requests_per_sec_per_ip: u32,
    /// Requests one client address may send at once above that rate.
    #[arg(long, env = "EDD_GATEWAY_REQUEST_BURST_PER_IP", default_value_t = 2000)]
    pub request_burst_per_ip: u32,
    /// Threads serving the listeners, each with its own single-threaded runtime (0: one per core).
    #[arg(long = "gateway-workers", env = "EDD_GATEWAY_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// The access log: `-` (standard output), a file path, or `off`.
    #[arg(long, env = "EDD_GATEWAY_ACCESS_LOG", default_value = "-")]
    pub access_log: AccessLogTarget,
}

/// Where the built-in routes send `<service>.<base domain>`.
#[derive(clap::Args, Clone, Debug)]
pub struct Upstreams {
    #[arg(long = "upstream-auth", env = "EDD_GATEWAY_AUTH_UPSTREAM", default_value = "http://127.0.0.1:18081")]
    pub auth: String,
    #[arg(long = "upstream-storage", env = "EDD_GATEWAY_STORAGE_UPSTREAM", default_value = "http://127.0.0.1:18082")]
    pub storage: String,
    #[arg(long = "upstream-compute", env = "EDD_GATEWAY_COMPUTE_UPSTREAM", default_value = "http://127.0.0.1:18083")]
    pub compute: String,
    #[arg(
        long = "upstream-notifications",
        env = "EDD_GATEWAY_NOTIFICATIONS_UPSTREAM",
        default_value = "http://127.0.0.1:18084"
    )]
    pub notifications: String,
    #[arg(long = "upstream-registry", env = "EDD_GATEWAY_REGISTRY_UPSTREAM", default_value = "http://127.0.0.1:18085")]
    pub registry: String,
    #[arg(long = "upstream-health", env = "EDD_GATEWAY_HEALTH_UPSTREAM", default_value = "http://127.0.0.1:18086")]
    pub health: String,
    #[arg(long = "upstream-cloud", env = "EDD_GATEWAY_CLOUD_UPSTREAM", default_value = "http://127.0.0.1:18087")]
    pub cloud: String,
    #[arg(long = "upstream-docs", env = "EDD_GATEWAY_DOCS_UPSTREAM", default_value = "http://127.0.0.1:18088")]
    pub docs: String,
}

impl Default for Upstreams {
    fn default() -> Self {
        let local = |port: u16| format!("http://127.0.0.1:{port}");
        Self {
            auth: local(18081),
            storage: local(18082),
            compute: local(18083),
            notifications: local(18084),
            registry: local(18085),
            health: local(18086),
            cloud: local(18087),
            docs: local(18088),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 18080)),
            https_addr: OptionalAddr(Some(SocketAddr::from(([127, 0, 0, 1], 18443)))),
            tls_certs: Vec::new(),
            tls_dev_dir: ".edd/tls".into(),
            tls_reload_secs: 2,
            redirect_https: false,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 18089)),
            base_domain: "localhost".into(),
            upstreams: Upstreams::default(),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 1 << 30,
            storage_max_body_bytes: 64 << 30,
            registry_max_body_bytes: 16 << 30,
            header_timeout_secs: 10,
            idle_timeout_secs: 300,
            upstream_timeout_secs: 60,
            max_connections_per_ip: 256,
            requests_per_sec_per_ip: 1000,
            request_burst_per_ip: 2000,
            workers: 0,
            access_log: AccessLogTarget::Stdout,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: GatewayConfig,
    }

    #[test]
    fn the_flags_default_to_the_default() {
        // Run without the variables the flags read, so the environment cannot change the answer.
        let parsed = Cli::try_parse_from(["gateway"]).unwrap().config;
        let default = GatewayConfig::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }

    #[test]
    fn certificates_and_off_parse() {
        let parsed = Cli::try_parse_from(["gateway", "--tls-cert", "a.pem:a.key", "--gateway-https-addr", "off"])
            .unwrap()
            .config;
        assert_eq!(parsed.tls_certs, vec![CertFiles { cert: "a.pem".into(), key: "a.key".into() }]);
        assert_eq!(parsed.https_addr, OptionalAddr(None));
        assert!(Cli::try_parse_from(["gateway", "--tls-cert", "only-a-cert.pem"]).is_err());
    }
}
