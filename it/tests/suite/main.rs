//! The integration suite: one test binary (one link on a 2-core machine), one module per area.
//! Every test starts its own nats-server and database through [`edd_it::TestEnv`].

mod auth;
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
mod projections;
mod storage;
