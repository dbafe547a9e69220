//! The route table: which upstream serves a request, by `Host` and longest path prefix.
//!
//! A table is immutable; a change builds a new one and swaps it in whole (see
//! [`crate::proxy::Gateway::set_routes`]), so a lookup never sees half an update and open
//! connections keep the upstream they were given.

use std::collections::HashMap;

/// Longest host name (DNS limit) and longest path prefix or upstream URL a route may hold.
pub const MAX_HOST_LEN: usize = 253;
pub const MAX_URL_LEN: usize = 1024;

/// How the gateway talks to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    Http1,
    /// HTTP/2 over cleartext (prior knowledge): gRPC and anything else that wants h2 end to end.
    H2c,
}

/// Where a route sends its requests: `http://host:port[/base]` or `h2c://host:port[/base]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub protocol: Protocol,
    /// `host:port`.
    pub authority: String,
    /// Prepended to the forwarded path; empty or starting with `/`, never ending with one.
    pub base_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("upstream {0:?} must look like http://host:port[/path] or h2c://host:port[/path]")]
    Upstream(String),
    #[error("host {0:?} must be a DNS name (letters, digits, '-', '.'), optionally starting with '*.'")]
    Host(String),
    #[error("path prefix {0:?} must start with '/' and contain no '?', '#' or whitespace")]
    Prefix(String),
}

impl Upstream {
    pub fn parse(s: &str) -> Result<Self, RouteError> {
        let bad = || RouteError::Upstream(s.to_owned());
        let (protocol, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (Protocol::Http1, rest)
        } else if let Some(rest) = s.strip_prefix("h2c://") {
            (Protocol::H2c, rest)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() || path.contains(['?', '#', ' ']) {
            return Err(bad());
        }
        // What the proxy will build from it must parse, with no userinfo smuggled into the authority.
        let as_uri: Result<hyper::Uri, _> = format!("http://{authority}{path}").parse();
        if !as_uri.is_ok_and(|u| u.authority().is_some_and(|a| a.as_str() == authority)) || authority.contains('@') {
            return Err(bad());
        }
        Ok(Self { protocol, authority: authority.to_owned(), base_path: path.trim_end_matches('/').to_owned() })
    }
}

/// One route: requests for `host` whose path starts with `prefix` go to `upstream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub id: String,
    /// Lowercase DNS name, or `*.suffix` for any one-or-more-label subdomain of `suffix`.
    pub host: String,
    /// Starts with `/`; matched at segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub prefix: String,
    pub upstream: Upstream,
    /// Remove `prefix` from the path before forwarding.
    pub strip_prefix: bool,
    /// Largest request body; `None` takes the gateway's default.
    pub max_body_bytes: Option<u64>,
    /// One of the platform's own routes: its services' internal `/metrics` is not exposed.
    pub builtin: bool,
}

impl Route {
    pub fn new(id: &str, host: &str, prefix: &str, upstream: &str, strip_prefix: bool) -> Result<Self, RouteError> {
        if upstream.len() > MAX_URL_LEN {
            return Err(RouteError::Upstream(upstream.chars().take(64).collect()));
        }
        if prefix.len() > MAX_URL_LEN {
            return Err(RouteError::Prefix(prefix.chars().take(64).collect()));
        }
        if host.len() > MAX_HOST_LEN {
            return Err(RouteError::Host(host.chars().take(64).collect()));
        }
        let host = normalize_host(host);
        let labels = host.strip_prefix("*.").unwrap_or(&host);
        let valid_host = !labels.is_empty()
            && labels.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid_host {
            return Err(RouteError::Host(host));
        }
        if !prefix.starts_with('/') || prefix.contains(['?', '#']) || prefix.chars().any(char::is_whitespace) {
            return Err(RouteError::Prefix(prefix.to_owned()));
        }
        let prefix = if prefix.len() > 1 { prefix.trim_end_matches('/') } else { prefix };
        Ok(Self {
            id: id.to_owned(),
            host,
            prefix: prefix.to_owned(),
            upstream: Upstream::parse(upstream)?,
            strip_prefix,
            max_body_bytes: None,
            builtin: false,
        })
    }

    /// Limits request bodies on this route to `bytes`.
    pub fn with_max_body(mut self, bytes: Option<u64>) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Marks one of the platform's own routes.
    pub fn builtin(mut self) -> Self {
        self.builtin = true;
        self
    }

    /// The path (and query) to request upstream for `path_and_query`.
    pub fn upstream_path(&self, path: &str, query: Option<&str>) -> String {
        let rest = if self.strip_prefix && self.prefix != "/" { &path[self.prefix.len()..] } else { path };
        let rest = if rest.is_empty() { "/" } else { rest };
        let mut out = format!("{}{}", self.upstream.base_path, rest);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// `Host` as routed: lowercase, without port or trailing dot.
pub fn normalize_host(host: &str) -> String {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// An immutable set of routes, indexed by host.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<Route>>,
    /// `*.suffix` routes, by suffix.
    wildcard: HashMap<String, Vec<Route>>,
}

impl RouteTable {
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut table = Self::default();
        for route in routes {
            let map = if route.host.starts_with("*.") { &mut table.wildcard } else { &mut table.exact };
            let key = route.host.strip_prefix("*.").unwrap_or(&route.host).to_owned();
            map.entry(key).or_default().push(route);
        }
        for routes in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            // Longest prefix first; ties broken by id so the order is deterministic.
            routes.sort_by(|a, b| b.prefix.len().cmp(&a.prefix.len()).then_with(|| a.id.cmp(&b.id)));
        }
        table
    }

    /// The route for `host` (as sent, any case, maybe with a port) and `path`. Exact hosts win over
    /// wildcards; the longest matching wildcard suffix wins among wildcards.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Route> {
        let host = normalize_host(host);
        let find =
            |routes: &'_ Vec<Route>| -> Option<usize> { routes.iter().position(|r| prefix_matches(&r.prefix, path)) };
        if let Some(routes) = self.exact.get(&host) {
            if let Some(i) = find(routes) {
                return Some(&routes[i]);
            }
        }
        let mut rest = host.as_str();
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(routes) = self.wildcard.get(suffix) {
                if let Some(i) = find(routes) {
                    return Some(&routes[i]);
                }
            }
            rest = suffix;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.exact.values().chain(self.wildcard.values()).map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, host: &str, prefix: &str, strip: bool) -> Route {
        Route::new(id, host, prefix, &format!("http://{id}:80"), strip).unwrap()
    }

    #[test]
    fn longest_prefix_at_segment_boundaries() {
        let table = RouteTable::new([
            route("root", "cloud.localhost", "/", false),
            route("api", "cloud.localhost", "/api", true),
            route("v2", "cloud.localhost", "/api/v2/", false),
        ]);
        let id = |host: &str, path: &str| table.lookup(host, path).map(|r| r.id.as_str());
        assert_eq!(id("cloud.localhost", "/"), Some("root"));
        assert_eq!(id("cloud.localhost", "/api"), Some("api"));
        assert_eq!(id("cloud.localhost", "/api/x"), Some("api"));
        assert_eq!(id("cloud.localhost", "/apix"), Some("root"));
        assert_eq!(id("cloud.localhost", "/api/v2/x"), Some("v2"));
        assert_eq!(id("CLOUD.localhost:18080", "/api"), Some("api"));
        assert_eq!(id("other.localhost", "/"), None);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn exact_hosts_beat_wildcards() {
        let table =
            RouteTable::new([route("any", "*.localhost", "/", false), route("auth", "auth.localhost", "/", false)]);
        assert_eq!(table.lookup("auth.localhost", "/x").unwrap().id, "auth");
        assert_eq!(table.lookup("a.b.localhost", "/x").unwrap().id, "any");
        assert!(table.lookup("localhost", "/x").is_none());
    }

    #[test]
    fn strips_prefixes_and_keeps_queries() {
        let r = Route::new("r", "h.localhost", "/api/", "http://127.0.0.1:9000/base/", true).unwrap();
        assert_eq!(r.prefix, "/api");
        assert_eq!(r.upstream_path("/api/x/y", Some("a=1")), "/base/x/y?a=1");
        assert_eq!(r.upstream_path("/api", None), "/base/");
        let keep = Route::new("r", "h.localhost", "/api", "h2c://svc:50051", false).unwrap();
        assert_eq!(keep.upstream.protocol, Protocol::H2c);
        assert_eq!(keep.upstream_path("/api/x", None), "/api/x");
    }

    #[test]
    fn refuses_bad_routes() {
        assert!(Route::new("r", "bad host", "/", "http://a:1", false).is_err());
        assert!(Route::new("r", "h", "api", "http://a:1", false).is_err());
        assert!(Route::new("r", "h", "/", "ftp://a:1", false).is_err());
        assert!(Route::new("r", "h", "/", "http://a", false).is_err());
        assert!(Route::new("r", "h", "/", "http://a:99999", false).is_err());
        assert!(Route::new("r", "h", "/", "http://a:b:80", false).is_err());
        assert!(Route::new("r", "h", "/", "http://h%:80", false).is_err());
        assert!(Route::new("r", "h", "/", "http://user@h:80", false).is_err());
        assert!(Route::new("r", &"h".repeat(300), "/", "http://a:1", false).is_err());
        assert!(Route::new("r", "h", &format!("/{}", "p".repeat(2000)), "http://a:1", false).is_err());
    }
}
