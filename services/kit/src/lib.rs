//! Edd Cloud service kit: what every service shares — configuration, logging, the HTTP app with
//! its probes and request pipeline, problem+json errors, metrics and graceful shutdown.

pub mod app;
pub mod auth;
pub mod config;
mod json;
pub mod metrics;
pub mod middleware;
mod probes;
pub mod problem;
pub mod shutdown;
pub mod telemetry;

#[cfg(test)]
mod tests;

pub use app::App;
pub use config::{secret, CommonArgs, ConfigError, HttpArgs, LogFormat};
pub use json::Json;
pub use metrics::Metrics;
pub use middleware::RequestId;
pub use problem::Problem;
pub use shutdown::Shutdown;
