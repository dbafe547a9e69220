//! The wire format.
//!
//! Every message is a frame: a big-endian `u32` length, then that many header bytes (at most
//! [`MAX_HEADER`]): magic `0xED`, wire version `1`, a kind byte, a `u64` request id, then the kind's
//! fields. Requests carry the capability token (a `u16` length, at most [`MAX_TOKEN`], then its bytes)
//! right after the id. Bulk data never sits inside a header: pushed data follows its `Push` request as
//! raw bytes once the server has answered `Ready`, and a read's bytes come back as `Piece` frames each
//! followed by its raw bytes, so that a checksum failure in the middle of a read can still be reported
//! in band (an `Error` frame where the next `Piece` would be).
//!
//! Every length read off the wire is checked before anything is allocated for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::{ErrorCode, Refusal};
use super::token::TokenOp;
use super::DataId;
use crate::chunk::{ChunkHandle, ChunkVersion};

const MAGIC: u8 = 0xED;
const WIRE_VERSION: u8 = 1;

/// The largest frame header accepted.
pub const MAX_HEADER: usize = 4 * 1024;
/// The largest capability token accepted (today's are 40 bytes; room for a richer format later).
pub const MAX_TOKEN: usize = 512;
/// The most addresses in a push chain or a list of secondaries.
pub const MAX_REPLICAS: usize = 8;
/// The size of the pieces pushed data is forwarded in: big enough for few syscalls, small enough that
/// the next replica starts on the data long before the last byte arrives.
pub const PIECE: usize = 256 * 1024;
/// The most bytes one `Piece` frame of a read may announce.
pub(crate) const MAX_PIECE: u32 = 4 * 1024 * 1024;
/// Error messages are cut to this many bytes.
const MAX_MESSAGE: usize = 1024;

/// A malformed frame. The connection it arrived on is no longer in step and is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a data-plane frame (magic {0:#04x})")]
    BadMagic(u8),
    #[error("unsupported data-plane wire version {0}")]
    BadVersion(u8),
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("truncated frame")]
    Truncated,
    #[error("{what} of {len} is over the limit of {max}")]
    TooLong { what: &'static str, len: u64, max: u64 },
    #[error("bad socket address family {0}")]
    BadAddress(u8),
    #[error("{0} unexpected bytes after the frame's fields")]
    Trailing(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub id: u64,
    /// As received; checked by the server, never logged.
    pub token: Vec<u8>,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Ping,
    Push(Push),
    Write(Write),
    Append(Append),
    Read(Read),
    ApplyWrite(Apply),
    ApplyPad(Pad),
    Prepare(Prepare),
}

/// Data for `handle` follows (after `Ready`); forward it to `chain[0]`, which forwards to the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Push {
    pub data_id: DataId,
    /// The chunk the data is for: the token names it, and only a mutation of that chunk may use the data.
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub len: u64,
    pub chain: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Write {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub offset: u64,
    pub data_id: DataId,
    pub secondaries: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Append {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub data_id: DataId,
    pub secondaries: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Read {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub offset: u64,
    pub len: u64,
}

/// A secondary applies buffered data at the offset the primary chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Apply {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub offset: u64,
    pub data_id: DataId,
}

/// The master readies a replica for a lease: create the chunk empty at `version` (when `from` is 0; a
/// chunk already there is refused), or raise it from `from` to `version` (already at `version` is
/// success: a retry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Prepare {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub from: ChunkVersion,
}

/// A secondary fills the chunk with zeros from `offset` to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pad {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    pub offset: u64,
}

impl Op {
    /// What a token must grant for this request.
    pub fn scope(&self) -> (TokenOp, ChunkHandle, ChunkVersion) {
        match self {
            Op::Ping => (TokenOp::Ping, ChunkHandle(0), ChunkVersion(0)),
            Op::Push(p) => (TokenOp::Push, p.handle, p.version),
            Op::Write(w) => (TokenOp::Write, w.handle, w.version),
            Op::Append(a) => (TokenOp::Append, a.handle, a.version),
            Op::Read(r) => (TokenOp::Read, r.handle, r.version),
            Op::ApplyWrite(a) => (TokenOp::ApplyWrite, a.handle, a.version),
            Op::ApplyPad(p) => (TokenOp::ApplyPad, p.handle, p.version),
            Op::Prepare(p) => (TokenOp::Prepare, p.handle, p.version),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Push(_) => "push",
            Op::Write(_) => "write",
            Op::Append(_) => "append",
            Op::Read(_) => "read",
            Op::ApplyWrite(_) => "apply-write",
            Op::ApplyPad(_) => "apply-pad",
            Op::Prepare(_) => "prepare",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub id: u64,
    pub reply: Reply,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A ping answered, or pushed data held by this replica and everything downstream.
    Done,
    /// A push accepted (buffer space reserved, downstream ready): send the data.
    Ready,
    /// A write or append applied by a majority; `failed` are the secondaries that did not confirm.
    Written {
        offset: u64,
        failed: Vec<SocketAddr>,
    },
    /// The record did not fit: the chunk was padded to its end; retry on the next chunk.
    ChunkFull {
        failed: Vec<SocketAddr>,
    },
    /// A read's `len` bytes follow as `Piece` frames.
    ReadStart {
        len: u64,
    },
    /// `len` raw bytes follow this frame.
    Piece {
        len: u32,
    },
    Error(Refusal),
}

mod kind {
    pub const PING: u8 = 0x01;
    pub const PUSH: u8 = 0x02;
    pub const WRITE: u8 = 0x03;
    pub const APPEND: u8 = 0x04;
    pub const READ: u8 = 0x05;
    pub const APPLY_WRITE: u8 = 0x06;
    pub const APPLY_PAD: u8 = 0x07;
    pub const PREPARE: u8 = 0x08;
    pub const DONE: u8 = 0x81;
    pub const READY: u8 = 0x82;
    pub const WRITTEN: u8 = 0x83;
    pub const CHUNK_FULL: u8 = 0x84;
    pub const READ_START: u8 = 0x85;
    pub const PIECE: u8 = 0x86;
    pub const ERROR: u8 = 0x8F;
}

/// Starts a frame: room for the length (patched by [`finish`]), then the common header.
fn start(kind: u8, id: u64) -> BytesMut {
    let mut b = BytesMut::with_capacity(128);
    b.put_u32(0);
    b.put_u8(MAGIC);
    b.put_u8(WIRE_VERSION);
    b.put_u8(kind);
    b.put_u64(id);
    b
}

fn finish(mut b: BytesMut) -> BytesMut {
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}

impl Request {
    /// The whole frame, length prefix included.
    pub fn encode(&self) -> BytesMut {
        let k = match &self.op {
            Op::Ping => kind::PING,
            Op::Push(_) => kind::PUSH,
            Op::Write(_) => kind::WRITE,
            Op::Append(_) => kind::APPEND,
            Op::Read(_) => kind::READ,
            Op::ApplyWrite(_) => kind::APPLY_WRITE,
            Op::ApplyPad(_) => kind::APPLY_PAD,
            Op::Prepare(_) => kind::PREPARE,
        };
        let mut b = start(k, self.id);
        // Callers only hold tokens they minted or were given; a longer one is cut rather than trusted.
        let token = &self.token[..self.token.len().min(MAX_TOKEN)];
        b.put_u16(token.len() as u16);
        b.put_slice(token);
        match &self.op {
            Op::Ping => {}
            Op::Push(p) => {
                b.put_u128(p.data_id);
                b.put_u64(p.handle.0);
                b.put_u64(p.version.0);
                b.put_u64(p.len);
                put_addrs(&mut b, &p.chain);
            }
            Op::Write(w) => {
                b.put_u64(w.handle.0);
                b.put_u64(w.version.0);
                b.put_u64(w.offset);
                b.put_u128(w.data_id);
                put_addrs(&mut b, &w.secondaries);
            }
            Op::Append(a) => {
                b.put_u64(a.handle.0);
                b.put_u64(a.version.0);
                b.put_u128(a.data_id);
                put_addrs(&mut b, &a.secondaries);
            }
            Op::Read(r) => {
                b.put_u64(r.handle.0);
                b.put_u64(r.version.0);
                b.put_u64(r.offset);
                b.put_u64(r.len);
            }
            Op::ApplyWrite(a) => {
                b.put_u64(a.handle.0);
                b.put_u64(a.version.0);
                b.put_u64(a.offset);
                b.put_u128(a.data_id);
            }
            Op::ApplyPad(p) => {
                b.put_u64(p.handle.0);
                b.put_u64(p.version.0);
                b.put_u64(p.offset);
            }
            Op::Prepare(p) => {
                b.put_u64(p.handle.0);
                b.put_u64(p.version.0);
                b.put_u64(p.from.0);
            }
        }
        finish(b)
    }

    /// Parses a frame header (without its length prefix).
    pub fn decode(header: &[u8]) -> Result<Request, FrameError> {
        let mut c = Cursor(header);
        let (k, id) = c.preamble()?;
        let token_len = c.u16()? as usize;
        if token_len > MAX_TOKEN {
            return Err(FrameError::TooLong { what: "token", len: token_len as u64, max: MAX_TOKEN as u64 });
        }
        let token = c.bytes(token_len)?.to_vec();
        let op = match k {
            kind::PING => Op::Ping,
            kind::PUSH => Op::Push(Push {
                data_id: c.u128()?,
                handle: ChunkHandle(c.u64()?),
                version: ChunkVersion(c.u64()?),
                len: c.u64()?,
                chain: c.addrs()?,
            }),
            kind::WRITE => Op::Write(Write {
                handle: ChunkHandle(c.u64()?),
                version: ChunkVersion(c.u64()?),
                offset: c.u64()?,
                data_id: c.u128()?,
                secondaries: c.addrs()?,
            }),
            kind::APPEND => Op::Append(Append {
                handle: ChunkHandle(c.u64()?),
                version: ChunkVersion(c.u64()?),
                data_id: c.u128()?,
                secondaries: c.addrs()?,
            }),
            kind::READ => Op::Read(Read {
                handle: ChunkHandle(c.u64()?),
                version: ChunkVersion(c.u64()?),
                offset: c.u64()?,
                len: c.u64()?,
            }),
            kind::APPLY_WRITE => Op::ApplyWrite(Apply {
                handle: ChunkHandle(c.u64()?),
                version: ChunkVersion(c.u64()?),
                offset: c.u64()?,
                data_id: c.u128()?,
            }),
            kind::APPLY_PAD => {
                Op::ApplyPad(Pad { handle: ChunkHandle(c.u64()?), version: ChunkVersion(c.u64()?), offset: c.u64()? })
            }
            kind::PREPARE => Op::Prepare(Prepare {
                handle: ChunkHandle(c.u64()?),
                version: ChunkVersion(c.u64()?),
                from: ChunkVersion(c.u64()?),
            }),
            other => return Err(FrameError::UnknownKind(other)),
        };
        c.end()?;
        Ok(Request { id, token, op })
    }
}

impl Response {
    pub fn encode(&self) -> BytesMut {
        let mut b;
        match &self.reply {
            Reply::Done => b = start(kind::DONE, self.id),
            Reply::Ready => b = start(kind::READY, self.id),
            Reply::Written { offset, failed } => {
                b = start(kind::WRITTEN, self.id);
                b.put_u64(*offset);
                put_addrs(&mut b, failed);
            }
            Reply::ChunkFull { failed } => {
                b = start(kind::CHUNK_FULL, self.id);
                put_addrs(&mut b, failed);
            }
            Reply::ReadStart { len } => {
                b = start(kind::READ_START, self.id);
                b.put_u64(*len);
            }
            Reply::Piece { len } => {
                b = start(kind::PIECE, self.id);
                b.put_u32(*len);
            }
            Reply::Error(r) => {
                b = start(kind::ERROR, self.id);
                b.put_u16(r.code.to_u16());
                let message = truncate(&r.message, MAX_MESSAGE);
                b.put_u16(message.len() as u16);
                b.put_slice(message.as_bytes());
                put_addrs(&mut b, &r.failed);
            }
        }
        finish(b)
    }

    pub fn decode(header: &[u8]) -> Result<Response, FrameError> {
        let mut c = Cursor(header);
        let (k, id) = c.preamble()?;
        let reply = match k {
            kind::DONE => Reply::Done,
            kind::READY => Reply::Ready,
            kind::WRITTEN => Reply::Written { offset: c.u64()?, failed: c.addrs()? },
            kind::CHUNK_FULL => Reply::ChunkFull { failed: c.addrs()? },
            kind::READ_START => Reply::ReadStart { len: c.u64()? },
            kind::PIECE => Reply::Piece { len: c.u32()? },
            kind::ERROR => {
                let code = ErrorCode::from_u16(c.u16()?);
                let len = c.u16()? as usize;
                if len > MAX_MESSAGE {
                    return Err(FrameError::TooLong { what: "message", len: len as u64, max: MAX_MESSAGE as u64 });
                }
                let message = String::from_utf8_lossy(c.bytes(len)?).into_owned();
                Reply::Error(Refusal { code, message, failed: c.addrs()? })
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        c.end()?;
        Ok(Response { id, reply })
    }
}

/// Why reading a frame failed: the connection (I/O) or the peer (a malformed frame).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadFrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame's header bytes: the length prefix, checked against [`MAX_HEADER`], then the header.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ReadFrameError> {
    let len = r.read_u32().await? as usize;
    read_header_body(r, len).await
}

/// The rest of a frame whose length prefix has already been read.
pub(crate) async fn read_header_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Vec<u8>, ReadFrameError> {
    if len > MAX_HEADER {
        return Err(FrameError::TooLong { what: "frame header", len: len as u64, max: MAX_HEADER as u64 }.into());
    }
    let mut header = vec![0; len];
    r.read_exact(&mut header).await?;
    Ok(header)
}

fn put_addrs(b: &mut BytesMut, addrs: &[SocketAddr]) {
    // Callers never build longer lists (the client checks); cutting keeps the frame within bounds regardless.
    let addrs = &addrs[..addrs.len().min(MAX_REPLICAS)];
    b.put_u8(addrs.len() as u8);
    for addr in addrs {
        match addr.ip() {
            IpAddr::V4(ip) => {
                b.put_u8(4);
                b.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                b.put_u8(6);
                b.put_slice(&ip.octets());
            }
        }
        b.put_u16(addr.port());
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bounds-checked reading of a header's fields.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.0.remaining() < n {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }

    fn preamble(&mut self) -> Result<(u8, u64), FrameError> {
        let magic = self.u8()?;
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = self.u8()?;
        if version != WIRE_VERSION {
            return Err(FrameError::BadVersion(version));
        }
        Ok((self.u8()?, self.u64()?))
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }

    fn u128(&mut self) -> Result<u128, FrameError> {
        self.need(16)?;
        Ok(self.0.get_u128())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        self.need(n)?;
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn addrs(&mut self) -> Result<Vec<SocketAddr>, FrameError> {
        let n = self.u8()? as usize;
        if n > MAX_REPLICAS {
            return Err(FrameError::TooLong { what: "address list", len: n as u64, max: MAX_REPLICAS as u64 });
        }
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = match self.u8()? {
                4 => {
                    let o: [u8; 4] = self.bytes(4)?.try_into().map_err(|_| FrameError::Truncated)?;
                    IpAddr::V4(Ipv4Addr::from(o))
                }
                6 => {
                    let o: [u8; 16] = self.bytes(16)?.try_into().map_err(|_| FrameError::Truncated)?;
                    IpAddr::V6(Ipv6Addr::from(o))
                }
                other => return Err(FrameError::BadAddress(other)),
            };
            addrs.push(SocketAddr::new(ip, self.u16()?));
        }
        Ok(addrs)
    }

    fn end(&self) -> Result<(), FrameError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(FrameError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<SocketAddr> {
        vec!["127.0.0.1:9080".parse().expect("v4"), "[::1]:9081".parse().expect("v6")]
    }

    fn round_trip_request(op: Op) {
        let req = Request { id: 42, token: vec![9; 40], op };
        let frame = req.encode();
        assert_eq!(u32::from_be_bytes(frame[..4].try_into().expect("prefix")) as usize, frame.len() - 4);
        assert_eq!(Request::decode(&frame[4..]), Ok(req));
    }

    #[test]
    fn every_request_and_reply_round_trips() {
        let (h, v) = (ChunkHandle(u64::MAX), ChunkVersion(5));
        round_trip_request(Op::Ping);
        round_trip_request(Op::Push(Push { data_id: u128::MAX - 1, handle: h, version: v, len: 7, chain: addrs() }));
        round_trip_request(Op::Write(Write { handle: h, version: v, offset: 3, data_id: 1, secondaries: addrs() }));
        round_trip_request(Op::Append(Append { handle: h, version: v, data_id: 2, secondaries: vec![] }));
        round_trip_request(Op::Read(Read { handle: h, version: v, offset: 1, len: 2 }));
        round_trip_request(Op::ApplyWrite(Apply { handle: h, version: v, offset: 9, data_id: 3 }));
        round_trip_request(Op::ApplyPad(Pad { handle: h, version: v, offset: 9 }));
        round_trip_request(Op::Prepare(Prepare { handle: h, version: v, from: ChunkVersion(0) }));
        for reply in [
            Reply::Done,
            Reply::Ready,
            Reply::Written { offset: 77, failed: addrs() },
            Reply::ChunkFull { failed: vec![] },
            Reply::ReadStart { len: 1 << 40 },
            Reply::Piece { len: 12 },
            Reply::Error(Refusal { code: ErrorCode::QuorumFailed, message: "no".into(), failed: addrs() }),
            Reply::Error(Refusal { code: ErrorCode::Unknown(999), message: String::new(), failed: vec![] }),
        ] {
            let resp = Response { id: 7, reply };
            assert_eq!(Response::decode(&resp.encode()[4..]), Ok(resp));
        }
    }

    #[test]
    fn malformed_headers_are_refused_before_any_allocation_they_ask_for() {
        let good = Request { id: 1, token: vec![], op: Op::Ping }.encode();
        let mut bad = good.clone();
        bad[4] = 0x00;
        assert_eq!(Request::decode(&bad[4..]), Err(FrameError::BadMagic(0)));
        let mut bad = good.clone();
        bad[5] = 9;
        assert_eq!(Request::decode(&bad[4..]), Err(FrameError::BadVersion(9)));
        assert_eq!(Request::decode(&good[4..good.len() - 1]), Err(FrameError::Truncated));
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(Request::decode(&long[4..]), Err(FrameError::Trailing(1)));

        // A token length over the limit, and an address list over the limit.
        let mut b = start(kind::PING, 1);
        b.put_u16(MAX_TOKEN as u16 + 1);
        assert!(matches!(Request::decode(&b[4..]), Err(FrameError::TooLong { what: "token", .. })));
        let mut b = start(kind::APPEND, 1);
        b.put_u16(0);
        b.put_slice(&[0; 32]);
        b.put_u8(MAX_REPLICAS as u8 + 1);
        assert!(matches!(Request::decode(&b[4..]), Err(FrameError::TooLong { what: "address list", .. })));
    }

    #[tokio::test]
    async fn an_oversized_length_prefix_is_refused_without_reading_on() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = read_header(&mut input).await.expect_err("too long");
        assert!(matches!(err, ReadFrameError::Frame(FrameError::TooLong { what: "frame header", .. })), "{err}");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let message = "é".repeat(MAX_MESSAGE);
        let resp =
            Response { id: 1, reply: Reply::Error(Refusal { code: ErrorCode::Internal, message, failed: vec![] }) };
        let Ok(Response { reply: Reply::Error(r), .. }) = Response::decode(&resp.encode()[4..]) else {
            panic!("decode");
        };
        assert!(r.message.len() <= MAX_MESSAGE && r.message.chars().all(|c| c == 'é'));
    }
}
