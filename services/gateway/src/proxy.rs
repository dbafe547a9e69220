//! Forwarding one request: pick the route, rewrite the URI and headers, stream the bodies both
//! ways, and tunnel protocol upgrades (WebSocket) once the upstream agrees to them.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use edd_kit::Problem;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::Incoming,
    header::{self, HeaderMap, HeaderName, HeaderValue},
    Request, Response, StatusCode, Uri,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};

use crate::routes::{Protocol, RouteTable};

/// The body of everything the gateway answers: a streamed upstream body or a small local one.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The proxy: the current route table and pooled upstream clients.
pub struct Gateway {
    routes: RwLock<Arc<RouteTable>>,
    http1: Client<HttpConnector, Incoming>,
    h2c: Client<HttpConnector, Incoming>,
}

impl Gateway {
    pub fn new(routes: RouteTable) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        Self { routes: RwLock::new(Arc::new(routes)), http1, h2c }
    }

    /// Swaps in a new table; requests already routed keep going where they were sent.
    pub fn set_routes(&self, routes: RouteTable) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(routes);
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answers one client request. `scheme` is how the client reached us (`http` or `https`).
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr, scheme: &'static str) -> Response<ProxyBody> {
        let request_id = request_id(req.headers());
        let mut response = match self.forward(req, peer, scheme, &request_id).await {
            Ok(r) => r,
            Err(problem) => problem_response(problem),
        };
        response.headers_mut().insert(REQUEST_ID, request_id);
        response
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
        request_id: &HeaderValue,
    ) -> Result<Response<ProxyBody>, Problem> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
            .ok_or_else(|| Problem::bad_request("the request names no host"))?;
        let routes = self.routes();
        let route = routes
            .lookup(&host, req.uri().path())
            .ok_or_else(|| Problem::not_found(format!("no route for {host}{}", req.uri().path())))?;
        let path = route.upstream_path(req.uri().path(), req.uri().query());
        let uri: Uri = format!("http://{}{}", route.upstream.authority, path)
            .parse()
            .map_err(|_| Problem::bad_request("the request path cannot be forwarded"))?;
        let upgrade = upgrade_protocol(req.headers());

        let mut upstream = Request::builder().method(req.method().clone()).uri(uri);
        if route.upstream.protocol == Protocol::H2c {
            upstream = upstream.version(hyper::Version::HTTP_2);
        }
        let mut headers = req.headers().clone();
        strip_hop_by_hop(&mut headers);
        if route.upstream.protocol == Protocol::H2c {
            headers.remove(header::HOST);
        }
        if let Some(protocol) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        if req.headers().get(header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers")) {
            // gRPC needs `te: trailers` to reach the upstream.
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        set_forwarded(&mut headers, peer, scheme, &host);
        headers.insert(REQUEST_ID, request_id.clone());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let mut upstream = upstream.body(req.into_body()).map_err(Problem::internal)?;
        *upstream.headers_mut() = headers;

        let client = match route.upstream.protocol {
            Protocol::Http1 => &self.http1,
            Protocol::H2c => &self.h2c,
        };
        let mut response = client.request(upstream).await.map_err(|e| {
            tracing::warn!(route = %route.id, error = %e, "upstream unreachable");
            Problem::new(StatusCode::BAD_GATEWAY)
                .with_detail(format!("the upstream of route {} is unreachable", route.id))
        })?;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, upstream)) => {
                            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
                    }
                });
                let (mut parts, _) = response.into_parts();
                let protocol = parts.headers.get(header::UPGRADE).cloned();
                strip_hop_by_hop(&mut parts.headers);
                parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                if let Some(p) = protocol {
                    parts.headers.insert(header::UPGRADE, p);
                }
                return Ok(Response::from_parts(parts, empty()));
            }
        }
        strip_hop_by_hop(response.headers_mut());
        Ok(response.map(|b| b.boxed()))
    }
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

/// The client's request id if it is well-formed (`^[A-Za-z0-9._-]{1,128}$`), else a fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let valid = |v: &&HeaderValue| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
    };
    headers.get(REQUEST_ID).filter(valid).cloned().unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::now_v7().simple().to_string()).unwrap_or(HeaderValue::from_static("-"))
    })
}

/// The protocol a client asks to switch to, if this is an HTTP/1.1 upgrade request.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten()
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The gateway is the edge: what clients claim in `X-Forwarded-*` is replaced, not trusted.
fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, scheme: &'static str, host: &str) {
    if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert("x-forwarded-for", ip);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", host);
    }
}

/// A problem+json answer from the gateway itself.
pub fn problem_response(problem: Problem) -> Response<ProxyBody> {
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = problem.status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(edd_kit::problem::PROBLEM_JSON));
    response
}
