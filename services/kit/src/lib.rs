//! Edd Cloud service kit: what every service shares — configuration, logging, the HTTP app with
//! its probes and request pipeline, problem+json errors, metrics and graceful shutdown.

pub mod app;
pub mod auth;
pub mod commit;
pub mod config;
pub mod csrf;
mod extract;
pub mod forwarded;
pub mod metrics;
pub mod middleware;
pub mod openapi;
mod probes;
pub mod problem;
pub mod shutdown;
pub mod telemetry;

#[cfg(test)]
mod tests;

pub use app::App;
pub use commit::Committer;
pub use config::{nats_credential, secret, CommonArgs, ConfigError, HttpArgs, LogFormat};
pub use extract::{Json, Path, Query};
pub use metrics::Metrics;
pub use middleware::{AllowedOrigins, RequestId};
pub use problem::Problem;
pub use shutdown::Shutdown;
