//! `static-backend`: the upstream of the gateway-vs-nginx benchmark (`deploy/bench/gateway-vs-nginx.sh`).
//!
//! A tiny HTTP/1.1 keep-alive server: `GET /1k` answers 1024 bytes, `GET /1m` answers 1 MiB, both from
//! bodies allocated once at start, so the backend costs the same for whichever proxy is in front of it.
//!
//! Run: `static-backend --addr 127.0.0.1:18181`

use std::{convert::Infallible, net::SocketAddr};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{header, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(about = "Static HTTP/1.1 backend for the gateway benchmark: GET /1k and GET /1m")]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:18181")]
    addr: SocketAddr,
}

#[derive(Clone)]
struct Bodies {
    one_k: Bytes,
    one_m: Bytes,
}

fn answer(bodies: &Bodies, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let body = match (req.method(), req.uri().path()) {
        (&Method::GET, "/1k") => Some(bodies.one_k.clone()),
        (&Method::GET, "/1m") => Some(bodies.one_m.clone()),
        _ => None,
    };
    let mut response = match body {
        Some(body) => Response::new(Full::new(body)),
        None => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
    response
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bodies = Bodies { one_k: Bytes::from(vec![b'x'; 1024]), one_m: Bytes::from(vec![b'x'; 1024 * 1024]) };
    let listener = TcpListener::bind(args.addr).await.with_context(|| format!("binding {}", args.addr))?;
    eprintln!("static-backend listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let bodies = bodies.clone();
        let service = service_fn(move |req| {
            let response = answer(&bodies, &req);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            // Keep-alive is hyper's default for HTTP/1.1; errors here are clients going away.
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
