//! Serving a [`MasterApi`] on a TCP listener: HTTP/2 (prior knowledge), cleartext or — with
//! [`serve_with`] and a [`Tls`] — TLS only (the handshake within [`TLS_HANDSHAKE`]), every call's
//! credential checked before its body is read (and the body against it after), every call bounded in
//! time; connections bounded in number, pinged, and closed when idle; refusals logged at a bounded
//! rate.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{dispatch, Authenticator, MasterApi, Refused, SERVICE};
use crate::tls::Tls;

/// A TLS connection's handshake must be done within this, or the connection is closed.
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A call taking longer is answered `DEADLINE_EXCEEDED`.
    pub call_timeout: Duration,
    /// Concurrent calls per connection.
    pub max_streams: u32,
    /// After shutdown: how long calls in progress may take.
    pub shutdown_grace: Duration,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// A connection with no call in progress for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            call_timeout: Duration::from_secs(30),
            max_streams: 256,
            shutdown_grace: Duration::from_secs(5),
            max_connections: 4096,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Serves `api` on `listener`, cleartext, until `shutdown` completes.
pub async fn serve<A: MasterApi>(
    listener: TcpListener,
    api: Arc<A>,
    auth: Arc<Authenticator>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, api, auth, options, None, shutdown).await
}

/// [`serve`], TLS only when `tls` is set (which must have a certificate: [`Tls::serves`]).
pub async fn serve_with<A: MasterApi>(
    listener: TcpListener,
    api: Arc<A>,
    auth: Arc<Authenticator>,
    options: ServeOptions,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if tls.as_ref().is_some_and(|tls| !tls.serves()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS without a certificate to serve with"));
    }
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    let refusals = Arc::new(Refusals::default());
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "gfs master accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if connections.len() >= options.max_connections {
                    refusals.note(peer, "connection refused: too many open connections");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let (api, auth, refusals) = (Arc::clone(&api), Arc::clone(&auth), Arc::clone(&refusals));
                let tls = tls.clone();
                connections.spawn(async move {
                    match tls {
                        None => connection(stream, peer, api, auth, refusals, options).await,
                        Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE, tls.accept(stream)).await {
                            Ok(Ok(stream)) => connection(stream, peer, api, auth, refusals, options).await,
                            Ok(Err(_)) | Err(_) => refusals.note(peer, "connection closed: no TLS handshake"),
                        },
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained =
        tokio::time::timeout(options.shutdown_grace, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        connections.abort_all();
    }
    Ok(())
}

/// Serves one connection until it ends or has been idle for [`ServeOptions::idle_timeout`].
async fn connection<A: MasterApi, IO>(
    stream: IO,
    peer: std::net::SocketAddr,
    api: Arc<A>,
    auth: Arc<Authenticator>,
    refusals: Arc<Refusals>,
    options: ServeOptions,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let activity = Arc::new(Activity::default());
    let seen = Arc::clone(&activity);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (api, auth, refusals, seen) =
            (Arc::clone(&api), Arc::clone(&auth), Arc::clone(&refusals), Arc::clone(&seen));
        async move {
            let _busy = seen.start();
            Ok::<_, Infallible>(call(api, &auth, &refusals, options, peer, req).await)
        }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(options.max_streams)
        .serve_connection(TokioIo::new(stream), service);
    // Closed once idle: a peer that connects and never calls holds nothing for long.
    tokio::select! {
                        _ = connection => {}
                        () = activity.idle_for(options.idle_timeout) => {}
    }
}

async fn call<A: MasterApi>(
    api: Arc<A>,
    auth: &Authenticator,
    refusals: &Refusals,
    options: ServeOptions,
    peer: std::net::SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<tonic::body::Body> {
    let path = req.uri().path().to_owned();
    let method = path.strip_prefix('/').and_then(|p| p.strip_prefix(SERVICE)).and_then(|p| p.strip_prefix('/'));
    let header = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    // The credential names the method it was made for: checked against the path as sent.
    let verified = match auth.verify(header, method.unwrap_or(&path)) {
        Ok(verified) => verified,
        Err(Refused::Busy) => {
            refusals.note(peer, "gfs master call refused: too many credentials in use");
            return tonic::Status::resource_exhausted("too many calls at once; retry").into_http();
        }
        Err(_) => {
            refusals.note(peer, "gfs master call without a valid credential refused");
            return tonic::Status::unauthenticated("a valid GFS credential is required").into_http();
        }
    };
    let Some(method) = method else {
        return tonic::Status::unimplemented(format!("no service at {path}")).into_http();
    };
    match tokio::time::timeout(options.call_timeout, dispatch(api, verified, method, req)).await {
        Ok(response) => response,
        Err(_) => tonic::Status::deadline_exceeded(format!("{method} took longer than {:?}", options.call_timeout))
            .into_http(),
    }
}

/// Calls in progress on one connection, and when the last one ended.
#[derive(Default)]
struct Activity {
    busy: AtomicUsize,
    /// Milliseconds since `EPOCH` when a call last ended.
    last_ms: AtomicU64,
}

/// Process-wide start of the clock `Activity` counts in.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.last_ms.store(now_ms(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn start(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    /// Completes once no call has been in progress for `limit`.
    async fn idle_for(&self, limit: Duration) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
        loop {
            let idle = Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)));
            if self.busy.load(Ordering::Relaxed) == 0 && idle >= limit {
                return;
            }
            tokio::time::sleep(limit.saturating_sub(idle).max(Duration::from_secs(1))).await;
        }
    }
}

/// Refused peers, logged at most once a second (with how many were not logged), so that a flood of
/// bad calls cannot flood the log.
#[derive(Default)]
struct Refusals {
    last_logged_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl Refusals {
    fn note(&self, peer: std::net::SocketAddr, what: &'static str) {
        let now = now_ms().max(1);
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= 1000;
        if due && self.last_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(%peer, unlogged, "{what}");
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}
