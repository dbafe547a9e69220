//! Process-wide logging setup: `tracing` events to stderr, as JSON lines for the log service or as
//! human-readable lines for a terminal.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it again (tests, `edd up` starting several services in
/// one process) keeps the first subscriber.
pub fn init(format: LogFormat, level: &str) {
    let (filter, bad_filter) = match EnvFilter::try_new(level) {
        Ok(filter) => (filter, None),
        // A typo in the log filter should not keep a service from starting.
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Only the first caller installs; the error for later callers carries nothing to act on.
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if let (Ok(()), Some(err)) = (installed, bad_filter) {
        tracing::warn!(filter = level, error = %err, "invalid log filter; using \"info\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_is_harmless() {
        // "off" keeps the other tests' output quiet once this subscriber is global.
        init(LogFormat::Json, "off");
        init(LogFormat::Pretty, "not a valid filter=[");
        tracing::info!("not shown");
    }
}
