//! A small gRPC service and its client, for testing what sits between them (the gateway).
//!
//! Written against tonic's runtime API the way generated code uses it — `#[derive(prost::Message)]`
//! messages, [`tonic::server::Grpc`] and [`tonic::client::Grpc`] with [`ProstCodec`] — so the suite
//! needs neither `protoc` nor a build script. Both ends speak cleartext HTTP/2 with prior knowledge
//! over hyper directly (no tonic `transport`): the server is hyper's HTTP/2 connection builder, the
//! client one HTTP/2 connection to an address (`edd_gfs::rpc::H2Channel`), sending whatever
//! `:authority` it is told to.
//!
//! The service, `edd.test.Echo`:
//! - `Unary`: echoes `text`, with response metadata `x-backend` and `x-seen-meta` (the request's
//!   `x-client-meta`). The text `missing` fails instead: `NOT_FOUND` with metadata `x-error-detail`
//!   (a trailers-only response).
//! - `Stream` (server streaming): `count` replies; the first at once, each next one only after
//!   [`EchoServer::release`]. With `fail`, it ends in `NOT_FOUND` with `x-error-detail` sent in the
//!   HTTP/2 trailers, after the replies.
//! - `Collect` (client streaming): reports each request message on [`EchoServer::next_received`] as it
//!   reads it, then answers with all texts joined by `,`.
//! - `Chat` (bidirectional): answers each message at once with its text uppercased.

use std::{convert::Infallible, net::SocketAddr, pin::Pin, sync::Arc};

use futures_util::Stream;
use hyper::{
    body::Incoming,
    http::{uri::PathAndQuery, Uri},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::TcpListener,
    sync::{mpsc, Semaphore},
    task::JoinHandle,
};
use tonic::{
    body::Body,
    metadata::{MetadataMap, MetadataValue},
    Code, IntoRequest, IntoStreamingRequest, Request, Response, Status, Streaming,
};
use tonic_prost::ProstCodec;

// The GFS control plane's HTTP/2 connection doubles as this client's transport.
use edd_gfs::rpc::H2Channel;

/// The service's full name, the first segment of its method paths.
pub const SERVICE: &str = "edd.test.Echo";

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub text: String,
    /// `Stream`: how many replies to send.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// `Stream`: end with an error status (in the trailers) after the replies.
    #[prost(bool, tag = "3")]
    pub fail: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub text: String,
    /// 1-based position of the reply in its call.
    #[prost(uint32, tag = "2")]
    pub seq: u32,
}

impl EchoRequest {
    pub fn text(text: impl Into<String>) -> Self {
        Self { text: text.into(), ..Self::default() }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

/// A stream of what `rx` receives, ending when every sender is gone.
pub fn receiver_stream<T: Send + 'static>(mut rx: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A request stream for `Collect` or `Chat`, and the sender that feeds it (dropping it ends the stream).
pub fn request_channel() -> (mpsc::UnboundedSender<EchoRequest>, impl Stream<Item = EchoRequest> + Send + 'static) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, receiver_stream(rx))
}

fn metadata(key: &'static str, value: &str) -> MetadataMap {
    let mut map = MetadataMap::new();
    if let Ok(value) = value.parse() {
        map.insert(key, value);
    }
    map
}

/// The running service on `127.0.0.1`, serving cleartext HTTP/2 (prior knowledge) until dropped.
pub struct EchoServer {
    pub addr: SocketAddr,
    gate: Arc<Semaphore>,
    received: mpsc::UnboundedReceiver<EchoRequest>,
    accept: JoinHandle<()>,
}

#[derive(Clone)]
struct State {
    gate: Arc<Semaphore>,
    received: mpsc::UnboundedSender<EchoRequest>,
}

impl EchoServer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let gate = Arc::new(Semaphore::new(0));
        let (received_tx, received) = mpsc::unbounded_channel();
        let state = State { gate: gate.clone(), received: received_tx };
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.dispatch(req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, gate, received, accept })
    }

    /// Lets one `Stream` call send its next reply.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    /// The next message a `Collect` call has read, as soon as it has read it.
    pub async fn next_received(&mut self) -> Option<EchoRequest> {
        self.received.recv().await
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl State {
    async fn dispatch(self, req: hyper::Request<Incoming>) -> hyper::Response<Body> {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
        let method = req.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(SERVICE)).unwrap_or_default();
        match method {
            "/Unary" => grpc.unary(tower::service_fn(unary), req).await,
            "/Stream" => {
                let gate = self.gate.clone();
                grpc.server_streaming(tower::service_fn(move |r| server_stream(gate.clone(), r)), req).await
            }
            "/Collect" => {
                let received = self.received.clone();
                grpc.client_streaming(tower::service_fn(move |r| collect(received.clone(), r)), req).await
            }
            "/Chat" => grpc.streaming(tower::service_fn(chat), req).await,
            _ => Status::unimplemented(format!("no method {}", req.uri().path())).into_http(),
        }
    }
}

async fn unary(req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
    let seen = req.metadata().get("x-client-meta").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = req.into_inner().text;
    if text == "missing" {
        return Err(Status::with_metadata(
            Code::NotFound,
            "no such thing: missing",
            metadata("x-error-detail", "looked everywhere"),
        ));
    }
    let mut response = Response::new(EchoReply { text, seq: 1 });
    response.metadata_mut().insert("x-backend", MetadataValue::from_static("grpc-echo"));
    if let Ok(seen) = seen.parse() {
        response.metadata_mut().insert("x-seen-meta", seen);
    }
    Ok(response)
}

async fn server_stream(gate: Arc<Semaphore>, req: Request<EchoRequest>) -> Result<Response<ReplyStream>, Status> {
    let EchoRequest { text, count, fail } = req.into_inner();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for seq in 1..=count {
            if seq > 1 {
                match gate.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
            }
            if tx.send(Ok(EchoReply { text: format!("{text} #{seq}"), seq })).is_err() {
                return;
            }
        }
        if fail {
            let detail = format!("after {count} replies");
            let _ = tx.send(Err(Status::with_metadata(
                Code::NotFound,
                "the stream's source vanished",
                metadata("x-error-detail", &detail),
            )));
        }
    });
    let mut response = Response::new(Box::pin(receiver_stream(rx)) as ReplyStream);
    response.metadata_mut().insert("x-backend", MetadataValue::from_static("grpc-echo"));
    Ok(response)
}

async fn collect(
    received: mpsc::UnboundedSender<EchoRequest>,
    req: Request<Streaming<EchoRequest>>,
) -> Result<Response<EchoReply>, Status> {
    let mut stream = req.into_inner();
    let mut texts = Vec::new();
    while let Some(message) = stream.message().await? {
        texts.push(message.text.clone());
        let _ = received.send(message);
    }
    let seq = u32::try_from(texts.len()).unwrap_or(u32::MAX);
    Ok(Response::new(EchoReply { text: texts.join(","), seq }))
}

async fn chat(req: Request<Streaming<EchoRequest>>) -> Result<Response<ReplyStream>, Status> {
    let mut stream = req.into_inner();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut seq = 0;
        loop {
            let reply = match stream.message().await {
                Ok(Some(message)) => {
                    seq += 1;
                    Ok(EchoReply { text: message.text.to_uppercase(), seq })
                }
                Ok(None) => return,
                Err(status) => Err(status),
            };
            let failed = reply.is_err();
            if tx.send(reply).is_err() || failed {
                return;
            }
        }
    });
    Ok(Response::new(Box::pin(receiver_stream(rx)) as ReplyStream))
}

/// A client of `edd.test.Echo`, as generated code would write it. Clones share the connection.
#[derive(Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<H2Channel>,
}

impl EchoClient {
    /// Connects to `addr` and sends every call for `authority` (the `:authority` pseudo-header).
    pub async fn connect(addr: SocketAddr, authority: &str) -> anyhow::Result<Self> {
        let origin: Uri = format!("http://{authority}").parse()?;
        Ok(Self { grpc: tonic::client::Grpc::with_origin(H2Channel::connect(&addr.to_string()).await?, origin) })
    }

    async fn ready(&mut self, method: &str) -> Result<PathAndQuery, Status> {
        self.grpc.ready().await.map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        format!("/{SERVICE}/{method}").parse().map_err(|_| Status::internal(format!("bad method name {method}")))
    }

    pub async fn unary(&mut self, req: impl IntoRequest<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let path = self.ready("Unary").await?;
        self.grpc.unary(req.into_request(), path, ProstCodec::default()).await
    }

    pub async fn stream(
        &mut self,
        req: impl IntoRequest<EchoRequest>,
    ) -> Result<Response<Streaming<EchoReply>>, Status> {
        let path = self.ready("Stream").await?;
        self.grpc.server_streaming(req.into_request(), path, ProstCodec::default()).await
    }

    pub async fn collect(
        &mut self,
        req: impl IntoStreamingRequest<Message = EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        let path = self.ready("Collect").await?;
        self.grpc.client_streaming(req.into_streaming_request(), path, ProstCodec::default()).await
    }

    pub async fn chat(
        &mut self,
        req: impl IntoStreamingRequest<Message = EchoRequest>,
    ) -> Result<Response<Streaming<EchoReply>>, Status> {
        let path = self.ready("Chat").await?;
        self.grpc.streaming(req.into_streaming_request(), path, ProstCodec::default()).await
    }

    /// Calls a method the service does not have.
    pub async fn unknown(&mut self) -> Result<Response<EchoReply>, Status> {
        let path = self.ready("Nope").await?;
        self.grpc.unary(EchoRequest::text("?").into_request(), path, ProstCodec::default()).await
    }
}
