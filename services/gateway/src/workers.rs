//! Serving on one single-threaded runtime per core. Every worker accepts from the same listening
//! sockets and proxies with its own upstream pools, so a request is read, forwarded and answered on
//! one thread, with no hand-off between threads. Against one work-stealing runtime this measured
//! about 15% less CPU per small request (`docs/benchmarks.md`, gateway vs nginx).

use std::{io, sync::Arc};

use edd_kit::Shutdown;
use tokio::{net::TcpListener, sync::oneshot, task::JoinSet};

use crate::{
    proxy::Gateway,
    server::{self, Limits, Transport},
};

/// The number of workers for `requested` (0: one per core).
pub fn count(requested: usize) -> usize {
    match requested {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Serves every listener on `workers` threads until `shutdown`; returns once all have drained.
pub async fn serve(
    listeners: Vec<(TcpListener, Transport)>,
    gateway: Arc<Gateway>,
    workers: usize,
    limits: Limits,
    shutdown: Shutdown,
) -> io::Result<()> {
    let listeners = listeners
        .into_iter()
        .map(|(listener, transport)| Ok((listener.into_std()?, transport)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut finished = Vec::with_capacity(workers);
    for worker in 0..workers.max(1) {
        let gateway = if worker == 0 { gateway.clone() } else { Arc::new(gateway.sibling()) };
        let own = listeners
            .iter()
            .map(|(listener, transport)| Ok((listener.try_clone()?, transport.clone())))
            .collect::<io::Result<Vec<_>>>()?;
        let (limits, shutdown) = (limits.clone(), shutdown.clone());
        let (done, finished_rx) = oneshot::channel();
        std::thread::Builder::new().name(format!("gateway-{worker}")).spawn(move || {
            let _ = done.send(run_worker(own, gateway, limits, shutdown));
        })?;
        finished.push(finished_rx);
    }
    // The workers hold their own clones; closing ours lets the sockets close when they stop.
    drop(listeners);
    for worker in finished {
        if let Ok(Err(e)) = worker.await {
            return Err(e);
        }
    }
    Ok(())
}

fn run_worker(
    listeners: Vec<(std::net::TcpListener, Transport)>,
    gateway: Arc<Gateway>,
    limits: Limits,
    shutdown: Shutdown,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut servers = JoinSet::new();
        for (listener, transport) in listeners {
            // The std listener is already non-blocking (it came from tokio).
            let listener = TcpListener::from_std(listener)?;
            servers.spawn(server::serve(listener, transport, gateway.clone(), limits.clone(), shutdown.clone()));
        }
        while servers.join_next().await.is_some() {}
        Ok(())
    })
}
