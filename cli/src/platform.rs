//! What the platform consists of: its services, their databases and their projections.
//! Each service issue adds its entry here; `edd up`, `status` and `rebuild` follow.

use std::sync::Arc;

use edd_projections::Projection;

/// A service and the database it owns.
pub struct Service {
    pub name: &'static str,
    pub database: &'static str,
    pub projections: fn() -> Vec<Arc<dyn Projection>>,
    /// Its HTTP contract (`docs/openapi/<name>.json`), once it has an HTTP API.
    pub openapi: Option<fn() -> utoipa::openapi::OpenApi>,
}

/// Every service of the platform (ARCHITECTURE §6). Their projections arrive with their issues.
pub const SERVICES: &[Service] = &[
    Service { name: "auth", database: "auth_db", projections: edd_auth::projections, openapi: Some(edd_auth::openapi) },
    Service {
        name: "gateway",
        database: "gateway_db",
        projections: edd_gateway::projections,
        openapi: Some(edd_gateway::openapi),
    },
    Service {
        name: "storage",
        database: "sfs_db",
        projections: edd_storage::projections,
        openapi: Some(edd_storage::openapi),
    },
    Service {
        name: "notify",
        database: "notifications_db",
        projections: edd_notify::projections,
        openapi: Some(edd_notify::openapi),
    },
    Service { name: "compute", database: "compute_db", projections: Vec::new, openapi: None },
    Service { name: "registry", database: "registry_db", projections: Vec::new, openapi: None },
];

/// Finds `service/projection`.
pub fn find(name: &str) -> Option<(&'static Service, Arc<dyn Projection>)> {
    let service = SERVICES.iter().find(|s| name.split('/').next() == Some(s.name))?;
    let projection = (service.projections)().into_iter().find(|p| p.name() == name)?;
    Some((service, projection))
}

/// Every projection name, for error messages.
pub fn all_names() -> Vec<&'static str> {
    SERVICES.iter().flat_map(|s| (s.projections)().into_iter().map(|p| p.name())).collect()
}
