//! The gateway: the one ingress of the platform (work in progress, see the closing note).
//!
//! What exists: the route table ([`routes`]: host + longest path prefix, wildcard hosts, prefix
//! stripping), the proxy ([`proxy`]: HTTP/1.1 with pooled keep-alive upstreams or h2c, streamed
//! bodies both ways, WebSocket/upgrade tunnelling, hop-by-hop and `X-Forwarded-*` handling, request
//! ids) and the listener ([`server`]: HTTP/1.1 + h2c on one port, header limits and timeouts).
//! Still to come: routes as events with the admin API, TLS with SNI and reload, rate and
//! connection limits, access log and metrics, `edd up` wiring.

pub mod proxy;
pub mod routes;
pub mod server;

pub use proxy::Gateway;
pub use routes::{Route, RouteTable};
