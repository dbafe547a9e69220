//! The listener: HTTP/1.1 and cleartext HTTP/2 on one port (told apart by the h2 preface), with
//! upgrades, header limits and a header-read timeout that cuts slow-loris clients off.

use std::{sync::Arc, time::Duration};

use edd_kit::Shutdown;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;

use crate::proxy::Gateway;

/// Limits of the listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (line + headers); beyond it HTTP/1.1 clients get 431.
    pub max_header_bytes: usize,
    /// Time a client has to send its request head.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_header_bytes: 64 * 1024, header_timeout: Duration::from_secs(10) }
    }
}

/// Serves `gateway` on `listener` until `shutdown`, then lets open requests finish (up to 30 s).
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, limits: Limits, shutdown: Shutdown) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder.http2().timer(TokioTimer::new()).max_header_list_size(limits.max_header_bytes as u32);
    let graceful = GracefulShutdown::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(req, peer, "http").await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 30 s; closing them");
    }
}
