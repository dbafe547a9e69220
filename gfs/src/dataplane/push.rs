//! Receiving pushed data and forwarding it down the chain as it arrives.
//!
//! A push is accepted in two steps so that a refusal never races the data: first the request alone —
//! the replica reserves buffer space and opens the push to the next replica (which does the same, down
//! the chain) and only then answers `Ready`; then the data, which the client sends only after `Ready`.
//! While the data arrives, each piece goes into this replica's buffer and into a short queue that a
//! forwarder drains to the next replica, so every hop of the chain works at once (the pipelining of
//! the paper's §3.2). The push is answered `Done` once this replica holds everything and the next one
//! has answered `Done` (so has everything after it).

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::client::{DataClient, PushConn};
use super::error::{ClientError, ErrorCode, Refusal};
use super::frame::{Push, Reply, PIECE};
use super::server::{send, Next, Shared};
use super::stream::Stream;
use super::token::TokenOp;
use super::ChunkRef;
use crate::chunk::CHUNK_SIZE;

/// Pieces queued for the next replica: enough to ride out a hiccup, few enough to bound the memory
/// beyond the buffer entry itself (the queued pieces are copies).
const FORWARD_QUEUE: usize = 8;

pub(crate) async fn receive(shared: &Shared, stream: &mut Stream, id: u64, push: Push) -> io::Result<Next> {
    let d = shared.config.deadlines;
    let chunk = ChunkRef { handle: push.handle, version: push.version };
    if push.len > CHUNK_SIZE {
        let refusal = Refusal::new(ErrorCode::TooLarge, format!("a push of {} bytes is more than a chunk", push.len));
        send(stream, id, Reply::Error(refusal), d.header).await?;
        return Ok(Next::Continue);
    }
    let reservation = match shared.buffer.reserve(push.data_id, push.len) {
        Ok(reservation) => reservation,
        Err(error) => {
            tracing::warn!(%error, "push refused");
            send(stream, id, Reply::Error(error.into()), d.header).await?;
            return Ok(Next::Continue);
        }
    };
    let downstream = match push.chain.split_first() {
        None => None,
        Some((&next, rest)) => {
            let token = shared.mint(TokenOp::Push, chunk);
            match shared.peers.open_push(next, rest, chunk, push.data_id, push.len, &token).await {
                Ok(conn) => Some(conn),
                Err(error) => {
                    send(stream, id, Reply::Error(downstream_refusal(next, error)), d.header).await?;
                    return Ok(Next::Continue);
                }
            }
        }
    };
    send(stream, id, Reply::Ready, d.header).await?;

    let (tx, forwarding) = match downstream {
        Some(conn) => {
            let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
            (Some(tx), Some(forward(&shared.peers, conn, rx, push.len)))
        }
        None => (None, None),
    };
    let forwarding = async {
        match forwarding {
            Some(f) => f.await,
            None => Ok(()),
        }
    };
    let (received, forwarded) = tokio::join!(receive_data(stream, push.len, tx, d.data), forwarding);
    // The sender broke off or stalled: its connection is out of step, and nobody waits for an answer.
    let data = received?;
    match forwarded {
        Ok(()) => {
            reservation.commit(push.handle, data.freeze());
            send(stream, id, Reply::Done, d.header).await?;
        }
        Err(refusal) => {
            tracing::warn!(message = %refusal.message, failed = ?refusal.failed, "push failed downstream");
            drop(reservation);
            send(stream, id, Reply::Error(refusal), d.header).await?;
        }
    }
    Ok(Next::Continue)
}

/// Reads exactly `len` bytes into one buffer sized up front (the reservation has already paid for it),
/// handing a copy of each piece to the forwarder if there is one. Each read has its own deadline.
async fn receive_data(
    stream: &mut Stream,
    len: u64,
    mut tx: Option<mpsc::Sender<Bytes>>,
    piece_deadline: std::time::Duration,
) -> io::Result<BytesMut> {
    let len = len as usize;
    let mut buf = BytesMut::with_capacity(len);
    let mut forwarded = 0;
    while buf.len() < len {
        // `take` keeps a read from running into whatever the peer sends after this push.
        let remaining = (len - buf.len()) as u64;
        let n = match timeout(piece_deadline, (&mut *stream).take(remaining).read_buf(&mut buf)).await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "pushed data stalled")),
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "push cut short"));
        }
        if let Some(sender) = &tx {
            if buf.len() - forwarded >= PIECE || buf.len() == len {
                let piece = Bytes::copy_from_slice(&buf[forwarded..]);
                forwarded = buf.len();
                // The forwarder gave up (its replica failed): keep receiving, the answer will say so.
                if sender.send(piece).await.is_err() {
                    tx = None;
                }
            }
        }
    }
    Ok(buf)
}

/// Sends the queued pieces to the next replica, then waits for its `Done`.
async fn forward(
    peers: &DataClient,
    mut conn: PushConn,
    mut rx: mpsc::Receiver<Bytes>,
    len: u64,
) -> Result<(), Refusal> {
    let addr = conn.addr();
    let mut sent = 0;
    while let Some(piece) = rx.recv().await {
        conn.send(&piece).await.map_err(|e| downstream_refusal(addr, e))?;
        sent += piece.len() as u64;
    }
    if sent != len {
        // Only when our own sender broke off; the caller answers nothing then.
        return Err(Refusal::new(ErrorCode::Downstream, "push cut short upstream"));
    }
    conn.finish(peers).await.map_err(|e| downstream_refusal(addr, e))
}

/// The refusal for a push whose next replica `next` failed: it names the replica at fault (`next`, or
/// the one further down that `next` itself named).
fn downstream_refusal(next: SocketAddr, error: ClientError) -> Refusal {
    let failed = match error.failed() {
        [] => vec![next],
        further => further.to_vec(),
    };
    Refusal::new(ErrorCode::Downstream, format!("push chain failed: {error}")).failed(failed)
}
