//! Events of the gateway (stream `GATEWAY`): the admin-managed static routes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::aggregate_event;
use crate::subject::Token;

/// A route was added: requests for `host` under `path_prefix` go to `upstream`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouteCreated {
    pub route_id: Token,
    /// Lowercase DNS name or `*.suffix`.
    pub host: String,
    pub path_prefix: String,
    /// `http://host:port[/base]` or `h2c://host:port[/base]`.
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    /// Largest request body in bytes; absent means the gateway's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}
aggregate_event!(
    RouteCreated,
    "gateway.route.created.v1",
    "GATEWAY",
    "gateway.route.{route_id}.created",
    "An administrator added a static route to the gateway.",
    ["gateway", "route"],
    route_id,
    "created"
);

/// A route was removed; open connections on it finish, new requests no longer match it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouteDeleted {
    pub route_id: Token,
}
aggregate_event!(
    RouteDeleted,
    "gateway.route.deleted.v1",
    "GATEWAY",
    "gateway.route.{route_id}.deleted",
    "An administrator removed a static route.",
    ["gateway", "route"],
    route_id,
    "deleted"
);
