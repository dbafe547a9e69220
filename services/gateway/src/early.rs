//! Early answers: an upstream may answer a request before it has read the request's body (a 429
//! from a per-user upload limit, a 413, a 401) and then close the connection. The client is to get
//! that answer, never a 502 because sending the rest of the body failed meanwhile.
//!
//! Three pieces make that hold on the HTTP/1.1 path:
//!
//! - [`Connector`] hands hyper a connection ([`UpstreamIo`]) on which writing to a peer that has
//!   closed or reset does not fail the exchange: the bytes are dropped as a closed peer would drop
//!   them, and hyper goes on *reading*, where the answer the upstream sent before closing is waiting
//!   (the kernel keeps what arrived before the reset). If there was no answer, the read ends the
//!   exchange as before: a 502.
//! - The proxy never returns such a connection to the pool: one whose writes failed, or one that
//!   answered before the body was sent ([`poison`]), is closed by the upstream or about to be.
//! - [`linger`] reads and discards what a client still sends of a body nobody will read, for a
//!   while, instead of dropping it at once: closing a connection with unread data makes the kernel
//!   reset it, and a reset can reach a client still sending before it has read the answer.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::BodyExt as _;
use hyper::{
    body::Incoming,
    rt::{Read, ReadBufCursor, Write},
    Uri,
};
use hyper_util::{
    client::legacy::connect::{CaptureConnection, Connected, Connection, HttpConnector},
    rt::TokioIo,
};

/// The longest a client's unread request body is read and discarded after its exchange ended.
pub const LINGER: Duration = Duration::from_secs(10);
/// The longest a lingering client may send nothing before the gateway gives up on it.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);

/// Connects like [`HttpConnector`], handing out [`UpstreamIo`] connections.
#[derive(Clone)]
pub struct Connector(pub HttpConnector);

impl tower::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(UpstreamIo { inner: connecting.await?, broken: WriteBroken::default() }) })
    }
}

/// Set once writing to a connection failed because its peer closed or reset it. It is in the
/// extensions of every response read on that connection.
#[derive(Clone, Debug, Default)]
pub struct WriteBroken(Arc<AtomicBool>);

impl WriteBroken {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// An upstream TCP connection whose writes, once the peer has closed or reset it, succeed without
/// sending anything, so that hyper reads the answer the peer sent before it closed.
pub struct UpstreamIo {
    inner: TokioIo<tokio::net::TcpStream>,
    broken: WriteBroken,
}

impl UpstreamIo {
    /// `Ok` for an error that only says the peer is gone (recorded), else the error itself.
    fn absorb<T>(&self, result: io::Result<T>, gone: T) -> io::Result<T> {
        match result {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                tracing::debug!(error = %e, "the upstream closed while the request was being sent; reading its answer");
                self.broken.0.store(true, Ordering::Relaxed);
                Ok(gone)
            }
            other => other,
        }
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.broken.clone())
    }
}

impl Read for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.broken.is_set() {
            return Poll::Ready(Ok(buf.len()));
        }
        let result = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        Poll::Ready(this.absorb(result, buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let all = bufs.iter().map(|b| b.len()).sum();
        if this.broken.is_set() {
            return Poll::Ready(Ok(all));
        }
        let result = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        Poll::Ready(this.absorb(result, all))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.broken.is_set() {
            return Poll::Ready(Ok(()));
        }
        let result = std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx));
        Poll::Ready(this.absorb(result, ()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
        Poll::Ready(this.absorb(result, ()))
    }
}

/// Keeps the connection an exchange used out of the pool: the upstream answered before it had the
/// whole body (it closes, or reads on into a body nobody sends any more), or writing to it failed.
pub fn poison(captured: &CaptureConnection) {
    if let Some(connected) = captured.connection_metadata().as_ref() {
        connected.poison();
    }
}

/// Whether writing on the connection a response came on failed (see [`UpstreamIo`]).
pub fn write_broken<B>(response: &hyper::Response<B>) -> bool {
    response.extensions().get::<WriteBroken>().is_some_and(WriteBroken::is_set)
}

/// Reads and discards the rest of a client's request body nobody will read, for at most [`LINGER`]
/// (and [`LINGER_IDLE`] between pieces), so that the client reads its answer before the gateway
/// closes on it. A client that finishes in time keeps its connection.
pub fn linger(mut body: Incoming) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let drain = async { while let Ok(Some(Ok(_))) = tokio::time::timeout(LINGER_IDLE, body.frame()).await {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::{Request, StatusCode};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// An upstream that reads a request's head, answers, and closes with the body unread (so the
    /// kernel resets the connection): its answer is what the client gets, every time.
    #[tokio::test]
    async fn the_answer_of_an_upstream_that_closed_on_an_unread_body_is_read() {
        const TIMES: usize = 8;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..TIMES {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    head.extend_from_slice(&buf[..n]);
                }
                socket.write_all(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 4\r\n\r\nslow").await.unwrap();
            }
        });
        // One connection per request: reuse is the proxy's decision, not this test's.
        let client: Client<Connector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(Connector(HttpConnector::new()));
        for _ in 0..TIMES {
            let body = Full::new(Bytes::from(vec![0u8; 32 << 20]));
            let request = Request::post(format!("http://{addr}/upload")).body(body).unwrap();
            let response = client.request(request).await.expect("the upstream's answer, not an error");
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.extensions().get::<WriteBroken>().is_some(), "not on an UpstreamIo connection");
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "slow");
        }
    }
}
