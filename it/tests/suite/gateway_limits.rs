//! The gateway's protection and records with real sockets: body limits, request-rate and
//! connection limits per client, the one retry for idempotent requests, upstream timeouts, the
//! HTTPS redirect, the access log and the per-route metrics.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use edd_gateway::{
    clients::ClientLimitsConfig,
    observe::{AccessLogTarget, Observer},
    server::Transport,
    Options, Route,
};
use edd_it::eventually;
use hyper::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::gateway::{
    client, echo_backend, listen, open_tunnel, raw_exchange, start_with, test_limits, upgrade_backend,
};

fn route(id: &str, host: &str, upstream: std::net::SocketAddr) -> Route {
    Route::new(id, host, "/", &format!("http://{upstream}"), false).unwrap()
}

#[tokio::test]
async fn bodies_past_the_route_limit_get_413_whether_announced_or_streamed() {
    let echo = echo_backend("echo").await;
    let routes =
        vec![route("small", "small.localhost", echo).with_max_body(Some(1024)), route("big", "big.localhost", echo)];
    let options = Options { max_body_bytes: 1 << 20, ..Default::default() };
    let gw = start_with(routes, options, Transport::Plain, test_limits()).await;
    let post = |host: &str, body: reqwest::Body| {
        client().post(format!("http://{}/upload", gw.addr)).header("host", host.to_owned()).body(body)
    };

    let ok = post("small.localhost", vec![7u8; 1024].into()).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await.unwrap()["received"], 1024);

    // Announced by Content-Length: refused before any byte goes upstream.
    let announced = post("small.localhost", vec![7u8; 1025].into()).send().await.unwrap();
    assert_eq!(announced.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(announced.headers()["content-type"], "application/problem+json");

    // Chunked, size unknown up front: cut off when the count passes the limit.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![1u8; 512])))),
    );
    let streamed =
        post("small.localhost", reqwest::Body::wrap(http_body_util::StreamBody::new(chunks))).send().await.unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A route without its own limit takes the gateway's default.
    let default_ok = post("big.localhost", vec![0u8; 512 * 1024].into()).send().await.unwrap();
    assert_eq!(default_ok.json::<Value>().await.unwrap()["received"], 512 * 1024);
    let default_over = post("big.localhost", vec![0u8; (1 << 20) + 1].into()).send().await.unwrap();
    assert_eq!(default_over.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn one_client_is_held_to_its_request_rate_and_connection_count() {
    let echo = echo_backend("echo").await;
    let clients = ClientLimitsConfig { max_connections: 0, requests_per_sec: 1, burst: 3 };
    let gw = start_limited(route("a", "app.localhost", echo), clients).await;
    let get = || client().get(format!("http://{}/", gw.addr)).header("host", "app.localhost").send();

    for _ in 0..3 {
        assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    }
    let limited = get().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(limited.headers()["content-type"], "application/problem+json");

    // Two open connections are allowed; the third is answered 429 and closed.
    let clients = ClientLimitsConfig { max_connections: 2, requests_per_sec: 0, burst: 0 };
    let gw = start_limited(route("a", "app.localhost", echo), clients).await;
    let first = TcpStream::connect(gw.addr).await.unwrap();
    let _second = TcpStream::connect(gw.addr).await.unwrap();
    let third = eventually(Duration::from_secs(5), "the third connection is refused", || async {
        let Some(answer) = raw_exchange(gw.addr, "GET / HTTP/1.1\r\nhost: app.localhost\r\n\r\n").await else {
            return Ok(None);
        };
        Ok(answer.starts_with("HTTP/1.1 429").then_some(answer))
    })
    .await
    .unwrap();
    assert!(third.contains("too many connections"), "{third}");
    assert!(third.contains("retry-after: 1"), "{third}");

    // Closing one gives its slot back.
    drop(first);
    eventually(Duration::from_secs(5), "a closed connection gives its slot back", || async {
        let request = "GET / HTTP/1.1\r\nhost: app.localhost\r\nconnection: close\r\n\r\n";
        let Some(answer) = raw_exchange(gw.addr, request).await else { return Ok(None) };
        Ok(answer.starts_with("HTTP/1.1 200").then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_websocket_tunnel_keeps_its_connection_slot_until_it_closes() {
    let echo = upgrade_backend().await;
    let clients = ClientLimitsConfig { max_connections: 1, requests_per_sec: 0, burst: 0 };
    let gw = start_limited(route("ws", "ws.localhost", echo), clients).await;
    let mut tunnel = open_tunnel(gw.addr, "ws.localhost", "/").await;
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tunnel.read_exact(&mut echoed).await.unwrap();

    // The tunnel is still this client's one connection.
    let refused = raw_exchange(gw.addr, "GET / HTTP/1.1\r\nhost: ws.localhost\r\n\r\n").await.unwrap_or_default();
    assert!(refused.contains("too many connections"), "{refused}");

    drop(tunnel);
    eventually(Duration::from_secs(5), "the closed tunnel gives its slot back", || async {
        let request = "GET / HTTP/1.1\r\nhost: ws.localhost\r\nconnection: close\r\n\r\n";
        let Some(answer) = raw_exchange(gw.addr, request).await else { return Ok(None) };
        Ok((!answer.contains("too many connections")).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_upstream_timeout_starts_when_the_upload_is_done() {
    let echo = echo_backend("echo").await;
    let options = Options { upstream_timeout: Duration::from_millis(300), ..Default::default() };
    let gw = start_with(vec![route("up", "up.localhost", echo)], options, Transport::Plain, test_limits()).await;
    // An upload that takes longer than the upstream timeout (six pieces, 100 ms apart).
    let paced = futures_util::stream::unfold(0u8, |n| async move {
        if n == 6 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![n; 1000]))), n + 1))
    });
    let resp = client()
        .post(format!("http://{}/", gw.addr))
        .header("host", "up.localhost")
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(paced)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["received"], 6000);
}

/// A gateway with one route and these per-client limits.
async fn start_limited(route: Route, clients: ClientLimitsConfig) -> super::gateway::RunningGateway {
    start_with(vec![route], Options { clients, ..Default::default() }, Transport::Plain, test_limits()).await
}

/// A raw upstream that closes the connection without answering the first request for a path under
/// `/fail-once/` and every request for `/always-fail`, and answers everything else. It counts the
/// attempts per path.
async fn flaky_backend() -> (std::net::SocketAddr, Arc<Mutex<HashMap<String, usize>>>) {
    let (listener, addr) = listen().await;
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen = attempts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let attempt = {
                    let mut seen = seen.lock().unwrap();
                    let n = seen.entry(path.clone()).or_default();
                    *n += 1;
                    *n
                };
                // Read the head (and any small body) so the close is not a reset under the request.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let fail = path == "/always-fail" || (path.starts_with("/fail-once/") && attempt == 1);
                if !fail {
                    let _ = reader
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    (addr, attempts)
}

#[tokio::test]
async fn only_idempotent_requests_without_a_body_are_retried_and_only_once() {
    let (flaky, attempts) = flaky_backend().await;
    let gw =
        start_with(vec![route("f", "flaky.localhost", flaky)], Options::default(), Transport::Plain, test_limits())
            .await;
    let send = |method: reqwest::Method, path: &str, body: &'static str| {
        client()
            .request(method, format!("http://{}{path}", gw.addr))
            .header("host", "flaky.localhost")
            .body(body)
            .send()
    };
    let attempts_for = |path: &str| attempts.lock().unwrap().get(path).copied().unwrap_or(0);

    let get = send(reqwest::Method::GET, "/fail-once/get", "").await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(attempts_for("/fail-once/get"), 2);

    let post = send(reqwest::Method::POST, "/fail-once/post", "").await.unwrap();
    assert_eq!(post.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(attempts_for("/fail-once/post"), 1, "a POST is never sent twice");

    let put = send(reqwest::Method::PUT, "/fail-once/put", "payload").await.unwrap();
    assert_eq!(put.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(attempts_for("/fail-once/put"), 1, "a body that was consumed cannot be sent again");

    let always = send(reqwest::Method::GET, "/always-fail", "").await.unwrap();
    assert_eq!(always.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(attempts_for("/always-fail"), 2, "one retry, not more");
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_gets_504_and_plain_http_can_redirect_to_https() {
    // Accepts connections and never answers.
    let (silent, silent_addr) = listen().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let options = Options { upstream_timeout: Duration::from_millis(300), ..Default::default() };
    let gw =
        start_with(vec![route("slow", "slow.localhost", silent_addr)], options, Transport::Plain, test_limits()).await;
    let resp = client().get(format!("http://{}/", gw.addr)).header("host", "slow.localhost").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);

    let redirecting =
        start_with(Vec::new(), Options::default(), Transport::RedirectToHttps { port: 8443 }, test_limits()).await;
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = no_follow
        .post(format!("http://{}/a/b?c=d", redirecting.addr))
        .header("host", "app.localhost:18080")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()["location"], "https://app.localhost:8443/a/b?c=d");
}

#[tokio::test]
async fn every_request_is_logged_as_one_json_line_and_counted_per_route() {
    let echo = echo_backend("echo").await;
    let dir = std::env::temp_dir().join(format!("edd-access-{}", uuid::Uuid::now_v7().simple()));
    let log = dir.join("access.log");
    let metrics = edd_kit::Metrics::new();
    let observer = Observer::new(&metrics, &AccessLogTarget::File(log.clone())).unwrap();
    let routes = vec![route("app", "app.localhost", echo), route("internal", "svc.localhost", echo).builtin()];
    let gw = start_with(routes, Options { observer, ..Default::default() }, Transport::Plain, test_limits()).await;
    let get = |host: &str, path: &str| {
        client()
            .get(format!("http://{}{path}", gw.addr))
            .header("host", host.to_owned())
            .header("x-request-id", format!("log-{host}"))
    };

    let ok = get("app.localhost", "/items?token=edd_secret").send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body = ok.bytes().await.unwrap();
    assert_eq!(get("nowhere.localhost", "/").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    // The services' own metrics are not exposed through their built-in routes.
    assert_eq!(get("svc.localhost", "/metrics").send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let lines: Vec<Value> = eventually(Duration::from_secs(5), "three access-log lines", || async {
        let Ok(text) = tokio::fs::read_to_string(&log).await else { return Ok(None) };
        assert!(!text.contains("edd_secret"), "the query string (and its token) must not be logged");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        Ok((lines.len() >= 3).then_some(lines))
    })
    .await
    .unwrap();
    let line = lines.iter().find(|l| l["request_id"] == "log-app.localhost").unwrap();
    assert_eq!(line["route"], "app");
    assert_eq!(line["host"], "app.localhost");
    assert_eq!(line["path"], "/items");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], body.len());
    assert_eq!(line["completed"], true);
    assert!(line["upstream_ms"].as_f64().unwrap() > 0.0);
    let missing = lines.iter().find(|l| l["request_id"] == "log-nowhere.localhost").unwrap();
    assert_eq!((missing["status"].as_u64(), missing["route"].is_null()), (Some(404), true));

    let text = metrics.render();
    assert!(text.contains(r#"gateway_requests_total{route="app",status_class="2xx"} 1"#), "{text}");
    assert!(text.contains(r#"gateway_requests_total{route="-",status_class="4xx"} 1"#), "{text}");
    assert!(text.contains(r#"gateway_request_duration_seconds_count{route="app"} 1"#), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The process's peak resident memory, from `/proc/self/status` (nextest runs each test in its own
/// process, so this is this test's peak).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB");
    kib.trim().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn large_bodies_stream_through_without_entering_memory() {
    const TOTAL: usize = 256 << 20;
    const CHUNK: usize = 64 << 10;
    let echo = echo_backend("echo").await;
    // A backend that streams TOTAL bytes back, made as they are sent.
    let (listener, download) = listen().await;
    let app = axum::Router::new().route(
        "/big",
        axum::routing::get(|| async {
            let chunks =
                futures_util::stream::iter((0..TOTAL / CHUNK).map(|_| Ok::<_, std::io::Error>(vec![9u8; CHUNK])));
            axum::body::Body::from_stream(chunks)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let routes = vec![route("up", "up.localhost", echo), route("down", "down.localhost", download)];
    let gw = start_with(routes, Options::default(), Transport::Plain, test_limits()).await;
    let before = peak_rss_bytes();

    let chunks = futures_util::stream::iter(
        (0..TOTAL / CHUNK)
            .map(|_| Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![1u8; CHUNK])))),
    );
    let upload = client()
        .post(format!("http://{}/", gw.addr))
        .header("host", "up.localhost")
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.json::<Value>().await.unwrap()["received"], TOTAL);

    let mut download =
        client().get(format!("http://{}/big", gw.addr)).header("host", "down.localhost").send().await.unwrap();
    let mut received = 0;
    while let Some(chunk) = download.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, TOTAL);

    // Both bodies went through client, gateway and backend in this one process.
    let grown = peak_rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "peak memory grew by {} MiB moving 2 × 256 MiB", grown >> 20);
}
