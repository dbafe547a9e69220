//! The compute service: user containers, kept by reconciliation. The API records what a container
//! should be as events; a reconciler drives a container [`runtime`] to it and records what it
//! observes. For now only the runtime layer exists (`runtime::Runtime`, podman through `bollard`).

pub mod runtime;
