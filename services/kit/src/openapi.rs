//! Each service's HTTP contract, declared once, next to the handlers.
//!
//! Handlers carry `#[utoipa::path(...)]` with their success responses; a service's routes are an
//! [`ApiRouter`] (utoipa-axum's `OpenApiRouter`) filled with [`routes!`], so a route cannot be served
//! without being documented, nor documented without being served. [`document`] then adds what every
//! service shares: the title, bearer authentication, and the problem+json answers every operation
//! may give (a bad request, no or a refused credential, a missing resource, a conflict, a rate
//! limit, an unavailable dependency). The document is served at `GET /openapi.json` (see
//! [`crate::App::openapi`]) and written to `docs/openapi/<service>.json` by `edd api schema`.

use utoipa::openapi::{
    security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, ResponseBuilder, SecurityRequirement,
};
pub use utoipa::{IntoParams, ToSchema};
pub use utoipa_axum::{router::OpenApiRouter as ApiRouter, routes};

use crate::problem::{Problem, PROBLEM_JSON};

/// The name of the bearer security scheme in every document.
pub const BEARER: &str = "bearer";

/// The errors any operation may answer with, as problem+json, unless it declares its own.
const PROBLEMS: &[(&str, &str)] = &[
    ("400", "the request is malformed (a query, path or body that does not parse)"),
    ("401", "no credential, or one that is not valid (expired, revoked, unknown)"),
    ("403", "the credential lacks the scope or role (or a cookie request that changes state lacks `X-Requested-With`)"),
    ("404", "no such resource, or one the caller may not know of"),
    ("409", "a concurrent change; read again and retry"),
    ("413", "the body is larger than the limit"),
    ("422", "well-formed, but not a valid request"),
    ("429", "too many requests; see Retry-After"),
    ("503", "a dependency is unavailable, or the change is recorded but not visible yet; see Retry-After"),
];

/// `service`'s document from the paths its router collected.
pub fn document(service: &str, mut api: OpenApi) -> OpenApi {
    api.info = InfoBuilder::new()
        .title(format!("Edd Cloud {service} API"))
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(format!(
            "The HTTP API of the {service} service. Errors are RFC 9457 problem details \
             (`application/problem+json`). Authenticate with `Authorization: Bearer <session or API token>`; \
             a browser's session cookie (`token`) works too, and then a request that changes state must \
             also carry `X-Requested-With` (any value)."
        )))
        .build();
    let components = api.components.get_or_insert_with(Default::default);
    components.schemas.insert("Problem".into(), <Problem as utoipa::PartialSchema>::schema());
    components.security_schemes.insert(
        BEARER.into(),
        RefOr::T(SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build())),
    );
    if api.security.is_none() {
        api.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    }
    for (path, item) in api.paths.paths.iter_mut() {
        let operations = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
            ("head", &mut item.head),
            ("options", &mut item.options),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            // Handler names repeat across modules (`list`, `create`); the method and path do not.
            operation.operation_id = Some(operation_id(method, path));
            for response in operation.responses.responses.iter_mut() {
                if let (status, RefOr::T(response)) = response {
                    if response.description.is_empty() {
                        response.description = reason(status);
                    }
                }
            }
            for (status, description) in PROBLEMS {
                operation.responses.responses.entry((*status).into()).or_insert_with(|| problem_response(description));
            }
            if operation.request_body.is_some() {
                operation
                    .responses
                    .responses
                    .entry("415".into())
                    .or_insert_with(|| problem_response("the body is not of a media type the operation takes"));
            }
        }
    }
    api
}

/// `get /storage/{namespace}/{path}` → `get_storage_namespace_path`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_owned();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(part);
    }
    id
}

/// The standard reason phrase of `status` ("200" → "OK"): OpenAPI requires a description.
fn reason(status: &str) -> String {
    status
        .parse::<u16>()
        .ok()
        .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
        .and_then(|code| code.canonical_reason())
        .unwrap_or("response")
        .to_owned()
}

fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build())
            .build(),
    )
}

/// The document as committed under `docs/openapi/`: pretty JSON with a final newline.
pub fn to_json(api: &OpenApi) -> String {
    let mut out = api.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[utoipa::path(get, path = "/things/{id}", params(("id" = String, Path)), responses((status = 200, body = String)))]
    #[allow(dead_code)]
    async fn thing() {}

    #[test]
    fn every_operation_gets_the_shared_problems_and_bearer_auth() {
        let (_, api) = ApiRouter::<()>::new().routes(routes!(thing)).split_for_parts();
        let doc: serde_json::Value = serde_json::from_str(&to_json(&document("test", api))).unwrap();
        let responses = &doc["paths"]["/things/{id}"]["get"]["responses"];
        assert_eq!(responses["200"]["description"], "OK");
        assert_eq!(doc["paths"]["/things/{id}"]["get"]["operationId"], "get_things_id");
        assert_eq!(
            responses["401"]["content"][PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem",
            "{responses}"
        );
        assert_eq!(doc["components"]["securitySchemes"][BEARER]["scheme"], "bearer");
        assert_eq!(doc["components"]["schemas"]["Problem"]["properties"]["status"]["type"], "integer");
        assert_eq!(doc["info"]["title"], "Edd Cloud test API");
    }
}
