//! The integration suite: one test binary (one link on a 2-core machine), one module per area.
//! Every test starts its own nats-server and database through [`edd_it::TestEnv`]; the suites of the
//! services build what else they need with [`edd_it::World::builder`].

// Tests assert by unwrapping, their helpers too (clippy.toml allows it in test functions only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_contract;
mod auth;
mod auth_credentials;
mod auth_limits;
mod auth_recovery;
mod compute_runtime;
mod events;
mod failures;
mod gateway;
mod gateway_limits;
mod gateway_protocols;
mod gateway_tls;
mod gfs_cluster;
mod gfs_master;
mod gfs_master_service;
mod notify;
mod notify_live;
mod notify_recovery;
mod projections;
mod revocation;
mod security;
mod storage;
mod storage_access;
mod storage_failures;
mod storage_limits;
mod storage_sharing;
