//! Chunk leases as the client holds them: the master's [`Lease`](messages::Lease) with its addresses
//! resolved and its tokens decoded, cached per (file, chunk index, write or append) until shortly
//! before it expires, so that a stream of writes to one chunk asks the master once.
//!
//! A cached lease also remembers the replicas found failed while using it (by any operation of this
//! client): they are left out of later chains instead of being tried again, and reported stale with the
//! next acknowledged mutation. A lease may go on without some of its replicas only while a majority
//! of them (the primary among them) remains. The client has to enforce that itself: the primary counts
//! its quorum among the secondaries it is sent, so a chain cut down to one replica would be "a majority
//! of one".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::addr::resolve;
use super::GfsError;
use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::dataplane::{CapabilityToken, ChunkRef, MAX_REPLICAS};
use crate::rpc::messages::{self, StaleReplica};

/// A lease is not used this close to its expiry: an operation started later might outlive its tokens.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// Leases (and append hints) kept at most; past it the expired go first, then arbitrary ones.
const MAX_CACHED: usize = 4096;

/// One replica of a lease: the master's name for it, and where it was found (`None`: unresolvable).
#[derive(Clone, Debug)]
pub(super) struct Replica {
    pub name: String,
    pub addr: Option<SocketAddr>,
}

#[derive(Debug)]
pub(super) struct ChunkLease {
    pub index: u32,
    pub chunk: ChunkRef,
    pub primary: Replica,
    pub secondaries: Vec<Replica>,
    pub push_token: CapabilityToken,
    pub mutate_token: CapabilityToken,
    usable_until: Instant,
    /// Names of the replicas left out of this lease's chains, in the order they failed.
    excluded: Mutex<Vec<String>>,
}

impl ChunkLease {
    /// Checks and resolves the master's answer. Secondaries that do not resolve start out excluded.
    pub async fn from_reply(lease: messages::Lease, resolve_wait: Duration) -> Result<ChunkLease, GfsError> {
        let broken = |why: String| GfsError::Internal(format!("the master's lease on chunk {}: {why}", lease.index));
        if lease.secondaries.len() >= MAX_REPLICAS {
            return Err(broken(format!("{} secondaries", lease.secondaries.len())));
        }
        let names: Vec<&String> = std::iter::once(&lease.primary).chain(&lease.secondaries).collect();
        if names.iter().enumerate().any(|(i, name)| name.is_empty() || names[..i].contains(name)) {
            return Err(broken("an empty or repeated replica".into()));
        }
        let token = |bytes: &[u8], what: &str| {
            CapabilityToken::decode(bytes).ok_or_else(|| broken(format!("a malformed {what} token")))
        };
        let push_token = token(&lease.push_token, "push")?;
        let mutate_token = token(&lease.mutate_token, "mutation")?;
        let mut replicas = Vec::with_capacity(names.len());
        let mut excluded = Vec::new();
        for name in names {
            let addr = match resolve(name, resolve_wait).await {
                Ok(addr) => Some(addr),
                Err(why) => {
                    tracing::warn!(replica = %name, %why, "gfs lease names an unresolvable replica");
                    excluded.push(name.clone());
                    None
                }
            };
            replicas.push(Replica { name: name.clone(), addr });
        }
        let primary = replicas.remove(0);
        Ok(ChunkLease {
            index: lease.index,
            chunk: ChunkRef { handle: ChunkHandle(lease.handle), version: ChunkVersion(lease.version) },
            primary,
            secondaries: replicas,
            push_token,
            mutate_token,
            usable_until: usable_until(lease.expires_ms),
            excluded: Mutex::new(excluded),
        })
    }

    pub fn usable(&self) -> bool {
        Instant::now() < self.usable_until
    }

    /// Leaves `names` out of this lease's chains. `false` when the lease can no longer take a mutation:
    /// the primary is among them, or fewer than a majority of its replicas would remain.
    pub fn exclude(&self, names: &[String]) -> bool {
        let mut excluded = lock(&self.excluded);
        for name in names {
            let ours = std::iter::once(&self.primary).chain(&self.secondaries).any(|r| &r.name == name);
            if ours && !excluded.contains(name) {
                excluded.push(name.clone());
            }
        }
        !excluded.contains(&self.primary.name) && self.replicas().saturating_sub(excluded.len()) >= self.majority()
    }

    /// The lease's replicas as the master gave them, the primary included.
    pub fn replicas(&self) -> usize {
        1 + self.secondaries.len()
    }

    /// How many of the lease's replicas a mutation must reach.
    pub fn majority(&self) -> usize {
        self.replicas() / 2 + 1
    }

    pub fn excluded(&self) -> Vec<String> {
        lock(&self.excluded).clone()
    }

    /// The primary and the secondaries still in use, provided they are a majority of the lease's
    /// replicas.
    pub fn chain(&self) -> Result<(SocketAddr, Vec<SocketAddr>), NoChain> {
        let excluded = lock(&self.excluded);
        let primary = match self.primary.addr {
            Some(addr) if !excluded.contains(&self.primary.name) => addr,
            _ => return Err(NoChain::PrimaryLost),
        };
        let secondaries: Vec<SocketAddr> =
            self.secondaries.iter().filter(|r| !excluded.contains(&r.name)).filter_map(|r| r.addr).collect();
        let usable = 1 + secondaries.len();
        if usable < self.majority() {
            return Err(NoChain::TooFewReplicas { usable, needed: self.majority() });
        }
        Ok((primary, secondaries))
    }

    /// The master's name for the replica at `addr` (a data-plane failure names socket addresses).
    pub fn name_of(&self, addr: SocketAddr) -> String {
        std::iter::once(&self.primary)
            .chain(&self.secondaries)
            .find(|r| r.addr == Some(addr))
            .map_or_else(|| addr.to_string(), |r| r.name.clone())
    }

    pub fn stale(&self, name: &str) -> StaleReplica {
        StaleReplica { handle: self.chunk.handle.0, version: self.chunk.version.0, addr: name.to_owned() }
    }
}

/// Why a lease cannot take a mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NoChain {
    /// The primary is unreachable (or never resolved).
    PrimaryLost,
    /// The replicas still usable are not a majority of the lease's.
    TooFewReplicas { usable: usize, needed: usize },
}

/// The instant a lease or token expiring at Unix milliseconds `expires_ms` stops being used.
pub(super) fn usable_until(expires_ms: i64) -> Instant {
    let expires = UNIX_EPOCH + Duration::from_millis(u64::try_from(expires_ms).unwrap_or(0));
    let left = expires.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now() + left.saturating_sub(EXPIRY_MARGIN)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    file: String,
    index: u32,
    append: bool,
}

#[derive(Debug, Default)]
pub(super) struct LeaseCache {
    leases: Mutex<HashMap<Key, Arc<ChunkLease>>>,
    /// The chunk a file's record appends last went to: where the next append starts asking.
    append_hints: Mutex<HashMap<String, u32>>,
}

impl LeaseCache {
    pub fn get(&self, file: &str, index: u32, append: bool) -> Option<Arc<ChunkLease>> {
        let key = Key { file: file.to_owned(), index, append };
        let mut leases = lock(&self.leases);
        match leases.get(&key) {
            Some(lease) if lease.usable() => Some(Arc::clone(lease)),
            Some(_) => {
                leases.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, file: &str, append: bool, lease: Arc<ChunkLease>) {
        let mut leases = lock(&self.leases);
        if leases.len() >= MAX_CACHED {
            leases.retain(|_, l| l.usable());
        }
        if leases.len() >= MAX_CACHED {
            if let Some(victim) = leases.keys().next().cloned() {
                leases.remove(&victim);
            }
        }
        leases.insert(Key { file: file.to_owned(), index: lease.index, append }, lease);
    }

    /// Drops `lease` unless another operation already replaced it with a newer one.
    pub fn forget(&self, file: &str, append: bool, lease: &Arc<ChunkLease>) {
        let key = Key { file: file.to_owned(), index: lease.index, append };
        let mut leases = lock(&self.leases);
        if leases.get(&key).is_some_and(|cached| Arc::ptr_eq(cached, lease)) {
            leases.remove(&key);
        }
    }

    /// Drops every lease of `file` on chunk `handle` (its version was raised past them).
    pub fn forget_chunk(&self, file: &str, handle: u64) {
        lock(&self.leases).retain(|key, lease| key.file != file || lease.chunk.handle.0 != handle);
    }

    pub fn append_hint(&self, file: &str) -> Option<u32> {
        lock(&self.append_hints).get(file).copied()
    }

    pub fn set_append_hint(&self, file: &str, index: u32) {
        let mut hints = lock(&self.append_hints);
        if hints.len() >= MAX_CACHED && !hints.contains_key(file) {
            // Only a hint: losing them all costs each file one answer from the master.
            hints.clear();
        }
        hints.insert(file.to_owned(), index);
    }
}

/// One insert, remove or lookup per critical section: a poisoned map is still a consistent map.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
