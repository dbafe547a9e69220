//! `edd-projections`: turns event streams into PostgreSQL read models, exactly once.
//!
//! A [`Projection`] declares a name, the stream and subjects it reads, its tables (migrations run in
//! the projection's own schema) and how to apply events. The [`Runner`] does everything else:
//!
//! - applies events in batches and advances the checkpoint **in the same transaction**, so a crash at
//!   any point neither loses nor repeats an event;
//! - runs once cluster-wide per projection (a PostgreSQL advisory lock; other replicas wait as hot
//!   standbys and take over when the leader's connection dies);
//! - answers [`Handle::wait_for`] so a command handler can read its own write;
//! - retries an event it cannot apply, then **halts** and records the failure (and raises
//!   `log.error.projections`) rather than skip it silently; an operator skips or resumes explicitly;
//! - can be rebuilt blue/green ([`rebuild`]) while the live tables keep serving.

pub mod admin;
pub mod db;
pub mod projection;
pub mod rebuild;
pub mod runner;
pub mod running;
pub mod status;
mod store;
pub mod watermark;

pub use db::{ensure_database, DbError};
pub use projection::{ApplyError, Outcome, Projection};
pub use runner::{spawn, Handle, Runner, RunnerConfig};
pub use status::Status;
pub use watermark::{WaitError, Watermark};

/// The PostgreSQL schema holding a projection's tables: `auth/users` → `auth_users`.
pub fn schema_name(projection: &str) -> String {
    projection.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_names_are_plain_identifiers() {
        assert_eq!(super::schema_name("auth/users"), "auth_users");
        assert_eq!(super::schema_name("Storage/files-v2"), "storage_files_v2");
    }
}
