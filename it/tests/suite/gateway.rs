//! The gateway's proxy core with real sockets: routing, forwarded headers, request ids, upgrade
//! tunnelling, limits, upstream failure, and swapping routes under an open tunnel.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{http::HeaderMap, http::Uri, routing::get, Json, Router};
use edd_gateway::{server, Gateway, Options, Route, RouteTable};
use edd_kit::{shutdown::Trigger, Shutdown};
use hyper::{body::Incoming, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub(crate) async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A backend that answers with what it received (for a POST: how many body bytes).
pub(crate) async fn echo_backend(name: &'static str) -> SocketAddr {
    async fn echo(name: &'static str, uri: Uri, headers: HeaderMap) -> Json<Value> {
        let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Json(json!({
            "backend": name, "path": uri.path(), "query": uri.query(),
            "xff": h("x-forwarded-for"), "proto": h("x-forwarded-proto"), "fhost": h("x-forwarded-host"),
            "request_id": h("x-request-id"), "custom": h("x-custom"), "keep_alive": h("keep-alive"),
            "host": h("host"), "upgrade": h("upgrade"), "forwarded": h("forwarded"), "x_real_ip": h("x-real-ip"),
        }))
    }
    async fn count(name: &'static str, body: axum::body::Body) -> Json<Value> {
        use futures_util::StreamExt;
        let mut stream = body.into_data_stream();
        let mut received = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            received += chunk.len();
        }
        Json(json!({ "backend": name, "received": received }))
    }
    let (listener, addr) = listen().await;
    let app = Router::new()
        .route(
            "/",
            get(move |uri: Uri, headers: HeaderMap| echo(name, uri, headers))
                .post(move |body: axum::body::Body| count(name, body)),
        )
        .route(
            "/{*rest}",
            get(move |uri: Uri, headers: HeaderMap| echo(name, uri, headers))
                .post(move |body: axum::body::Body| count(name, body)),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A backend that accepts a WebSocket upgrade and then echoes bytes back (no framing: the gateway
/// tunnels bytes, whatever they are).
pub(crate) async fn upgrade_backend() -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = service_fn(|mut req: Request<Incoming>| async move {
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = on_upgrade.await {
                            let mut io = TokioIo::new(upgraded);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let resp = Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "upgrade")
                        .header("upgrade", "websocket")
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

pub(crate) struct RunningGateway {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    _trigger: Trigger,
}

/// The listeners' limits in these tests: small, so that going past them is cheap.
pub(crate) fn test_limits() -> server::Limits {
    server::Limits {
        max_header_bytes: 16 * 1024,
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(30),
    }
}

pub(crate) async fn start(routes: Vec<Route>) -> RunningGateway {
    start_with(routes, Options::default(), server::Transport::Plain, test_limits()).await
}

/// A gateway on its own port with `routes`, serving `transport`.
pub(crate) async fn start_with(
    routes: Vec<Route>,
    options: Options,
    transport: server::Transport,
    limits: server::Limits,
) -> RunningGateway {
    let (listener, addr) = listen().await;
    let gateway = Arc::new(Gateway::new(RouteTable::new(routes), options));
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(server::serve(listener, transport, gateway.clone(), limits, shutdown));
    RunningGateway { addr, gateway, _trigger: trigger }
}

/// Opens a connection to `addr` and upgrades it to a WebSocket tunnel to `host{path}`; the answer
/// must be 101.
pub(crate) async fn open_tunnel(addr: SocketAddr, host: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "connection closed before the 101");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Sends `request` raw on a new connection to `addr` and reads the answer until the server closes
/// the connection (2 s at most); `None` if connecting or writing failed or nothing was read in time.
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut answer)).await;
    (!answer.is_empty()).then_some(answer)
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

#[tokio::test]
async fn routes_by_host_and_longest_prefix_and_rewrites_headers() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let gw = start(vec![
        Route::new("root", "app.localhost", "/", &format!("http://{a}"), false).unwrap(),
        Route::new("api", "app.localhost", "/api", &format!("http://{b}/v1"), true).unwrap(),
    ])
    .await;
    let url = |path: &str| format!("http://{}{path}", gw.addr);
    let get = |path: &str, host: &str| client().get(url(path)).header("host", host.to_owned());

    let r: Value = get("/x?q=1", "app.localhost").send().await.unwrap().json().await.unwrap();
    assert_eq!((r["backend"].as_str(), r["path"].as_str(), r["query"].as_str()), (Some("a"), Some("/x"), Some("q=1")));
    let r: Value = get("/api/items", "APP.localhost:80").send().await.unwrap().json().await.unwrap();
    assert_eq!((r["backend"].as_str(), r["path"].as_str()), (Some("b"), Some("/v1/items")));
    let r: Value = get("/apix", "app.localhost").send().await.unwrap().json().await.unwrap();
    assert_eq!(r["backend"], "a");

    // Forwarded headers are the gateway's view, not the client's claims; hop-by-hop headers stop here.
    let resp = get("/", "app.localhost")
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "x-custom")
        .header("x-custom", "secret")
        .header("x-request-id", "req-1.ok_")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-1.ok_");
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["xff"], "127.0.0.1");
    assert_eq!(r["proto"], "http");
    assert_eq!(r["fhost"], "app.localhost");
    assert_eq!(r["request_id"], "req-1.ok_");
    assert_eq!(r["custom"], Value::Null);
    assert_eq!(r["host"], "app.localhost", "the upstream gets the host the request was routed by");

    // Other claims of origin are dropped; an `h2c` upgrade is not forwarded (only WebSocket is).
    let r: Value = get("/", "app.localhost")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("connection", "upgrade")
        .header("upgrade", "h2c")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((r["forwarded"].is_null(), r["x_real_ip"].is_null(), r["upgrade"].is_null()), (true, true, true), "{r}");

    // Hosts that are not host names never reach a route or an upstream.
    for bad in ["attacker.net#.localhost", "a..localhost", "x@app.localhost", "app.localhost:99999"] {
        let resp = get("/", bad).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let long = format!("{}.localhost", "a.".repeat(2000));
    assert_eq!(get("/", &long).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    let connect =
        client().request(reqwest::Method::CONNECT, url("/")).header("host", "app.localhost").send().await.unwrap();
    assert_eq!(connect.status(), StatusCode::METHOD_NOT_ALLOWED);

    // A malformed request id is replaced with a fresh one, used on both sides.
    let resp = get("/", "app.localhost").header("x-request-id", "bad id!").send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "bad id!");
    assert_eq!(resp.json::<Value>().await.unwrap()["request_id"], id);

    let resp = get("/", "nowhere.localhost").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn upgrades_are_tunnelled_and_survive_a_route_swap() {
    let echo = upgrade_backend().await;
    let plain = echo_backend("plain").await;
    let gw = start(vec![Route::new("ws", "app.localhost", "/ws", &format!("http://{echo}"), false).unwrap()]).await;

    let mut stream = open_tunnel(gw.addr, "app.localhost", "/ws").await;

    let roundtrip = async |stream: &mut TcpStream, msg: &[u8]| {
        stream.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
    };
    roundtrip(&mut stream, b"hello").await;

    // New routes take over new requests; the open tunnel keeps its upstream.
    gw.gateway.set_routes(RouteTable::new([
        Route::new("p", "app.localhost", "/", &format!("http://{plain}"), false).unwrap()
    ]));
    let r: Value = client()
        .get(format!("http://{}/ws", gw.addr))
        .header("host", "app.localhost")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["backend"], "plain");
    roundtrip(&mut stream, b"still here").await;
}

#[tokio::test]
async fn limits_and_upstream_failures_are_clear_errors() {
    let a = echo_backend("a").await;
    let (dead, dead_addr) = listen().await;
    drop(dead); // nothing listens there any more
    let gw = start(vec![
        Route::new("a", "app.localhost", "/", &format!("http://{a}"), false).unwrap(),
        Route::new("down", "down.localhost", "/", &format!("http://{dead_addr}"), false).unwrap(),
    ])
    .await;

    let resp = client().get(format!("http://{}/", gw.addr)).header("host", "down.localhost").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(resp.headers()["retry-after"], "1");

    let huge = "x".repeat(32 * 1024);
    let resp = client()
        .get(format!("http://{}/", gw.addr))
        .header("host", "app.localhost")
        .header("x-big", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // A client that never finishes its request head is cut off by the header timeout.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow client was not disconnected");

    // One that sends nothing at all (not even enough to tell HTTP/1.1 from HTTP/2) too.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the silent client was not disconnected");
}

/// The whole path: the admin logs in to auth *through the gateway*, manages routes on the gateway's
/// own host; a new route is live when the API answers, while a tunnel on another route stays open.
#[tokio::test]
async fn admin_routes_are_events_and_go_live_without_dropping_connections() {
    use edd_it::{services::Api, World};
    let w = World::builder().gateway().start().await;
    let (auth_via_gw, admin) = (&w.auth, w.admin.clone());
    let user_id = auth_via_gw.create_user(&admin, "ada", "password-1").await.unwrap();
    assert!(!user_id.is_empty());
    let ada = auth_via_gw.login("ada", "password-1").await.unwrap();
    let routes = Api::via(&w.gateway().url, "gateway.localhost");

    // The gateway's permissions load from the AUTH stream; until then it answers 503, never allows.
    edd_it::eventually(Duration::from_secs(30), "the gateway to know the admin", || async {
        Ok((routes.get("/api/routes", &admin).await?.status == StatusCode::OK).then_some(()))
    })
    .await
    .unwrap();
    let listed = routes.get("/api/routes", &admin).await.unwrap();
    assert!(listed.body.as_array().unwrap().iter().any(|r| r["host"] == "auth.localhost" && r["builtin"] == true));
    edd_it::eventually(Duration::from_secs(10), "the gateway to know ada", || async {
        Ok((routes.get("/api/routes", &ada).await?.status == StatusCode::FORBIDDEN).then_some(()))
    })
    .await
    .unwrap();

    // A tunnel on one route...
    let echo = upgrade_backend().await;
    let ws = routes
        .post(
            "/api/routes",
            &admin,
            json!({"host": "ws.localhost", "path_prefix": "/", "upstream": format!("http://{echo}")}),
        )
        .await
        .unwrap();
    assert_eq!(ws.status, StatusCode::CREATED, "{:?}", ws.body);
    let addr: SocketAddr = w.gateway().url.trim_start_matches("http://").parse().unwrap();
    let mut tunnel = open_tunnel(addr, "ws.localhost", "/").await;

    // ...while a new route is added: live as soon as the API answers.
    let backend = echo_backend("app").await;
    let started = std::time::Instant::now();
    let created = routes
        .post("/api/routes", &admin, json!({"host": "app.localhost", "path_prefix": "/api", "upstream": format!("http://{backend}"), "strip_prefix": true}))
        .await
        .unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let app = Api::via(&w.gateway().url, "app.localhost");
    let served = app.call("GET", "/api/x", None, None).await.unwrap();
    println!("route added → served in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.body["path"], "/x");
    tunnel.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // Bad input and the gateway's own host are refused; deleting takes the route away.
    let bad = routes
        .post("/api/routes", &admin, json!({"host": "x y", "path_prefix": "/", "upstream": "http://a:1"}))
        .await
        .unwrap();
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let own = routes
        .post("/api/routes", &admin, json!({"host": "gateway.localhost", "path_prefix": "/", "upstream": "http://a:1"}))
        .await
        .unwrap();
    assert_eq!(own.status, StatusCode::UNPROCESSABLE_ENTITY);
    let by_ada = routes
        .post("/api/routes", &ada, json!({"host": "z.localhost", "path_prefix": "/", "upstream": "http://a:1"}))
        .await
        .unwrap();
    assert_eq!(by_ada.status, StatusCode::FORBIDDEN);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(routes.delete(&format!("/api/routes/{id}"), &admin).await.unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(app.call("GET", "/api/x", None, None).await.unwrap().status, StatusCode::NOT_FOUND);
    assert_eq!(routes.delete(&format!("/api/routes/{id}"), &admin).await.unwrap().status, StatusCode::NOT_FOUND);
}

/// Failure: the gateway is killed while an administrator is adding routes. After a restart on the
/// same database, every route the API acknowledged is there once and serves; none is doubled.
#[tokio::test]
async fn a_gateway_killed_while_routes_are_added_keeps_every_acknowledged_route() {
    use edd_it::{services::Api, World};
    let mut w = World::builder().gateway().start().await;
    let admin = w.admin.clone();
    let known = |url: String, admin: String| async move {
        edd_it::eventually(Duration::from_secs(30), "the gateway to know the admin", || async {
            let routes = Api::via(&url, "gateway.localhost");
            Ok((routes.get("/api/routes", &admin).await?.status == StatusCode::OK).then_some(()))
        })
        .await
        .unwrap();
    };
    known(w.gateway().url.clone(), admin.clone()).await;
    let backend = echo_backend("app").await;

    // Routes are added one after another until the gateway dies under the requests.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let (url, token) = (w.gateway().url.clone(), admin.clone());
    let adder = tokio::spawn(async move {
        let routes = Api::via(&url, "gateway.localhost");
        for i in 0..200 {
            let host = format!("r{i}.localhost");
            let body = json!({"host": host, "path_prefix": "/", "upstream": format!("http://{backend}"), "max_body_bytes": 64});
            match routes.post("/api/routes", &token, body).await {
                Ok(answer) if answer.status == StatusCode::CREATED => {
                    let _ = acked_tx.send((answer.body["id"].as_str().unwrap().to_owned(), host));
                }
                _ => return,
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < 5 {
        acked.push(acked_rx.recv().await.expect("routes are acknowledged before the kill"));
    }
    w.gateway_mut().kill().await.unwrap();
    adder.await.unwrap();
    while let Ok(more) = acked_rx.try_recv() {
        acked.push(more);
    }

    w.gateway_mut().restart().await.unwrap();
    let restarted = w.gateway();
    known(restarted.url.clone(), admin.clone()).await;
    let listed = Api::via(&restarted.url, "gateway.localhost").get("/api/routes", &admin).await.unwrap();
    let listed: Vec<&Value> = listed.body.as_array().unwrap().iter().filter(|r| r["builtin"] == false).collect();
    let mut ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), listed.len(), "a route is listed twice");
    // At most the one request in flight at the kill may have landed without its answer.
    assert!(listed.len() <= acked.len() + 1, "{} listed, {} acknowledged", listed.len(), acked.len());
    for (id, host) in &acked {
        assert!(ids.contains(&id.as_str()), "acknowledged route {id} lost");
        let via = Api::via(&restarted.url, host);
        assert_eq!(via.call("GET", "/x", None, None).await.unwrap().status, StatusCode::OK);
        // The route's own body limit came back with it.
        let answer = via.call("POST", "/x", None, Some(json!({"padding": "x".repeat(100)}))).await.unwrap();
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
