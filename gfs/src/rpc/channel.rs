//! [`H2Channel`]: one HTTP/2 connection (prior knowledge), cleartext or TLS, as a tonic transport —
//! what [`MasterClient`](super::MasterClient) holds per master, without tonic's `transport` feature.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::body::Body;

use crate::tls::{host_of, Tls};

/// Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct H2Channel {
    send: SendRequest<Body>,
}

impl H2Channel {
    /// Connects to `addr` (`host:port`) and drives the connection in a background task until it ends.
    /// The caller bounds the time this may take.
    pub async fn connect(addr: &str) -> io::Result<H2Channel> {
        H2Channel::connect_with(addr, None).await
    }

    /// [`connect`](Self::connect), over TLS when `tls` is set (the server's certificate verified for
    /// the host of `addr`, or the configured server name).
    pub async fn connect_with(addr: &str, tls: Option<&Tls>) -> io::Result<H2Channel> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        match tls {
            None => H2Channel::handshake(stream).await,
            Some(tls) => H2Channel::handshake(tls.connect(host_of(addr), stream).await?).await,
        }
    }

    async fn handshake<IO>(io: IO) -> io::Result<H2Channel>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Channel { send })
    }

    /// Whether the connection is gone (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

impl tower::Service<hyper::Request<Body>> for H2Channel {
    type Response = hyper::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, req: hyper::Request<Body>) -> Self::Future {
        Box::pin(self.send.send_request(req))
    }
}
