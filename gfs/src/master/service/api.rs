//! [`Api`]: `edd.gfs.Master` on top of [`Master`] — argument checks, the metadata commands and reads,
//! locations, heartbeats and the cluster status. Leases and replica bookkeeping live in `leases`.
//!
//! Every argument is checked before it is echoed or used, and every answer is bounded (listings by
//! [`MAX_LIST_LIMIT`], locations by [`MAX_LOCATE`], orders per heartbeat by the cluster).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use edd_events::catalog::gfs as ev;
use edd_events::Token;
use time::OffsetDateTime;
use tonic::Status;

use super::cluster::Cluster;
use super::error::meta_status;
use super::node::{unix_ms, Master};
use super::plan;
use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::dataplane::{CapabilityToken, TokenOp};
use crate::master::{validate_namespace, validate_path, FileMeta, MAX_LIST_LIMIT};
use crate::rpc::messages as msg;
use crate::rpc::{MasterApi, Role, MAX_LOCATE};

/// The longest chunkserver id accepted.
const MAX_SERVER_ID: usize = 128;
/// The longest data-plane address accepted.
const MAX_ADDR: usize = 256;
/// Entries of one heartbeat, all lists together (a 64 MiB message holds about as many).
const MAX_REPORT: usize = 4_000_000;
/// Stale replicas one commit may report.
const MAX_STALE: usize = 1024;
/// Resolving a chunkserver's data-plane host name.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(2);

/// The master's RPC face.
pub(super) struct Api(pub Arc<Master>);

fn file_arg(id: &str) -> Result<Token, Status> {
    // Not echoed: an id that is not a token may be anything.
    Token::new(id).map_err(|_| Status::invalid_argument("invalid file id"))
}

fn namespace_arg(namespace: &str) -> Result<(), Status> {
    validate_namespace(namespace).map_err(meta_status)
}

fn path_arg(path: &str) -> Result<(), Status> {
    validate_path(path).map_err(meta_status)
}

fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn file_info(file: &FileMeta) -> msg::FileInfo {
    msg::FileInfo {
        id: file.id.to_string(),
        namespace: file.namespace.to_string(),
        path: file.path.to_string(),
        length: file.length,
        created_ms: ms(file.created_at),
        modified_ms: ms(file.modified_at),
        chunk_count: u32::try_from(file.chunks.len()).unwrap_or(u32::MAX),
    }
}

impl Api {
    async fn file_by_id(&self, id: &Token) -> Result<msg::FileInfo, Status> {
        let meta = self.0.meta.read().await;
        meta.file(id).map(file_info).ok_or_else(|| Status::not_found(format!("file {id} does not exist")))
    }
}

impl MasterApi for Api {
    async fn create_namespace(&self, _: Role, request: msg::NamespaceRequest) -> Result<msg::Empty, Status> {
        namespace_arg(&request.namespace)?;
        let event = ev::NamespaceCreated { namespace: request.namespace };
        self.0.commit(|_| Ok(Some(event.into()))).await?;
        Ok(msg::Empty {})
    }

    async fn delete_namespace(&self, _: Role, request: msg::NamespaceRequest) -> Result<msg::Empty, Status> {
        namespace_arg(&request.namespace)?;
        let event = ev::NamespaceDeleted { namespace: request.namespace };
        self.0.commit(|_| Ok(Some(event.into()))).await?;
        Ok(msg::Empty {})
    }

    async fn list_namespaces(&self, _: Role, _: msg::Empty) -> Result<msg::NamespaceList, Status> {
        self.0.require_active()?;
        let meta = self.0.meta.read().await;
        let namespaces = meta
            .namespaces()
            .map(|(name, ns)| msg::NamespaceInfo {
                name: name.to_owned(),
                file_count: ns.file_count() as u64,
                created_ms: ms(ns.created_at()),
            })
            .collect();
        Ok(msg::NamespaceList { namespaces })
    }

    async fn create_file(&self, _: Role, request: msg::PathRequest) -> Result<msg::FileInfo, Status> {
        namespace_arg(&request.namespace)?;
        path_arg(&request.path)?;
        let id = Token::random();
        let event = ev::FileCreated { file_id: id.clone(), namespace: request.namespace, path: request.path };
        self.0.commit(|_| Ok(Some(event.into()))).await?;
        self.file_by_id(&id).await
    }

    async fn stat(&self, _: Role, request: msg::PathRequest) -> Result<msg::FileInfo, Status> {
        self.0.require_active()?;
        namespace_arg(&request.namespace)?;
        path_arg(&request.path)?;
        let meta = self.0.meta.read().await;
        meta.stat(&request.namespace, &request.path).map(file_info).map_err(meta_status)
    }

    async fn list(&self, _: Role, request: msg::ListRequest) -> Result<msg::FileList, Status> {
        self.0.require_active()?;
        namespace_arg(&request.namespace)?;
        let after = (!request.after.is_empty()).then_some(request.after.as_str());
        let limit = match request.limit {
            0 => MAX_LIST_LIMIT,
            n => (n as usize).min(MAX_LIST_LIMIT),
        };
        let meta = self.0.meta.read().await;
        let page = meta.list(&request.namespace, &request.prefix, after, limit).map_err(meta_status)?;
        Ok(msg::FileList {
            files: page.files.into_iter().map(file_info).collect(),
            next: page.next.unwrap_or_default(),
        })
    }

    async fn rename(&self, _: Role, request: msg::RenameRequest) -> Result<msg::FileInfo, Status> {
        namespace_arg(&request.namespace)?;
        path_arg(&request.from)?;
        path_arg(&request.to)?;
        let mut renamed = None;
        self.0
            .commit(|meta| {
                let (file_id, replaced) = meta
                    .check_rename(&request.namespace, &request.from, &request.to, request.replace)
                    .map_err(meta_status)?;
                renamed = Some(file_id.clone());
                let event = ev::FileRenamed {
                    file_id,
                    namespace: request.namespace.clone(),
                    from: request.from.clone(),
                    to: request.to.clone(),
                    replaced,
                };
                Ok(Some(event.into()))
            })
            .await?;
        let id = renamed.ok_or_else(|| Status::internal("rename produced no file"))?;
        self.file_by_id(&id).await
    }

    async fn delete_file(&self, _: Role, request: msg::PathRequest) -> Result<msg::Empty, Status> {
        namespace_arg(&request.namespace)?;
        path_arg(&request.path)?;
        self.0
            .commit(|meta| {
                let file = meta.stat(&request.namespace, &request.path).map_err(meta_status)?;
                let event = ev::FileDeleted {
                    file_id: file.id.clone(),
                    namespace: request.namespace.clone(),
                    path: request.path.clone(),
                };
                Ok(Some(event.into()))
            })
            .await?;
        Ok(msg::Empty {})
    }

    async fn locate(&self, _: Role, request: msg::LocateRequest) -> Result<msg::Locations, Status> {
        self.0.require_active()?;
        let id = file_arg(&request.file_id)?;
        let count = match request.count {
            0 => MAX_LOCATE,
            n => n.min(MAX_LOCATE),
        };
        let views: Vec<_> = {
            let meta = self.0.meta.read().await;
            let views = meta.chunks(&id).map_err(meta_status)?;
            views.into_iter().skip(request.first_index as usize).take(count as usize).collect()
        };
        // Just took over: wait for the replicas to report rather than answer "none" for a chunk.
        let policy = self.0.policy;
        let located = |cluster: &Cluster, now| {
            views.iter().all(|v| !cluster.current_replicas(v.handle, v.version, now, &policy).is_empty())
        };
        self.0.await_reports(located).await?;

        let expires_at = SystemTime::now() + self.0.config.token_ttl;
        let meta = self.0.meta.read().await;
        let file = meta.file(&id).ok_or_else(|| Status::not_found(format!("file {id} does not exist")))?;
        let views = meta.chunks(&id).map_err(meta_status)?;
        let now = Instant::now();
        let cluster = self.0.cluster();
        let mut chunks = Vec::new();
        for view in views.into_iter().skip(request.first_index as usize).take(count as usize) {
            let mut replicas: Vec<String> = cluster
                .current_replicas(view.handle, view.version, now, &self.0.policy)
                .iter()
                .filter_map(|server| cluster.server(server).map(|s| s.addr.clone()))
                .collect();
            plan::spread(view.handle, &mut replicas);
            let token = CapabilityToken::mint(&self.0.key, TokenOp::Read, view.handle, view.version, expires_at);
            chunks.push(msg::ChunkLocation {
                index: view.index,
                handle: view.handle.0,
                version: view.version.0,
                replicas,
                read_token: token.encode().to_vec(),
            });
        }
        Ok(msg::Locations {
            length: file.length,
            chunk_count: u32::try_from(file.chunks.len()).unwrap_or(u32::MAX),
            chunks,
            tokens_expire_ms: unix_ms(expires_at),
        })
    }

    async fn lease_chunk(&self, _: Role, request: msg::LeaseRequest) -> Result<msg::Lease, Status> {
        let id = file_arg(&request.file_id)?;
        self.0.lease_chunk(&id, request.index, request.append).await
    }

    async fn commit(&self, _: Role, request: msg::CommitRequest) -> Result<msg::Empty, Status> {
        self.0.require_active()?;
        let id = file_arg(&request.file_id)?;
        if request.stale.len() > MAX_STALE {
            return Err(Status::invalid_argument(format!("at most {MAX_STALE} stale replicas per commit")));
        }
        if request.stale.iter().any(|r| r.addr.len() > MAX_ADDR) {
            return Err(Status::invalid_argument("replica address too long"));
        }
        // Stale replicas are taken out of service before the new length is visible: a reader must not
        // be sent to a replica that missed a mutation inside it.
        if !request.stale.is_empty() {
            self.0.retire_stale(&id, &request.stale).await?;
        }
        let length = request.length;
        self.0
            .commit(|meta| {
                let file = meta.file(&id).ok_or_else(|| Status::not_found(format!("file {id} does not exist")))?;
                if length <= file.length {
                    return Ok(None);
                }
                meta.check_set_length(&id, length).map_err(|e| Status::failed_precondition(e.to_string()))?;
                Ok(Some(ev::LengthSet { file_id: id.clone(), length }.into()))
            })
            .await?;
        Ok(msg::Empty {})
    }

    async fn report_corrupt(&self, _: Role, request: msg::CorruptReport) -> Result<msg::Empty, Status> {
        self.0.require_active()?;
        if request.addr.len() > MAX_ADDR {
            return Err(Status::invalid_argument("replica address too long"));
        }
        self.0.condemn(ChunkHandle(request.handle), &request.addr, ChunkVersion(request.version)).await?;
        Ok(msg::Empty {})
    }

    async fn cluster_status(&self, _: Role, _: msg::Empty) -> Result<msg::Status, Status> {
        let master = &self.0;
        let active = master.is_active();
        let meta = master.meta.read().await;
        let mut status = msg::Status {
            master_id: master.config.id.clone(),
            active,
            active_addr: master.active_addr().unwrap_or_default(),
            last_seq: meta.last_seq(),
            files: meta.file_count() as u64,
            chunks: meta.chunk_count() as u64,
            garbage: meta.garbage().count() as u64,
            ..msg::Status::default()
        };
        // A standby knows no chunkserver (they report to the active master only).
        if active {
            let now = Instant::now();
            let cluster = master.cluster();
            let health = cluster.health(&meta, now, &master.policy);
            status.chunkservers = cluster.chunkservers(now, &master.policy);
            status.under_replicated = health.under_replicated;
            status.missing = health.missing;
            status.clones_in_flight = cluster.clones_in_flight() as u64;
        }
        Ok(status)
    }

    async fn heartbeat(&self, _: Role, request: msg::Heartbeat) -> Result<msg::HeartbeatReply, Status> {
        let master = &self.0;
        master.require_active()?;
        check_heartbeat(&request)?;
        let socket = resolve(&request.data_addr).await?;
        let outcome = {
            let meta = master.meta.read().await;
            let mut cluster = master.cluster();
            cluster.heartbeat(&meta, &request, socket, Instant::now(), &master.policy)
        };
        master.reported.notify_waiters();
        if !outcome.adopt.is_empty() {
            // Not awaited here: the orders are already taken out of the queue, and a chunkserver
            // whose call timed out while adoptions waited for the log would lose them.
            let master = Arc::clone(master);
            tokio::spawn(async move {
                for (handle, version) in outcome.adopt {
                    master.adopt(handle, version).await;
                }
            });
        }
        Ok(outcome.reply)
    }
}

/// Bounds on a heartbeat, before anything of it is recorded.
pub(super) fn check_heartbeat(hb: &msg::Heartbeat) -> Result<(), Status> {
    let id_ok = !hb.server_id.is_empty()
        && hb.server_id.len() <= MAX_SERVER_ID
        && hb.server_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !id_ok {
        return Err(Status::invalid_argument(format!("a server id is 1 to {MAX_SERVER_ID} of [A-Za-z0-9._-]")));
    }
    let addr_ok = !hb.data_addr.is_empty()
        && hb.data_addr.len() <= MAX_ADDR
        && hb.data_addr.bytes().all(|b| b.is_ascii_graphic())
        && hb.data_addr.contains(':');
    if !addr_ok {
        return Err(Status::invalid_argument("data_addr must be a host:port"));
    }
    let entries = hb.chunks.len() + hb.removed.len() + hb.quarantined.len() + hb.clones_done.len();
    if entries > MAX_REPORT {
        return Err(Status::invalid_argument(format!("a heartbeat carries at most {MAX_REPORT} entries")));
    }
    Ok(())
}

/// The socket address of a data-plane `host:port` (resolved on every heartbeat: a restarted
/// chunkserver may keep its name and change its address).
async fn resolve(addr: &str) -> Result<SocketAddr, Status> {
    if let Ok(socket) = addr.parse() {
        return Ok(socket);
    }
    match tokio::time::timeout(RESOLVE_DEADLINE, tokio::net::lookup_host(addr)).await {
        Ok(Ok(mut found)) => found.next().ok_or_else(|| Status::invalid_argument("data_addr resolves to nothing")),
        Ok(Err(e)) => Err(Status::unavailable(format!("data_addr does not resolve: {e}"))),
        Err(_) => Err(Status::unavailable("data_addr did not resolve in time")),
    }
}
