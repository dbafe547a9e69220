//! Replica addresses: the master names chunkservers as `host:port` text (what they registered), the
//! data plane connects to socket addresses. A literal address needs no lookup; a host name is looked up
//! under a deadline, and one that does not resolve counts as an unreachable replica.

use std::net::SocketAddr;
use std::time::Duration;

/// The longest address the master may hand us; anything longer is a broken answer.
const MAX_ADDR: usize = 300;

pub(super) async fn resolve(addr: &str, wait: Duration) -> Result<SocketAddr, String> {
    if addr.len() > MAX_ADDR {
        return Err(format!("a replica address of {} bytes", addr.len()));
    }
    if let Ok(parsed) = addr.parse() {
        return Ok(parsed);
    }
    match tokio::time::timeout(wait, tokio::net::lookup_host(addr)).await {
        Ok(Ok(mut found)) => found.next().ok_or_else(|| format!("{addr} resolves to no address")),
        Ok(Err(e)) => Err(format!("cannot resolve {addr}: {e}")),
        Err(_) => Err(format!("resolving {addr} timed out")),
    }
}
