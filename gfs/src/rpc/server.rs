//! Serving a [`MasterApi`] on a TCP listener: cleartext HTTP/2 (prior knowledge), every call
//! authenticated before its body is read, every call bounded in time.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{dispatch, Authenticator, MasterApi, SERVICE};

#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A call taking longer is answered `DEADLINE_EXCEEDED`.
    pub call_timeout: Duration,
    /// Concurrent calls per connection.
    pub max_streams: u32,
    /// After shutdown: how long calls in progress may take.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { call_timeout: Duration::from_secs(30), max_streams: 256, shutdown_grace: Duration::from_secs(5) }
    }
}

/// Serves `api` on `listener` until `shutdown` completes.
pub async fn serve<A: MasterApi>(
    listener: TcpListener,
    api: Arc<A>,
    auth: Arc<Authenticator>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
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
                let _ = stream.set_nodelay(true);
                let (api, auth) = (Arc::clone(&api), Arc::clone(&auth));
                connections.spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (api, auth) = (Arc::clone(&api), Arc::clone(&auth));
                        async move { Ok::<_, Infallible>(call(api, &auth, options, peer, req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(options.max_streams)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
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

async fn call<A: MasterApi>(
    api: Arc<A>,
    auth: &Authenticator,
    options: ServeOptions,
    peer: std::net::SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<tonic::body::Body> {
    let header = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(role) = auth.verify(header) else {
        tracing::warn!(%peer, path = req.uri().path(), "gfs master call without a valid credential refused");
        return tonic::Status::unauthenticated("a valid GFS credential is required").into_http();
    };
    let path = req.uri().path().to_owned();
    let Some(method) = path.strip_prefix('/').and_then(|p| p.strip_prefix(SERVICE)).and_then(|p| p.strip_prefix('/'))
    else {
        return tonic::Status::unimplemented(format!("no service at {path}")).into_http();
    };
    match tokio::time::timeout(options.call_timeout, dispatch(api, role, method, req)).await {
        Ok(response) => response,
        Err(_) => tonic::Status::deadline_exceeded(format!("{method} took longer than {:?}", options.call_timeout))
            .into_http(),
    }
}
