//! [`DataServer`]: accepts connections and answers their requests one after another.
//!
//! Connections are bounded in number ([`ServerConfig::max_connections`]): one past the bound is closed
//! at once, before anything is read from it. Each connection runs: wait for a frame (the first within
//! [`Deadlines::first_frame`], the next ones within [`Deadlines::idle`]), read the rest of its header
//! (at most [`Deadlines::header`]; the first frame's whole header within `first_frame`), check the
//! capability token, dispatch. So a peer that connects and sends nothing, or nothing valid, holds a
//! connection for seconds, not minutes. A malformed frame or a refused token is answered with an
//! `Error` frame and the connection is closed: the peer is either broken or hostile, and a closed
//! connection is the one state it cannot misuse.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::stream::Stream;
use crate::tls::Tls;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::buffer::PushBuffer;
use super::client::{ClientConfig, DataClient};
use super::error::{ErrorCode, Refusal};
use super::frame::{self, Op, ReadFrameError, Reply, Request, Response};
use super::locks::ChunkLocks;
use super::token::{CapabilityToken, ClusterKey, TokenError, TokenOp};
use super::{mutate, push, read, ChunkRef};
use crate::chunk::ChunkStore;

/// How long each network step may take. A step past its deadline fails (and its connection is
/// dropped); nothing waits on a peer without one.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// Connecting to a peer replica.
    pub connect: Duration,
    /// Reading the rest of a frame header once its first bytes arrived, and sending an answer.
    pub header: Duration,
    /// A new connection's first request, header complete, must arrive within this; otherwise the
    /// connection is closed (it holds one of [`ServerConfig::max_connections`]).
    pub first_frame: Duration,
    /// A connection idle between requests longer than this is closed.
    pub idle: Duration,
    /// Receiving or forwarding one piece of pushed data.
    pub data: Duration,
    /// The next replica's answer to a push (`Ready`, then `Done` once the data is sent).
    pub ack: Duration,
    /// A secondary applying a mutation, its fsync included. Past it the secondary counts as failed.
    pub replicate: Duration,
    /// After shutdown is asked for: how long requests in progress may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: Duration::from_secs(5),
            header: Duration::from_secs(10),
            first_frame: Duration::from_secs(5),
            idle: Duration::from_secs(120),
            data: Duration::from_secs(30),
            ack: Duration::from_secs(60),
            replicate: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
pub struct ServerConfig {
    pub cluster_key: Arc<ClusterKey>,
    /// Bytes of pushed data held at most (complete and in flight); a push beyond it is refused.
    pub buffer_cap: u64,
    /// How long pushed data waits for its mutation.
    pub buffer_ttl: Duration,
    /// Lifetime of the tokens this server mints for its peers.
    pub token_ttl: Duration,
    /// Open connections at most (clients' and peer replicas'); one more is closed at once.
    pub max_connections: usize,
    pub deadlines: Deadlines,
    /// Serve TLS only (a plaintext peer fails the handshake), and speak TLS to the peer replicas. Must
    /// have a certificate ([`Tls::serves`]).
    pub tls: Option<Tls>,
}

/// [`ServerConfig::max_connections`] unless set: a few hundred clients, each with a small pool per
/// replica, plus the peers forwarding pushes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl ServerConfig {
    pub fn new(cluster_key: Arc<ClusterKey>) -> ServerConfig {
        ServerConfig {
            cluster_key,
            buffer_cap: 512 * 1024 * 1024,
            buffer_ttl: Duration::from_secs(60),
            token_ttl: Duration::from_secs(120),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            deadlines: Deadlines::default(),
            tls: None,
        }
    }
}

/// A chunkserver's data plane over one [`ChunkStore`].
#[derive(Clone, Debug)]
pub struct DataServer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub store: ChunkStore,
    pub config: ServerConfig,
    pub buffer: Arc<PushBuffer>,
    pub locks: ChunkLocks,
    /// Connections to the other replicas (forwarding, secondaries).
    pub peers: DataClient,
    /// Test hook: a secondary announces an apply here, then never finishes it (a replica that hangs).
    #[cfg(test)]
    pub stall_apply: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

impl Shared {
    /// A token for a step this server takes on a client's behalf.
    pub fn mint(&self, op: TokenOp, chunk: ChunkRef) -> CapabilityToken {
        CapabilityToken::mint_for(&self.config.cluster_key, op, chunk.handle, chunk.version, self.config.token_ttl)
    }
}

/// What a connection does after a request.
pub(crate) enum Next {
    Continue,
    Close,
}

impl DataServer {
    pub fn new(store: ChunkStore, config: ServerConfig) -> DataServer {
        let d = config.deadlines;
        let peers = DataClient::new(ClientConfig {
            connect_timeout: d.connect,
            io_timeout: d.data,
            reply_timeout: d.ack.max(d.replicate),
            // Idle peer connections must be given up before the peer closes them as idle.
            pool_idle: d.idle / 2,
            ..ClientConfig::default()
        })
        .with_tls(config.tls.clone());
        let buffer = PushBuffer::new(config.buffer_cap, config.buffer_ttl);
        DataServer {
            shared: Arc::new(Shared {
                store,
                config,
                buffer,
                locks: ChunkLocks::default(),
                peers,
                #[cfg(test)]
                stall_apply: None,
            }),
        }
    }

    /// Makes every apply on this server hang after announcing itself on `tx` (tests only).
    #[cfg(test)]
    pub(crate) fn stalling_applies(self, tx: tokio::sync::mpsc::UnboundedSender<()>) -> DataServer {
        let mut shared = Arc::try_unwrap(self.shared).expect("not yet shared");
        shared.stall_apply = Some(tx);
        DataServer { shared: Arc::new(shared) }
    }

    /// Bytes of pushed data held or reserved right now.
    pub fn buffered_bytes(&self) -> u64 {
        self.shared.buffer.used()
    }

    /// Serves `listener` until `shutdown` completes; then stops accepting, lets requests in progress
    /// finish within [`Deadlines::shutdown_grace`] and drops the rest. Dropping the returned future
    /// drops every connection at once (which is how tests kill a replica).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        // Refusals are logged at most once a second, with how many there were.
        let (mut refused, mut refused_logged) = (0u64, None);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) if connections.len() >= self.shared.config.max_connections => {
                        // Closed before anything is read: dropping the stream is the whole refusal.
                        drop(stream);
                        refused += 1;
                        if refused_logged.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
                            refused_logged = Some(Instant::now());
                            tracing::warn!(%peer, refused, limit = self.shared.config.max_connections,
                                "data plane connections refused: too many open");
                            refused = 0;
                        }
                    }
                    Ok((stream, peer)) => {
                        connections.spawn(connection(Arc::clone(&self.shared), stream, peer, stop_rx.clone()));
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: pause instead of spinning on the error.
                        tracing::warn!(%error, "data plane accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        let drained = timeout(self.shared.config.deadlines.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::warn!(left = connections.len(), "data plane requests still running at shutdown; dropped");
        }
        Ok(())
    }
}

async fn connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
    let _ = tcp.set_nodelay(true);
    let d = shared.config.deadlines;
    // Until the first valid request: one deadline for all of it, from the connection's start (the TLS
    // handshake included).
    let started = tokio::time::Instant::now();
    let mut first = Some(started + d.first_frame);
    let mut stream = match &shared.config.tls {
        None => Stream::Plain(tcp),
        Some(tls) => match tokio::time::timeout_at(started + d.first_frame, tls.accept(tcp)).await {
            Ok(Ok(tls)) => Stream::Tls(Box::new(tls.into())),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "data plane TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    loop {
        let wait = first.map_or(d.idle, |by| by.saturating_duration_since(tokio::time::Instant::now()));
        let len = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            read = timeout(wait, stream.read_u32()) => match read {
                Ok(Ok(len)) => len as usize,
                // Closed by the peer, broken, or idle too long: nothing to answer.
                _ => return,
            },
        };
        let header_wait = first.map_or(d.header, |by| by.saturating_duration_since(tokio::time::Instant::now()));
        let request = match timeout(header_wait, frame::read_header_body(&mut stream, len)).await {
            Err(_) | Ok(Err(ReadFrameError::Io(_))) => return,
            Ok(Err(ReadFrameError::Frame(error))) => Err(error),
            Ok(Ok(header)) => Request::decode(&header),
        };
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%peer, %error, "malformed data plane frame; closing the connection");
                let _ = send(
                    &mut stream,
                    0,
                    Reply::Error(Refusal::new(ErrorCode::BadRequest, error.to_string())),
                    d.header,
                )
                .await;
                return;
            }
        };
        if let Err(error) = authorize(&shared.config.cluster_key, &request) {
            tracing::warn!(%peer, op = request.op.name(), %error, "data plane request refused");
            let refusal = Refusal::new(ErrorCode::Unauthorized, error.to_string());
            let _ = send(&mut stream, request.id, Reply::Error(refusal), d.header).await;
            return;
        }
        first = None;
        match dispatch(&shared, &mut stream, peer, request).await {
            Ok(Next::Continue) => {}
            Ok(Next::Close) => return,
            Err(error) => {
                tracing::debug!(%peer, %error, "data plane connection failed");
                return;
            }
        }
    }
}

fn authorize(key: &ClusterKey, request: &Request) -> Result<(), TokenError> {
    let (op, handle, version) = request.op.scope();
    if request.token.is_empty() {
        return Err(TokenError::Missing);
    }
    let token = CapabilityToken::decode(&request.token).ok_or(TokenError::Invalid)?;
    token.verify(key, op, handle, version, SystemTime::now())
}

async fn dispatch(shared: &Arc<Shared>, stream: &mut Stream, peer: SocketAddr, request: Request) -> io::Result<Next> {
    let id = request.id;
    let answer = match request.op {
        Op::Ping => Ok(Reply::Done),
        // The streaming operations answer for themselves.
        Op::Push(p) => return push::receive(shared, stream, id, p).await,
        Op::Read(r) => return read::serve(shared, stream, id, r).await,
        Op::Write(w) => mutate::write(shared, w).await,
        Op::Append(a) => mutate::append(shared, a).await,
        Op::ApplyWrite(a) => mutate::apply(shared, a).await,
        Op::ApplyPad(p) => mutate::pad(shared, p).await,
        Op::Prepare(p) => mutate::prepare(shared, p).await,
    };
    let (reply, next) = match answer {
        Ok(reply) => (reply, Next::Continue),
        Err(refusal) => {
            tracing::debug!(%peer, code = %refusal.code, message = %refusal.message, "data plane request failed");
            let next = if refusal.code == ErrorCode::BadRequest { Next::Close } else { Next::Continue };
            (Reply::Error(refusal), next)
        }
    };
    send(stream, id, reply, shared.config.deadlines.header).await?;
    Ok(next)
}

/// Sends one answer frame, within `deadline`.
pub(crate) async fn send(stream: &mut Stream, id: u64, reply: Reply, deadline: Duration) -> io::Result<()> {
    let frame = Response { id, reply }.encode();
    let sent = async {
        stream.write_all(&frame).await?;
        stream.flush().await
    };
    match timeout(deadline, sent).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "sending an answer timed out")),
    }
}
