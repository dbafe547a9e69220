//! The gateway's settings; every flag also reads an `EDD_GATEWAY_*` variable.

use std::net::SocketAddr;

#[derive(clap::Args, Clone, Debug)]
pub struct GatewayConfig {
    /// The public HTTP listener (HTTP/1.1 and h2c).
    #[arg(long = "gateway-http-addr", env = "EDD_GATEWAY_HTTP_ADDR", default_value = "127.0.0.1:18080")]
    pub listen_addr: SocketAddr,
    /// Where the gateway's own admin API (`/api/routes`) listens; routed as `gateway.<base domain>`.
    #[arg(long = "gateway-admin-addr", env = "EDD_GATEWAY_ADMIN_ADDR", default_value = "127.0.0.1:18089")]
    pub admin_addr: SocketAddr,
    /// The platform's hosts are `<service>.<base domain>`.
    #[arg(long, env = "EDD_BASE_DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    /// The auth service, as the gateway reaches it.
    #[arg(long, env = "EDD_GATEWAY_AUTH_UPSTREAM", default_value = "http://127.0.0.1:18081")]
    pub auth_upstream: String,
    /// Largest request head in bytes (HTTP/1.1 clients get 431 beyond it).
    #[arg(long, env = "EDD_GATEWAY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Seconds a client has to send its request head.
    #[arg(long, env = "EDD_GATEWAY_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
}
