//! Streaming protocols through the gateway, with real sockets on both sides: server-sent events from
//! an HTTP/1.1 upstream, and gRPC (unary, server, client and bidirectional streaming, status and
//! trailers) to an `h2c://` upstream. Every streamed message is awaited before the backend may send
//! the next one, so a gateway that buffered a body would miss the deadline instead of passing late.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderValue},
    response::IntoResponse,
    routing::get,
    Router,
};
use bytes::Bytes;
use edd_gateway::Route;
use edd_it::grpc::{request_channel, EchoClient, EchoReply, EchoRequest, EchoServer};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::TcpStream,
    sync::{mpsc, Semaphore},
    time::timeout,
};
use tonic::Code;

use super::gateway::{listen, start};

/// How long any one step may take. Generous: on a loaded 2-core machine; a buffering gateway never
/// delivers at all, so the deadline only bounds how long a failure takes to show.
const DEADLINE: Duration = Duration::from_secs(10);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("{what}: nothing within {DEADLINE:?}"))
}

// ---- server-sent events ----

const SSE_EVENTS: u32 = 3;

fn sse_event(n: u32) -> String {
    format!("id: {n}\nevent: tick\ndata: event {n}")
}

/// An HTTP/1.1 backend whose `/events` is an event stream of [`SSE_EVENTS`] events: the first at once,
/// each next one only once the test adds a permit to `gate`; then the stream ends.
async fn sse_backend(gate: Arc<Semaphore>) -> SocketAddr {
    let events = move || {
        let gate = gate.clone();
        async move {
            let (tx, mut rx) = mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
            tokio::spawn(async move {
                for n in 1..=SSE_EVENTS {
                    if n > 1 {
                        let Ok(permit) = gate.acquire().await else { return };
                        permit.forget();
                    }
                    if tx.send(Ok(Bytes::from(format!("{}\n\n", sse_event(n))))).is_err() {
                        return;
                    }
                }
            });
            let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                ],
                body,
            )
                .into_response()
        }
    };
    let (listener, addr) = listen().await;
    let app = Router::new().route("/events", get(events));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[derive(Clone, Copy, Debug)]
enum ClientProtocol {
    Http1,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
}

/// `GET http://sse.localhost/events` through the gateway at `gw`, on a fresh connection.
async fn open_events(gw: SocketAddr, protocol: ClientProtocol) -> Response<Incoming> {
    let io = TokioIo::new(TcpStream::connect(gw).await.unwrap());
    match protocol {
        ClientProtocol::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await.unwrap();
            tokio::spawn(conn);
            let req = Request::get("/events")
                .header(header::HOST, "sse.localhost")
                .header(header::ACCEPT, "text/event-stream")
                .body(Empty::new())
                .unwrap();
            send.send_request(req).await.unwrap()
        }
        ClientProtocol::H2c => {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            let req = Request::get("http://sse.localhost/events")
                .header(header::ACCEPT, "text/event-stream")
                .body(Empty::new())
                .unwrap();
            send.send_request(req).await.unwrap()
        }
    }
}

/// The next complete event (without its blank-line terminator), or `None` once the body ends.
async fn next_event(body: &mut Incoming, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event = String::from_utf8(buf[..end].to_vec()).unwrap();
            buf.drain(..end + 2);
            return Some(event);
        }
        match body.frame().await {
            Some(frame) => {
                if let Ok(data) = frame.unwrap().into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            None => {
                assert!(buf.is_empty(), "the stream ended inside an event: {:?}", String::from_utf8_lossy(buf));
                return None;
            }
        }
    }
}

#[tokio::test]
async fn sse_events_arrive_one_by_one_not_buffered() {
    for protocol in [ClientProtocol::Http1, ClientProtocol::H2c] {
        let gate = Arc::new(Semaphore::new(0));
        let backend = sse_backend(gate.clone()).await;
        let gw =
            start(vec![Route::new("sse", "sse.localhost", "/", &format!("http://{backend}"), false).unwrap()]).await;

        let resp = within("the event stream's response head", open_events(gw.addr, protocol)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{protocol:?}");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream", "{protocol:?}");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache", "{protocol:?}");
        assert!(resp.headers().get(header::CONTENT_LENGTH).is_none(), "{protocol:?}: an event stream has no length");

        let mut body = resp.into_body();
        let mut buf = Vec::new();
        for n in 1..=SSE_EVENTS {
            if n > 1 {
                // Only now may the backend send event n: the client already has every event before it.
                gate.add_permits(1);
            }
            let event = within(
                &format!("{protocol:?}: event {n} (the backend holds event {} back until it arrives)", n + 1),
                next_event(&mut body, &mut buf),
            )
            .await;
            assert_eq!(event, Some(sse_event(n)), "{protocol:?}");
        }
        assert_eq!(
            within(&format!("{protocol:?}: the end of the stream"), next_event(&mut body, &mut buf)).await,
            None
        );
    }
}

// ---- gRPC ----

fn meta<'a>(map: &'a tonic::metadata::MetadataMap, key: &str) -> Option<&'a str> {
    map.get(key).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn grpc_unary_and_streaming_calls_pass_through_an_h2c_route() {
    let mut server = EchoServer::start().await.unwrap();
    let gw =
        start(vec![Route::new("grpc", "grpc.localhost", "/", &format!("h2c://{}", server.addr), false).unwrap()]).await;
    let mut client =
        within("an h2c connection to the gateway", EchoClient::connect(gw.addr, "grpc.localhost")).await.unwrap();

    // Unary: the reply, custom response metadata, request metadata reaching the service, the gateway's
    // request id.
    let mut req = tonic::Request::new(EchoRequest::text("hello"));
    req.metadata_mut().insert("x-client-meta", "from-the-client".parse().unwrap());
    let resp = within("a unary call", client.unary(req)).await.unwrap();
    assert_eq!(meta(resp.metadata(), "x-backend"), Some("grpc-echo"));
    assert_eq!(meta(resp.metadata(), "x-seen-meta"), Some("from-the-client"));
    assert!(resp.metadata().get("x-request-id").is_some(), "{:?}", resp.metadata());
    assert_eq!(resp.into_inner(), EchoReply { text: "hello".into(), seq: 1 });

    // An error status with custom metadata (a trailers-only response).
    let status = within("a failing unary call", client.unary(EchoRequest::text("missing"))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no such thing: missing");
    assert_eq!(meta(status.metadata(), "x-error-detail"), Some("looked everywhere"), "{status:?}");

    let status = within("a call to an unknown method", client.unknown()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Server streaming: each reply reaches the client before the service may send the next; the OK
    // status comes in the HTTP/2 trailers.
    let resp = within(
        "a server-streaming call's headers",
        client.stream(EchoRequest { text: "tick".into(), count: 3, fail: false }),
    )
    .await
    .unwrap();
    assert_eq!(meta(resp.metadata(), "x-backend"), Some("grpc-echo"));
    let mut replies = resp.into_inner();
    for seq in 1..=3 {
        if seq > 1 {
            server.release();
        }
        let reply =
            within(&format!("stream reply {seq} (reply {} is held back until it arrives)", seq + 1), replies.message())
                .await;
        assert_eq!(reply.unwrap(), Some(EchoReply { text: format!("tick #{seq}"), seq }));
    }
    assert_eq!(within("the end of the stream", replies.message()).await.unwrap(), None);
    let trailers = within("the stream's trailers", replies.trailers()).await.unwrap();
    let trailers = trailers.expect("grpc-status travels in the trailers");
    assert_eq!(meta(&trailers, "grpc-status"), Some("0"), "{trailers:?}");

    // A stream that fails after its replies: the status and its metadata come in the trailers.
    let mut replies =
        within("a failing stream's headers", client.stream(EchoRequest { text: "t".into(), count: 2, fail: true }))
            .await
            .unwrap()
            .into_inner();
    let first = within("failing stream reply 1", replies.message()).await.unwrap();
    assert_eq!(first, Some(EchoReply { text: "t #1".into(), seq: 1 }));
    server.release();
    let second = within("failing stream reply 2", replies.message()).await.unwrap();
    assert_eq!(second, Some(EchoReply { text: "t #2".into(), seq: 2 }));
    let status = within("the failing stream's status", replies.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "the stream's source vanished");
    assert_eq!(meta(status.metadata(), "x-error-detail"), Some("after 2 replies"), "{status:?}");

    // Client streaming: the service reads each message before the client sends the next.
    let (tx, requests) = request_channel();
    let mut collector = client.clone();
    let call = tokio::spawn(async move { collector.collect(requests).await });
    for text in ["a", "b", "c"] {
        tx.send(EchoRequest::text(text)).unwrap();
        let got = within(&format!("the service to read {text:?}"), server.next_received()).await;
        assert_eq!(got.map(|m| m.text).as_deref(), Some(text));
    }
    drop(tx);
    let reply = within("the client-streaming reply", call).await.unwrap().unwrap();
    assert_eq!(reply.into_inner(), EchoReply { text: "a,b,c".into(), seq: 3 });

    // Bidirectional: lock-step, each answer before the next question.
    let (tx, requests) = request_channel();
    let mut answers = within("a bidirectional call's headers", client.chat(requests)).await.unwrap().into_inner();
    for (i, text) in ["ping", "again", "last"].into_iter().enumerate() {
        tx.send(EchoRequest::text(text)).unwrap();
        let answer = within(&format!("the answer to {text:?}"), answers.message()).await.unwrap();
        assert_eq!(answer, Some(EchoReply { text: text.to_uppercase(), seq: i as u32 + 1 }));
    }
    drop(tx);
    assert_eq!(within("the end of the conversation", answers.message()).await.unwrap(), None);
}
