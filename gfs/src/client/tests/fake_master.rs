//! A master for the client's tests: files in memory, chunks on real data servers. It allocates a chunk
//! on every server with `prepare` (keeping those that answered, at least two), grants leases with the
//! first listed replica as primary (raising the version on the replicas, as the real master does, when
//! no lease is current), and records every commit and corrupt report. A stale or corrupt report takes
//! the replica out of the chunk's list and ends the current lease.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Mutex};
use tonic::Status;

use crate::chunk::{ChunkHandle, ChunkVersion};
use crate::dataplane::{CapabilityToken, ChunkRef, ClientConfig, ClusterKey, DataClient, TokenOp};
use crate::rpc::messages::Status as ClusterStatus;
use crate::rpc::messages::*;
use crate::rpc::{MasterApi, Role, MAX_LOCATE};

/// How long leases and tokens last.
const LEASE: Duration = Duration::from_secs(60);

/// Replicas a chunk needs to be leased.
const MIN_REPLICAS: usize = 2;

pub(super) struct FakeMaster {
    key: Arc<ClusterKey>,
    servers: Vec<String>,
    data: DataClient,
    state: Mutex<State>,
    /// How many corrupt reports arrived, for tests to wait on.
    corrupt_seen: watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    namespaces: BTreeMap<String, i64>,
    files: HashMap<String, File>,
    next_file: u64,
    next_handle: u64,
    commits: Vec<CommitRequest>,
    corrupt: Vec<CorruptReport>,
    lease_requests: usize,
}

struct File {
    namespace: String,
    path: String,
    length: u64,
    created_ms: i64,
    modified_ms: i64,
    chunks: Vec<Chunk>,
}

/// A chunk as the fake knows it: its current version and the replicas at it.
#[derive(Clone, Debug)]
pub(super) struct Chunk {
    pub handle: u64,
    pub version: u64,
    pub replicas: Vec<String>,
    leased_until: Option<SystemTime>,
}

impl FakeMaster {
    pub fn new(key: Arc<ClusterKey>, servers: Vec<String>, tls: Option<crate::tls::Tls>) -> FakeMaster {
        let data = DataClient::new(ClientConfig {
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        })
        .with_tls(tls);
        FakeMaster { key, servers, data, state: Mutex::default(), corrupt_seen: watch::channel(0).0 }
    }

    pub async fn commits(&self) -> Vec<CommitRequest> {
        self.state.lock().await.commits.clone()
    }

    pub async fn corrupt_reports(&self) -> Vec<CorruptReport> {
        self.state.lock().await.corrupt.clone()
    }

    pub async fn lease_requests(&self) -> usize {
        self.state.lock().await.lease_requests
    }

    pub async fn chunk(&self, file_id: &str, index: usize) -> Option<Chunk> {
        self.state.lock().await.files.get(file_id)?.chunks.get(index).cloned()
    }

    pub fn corrupt_seen(&self) -> watch::Receiver<usize> {
        self.corrupt_seen.subscribe()
    }

    fn token(&self, op: TokenOp, handle: u64, version: u64) -> Vec<u8> {
        let expires = SystemTime::now() + LEASE;
        CapabilityToken::mint(&self.key, op, ChunkHandle(handle), ChunkVersion(version), expires).encode().to_vec()
    }

    /// Has `server` hold `handle` at `version` (created when `from` is 0, raised from `from` otherwise).
    async fn prepare(&self, server: &str, handle: u64, version: u64, from: u64) -> bool {
        let Ok(addr) = server.parse() else { return false };
        let chunk = ChunkRef { handle: ChunkHandle(handle), version: ChunkVersion(version) };
        let token = CapabilityToken::decode(&self.token(TokenOp::Prepare, handle, version)).expect("token");
        self.data.prepare(addr, chunk, ChunkVersion(from), &token).await.is_ok()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn info(id: &str, file: &File) -> FileInfo {
    FileInfo {
        id: id.to_owned(),
        namespace: file.namespace.clone(),
        path: file.path.clone(),
        length: file.length,
        created_ms: file.created_ms,
        modified_ms: file.modified_ms,
        chunk_count: file.chunks.len() as u32,
    }
}

fn find<'a>(state: &'a State, namespace: &str, path: &str) -> Result<(&'a String, &'a File), Status> {
    state
        .files
        .iter()
        .find(|(_, f)| f.namespace == namespace && f.path == path)
        .ok_or_else(|| Status::not_found(format!("no file at {namespace}:{path}")))
}

impl MasterApi for FakeMaster {
    async fn create_namespace(&self, _role: Role, request: NamespaceRequest) -> Result<Empty, Status> {
        let mut state = self.state.lock().await;
        if state.namespaces.contains_key(&request.namespace) {
            return Err(Status::already_exists(format!("namespace {} already exists", request.namespace)));
        }
        state.namespaces.insert(request.namespace, now_ms());
        Ok(Empty {})
    }

    async fn delete_namespace(&self, _role: Role, request: NamespaceRequest) -> Result<Empty, Status> {
        let mut state = self.state.lock().await;
        if state.files.values().any(|f| f.namespace == request.namespace) {
            return Err(Status::failed_precondition(format!("namespace {} still holds files", request.namespace)));
        }
        match state.namespaces.remove(&request.namespace) {
            Some(_) => Ok(Empty {}),
            None => Err(Status::not_found(format!("namespace {} does not exist", request.namespace))),
        }
    }

    async fn list_namespaces(&self, _role: Role, _request: Empty) -> Result<NamespaceList, Status> {
        let state = self.state.lock().await;
        let namespaces = state
            .namespaces
            .iter()
            .map(|(name, &created_ms)| NamespaceInfo {
                name: name.clone(),
                file_count: state.files.values().filter(|f| &f.namespace == name).count() as u64,
                created_ms,
            })
            .collect();
        Ok(NamespaceList { namespaces })
    }

    async fn create_file(&self, _role: Role, request: PathRequest) -> Result<FileInfo, Status> {
        let mut state = self.state.lock().await;
        if !state.namespaces.contains_key(&request.namespace) {
            return Err(Status::not_found(format!("namespace {} does not exist", request.namespace)));
        }
        if find(&state, &request.namespace, &request.path).is_ok() {
            return Err(Status::already_exists(format!("{}:{} already exists", request.namespace, request.path)));
        }
        state.next_file += 1;
        let id = format!("file{}", state.next_file);
        let now = now_ms();
        let file = File {
            namespace: request.namespace,
            path: request.path,
            length: 0,
            created_ms: now,
            modified_ms: now,
            chunks: Vec::new(),
        };
        let answer = info(&id, &file);
        state.files.insert(id, file);
        Ok(answer)
    }

    async fn stat(&self, _role: Role, request: PathRequest) -> Result<FileInfo, Status> {
        let state = self.state.lock().await;
        let (id, file) = find(&state, &request.namespace, &request.path)?;
        Ok(info(id, file))
    }

    async fn list(&self, _role: Role, request: ListRequest) -> Result<FileList, Status> {
        let state = self.state.lock().await;
        let mut files: Vec<FileInfo> = state
            .files
            .iter()
            .filter(|(_, f)| f.namespace == request.namespace && f.path.starts_with(&request.prefix))
            .filter(|(_, f)| f.path.as_str() > request.after.as_str())
            .map(|(id, f)| info(id, f))
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let limit = if request.limit == 0 { 1000 } else { request.limit as usize };
        let next = if files.len() > limit { files[limit - 1].path.clone() } else { String::new() };
        files.truncate(limit);
        Ok(FileList { files, next })
    }

    async fn rename(&self, _role: Role, request: RenameRequest) -> Result<FileInfo, Status> {
        let mut state = self.state.lock().await;
        let id = find(&state, &request.namespace, &request.from)?.0.clone();
        if let Ok((existing, _)) = find(&state, &request.namespace, &request.to) {
            if !request.replace {
                return Err(Status::already_exists(format!("{}:{} already exists", request.namespace, request.to)));
            }
            let existing = existing.clone();
            state.files.remove(&existing);
        }
        let file = state.files.get_mut(&id).ok_or_else(|| Status::internal("file vanished"))?;
        file.path = request.to;
        Ok(info(&id, file))
    }

    async fn delete_file(&self, _role: Role, request: PathRequest) -> Result<Empty, Status> {
        let mut state = self.state.lock().await;
        let id = find(&state, &request.namespace, &request.path)?.0.clone();
        state.files.remove(&id);
        Ok(Empty {})
    }

    async fn locate(&self, _role: Role, request: LocateRequest) -> Result<Locations, Status> {
        let state = self.state.lock().await;
        let file = state.files.get(&request.file_id).ok_or_else(|| Status::not_found("no such file"))?;
        let count = if request.count == 0 { MAX_LOCATE } else { request.count.min(MAX_LOCATE) };
        let chunks = file
            .chunks
            .iter()
            .enumerate()
            .skip(request.first_index as usize)
            .take(count as usize)
            .map(|(index, c)| ChunkLocation {
                index: index as u32,
                handle: c.handle,
                version: c.version,
                replicas: c.replicas.clone(),
                read_token: self.token(TokenOp::Read, c.handle, c.version),
            })
            .collect();
        Ok(Locations {
            length: file.length,
            chunk_count: file.chunks.len() as u32,
            chunks,
            tokens_expire_ms: now_ms() + LEASE.as_millis() as i64,
        })
    }

    async fn lease_chunk(&self, _role: Role, request: LeaseRequest) -> Result<Lease, Status> {
        let mut state = self.state.lock().await;
        state.lease_requests += 1;
        state.next_handle += 1;
        let new_handle = state.next_handle;
        let file = state.files.get_mut(&request.file_id).ok_or_else(|| Status::not_found("no such file"))?;
        let count = file.chunks.len() as u32;
        let index = if request.append && request.index + 1 < count { count - 1 } else { request.index };
        if index > count {
            return Err(Status::invalid_argument(format!("chunk {index} of a file of {count} chunks")));
        }
        let now = SystemTime::now();
        if index == count {
            let mut replicas = Vec::new();
            for server in &self.servers {
                if self.prepare(server, new_handle, 1, 0).await {
                    replicas.push(server.clone());
                }
            }
            if replicas.len() < MIN_REPLICAS {
                return Err(Status::unavailable(format!("only {} servers took the new chunk", replicas.len())));
            }
            let chunk = Chunk { handle: new_handle, version: 1, replicas, leased_until: Some(now + LEASE) };
            file.chunks.push(chunk);
            file.modified_ms = now_ms();
        }
        let chunk = &mut file.chunks[index as usize];
        if chunk.leased_until.is_none_or(|until| until <= now) {
            let next = chunk.version + 1;
            let mut kept = Vec::new();
            for replica in &chunk.replicas {
                if self.prepare(replica, chunk.handle, next, chunk.version).await {
                    kept.push(replica.clone());
                }
            }
            if kept.len() < MIN_REPLICAS {
                return Err(Status::unavailable(format!("only {} replicas took version {next}", kept.len())));
            }
            chunk.version = next;
            chunk.replicas = kept;
            chunk.leased_until = Some(now + LEASE);
        }
        let (handle, version) = (chunk.handle, chunk.version);
        let mutation = if request.append { TokenOp::Append } else { TokenOp::Write };
        Ok(Lease {
            index,
            handle,
            version,
            primary: chunk.replicas[0].clone(),
            secondaries: chunk.replicas[1..].to_vec(),
            push_token: self.token(TokenOp::Push, handle, version),
            mutate_token: self.token(mutation, handle, version),
            expires_ms: now_ms() + LEASE.as_millis() as i64,
        })
    }

    async fn commit(&self, _role: Role, request: CommitRequest) -> Result<Empty, Status> {
        let mut state = self.state.lock().await;
        state.commits.push(request.clone());
        let file = state.files.get_mut(&request.file_id).ok_or_else(|| Status::not_found("no such file"))?;
        for stale in &request.stale {
            let Some(chunk) = file.chunks.iter_mut().find(|c| c.handle == stale.handle) else { continue };
            if stale.version != chunk.version || !chunk.replicas.contains(&stale.addr) {
                continue;
            }
            if chunk.replicas.len() <= 1 {
                return Err(Status::failed_precondition("that would leave no current replica"));
            }
            chunk.replicas.retain(|r| r != &stale.addr);
            chunk.leased_until = None;
        }
        if request.length > file.length {
            file.length = request.length;
            file.modified_ms = now_ms();
        }
        Ok(Empty {})
    }

    async fn report_corrupt(&self, _role: Role, request: CorruptReport) -> Result<Empty, Status> {
        let mut state = self.state.lock().await;
        for file in state.files.values_mut() {
            for chunk in file.chunks.iter_mut().filter(|c| c.handle == request.handle) {
                chunk.replicas.retain(|r| r != &request.addr);
            }
        }
        state.corrupt.push(request);
        self.corrupt_seen.send_modify(|n| *n += 1);
        Ok(Empty {})
    }

    async fn cluster_status(&self, _role: Role, _request: Empty) -> Result<ClusterStatus, Status> {
        let state = self.state.lock().await;
        Ok(ClusterStatus {
            master_id: "fake".into(),
            active: true,
            files: state.files.len() as u64,
            chunks: state.files.values().map(|f| f.chunks.len() as u64).sum(),
            ..ClusterStatus::default()
        })
    }

    async fn heartbeat(&self, _role: Role, _request: Heartbeat) -> Result<HeartbeatReply, Status> {
        Err(Status::unimplemented("the fake master has no chunkservers of its own"))
    }
}
