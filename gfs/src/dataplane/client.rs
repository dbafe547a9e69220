//! [`DataClient`]: the client side of the data plane, used by GFS clients and by replicas for their
//! peers (forwarding pushed data, having secondaries apply a mutation).
//!
//! Every step has a deadline from [`ClientConfig`]: connecting, sending a frame or a piece, and waiting
//! for an answer. A connection is returned to a small per-address pool only after a request completed
//! cleanly; one that failed, timed out or was refused is dropped, so a pooled connection is always in
//! step with its server.
//!
//! With [`DataClient::with_tls`] every connection is TLS, the server's certificate verified for the IP
//! address dialled (or the configured server name); the handshake counts against `connect_timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::error::ClientError;
use super::frame::{self, Op, ReadFrameError, Reply, Request, Response, MAX_PIECE, MAX_REPLICAS, PIECE};
use super::stream::Stream;
use super::token::CapabilityToken;
use super::{ChunkRef, DataId};
use crate::chunk::{ChunkVersion, CHUNK_SIZE};
use crate::tls::Tls;

/// Deadlines and pooling of a [`DataClient`].
#[derive(Clone, Copy, Debug)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    /// Sending one frame or piece, and receiving one piece of a read.
    pub io_timeout: Duration,
    /// Waiting for the answer to a request. It covers the replica's own work — for a write, its fsync
    /// and its secondaries' deadlines — so it must be longer than the servers' `replicate` deadline.
    pub reply_timeout: Duration,
    /// Idle connections kept per address.
    pub pool_per_addr: usize,
    /// An idle connection older than this is not reused (servers close idle connections; see
    /// [`Deadlines::idle`](super::Deadlines::idle), which should be longer).
    pub pool_idle: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(90),
            pool_per_addr: 4,
            pool_idle: Duration::from_secs(30),
        }
    }
}

/// A write or append applied by a majority of the replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Where the data went (a record append's offset is chosen by the primary).
    pub offset: u64,
    /// Secondaries that did not confirm within their deadline: their replica missed this mutation and
    /// must be reported to the master as stale.
    pub failed: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended(WriteOutcome),
    /// The record did not fit; the chunk was padded to its end. Retry on the file's next chunk.
    ChunkFull {
        failed: Vec<SocketAddr>,
    },
}

#[derive(Debug)]
pub struct DataClient {
    config: ClientConfig,
    pool: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    next_id: AtomicU64,
    rng: SystemRandom,
    tls: Option<Tls>,
}

#[derive(Debug)]
struct Idle {
    stream: Stream,
    since: Instant,
}

/// One connection, checked out of the pool for one request.
struct Conn {
    addr: SocketAddr,
    stream: Stream,
}

impl DataClient {
    pub fn new(config: ClientConfig) -> DataClient {
        DataClient { config, pool: Mutex::default(), next_id: AtomicU64::new(1), rng: SystemRandom::new(), tls: None }
    }

    /// Speaks TLS only when `tls` is set (`None` leaves the client plaintext).
    pub fn with_tls(mut self, tls: Option<Tls>) -> DataClient {
        self.tls = tls;
        self
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A fresh random data id for a push.
    pub fn new_data_id(&self) -> Result<DataId, ClientError> {
        let mut bytes = [0; 16];
        self.rng.fill(&mut bytes).map_err(|_| ClientError::Invalid("no system randomness".into()))?;
        Ok(u128::from_be_bytes(bytes))
    }

    pub async fn ping(&self, addr: SocketAddr, token: &CapabilityToken) -> Result<(), ClientError> {
        match self.call(addr, token, Op::Ping).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Readies the replica at `addr` for a lease (master to chunkserver): creates `chunk` empty at its
    /// version when `from` is version 0 (refused with `BadRequest` if the replica already has the chunk,
    /// at any version), else raises it from `from` to `chunk.version`, where a replica already at
    /// `chunk.version` answers success.
    pub async fn prepare(
        &self,
        addr: SocketAddr,
        chunk: ChunkRef,
        from: ChunkVersion,
        token: &CapabilityToken,
    ) -> Result<(), ClientError> {
        let op = Op::Prepare(frame::Prepare { handle: chunk.handle, version: chunk.version, from });
        match self.call(addr, token, op).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Pushes `data` along `chain` (the first address receives it from us and forwards it down the rest)
    /// for a later mutation of `chunk`; returns once every replica of the chain holds it.
    pub async fn push(
        &self,
        chain: &[SocketAddr],
        chunk: ChunkRef,
        data: Bytes,
        token: &CapabilityToken,
    ) -> Result<DataId, ClientError> {
        let data_id = self.new_data_id()?;
        let (first, rest) = split_chain(chain)?;
        let mut push = self.open_push(first, rest, chunk, data_id, data.len() as u64, token).await?;
        for start in (0..data.len()).step_by(PIECE) {
            push.send(&data.slice(start..(start + PIECE).min(data.len()))).await?;
        }
        push.finish(self).await?;
        Ok(data_id)
    }

    /// [`push`](Self::push) from a reader of exactly `len` bytes, never holding more than one piece.
    pub async fn push_stream<R: AsyncRead + Unpin>(
        &self,
        chain: &[SocketAddr],
        chunk: ChunkRef,
        len: u64,
        mut reader: R,
        token: &CapabilityToken,
    ) -> Result<DataId, ClientError> {
        let data_id = self.new_data_id()?;
        let (first, rest) = split_chain(chain)?;
        let mut push = self.open_push(first, rest, chunk, data_id, len, token).await?;
        let mut piece = vec![0; PIECE];
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(PIECE);
            reader
                .read_exact(&mut piece[..n])
                .await
                .map_err(|e| ClientError::Invalid(format!("reading the data to push: {e}")))?;
            push.send(&piece[..n]).await?;
            left -= n as u64;
        }
        push.finish(self).await?;
        Ok(data_id)
    }

    /// Has `primary` apply the data pushed as `data_id` at `offset`, on itself and on `secondaries`.
    pub async fn write(
        &self,
        primary: SocketAddr,
        secondaries: &[SocketAddr],
        chunk: ChunkRef,
        offset: u64,
        data_id: DataId,
        token: &CapabilityToken,
    ) -> Result<WriteOutcome, ClientError> {
        check_replicas(secondaries)?;
        let op = Op::Write(frame::Write {
            handle: chunk.handle,
            version: chunk.version,
            offset,
            data_id,
            secondaries: secondaries.to_vec(),
        });
        match self.call(primary, token, op).await? {
            Reply::Written { offset, failed } => Ok(WriteOutcome { offset, failed }),
            other => Err(unexpected(primary, &other)),
        }
    }

    /// Appends the record pushed as `data_id` (at most [`MAX_RECORD`](super::MAX_RECORD) bytes) at an offset the primary
    /// chooses. A refusal or timeout leaves it unknown whether some replicas hold the record: retry
    /// (at-least-once; readers must tolerate duplicates and padding, as in the paper).
    pub async fn append(
        &self,
        primary: SocketAddr,
        secondaries: &[SocketAddr],
        chunk: ChunkRef,
        data_id: DataId,
        token: &CapabilityToken,
    ) -> Result<AppendOutcome, ClientError> {
        check_replicas(secondaries)?;
        let op = Op::Append(frame::Append {
            handle: chunk.handle,
            version: chunk.version,
            data_id,
            secondaries: secondaries.to_vec(),
        });
        match self.call(primary, token, op).await? {
            Reply::Written { offset, failed } => Ok(AppendOutcome::Appended(WriteOutcome { offset, failed })),
            Reply::ChunkFull { failed } => Ok(AppendOutcome::ChunkFull { failed }),
            other => Err(unexpected(primary, &other)),
        }
    }

    /// Reads up to `len` bytes at `offset` from one replica (fewer at the chunk's end). A checksum
    /// failure on that replica is [`ErrorCode::Corrupt`](super::ErrorCode::Corrupt): read another one.
    pub async fn read(
        &self,
        replica: SocketAddr,
        chunk: ChunkRef,
        offset: u64,
        len: u64,
        token: &CapabilityToken,
    ) -> Result<Bytes, ClientError> {
        let (conn, id, total) = self.start_read(replica, chunk, offset, len, token).await?;
        let mut out = Vec::with_capacity(total as usize);
        self.pump(conn, id, total, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// [`read`](Self::read) into `out`, one piece at a time; returns the bytes written. On an error part
    /// of the range may already have been written.
    pub async fn read_into<W: AsyncWrite + Unpin>(
        &self,
        replica: SocketAddr,
        chunk: ChunkRef,
        offset: u64,
        len: u64,
        token: &CapabilityToken,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        let (conn, id, total) = self.start_read(replica, chunk, offset, len, token).await?;
        self.pump(conn, id, total, out).await?;
        Ok(total)
    }

    async fn start_read(
        &self,
        addr: SocketAddr,
        chunk: ChunkRef,
        offset: u64,
        len: u64,
        token: &CapabilityToken,
    ) -> Result<(Conn, u64, u64), ClientError> {
        let op = Op::Read(frame::Read { handle: chunk.handle, version: chunk.version, offset, len });
        let (mut conn, id) = self.request(addr, token, op).await?;
        match self.reply(&mut conn, id, self.config.reply_timeout, "read").await? {
            Reply::ReadStart { len: total } if total <= len.min(CHUNK_SIZE) => Ok((conn, id, total)),
            other => Err(unexpected(addr, &other)),
        }
    }

    async fn pump<W: AsyncWrite + Unpin>(
        &self,
        mut conn: Conn,
        id: u64,
        total: u64,
        out: &mut W,
    ) -> Result<(), ClientError> {
        let addr = conn.addr;
        let mut piece = Vec::new();
        let mut received = 0;
        while received < total {
            let len = match self.reply(&mut conn, id, self.config.io_timeout, "read piece").await? {
                Reply::Piece { len } if len <= MAX_PIECE && received + u64::from(len) <= total && len > 0 => len,
                other => return Err(unexpected(addr, &other)),
            };
            // Into spare capacity (no zeroing of what the read overwrites), exactly `len` bytes.
            piece.clear();
            let mut exact = (&mut conn.stream).take(u64::from(len));
            io(addr, "read piece", self.config.io_timeout, exact.read_to_end(&mut piece)).await?;
            if piece.len() != len as usize {
                let source = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(ClientError::Io { addr, source });
            }
            out.write_all(&piece).await.map_err(|e| ClientError::Io { addr, source: e })?;
            received += u64::from(len);
        }
        self.release(conn);
        Ok(())
    }

    /// Opens a push to `addr`, which forwards to `rest`: sends the request and waits for `Ready` (the
    /// whole chain has reserved space and connected).
    pub(crate) async fn open_push(
        &self,
        addr: SocketAddr,
        rest: &[SocketAddr],
        chunk: ChunkRef,
        data_id: DataId,
        len: u64,
        token: &CapabilityToken,
    ) -> Result<PushConn, ClientError> {
        if len > CHUNK_SIZE {
            return Err(ClientError::Invalid(format!("{len} bytes is more than a chunk")));
        }
        let op =
            Op::Push(frame::Push { data_id, handle: chunk.handle, version: chunk.version, len, chain: rest.to_vec() });
        let (mut conn, id) = self.request(addr, token, op).await?;
        match self.reply(&mut conn, id, self.config.reply_timeout, "push").await? {
            Reply::Ready => Ok(PushConn { conn, id, len, sent: 0, io_timeout: self.config.io_timeout }),
            other => Err(unexpected(addr, &other)),
        }
    }

    /// Sends a request and reads its one answer (refusals become errors).
    pub(crate) async fn call(&self, addr: SocketAddr, token: &CapabilityToken, op: Op) -> Result<Reply, ClientError> {
        let step = op.name();
        let (mut conn, id) = self.request(addr, token, op).await?;
        let reply = self.reply(&mut conn, id, self.config.reply_timeout, step).await?;
        self.release(conn);
        Ok(reply)
    }

    /// Connects (or reuses a pooled connection) and sends the request frame.
    async fn request(&self, addr: SocketAddr, token: &CapabilityToken, op: Op) -> Result<(Conn, u64), ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Request { id, token: token.encode().to_vec(), op }.encode();
        let mut conn = self.connect(addr).await?;
        let sent = async {
            conn.stream.write_all(&frame).await?;
            conn.stream.flush().await
        };
        io(addr, "send request", self.config.io_timeout, sent).await?;
        Ok((conn, id))
    }

    /// Reads the answer to request `id`; an `Error` frame becomes [`ClientError::Refused`].
    async fn reply(&self, conn: &mut Conn, id: u64, wait: Duration, step: &'static str) -> Result<Reply, ClientError> {
        let addr = conn.addr;
        let header = match timeout(wait, frame::read_header(&mut conn.stream)).await {
            Err(_) => return Err(ClientError::Timeout { addr, step }),
            Ok(Err(ReadFrameError::Io(source))) => return Err(ClientError::Io { addr, source }),
            Ok(Err(ReadFrameError::Frame(e))) => return Err(ClientError::frame(addr, e)),
            Ok(Ok(header)) => header,
        };
        let response = Response::decode(&header).map_err(|e| ClientError::frame(addr, e))?;
        if response.id != id {
            return Err(ClientError::Protocol { addr, reason: format!("answer to request {} for {id}", response.id) });
        }
        match response.reply {
            Reply::Error(refusal) => Err(ClientError::refused(addr, refusal)),
            reply => Ok(reply),
        }
    }

    fn pool(&self) -> MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>>> {
        // One push or pop per critical section: a poisoned pool is still a consistent pool.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, ClientError> {
        let pooled = {
            let mut pool = self.pool();
            let idle = pool.entry(addr).or_default();
            idle.retain(|c| c.since.elapsed() < self.config.pool_idle);
            idle.pop()
        };
        if let Some(idle) = pooled {
            return Ok(Conn { addr, stream: idle.stream });
        }
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            // Frames are small and each is written whole; waiting for more to coalesce only adds latency.
            tcp.set_nodelay(true)?;
            match &self.tls {
                None => Ok(Stream::Plain(tcp)),
                Some(tls) => {
                    let tls = tls.connect(&addr.ip().to_string(), tcp).await?;
                    Ok(Stream::Tls(Box::new(tls.into())))
                }
            }
        };
        match timeout(self.config.connect_timeout, connect).await {
            Err(_) => Err(ClientError::Timeout { addr, step: "connect" }),
            Ok(Err(source)) => Err(ClientError::Connect { addr, source }),
            Ok(Ok(stream)) => Ok(Conn { addr, stream }),
        }
    }

    fn release(&self, conn: Conn) {
        let mut pool = self.pool();
        let idle = pool.entry(conn.addr).or_default();
        if idle.len() < self.config.pool_per_addr {
            idle.push(Idle { stream: conn.stream, since: Instant::now() });
        }
    }
}

/// A push in progress: the request was accepted, the data is being sent.
pub(crate) struct PushConn {
    conn: Conn,
    id: u64,
    len: u64,
    sent: u64,
    io_timeout: Duration,
}

impl PushConn {
    pub fn addr(&self) -> SocketAddr {
        self.conn.addr
    }

    /// Sends the next piece of the data.
    pub async fn send(&mut self, piece: &[u8]) -> Result<(), ClientError> {
        if self.sent + piece.len() as u64 > self.len {
            return Err(ClientError::Invalid(format!("more than the {} bytes announced", self.len)));
        }
        let stream = &mut self.conn.stream;
        let sent = async {
            stream.write_all(piece).await?;
            stream.flush().await
        };
        io(self.conn.addr, "send data", self.io_timeout, sent).await?;
        self.sent += piece.len() as u64;
        Ok(())
    }

    /// Waits until the whole chain holds the data (all of it must have been sent).
    pub async fn finish(mut self, client: &DataClient) -> Result<(), ClientError> {
        if self.sent != self.len {
            return Err(ClientError::Invalid(format!("{} of {} bytes sent", self.sent, self.len)));
        }
        match client.reply(&mut self.conn, self.id, client.config.reply_timeout, "push ack").await? {
            Reply::Done => {
                client.release(self.conn);
                Ok(())
            }
            other => Err(unexpected(self.conn.addr, &other)),
        }
    }
}

/// Runs one I/O step under its deadline.
async fn io<T>(
    addr: SocketAddr,
    step: &'static str,
    deadline: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, ClientError> {
    match timeout(deadline, f).await {
        Err(_) => Err(ClientError::Timeout { addr, step }),
        Ok(Err(source)) => Err(ClientError::Io { addr, source }),
        Ok(Ok(v)) => Ok(v),
    }
}

fn unexpected(addr: SocketAddr, reply: &Reply) -> ClientError {
    ClientError::Protocol { addr, reason: format!("unexpected answer {reply:?}") }
}

fn split_chain(chain: &[SocketAddr]) -> Result<(SocketAddr, &[SocketAddr]), ClientError> {
    check_replicas(chain)?;
    match chain.split_first() {
        Some((&first, rest)) => Ok((first, rest)),
        None => Err(ClientError::Invalid("empty push chain".into())),
    }
}

fn check_replicas(addrs: &[SocketAddr]) -> Result<(), ClientError> {
    if addrs.len() > MAX_REPLICAS {
        return Err(ClientError::Invalid(format!("{} replicas (at most {MAX_REPLICAS})", addrs.len())));
    }
    Ok(())
}
