//! The notification service's settings; every flag (`--notify-…`, prefixed so `edd up` can take
//! them beside every other service's) also reads an `EDD_NOTIFY_*` variable (`EDD_BASE_DOMAIN`
//! for the base domain, shared with the gateway).

use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct NotifyConfig {
    /// Live connections (WebSocket and SSE together) one user may hold; 429 beyond.
    #[arg(
        id = "notify_max_sockets_per_user",
        long = "notify-max-sockets-per-user",
        env = "EDD_NOTIFY_MAX_SOCKETS_PER_USER", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        default_value_t = 5
    )]
    pub max_sockets_per_user: usize,
    /// Read notifications older than this many days are removed from inboxes.
    #[arg(
        id = "notify_retention_days",
        long = "notify-retention-days",
        env = "EDD_NOTIFY_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = 30
    )]
    pub retention_days: u32,
    /// The platform's hosts are `<service>.<base domain>`: a live connection whose `Origin` is
    /// `http(s)://<base domain>` or `http(s)://*.<base domain>` (any port) is accepted.
    #[arg(
        id = "notify_base_domain",
        long = "notify-base-domain",
        env = "EDD_BASE_DOMAIN",
        default_value = "localhost"
    )]
    pub base_domain: String,
    /// More origins allowed to open live connections, exactly as browsers send them
    /// (`https://app.example.com`); comma-separated in the variable.
    #[arg(
        id = "notify_allowed_origins",
        long = "notify-allowed-origin",
        env = "EDD_NOTIFY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Seconds between WebSocket pings (and SSE keep-alive comments); a WebSocket client that
    /// answers no ping for two intervals is closed.
    #[arg(
        id = "notify_ping_interval_secs",
        long = "notify-ping-interval-secs",
        env = "EDD_NOTIFY_PING_INTERVAL_SECS", value_parser = clap::value_parser!(u64).range(1..),
        default_value_t = 20
    )]
    pub ping_interval_secs: u64,
    /// Notifications queued per live connection; a connection whose queue is full is a slow
    /// client and is closed (nothing is buffered without bound).
    #[arg(id = "notify_send_queue", long = "notify-send-queue", env = "EDD_NOTIFY_SEND_QUEUE", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..), default_value_t = 64)]
    pub send_queue: usize,
    /// Seconds between retention sweeps.
    #[arg(
        id = "notify_retention_sweep_secs",
        long = "notify-retention-sweep-secs",
        env = "EDD_NOTIFY_RETENTION_SWEEP_SECS", value_parser = clap::value_parser!(u64).range(1..),
        default_value_t = 3600
    )]
    pub retention_sweep_secs: u64,
}

impl NotifyConfig {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            max_sockets_per_user: 5,
            retention_days: 30,
            base_domain: "localhost".into(),
            allowed_origins: Vec::new(),
            ping_interval_secs: 20,
            send_queue: 64,
            retention_sweep_secs: 3600,
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
        config: NotifyConfig,
    }

    #[test]
    fn the_flags_default_to_the_default() {
        let parsed = Cli::try_parse_from(["notify"]).unwrap().config;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", NotifyConfig::default()));
        // Bounds are the flags' own: a zero is refused at parse time, naming the flag.
        let bad = Cli::try_parse_from(["notify", "--notify-send-queue", "0"]).err().expect("0 refused");
        assert!(bad.to_string().contains("--notify-send-queue"), "{bad}");
    }
}
