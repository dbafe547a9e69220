//! [`Cluster`]: the master's soft state — chunkservers, the replicas they report, orders waiting for
//! their next heartbeat, chunk leases, clones in flight and orphans. None of it is persisted: as in
//! the GFS paper, a master that takes over asks every chunkserver for a full report and rebuilds it.
//!
//! Everything here is synchronous and takes the time as an argument; the caller holds the metadata
//! (for versions and garbage) while it calls in, so a decision never mixes two states of the log.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::plan::{self, CloneLimits, Disposition, ServerId, ServerLoad, Shortfall};
use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::master::MasterState;
use crate::rpc::messages::{ChunkserverInfo, Heartbeat, HeartbeatReply, Order, OrderKind};

/// The most orders one heartbeat reply carries; the rest wait for the next heartbeat.
pub(super) const MAX_ORDERS_PER_REPLY: usize = 1000;

/// The most orders queued for one server; beyond it, deletes are planned again later.
const MAX_QUEUED_ORDERS: usize = 10_000;

/// A delete not confirmed (the replica is still reported) is ordered again after this.
const DELETE_RETRY: Duration = Duration::from_secs(30);

/// Garbage chunks forgotten per repair pass (each is one append).
const FORGET_PER_PASS: usize = 256;

/// The timing and targets [`Cluster`] decides with.
#[derive(Clone, Copy, Debug)]
pub(super) struct Policy {
    pub chunkserver_timeout: Duration,
    pub orphan_grace: Duration,
    pub replication: usize,
    pub max_clones_in_flight: usize,
    pub clone_timeout: Duration,
    /// A lease needs this many current replicas: a leased chunk with fewer is fenced and cloned at
    /// once (it cannot get a new lease anyway), one with enough waits for its lease to end.
    pub min_replicas: usize,
    /// How long a lease lasts: after a takeover, any chunk may hold a lease the previous master granted
    /// until this much time has passed.
    pub chunk_lease: Duration,
}

/// One chunkserver as its heartbeats describe it.
#[derive(Debug)]
pub(super) struct Server {
    pub id: ServerId,
    pub addr: String,
    pub socket: SocketAddr,
    pub last_seen: Instant,
    pub free_bytes: u64,
    /// It sent a full report since it (re)appeared; until then its chunks are unknown and it is not
    /// counted as alive (neither a location nor a destination).
    pub reported: bool,
    /// Every replica it holds, whatever its standing (current, stale, garbage, orphan).
    pub chunks: HashMap<ChunkHandle, ChunkVersion>,
    /// Replicas it keeps out of service: never locations.
    pub quarantined: HashSet<ChunkHandle>,
    pub orders: VecDeque<Order>,
}

impl Server {
    pub fn alive(&self, now: Instant, timeout: Duration) -> bool {
        self.reported && now.saturating_duration_since(self.last_seen) <= timeout
    }
}

/// A primary's lease on a chunk at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChunkLease {
    pub version: ChunkVersion,
    pub primary: ServerId,
    pub secondaries: Vec<ServerId>,
    pub expires: Instant,
    /// The same moment on the wall clock (tokens and answers carry it).
    pub expires_at: SystemTime,
}

#[derive(Clone, Debug)]
struct CloneInFlight {
    destination: ServerId,
    started: Instant,
}

/// What a heartbeat changed that needs the log: versions to adopt.
#[derive(Debug, Default)]
pub(super) struct HeartbeatOutcome {
    pub reply: HeartbeatReply,
    /// Replicas reported above the logged version: `VersionBumped` to this version.
    pub adopt: Vec<(ChunkHandle, ChunkVersion)>,
}

/// What a repair pass needs from the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RepairOutcome {
    pub adopt: Vec<(ChunkHandle, ChunkVersion)>,
    /// Garbage chunks no live server holds any more: `ChunkDeleted`.
    pub forget: Vec<ChunkHandle>,
    /// Under-replicated chunks to fence (raise their version) before they are cloned.
    pub fence: Vec<ChunkHandle>,
    pub clones_ordered: usize,
}

/// Replication health of the live chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Health {
    pub under_replicated: u64,
    pub missing: u64,
}

#[derive(Debug, Default)]
pub(super) struct Cluster {
    servers: HashMap<ServerId, Server>,
    by_addr: HashMap<String, ServerId>,
    /// Reverse index of every server's `chunks`.
    holders: HashMap<ChunkHandle, HashMap<ServerId, ChunkVersion>>,
    /// Replicas a reader found corrupt: never listed, deleted when their server reports them.
    condemned: HashSet<(ServerId, ChunkHandle)>,
    /// Unknown replicas, with when they were first seen.
    orphans: HashMap<(ServerId, ChunkHandle), Instant>,
    /// Deletes ordered and not yet confirmed, with when.
    deletes: HashMap<(ServerId, ChunkHandle), Instant>,
    /// Replicas seen below their chunk's version, since when (at the version they were last reported
    /// at). Deleted only once stale for a `chunkserver_timeout`: a report built before a version raise
    /// may be processed after it, and the next report then corrects it.
    stale_since: HashMap<(ServerId, ChunkHandle), Instant>,
    clones: HashMap<ChunkHandle, Vec<CloneInFlight>>,
    leases: HashMap<ChunkHandle, ChunkLease>,
    /// Chunks whose version was raised for a clone, with that version: no lease can write to a chunk at
    /// this version (tokens of any earlier lease, this master's or a previous one's, are refused), so a
    /// copy taken of it misses nothing. A new lease raises the version again and ends it.
    fenced: HashMap<ChunkHandle, ChunkVersion>,
    /// When this master became active; nothing is cloned and no orphan deleted before
    /// `active_since + chunkserver_timeout`.
    active_since: Option<Instant>,
    /// The highest version this master raised each chunk to (or tried to), while above the log's:
    /// the next raise goes past it (see [`plan::next_version`]).
    raised_to: HashMap<ChunkHandle, ChunkVersion>,
    /// The highest handle any chunkserver reported: new chunks are allocated above it.
    highest_reported: u64,
}

/// What to do with a reader's report of a corrupt replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CorruptVerdict {
    /// Not (or no longer) a current replica at the version read: nothing to do.
    Ignored,
    /// The chunk's last current replica: kept (a damaged copy holds more than none).
    Kept,
    /// Taken out of service and ordered deleted.
    Condemned,
}

impl Cluster {
    /// Forgets everything: a master that (re)takes over knows no chunkserver until it reports.
    pub fn reset(&mut self, active_since: Option<Instant>) {
        *self = Cluster { active_since, ..Cluster::default() };
    }

    /// When the takeover grace ends (`None`: not active).
    pub fn settles_at(&self, policy: &Policy) -> Option<Instant> {
        self.active_since.map(|since| since + policy.chunkserver_timeout)
    }

    /// Whether the takeover grace has passed: every live chunkserver had the time to send a full report.
    pub fn settled(&self, now: Instant, policy: &Policy) -> bool {
        self.active_since.is_some_and(|since| now.saturating_duration_since(since) >= policy.chunkserver_timeout)
    }

    // ---- heartbeats -------------------------------------------------------------------------------

    /// Takes one (already validated) heartbeat: registers or refreshes the server, records its
    /// replicas, decides what each reported replica is worth, and hands out its pending orders.
    pub fn heartbeat(
        &mut self,
        meta: &MasterState,
        hb: &Heartbeat,
        socket: SocketAddr,
        now: Instant,
        policy: &Policy,
    ) -> HeartbeatOutcome {
        let id: ServerId = ServerId::from(hb.server_id.as_str());
        let fresh = self.servers.get(&id).is_none_or(|s| !s.alive(now, policy.chunkserver_timeout));
        self.register(&id, hb, socket, now);
        if fresh {
            // Back from the dead (or new): what it was told before may no longer hold.
            self.forget_orders_of(&id);
            if !hb.full {
                if let Some(server) = self.servers.get_mut(&id) {
                    server.reported = false;
                }
                let reply = HeartbeatReply { orders: Vec::new(), want_full_report: true };
                return HeartbeatOutcome { reply, adopt: Vec::new() };
            }
        }

        let reported = hb.chunks.iter().map(|c| c.handle).chain(hb.quarantined.iter().copied());
        self.highest_reported = self.highest_reported.max(reported.max().unwrap_or(0));
        if hb.full {
            self.replace_replicas(&id, hb);
        } else {
            for &handle in &hb.removed {
                self.drop_replica(&id, ChunkHandle(handle));
            }
            for c in &hb.chunks {
                self.hold(&id, ChunkHandle(c.handle), ChunkVersion(c.version));
            }
        }
        if let Some(server) = self.servers.get_mut(&id) {
            server.reported = true;
            server.quarantined = hb.quarantined.iter().map(|&h| ChunkHandle(h)).collect();
        }
        for &handle in &hb.clones_done {
            self.clone_finished(&id, ChunkHandle(handle));
        }

        let settled = self.settled(now, policy);
        let mut adopt = Vec::new();
        for c in &hb.chunks {
            let handle = ChunkHandle(c.handle);
            // A clone that shows up in a report is done, whatever the chunkserver says.
            self.clone_finished(&id, handle);
            if let Some(version) = self.review(meta, &id, handle, ChunkVersion(c.version), now, policy, settled) {
                adopt.push((handle, version));
            }
        }
        for &handle in &hb.quarantined {
            self.review_quarantined(meta, &id, ChunkHandle(handle), now, policy, settled);
        }

        let orders = match self.servers.get_mut(&id) {
            Some(server) => {
                let n = server.orders.len().min(MAX_ORDERS_PER_REPLY);
                server.orders.drain(..n).collect()
            }
            None => Vec::new(),
        };
        HeartbeatOutcome { reply: HeartbeatReply { orders, want_full_report: false }, adopt }
    }

    fn register(&mut self, id: &ServerId, hb: &Heartbeat, socket: SocketAddr, now: Instant) {
        let server = self.servers.entry(id.clone()).or_insert_with(|| Server {
            id: id.clone(),
            addr: hb.data_addr.clone(),
            socket,
            last_seen: now,
            free_bytes: hb.free_bytes,
            reported: false,
            chunks: HashMap::new(),
            quarantined: HashSet::new(),
            orders: VecDeque::new(),
        });
        if server.addr != hb.data_addr {
            if self.by_addr.get(&server.addr) == Some(id) {
                self.by_addr.remove(&server.addr);
            }
            server.addr = hb.data_addr.clone();
        }
        server.socket = socket;
        server.last_seen = now;
        server.free_bytes = hb.free_bytes;
        // The latest server to claim an address owns it (a chunkserver restarted with a new id).
        self.by_addr.insert(hb.data_addr.clone(), id.clone());
    }

    fn forget_orders_of(&mut self, id: &ServerId) {
        if let Some(server) = self.servers.get_mut(id) {
            server.orders.clear();
        }
        self.deletes.retain(|(s, _), _| s != id);
        for flights in self.clones.values_mut() {
            flights.retain(|f| &f.destination != id);
        }
        self.clones.retain(|_, flights| !flights.is_empty());
    }

    fn replace_replicas(&mut self, id: &ServerId, hb: &Heartbeat) {
        let Some(server) = self.servers.get_mut(id) else { return };
        let before = std::mem::take(&mut server.chunks);
        let reported: HashSet<ChunkHandle> = hb.chunks.iter().map(|c| ChunkHandle(c.handle)).collect();
        for handle in before.keys().filter(|h| !reported.contains(h)) {
            self.unindex(id, *handle);
        }
        for c in &hb.chunks {
            let (handle, version) = (ChunkHandle(c.handle), ChunkVersion(c.version));
            if before.get(&handle) != Some(&version) {
                // Another version: whether it is stale is judged afresh.
                self.stale_since.remove(&(id.clone(), handle));
            }
            if let Some(server) = self.servers.get_mut(id) {
                server.chunks.insert(handle, version);
            }
            self.holders.entry(handle).or_default().insert(id.clone(), version);
        }
        let Some(server) = self.servers.get(id) else { return };
        let held = |s: &ServerId, h: &ChunkHandle| s != id || server.chunks.contains_key(h);
        self.orphans.retain(|(s, h), _| held(s, h));
        self.deletes.retain(|(s, h), _| held(s, h));
        self.stale_since.retain(|(s, h), _| held(s, h));
        self.condemned.retain(|(s, h)| held(s, h));
    }

    /// Records that `id` holds `handle` at `version`.
    fn hold(&mut self, id: &ServerId, handle: ChunkHandle, version: ChunkVersion) {
        let Some(server) = self.servers.get_mut(id) else { return };
        if server.chunks.insert(handle, version) != Some(version) {
            // Another version: whether it is stale is judged afresh.
            self.stale_since.remove(&(id.clone(), handle));
        }
        self.holders.entry(handle).or_default().insert(id.clone(), version);
    }

    /// Records that `id` no longer holds `handle`.
    fn drop_replica(&mut self, id: &ServerId, handle: ChunkHandle) {
        if let Some(server) = self.servers.get_mut(id) {
            server.chunks.remove(&handle);
        }
        self.unindex(id, handle);
        let key = (id.clone(), handle);
        self.orphans.remove(&key);
        self.deletes.remove(&key);
        self.stale_since.remove(&key);
        self.condemned.remove(&key);
    }

    fn unindex(&mut self, id: &ServerId, handle: ChunkHandle) {
        if let Some(holders) = self.holders.get_mut(&handle) {
            holders.remove(id);
            if holders.is_empty() {
                self.holders.remove(&handle);
            }
        }
    }

    fn clone_finished(&mut self, id: &ServerId, handle: ChunkHandle) {
        if let Some(flights) = self.clones.get_mut(&handle) {
            flights.retain(|f| &f.destination != id);
            if flights.is_empty() {
                self.clones.remove(&handle);
            }
        }
    }

    /// Decides what one reported replica is worth; returns a version to adopt, if any.
    #[allow(clippy::too_many_arguments)]
    fn review(
        &mut self,
        meta: &MasterState,
        id: &ServerId,
        handle: ChunkHandle,
        version: ChunkVersion,
        now: Instant,
        policy: &Policy,
        settled: bool,
    ) -> Option<ChunkVersion> {
        let key = (id.clone(), handle);
        if self.condemned.contains(&key) {
            self.order_delete(id, handle, version, now);
            return None;
        }
        let live = meta.version(handle);
        let current_held = live.is_some_and(|v| !self.current_replicas(handle, v, now, policy).is_empty());
        match plan::disposition(live, meta.is_garbage(handle), version, current_held, settled) {
            Disposition::Current => {
                self.orphans.remove(&key);
                self.stale_since.remove(&key);
                // Whatever was decided about it before (stale at an older version) no longer holds.
                self.withdraw_deletes(id, handle);
                None
            }
            Disposition::Stale => {
                self.orphans.remove(&key);
                if self.stale_for_long(&key, now, policy) {
                    self.order_delete(id, handle, version, now);
                }
                None
            }
            Disposition::Garbage => {
                self.orphans.remove(&key);
                self.order_delete(id, handle, ChunkVersion(0), now);
                None
            }
            Disposition::Ahead => {
                self.orphans.remove(&key);
                Some(version)
            }
            Disposition::Undecided => {
                self.orphans.remove(&key);
                None
            }
            Disposition::Unknown => {
                let first_seen = *self.orphans.entry(key).or_insert(now);
                if plan::orphan_due(first_seen, now, policy.orphan_grace, settled) {
                    self.order_delete(id, handle, ChunkVersion(0), now);
                }
                None
            }
        }
    }

    /// A quarantined replica is deleted unless it might be the last copy of a live chunk (a damaged
    /// copy still holds more than none).
    fn review_quarantined(
        &mut self,
        meta: &MasterState,
        id: &ServerId,
        handle: ChunkHandle,
        now: Instant,
        policy: &Policy,
        settled: bool,
    ) {
        match meta.version(handle) {
            Some(version) => {
                let others = self.current_replicas(handle, version, now, policy).iter().filter(|s| *s != id).count();
                if others > 0 {
                    // Its own version is unknown: at most the current one (the chunkserver deletes a
                    // quarantined copy whatever it was).
                    self.order_delete(id, handle, version, now);
                }
            }
            None if meta.is_garbage(handle) => self.order_delete(id, handle, ChunkVersion(0), now),
            None => {
                let first_seen = *self.orphans.entry((id.clone(), handle)).or_insert(now);
                if plan::orphan_due(first_seen, now, policy.orphan_grace, settled) {
                    self.order_delete(id, handle, ChunkVersion(0), now);
                }
            }
        }
    }

    /// Notes that the replica `key` is stale now; whether it has been so for a `chunkserver_timeout`.
    fn stale_for_long(&mut self, key: &(ServerId, ChunkHandle), now: Instant, policy: &Policy) -> bool {
        let since = *self.stale_since.entry(key.clone()).or_insert(now);
        now.saturating_duration_since(since) >= policy.chunkserver_timeout
    }

    /// Queues a delete of `handle` on `id` at a version up to `bound` (the version found unwanted; 0:
    /// whatever version, for a handle that is not live), unless one was ordered recently. The bound
    /// keeps a late delete from removing a copy made afterwards, such as a fresh clone.
    fn order_delete(&mut self, id: &ServerId, handle: ChunkHandle, bound: ChunkVersion, now: Instant) {
        let key = (id.clone(), handle);
        if self.deletes.get(&key).is_some_and(|&at| now.saturating_duration_since(at) < DELETE_RETRY) {
            return;
        }
        let Some(server) = self.servers.get_mut(id) else { return };
        if server.orders.len() >= MAX_QUEUED_ORDERS {
            return;
        }
        server.orders.push_back(Order {
            kind: OrderKind::Delete as i32,
            handle: handle.0,
            version: bound.0,
            source: String::new(),
            read_token: Vec::new(),
        });
        self.deletes.insert(key, now);
    }

    /// Takes back the deletes of `handle` queued for `id` (not yet handed out): the master's view of
    /// that replica changed (it is current again, a clone to it was ordered, it was just raised).
    fn withdraw_deletes(&mut self, id: &ServerId, handle: ChunkHandle) {
        let key = (id.clone(), handle);
        if self.deletes.remove(&key).is_none() {
            return;
        }
        if let Some(server) = self.servers.get_mut(id) {
            server.orders.retain(|o| !(o.kind == OrderKind::Delete as i32 && o.handle == handle.0));
        }
    }

    // ---- replicas and servers ---------------------------------------------------------------------

    /// Live servers holding `handle` at `version`, in service (not quarantined, not found corrupt),
    /// ordered by id.
    pub fn current_replicas(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        now: Instant,
        policy: &Policy,
    ) -> Vec<ServerId> {
        let Some(holders) = self.holders.get(&handle) else { return Vec::new() };
        let mut current: Vec<ServerId> = holders
            .iter()
            .filter(|(id, v)| {
                **v == version
                    && !self.condemned.contains(&((*id).clone(), handle))
                    && self
                        .servers
                        .get(*id)
                        .is_some_and(|s| s.alive(now, policy.chunkserver_timeout) && !s.quarantined.contains(&handle))
            })
            .map(|(id, _)| id.clone())
            .collect();
        current.sort();
        current
    }

    pub fn server(&self, id: &ServerId) -> Option<&Server> {
        self.servers.get(id)
    }

    /// The live server registered with data address `addr`.
    pub fn server_at(&self, addr: &str) -> Option<ServerId> {
        self.by_addr.get(addr).cloned()
    }

    /// Live servers as placement sees them.
    pub fn live_loads(&self, now: Instant, policy: &Policy) -> Vec<ServerLoad> {
        let mut incoming: HashMap<&ServerId, usize> = HashMap::new();
        for flight in self.clones.values().flatten() {
            *incoming.entry(&flight.destination).or_default() += 1;
        }
        let mut loads: Vec<ServerLoad> = self
            .servers
            .values()
            .filter(|s| s.alive(now, policy.chunkserver_timeout))
            .map(|s| ServerLoad {
                id: s.id.clone(),
                free_bytes: s.free_bytes,
                chunks: s.chunks.len(),
                incoming: incoming.get(&s.id).copied().unwrap_or(0),
            })
            .collect();
        loads.sort_by(|a, b| a.id.cmp(&b.id));
        loads
    }

    /// Replicas just prepared at `version`, recorded before the log says so (and whether or not it
    /// ever will): until then they are ahead of the log.
    pub fn record_prepared(&mut self, handle: ChunkHandle, version: ChunkVersion, servers: &[ServerId]) {
        for id in servers {
            self.hold(id, handle, version);
            self.withdraw_deletes(id, handle);
        }
    }

    /// The version the next raise of `handle`, logged at `logged`, goes to (see [`plan::next_version`]);
    /// noted before any replica is asked, since a prepare that times out may still have happened.
    pub fn next_raise(&mut self, handle: ChunkHandle, logged: ChunkVersion) -> ChunkVersion {
        let seen = self.holders.get(&handle).into_iter().flat_map(|h| h.values()).copied();
        let highest = seen.chain(self.raised_to.get(&handle).copied()).max();
        let next = plan::next_version(logged, highest);
        self.raised_to.insert(handle, next);
        next
    }

    /// The highest chunk handle any chunkserver reported.
    pub fn highest_reported(&self) -> u64 {
        self.highest_reported
    }

    /// Live servers holding `handle` at `version` whose copy can still take writes at it: current
    /// replicas and corrupt-but-not-yet-deleted ones (quarantined copies take none).
    pub fn live_at(&self, handle: ChunkHandle, version: ChunkVersion, now: Instant, policy: &Policy) -> usize {
        let Some(holders) = self.holders.get(&handle) else { return 0 };
        holders
            .iter()
            .filter(|(id, v)| {
                **v == version
                    && self
                        .servers
                        .get(*id)
                        .is_some_and(|s| s.alive(now, policy.chunkserver_timeout) && !s.quarantined.contains(&handle))
            })
            .count()
    }

    /// A reader found the replica on `id` corrupt: it is not listed from now on and is deleted on the
    /// server's next heartbeat.
    pub fn condemn(&mut self, id: &ServerId, handle: ChunkHandle, now: Instant) {
        self.condemned.insert((id.clone(), handle));
        let bound = self.servers.get(id).and_then(|s| s.chunks.get(&handle)).copied().unwrap_or(ChunkVersion(0));
        if bound.0 > 0 {
            self.order_delete(id, handle, bound, now);
        }
    }

    /// A reader found the replica at `addr` corrupt while reading `handle` at `read`; `logged` is the
    /// chunk's current version. Only a current replica at the version read is condemned (a report
    /// made before a version raise says nothing about the copy now), and never the last one.
    pub fn judge_corrupt(
        &mut self,
        addr: &str,
        handle: ChunkHandle,
        read: ChunkVersion,
        logged: ChunkVersion,
        now: Instant,
        policy: &Policy,
    ) -> CorruptVerdict {
        let Some(id) = self.server_at(addr) else { return CorruptVerdict::Ignored };
        let current = self.current_replicas(handle, logged, now, policy);
        if read != logged || !current.contains(&id) {
            return CorruptVerdict::Ignored;
        }
        if current.len() == 1 {
            return CorruptVerdict::Kept;
        }
        self.condemn(&id, handle, now);
        // The next lease is prepared on the remaining replicas only.
        self.revoke(handle);
        CorruptVerdict::Condemned
    }

    // ---- leases -----------------------------------------------------------------------------------

    /// The lease on `handle` if it is for `version`, has not expired and its primary is alive.
    pub fn valid_lease(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        now: Instant,
        policy: &Policy,
    ) -> Option<&ChunkLease> {
        let lease = self.leases.get(&handle)?;
        let primary_alive = self.servers.get(&lease.primary).is_some_and(|s| s.alive(now, policy.chunkserver_timeout));
        (lease.version == version && lease.expires > now && primary_alive).then_some(lease)
    }

    pub fn grant(&mut self, handle: ChunkHandle, lease: ChunkLease) {
        self.fenced.remove(&handle);
        self.leases.insert(handle, lease);
    }

    /// The chunk was raised to `version` so that it can be cloned (see `fenced`).
    pub fn fenced_at(&mut self, handle: ChunkHandle, version: ChunkVersion) {
        self.leases.remove(&handle);
        self.fenced.insert(handle, version);
    }

    pub fn revoke(&mut self, handle: ChunkHandle) {
        self.leases.remove(&handle);
    }

    fn leased(&self, handle: ChunkHandle, now: Instant) -> bool {
        self.leases.get(&handle).is_some_and(|l| l.expires > now)
    }

    // ---- repair -----------------------------------------------------------------------------------

    /// One repair pass: expires clones, queues deletes of stale, garbage, condemned and overdue
    /// orphan replicas, finds garbage no live server holds any more, and — once settled — orders
    /// clones for under-replicated chunks that are fenced (`clone_order` makes the order, with its read
    /// token), and names those to fence first.
    pub fn repair(
        &mut self,
        meta: &MasterState,
        now: Instant,
        policy: &Policy,
        clone_order: &dyn Fn(ChunkHandle, ChunkVersion, &str) -> Order,
    ) -> RepairOutcome {
        let settled = self.settled(now, policy);
        let timeout = policy.chunkserver_timeout;
        let mut outcome = RepairOutcome::default();
        for flights in self.clones.values_mut() {
            flights.retain(|f| now.saturating_duration_since(f.started) < policy.clone_timeout);
        }
        self.clones.retain(|_, flights| !flights.is_empty());
        self.leases.retain(|_, lease| lease.expires > now);
        self.fenced.retain(|handle, version| meta.version(*handle) == Some(*version));
        self.raised_to.retain(|handle, version| meta.version(*handle).is_some_and(|logged| logged < *version));

        // Live chunks: replicas off the current version, and shortfalls.
        // (server, chunk, the highest version the delete may remove)
        let mut deletes: Vec<(ServerId, ChunkHandle, ChunkVersion)> = Vec::new();
        let mut stale: Vec<(ServerId, ChunkHandle, ChunkVersion)> = Vec::new();
        let mut fresh: Vec<(ServerId, ChunkHandle)> = Vec::new();
        let mut short = Vec::new();
        for (&handle, chunk) in &meta.chunks {
            let current = self.current_replicas(handle, chunk.version, now, policy);
            let holders = self.holders.get(&handle);
            for (id, &version) in holders.into_iter().flatten() {
                if !self.servers.get(id).is_some_and(|s| s.alive(now, timeout)) {
                    continue;
                }
                match plan::disposition(Some(chunk.version), false, version, !current.is_empty(), settled) {
                    // A replica judged stale before (ahead of the log, say) may be current now.
                    Disposition::Current => fresh.push((id.clone(), handle)),
                    Disposition::Stale => stale.push((id.clone(), handle, version)),
                    Disposition::Ahead => outcome.adopt.push((handle, version)),
                    _ => {}
                }
            }
            if current.len() < policy.replication && settled {
                let shortfall = self.shortfall(handle, chunk.version, current, now, policy);
                let wanted = shortfall.current.len() + shortfall.in_flight < policy.replication;
                if shortfall.leased || shortfall.current.is_empty() || !wanted {
                    continue;
                }
                if self.fenced.get(&handle) == Some(&chunk.version) {
                    short.push(shortfall);
                } else if outcome.fence.len() < policy.max_clones_in_flight {
                    outcome.fence.push(handle);
                }
            }
        }

        // Garbage: delete every live copy; forget the chunk once none is left.
        for (handle, _) in meta.garbage() {
            let live: Vec<ServerId> = self
                .holders
                .get(&handle)
                .into_iter()
                .flatten()
                .filter(|(id, _)| self.servers.get(*id).is_some_and(|s| s.alive(now, timeout)))
                .map(|(id, _)| id.clone())
                .collect();
            if live.is_empty() {
                if settled && outcome.forget.len() < FORGET_PER_PASS {
                    outcome.forget.push(handle);
                }
            } else {
                deletes.extend(live.into_iter().map(|id| (id, handle, ChunkVersion(0))));
            }
        }

        // Orphans: those still held and still unknown, deleted once overdue.
        let servers = &self.servers;
        self.orphans.retain(|(id, handle), _| {
            let held = servers.get(id).is_some_and(|s| s.chunks.contains_key(handle) || s.quarantined.contains(handle));
            held && meta.version(*handle).is_none() && !meta.is_garbage(*handle)
        });
        for ((id, handle), &first_seen) in &self.orphans {
            if plan::orphan_due(first_seen, now, policy.orphan_grace, settled) {
                deletes.push((id.clone(), *handle, ChunkVersion(0)));
            }
        }
        self.condemned.retain(|(id, handle)| servers.get(id).is_some_and(|s| s.chunks.contains_key(handle)));
        for (id, handle) in &self.condemned {
            if let Some(&version) = servers.get(id).and_then(|s| s.chunks.get(handle)) {
                deletes.push((id.clone(), *handle, version));
            }
        }

        for key in fresh {
            self.stale_since.remove(&key);
        }
        for (id, handle, version) in stale {
            if self.stale_for_long(&(id.clone(), handle), now, policy) {
                deletes.push((id, handle, version));
            }
        }
        for (id, handle, bound) in deletes {
            self.order_delete(&id, handle, bound, now);
        }
        outcome.adopt.sort();
        outcome.adopt.dedup_by_key(|(handle, _)| *handle);

        if settled {
            let limits = CloneLimits {
                target: policy.replication,
                max_total: policy.max_clones_in_flight,
                per_destination: 2,
                in_flight: self.clones.values().map(Vec::len).sum(),
            };
            let planned = plan::plan_clones(short, &self.live_loads(now, policy), limits);
            for clone in planned {
                let Some(source) = self.servers.get(&clone.source).map(|s| s.addr.clone()) else { continue };
                let order = clone_order(clone.handle, clone.version, &source);
                let Some(destination) = self.servers.get_mut(&clone.destination) else { continue };
                if destination.orders.len() >= MAX_QUEUED_ORDERS {
                    continue;
                }
                destination.orders.push_back(order);
                // A delete of an earlier copy there must not follow the clone.
                self.withdraw_deletes(&clone.destination, clone.handle);
                self.clones
                    .entry(clone.handle)
                    .or_default()
                    .push(CloneInFlight { destination: clone.destination.clone(), started: now });
                outcome.clones_ordered += 1;
            }
        }
        outcome
    }

    fn shortfall(
        &self,
        handle: ChunkHandle,
        version: ChunkVersion,
        current: Vec<ServerId>,
        now: Instant,
        policy: &Policy,
    ) -> Shortfall {
        let flights = self.clones.get(&handle).map(Vec::as_slice).unwrap_or_default();
        let mut holders: Vec<ServerId> =
            self.holders.get(&handle).into_iter().flatten().map(|(id, _)| id.clone()).collect();
        holders.extend(self.servers.values().filter(|s| s.quarantined.contains(&handle)).map(|s| s.id.clone()));
        holders.extend(flights.iter().map(|f| f.destination.clone()));
        // A chunk that can still take writes waits for its lease to end; one below the lease minimum
        // is fenced at once (its writers are stuck anyway). Right after a takeover, any chunk may hold
        // a lease the previous master granted.
        let inherited = self.active_since.is_some_and(|since| now < since + policy.chunk_lease);
        let leased = (inherited || self.leased(handle, now)) && current.len() >= policy.min_replicas;
        Shortfall { handle, version, current, holders, in_flight: flights.len(), leased }
    }

    // ---- status -----------------------------------------------------------------------------------

    pub fn health(&self, meta: &MasterState, now: Instant, policy: &Policy) -> Health {
        let mut health = Health::default();
        for (&handle, chunk) in &meta.chunks {
            let current = self.current_replicas(handle, chunk.version, now, policy).len();
            if current < policy.replication {
                health.under_replicated += 1;
            }
            if current == 0 {
                health.missing += 1;
            }
        }
        health
    }

    pub fn clones_in_flight(&self) -> usize {
        self.clones.values().map(Vec::len).sum()
    }

    pub fn chunkservers(&self, now: Instant, policy: &Policy) -> Vec<ChunkserverInfo> {
        let mut list: Vec<ChunkserverInfo> = self
            .servers
            .values()
            .map(|s| ChunkserverInfo {
                id: s.id.to_string(),
                addr: s.addr.clone(),
                alive: s.alive(now, policy.chunkserver_timeout),
                chunks: s.chunks.len() as u64,
                free_bytes: s.free_bytes,
                last_seen_ms_ago: u64::try_from(now.saturating_duration_since(s.last_seen).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }
}
