//! The listeners: HTTP/1.1 and HTTP/2 on one port (told apart by the h2 preface in cleartext and
//! by ALPN under TLS), with upgrades, per-client connection limits, a header-read timeout that
//! cuts slow-loris clients off and an idle timeout for connections that stopped moving bytes.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use edd_kit::Shutdown;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    observe::Refusal,
    proxy::{Gateway, Held, Scheme},
};

/// Limits of a listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (line + headers); beyond it HTTP/1.1 clients get 431.
    pub max_header_bytes: usize,
    /// Time a client has to send a request head (and to finish a TLS handshake). It also closes
    /// an HTTP/1.1 keep-alive connection that sends no next request within that time.
    pub header_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What a listener speaks.
#[derive(Clone)]
pub enum Transport {
    /// Cleartext HTTP/1.1 and h2c.
    Plain,
    /// TLS, offering h2 and http/1.1.
    Tls(TlsAcceptor),
    /// Cleartext that answers every request with a redirect to HTTPS on `port`.
    RedirectToHttps { port: u16 },
}

/// Refused connections being answered at once; beyond it they are just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 1024;

/// Serves `gateway` on `listener` until `shutdown`, then lets open requests finish (up to 30 s).
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    gateway: Arc<Gateway>,
    limits: Limits,
    shutdown: Shutdown,
) {
    let builder = Arc::new(builder(&limits));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let graceful = GracefulShutdown::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(slot) = gateway.clients().connect(peer.ip()) else {
            gateway.observer().refused(Refusal::Connections);
            if !matches!(transport, Transport::Tls(_)) {
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream).await;
                        drop(permit);
                    });
                }
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let held: Held = Arc::new((slot, gateway.observer().connection()));
        let connection = Connection {
            gateway: gateway.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            peer,
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            held,
        };
        let (transport, header_timeout) = (transport.clone(), limits.header_timeout);
        tokio::spawn(async move {
            match transport {
                Transport::Plain => connection.serve(stream, Scheme::Http).await,
                Transport::RedirectToHttps { port } => connection.serve(stream, Scheme::RedirectToHttps { port }).await,
                Transport::Tls(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection.serve(tls, Scheme::Https).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    // New clients are refused at once (and retry elsewhere) rather than queued while we drain.
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 30 s; closing them");
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // No keep-alive pings: they would count as activity and keep idle connections open forever;
        // the idle timeout closes vanished peers instead.
        .max_concurrent_streams(256);
    builder
}

/// One accepted connection and what serving it needs.
struct Connection {
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    peer: std::net::SocketAddr,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The connection's slot and gauge; requests clone it so an upgraded tunnel can keep it.
    held: Held,
}

impl Connection {
    async fn serve<S>(self, io: S, scheme: Scheme)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self { gateway, builder, watcher, peer, header_timeout, idle_timeout, held } = self;
        let activity = Activity::new();
        let io = Watched { inner: io, activity: activity.clone() };
        let first_request = Arc::new(tokio::sync::Notify::new());
        let started = first_request.clone();
        let service = service_fn(move |req| {
            started.notify_one();
            let (gateway, held) = (gateway.clone(), held.clone());
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(req, peer, scheme, held).await) }
        });
        let conn = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned());
        tokio::pin!(conn);
        // A connection must start a request within the header timeout, whatever it speaks: this
        // also covers the bytes read to tell HTTP/1.1 from HTTP/2, which have no timer of their own.
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = first_request.notified() => {}
            () = tokio::time::sleep(header_timeout) => {
                tracing::debug!(%peer, "no request within the header timeout; closing");
                return;
            }
        }
        loop {
            tokio::select! {
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(activity.last() + idle_timeout) => {
                    if activity.last() + idle_timeout <= Instant::now() {
                        tracing::debug!(%peer, "connection idle; closing it");
                        return;
                    }
                }
            }
        }
    }
}

/// Answers a connection over its client's limit with a 429 and closes it. The request is read
/// first (up to 8 KiB, 1 s) so that closing does not reset the connection under the answer.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"too many connections from this address"}"#;
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// When a connection last moved a byte.
#[derive(Clone)]
struct Activity {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self { origin: Instant::now(), last_ms: Arc::default() }
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// An I/O stream that records activity for the idle timeout.
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
