//! Who a request came from, and over which scheme, when a service sits behind the platform's own
//! gateway.
//!
//! The gateway is the edge: it replaces whatever a client claims in `X-Forwarded-For` with the
//! socket's peer address, and sets `X-Forwarded-Proto` to the scheme the client used. A service
//! believes those headers only from the peers it is told are its proxies ([`TrustedProxies`]);
//! from anyone else they are the client's own words and ignored, so a client that reaches the
//! service directly cannot choose the address it is counted as, nor claim HTTPS.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use axum::http::HeaderMap;

/// One trusted proxy: an address, or a network in CIDR notation (`10.42.0.0/16`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyNet {
    addr: IpAddr,
    prefix: u8,
}

impl ProxyNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|e| format!("{s:?}: {e}"))?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for ProxyNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, as a dual-stack socket reports IPv4 peers) is
/// its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The peers whose `X-Forwarded-For` and `X-Forwarded-Proto` a service believes. Empty (the
/// default): nobody's, every client is its socket's peer and every request plain HTTP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ProxyNet>);

/// Where a request came from, as far as it can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The client's address: the peer's, or the one a trusted proxy names.
    pub ip: IpAddr,
    /// Whether the client reached the platform over HTTPS (a trusted proxy says so).
    pub https: bool,
}

impl TrustedProxies {
    pub fn new(nets: impl IntoIterator<Item = ProxyNet>) -> Self {
        Self(nets.into_iter().collect())
    }

    /// The loopback addresses: the local gateway's, when it runs on the same machine.
    pub fn loopback() -> Self {
        Self::new([
            ProxyNet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), prefix: 32 },
            ProxyNet { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix: 128 },
        ])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The request's origin given its socket `peer`. From a trusted peer, the client is the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (each proxy appends
    /// the address it was reached from; only the right end was written by someone we trust), and
    /// the scheme is `X-Forwarded-Proto`'s. An entry that is not an address ends the walk at the
    /// proxy that passed it on.
    pub fn origin(&self, peer: IpAddr, headers: &HeaderMap) -> Origin {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return Origin { ip: peer, https: false };
        }
        // Every header line's entries, as one list in order; walked from its right end.
        let lines: Vec<&str> = headers.get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or("!")).collect();
        let mut ip = peer;
        for entry in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
            let Ok(next) = entry.trim().parse::<IpAddr>() else { break };
            ip = canonical(next);
            if !self.trusts(ip) {
                break;
            }
        }
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
        Origin { ip, https }
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of addresses and CIDR networks; empty or `none`: nobody.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(Self::default());
        }
        s.split(',').map(ProxyNet::from_str).collect::<Result<Vec<_>, _>>().map(Self)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let nets: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&nets.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let net: ProxyNet = "10.42.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.42.7.9")) && !net.contains(ip("10.43.0.1")));
        assert!(net.contains(ip("::ffff:10.42.0.1")), "an IPv4-mapped peer is its IPv4 address");
        let v6: ProxyNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0".parse::<ProxyNet>().unwrap().contains(ip("1.2.3.4")));
        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad}");
        }
        assert_eq!("".parse::<TrustedProxies>().unwrap(), TrustedProxies::default());
        assert_eq!("none".parse::<TrustedProxies>().unwrap().to_string(), "none");
        assert_eq!("127.0.0.1, ::1".parse::<TrustedProxies>().unwrap(), TrustedProxies::loopback());
    }

    #[test]
    fn only_a_trusted_peer_names_the_client_and_the_scheme() {
        let spoof = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-proto", "https")]);
        let none = TrustedProxies::default();
        assert_eq!(none.origin(ip("127.0.0.1"), &spoof), Origin { ip: ip("127.0.0.1"), https: false });

        let local = TrustedProxies::loopback();
        assert_eq!(local.origin(ip("127.0.0.1"), &spoof), Origin { ip: ip("6.6.6.6"), https: true });
        assert_eq!(local.origin(ip("::ffff:127.0.0.1"), &spoof).ip, ip("6.6.6.6"));
        // Not from the proxy: the peer, whatever it says.
        assert_eq!(local.origin(ip("203.0.113.5"), &spoof), Origin { ip: ip("203.0.113.5"), https: false });
        // From the proxy without a forwarded address: the proxy itself (an internal call).
        assert_eq!(local.origin(ip("127.0.0.1"), &HeaderMap::new()), Origin { ip: ip("127.0.0.1"), https: false });
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let proxies: TrustedProxies = "127.0.0.1,10.0.0.0/8".parse().unwrap();
        // A client's own claim (1.1.1.1) on the left is not believed past the first untrusted hop.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.3")]);
        assert_eq!(proxies.origin(ip("127.0.0.1"), &chain).ip, ip("203.0.113.7"));
        // Several header lines are one list, in order.
        let lines = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.8, 10.0.0.3")]);
        assert_eq!(proxies.origin(ip("127.0.0.1"), &lines).ip, ip("203.0.113.8"));
        // Garbage stops the walk at the proxy that passed it on.
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, junk, 10.0.0.3")]);
        assert_eq!(proxies.origin(ip("127.0.0.1"), &garbage).ip, ip("10.0.0.3"));
    }
}
