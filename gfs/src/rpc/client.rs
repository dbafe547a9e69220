//! [`MasterClient`]: calls to the active master, found among a list of addresses.
//!
//! One HTTP/2 connection per master address (TLS when the client has [`Tls`]), opened on first use and replaced when it breaks. A call
//! that finds no master (connection refused, a broken connection, a timeout, a standby's answer, which
//! carries `x-gfs-standby` or `x-gfs-active`) tries the next address — or the active one a standby named, if it is in the list (a credential is never sent
//! to an address the caller was not configured with) — backing off, until
//! [`ClientOptions::failover_timeout`]. Any other error is the caller's to handle.
//!
//! A mutation retried after a failover may already have been applied by the master that went away; the
//! master's answers make that visible (for example `ALREADY_EXISTS` for a file created twice).
//!
//! Each attempt is signed anew ([`Credential::sign`]), and its reply is accepted only when signed for
//! it by a holder of the same secret; an unsigned or wrongly signed reply counts as no master there
//! (the call moves on to the next address, and fails with the reason if none answers properly).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::http::Uri;
use tonic::{Code, Status};

use super::codec::RawCodec;
use super::{Credential, H2Channel, ACTIVE_HEADER, MAX_MESSAGE, REPLY_HEADER, SERVICE, STANDBY_HEADER};
use crate::tls::Tls;

#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// One call to one master.
    pub call_timeout: Duration,
    /// How long a call keeps looking for an active master before it gives up with `UNAVAILABLE`.
    pub failover_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(3),
            call_timeout: Duration::from_secs(30),
            failover_timeout: Duration::from_secs(30),
        }
    }
}

/// A client of `edd.gfs.Master`. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct MasterClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addrs: Vec<String>,
    credential: Credential,
    options: ClientOptions,
    tls: Option<Tls>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Index in `addrs` of the master believed active.
    current: usize,
    channels: Vec<Option<H2Channel>>,
}

impl MasterClient {
    /// A client for the masters at `addrs` (`host:port`, at least one), proving `credential`.
    pub fn new(addrs: Vec<String>, credential: Credential, options: ClientOptions) -> MasterClient {
        MasterClient::new_with_tls(addrs, credential, options, None)
    }

    /// [`new`](Self::new), speaking only TLS to the masters when `tls` is set.
    pub fn new_with_tls(
        addrs: Vec<String>,
        credential: Credential,
        options: ClientOptions,
        tls: Option<Tls>,
    ) -> MasterClient {
        let channels = addrs.iter().map(|_| None).collect();
        let state = Mutex::new(State { current: 0, channels });
        MasterClient { inner: Arc::new(Inner { addrs, credential, options, tls, state }) }
    }

    pub fn addrs(&self) -> &[String] {
        &self.inner.addrs
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `method` on the active master, failing over as described in the module docs.
    pub(crate) async fn call<Req, Reply>(&self, method: &'static str, request: Req) -> Result<Reply, Status>
    where
        Req: prost::Message,
        Reply: prost::Message + Default,
    {
        let request = Bytes::from(request.encode_to_vec());
        if self.inner.addrs.is_empty() {
            return Err(Status::invalid_argument("no GFS master address configured"));
        }
        let deadline = Instant::now() + self.inner.options.failover_timeout;
        let mut backoff = Duration::from_millis(50);
        let mut tried = 0usize;
        loop {
            let index = self.state().current;
            let status = match self.call_one::<Reply>(index, method, request.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(Attempt::Final(status)) => return Err(status),
                Err(Attempt::Failover(status)) => status,
            };
            tried += 1;
            self.move_on(index, &status);
            if Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "no active GFS master among {:?} after {tried} attempts: {}",
                    self.inner.addrs,
                    status.message()
                )));
            }
            // A full round of the list without an answer: wait before the next round.
            if tried.is_multiple_of(self.inner.addrs.len()) {
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// After `index` failed: drop its connection and pick the next master to try.
    fn move_on(&self, index: usize, status: &Status) {
        let hinted = status
            .metadata()
            .get(ACTIVE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|active| self.inner.addrs.iter().position(|a| a == active))
            .filter(|&i| i != index);
        let mut state = self.state();
        if !status.metadata().contains_key(ACTIVE_HEADER) && !status.metadata().contains_key(STANDBY_HEADER) {
            // Broken or refused, not a standby's answer: the connection is of no further use.
            state.channels[index] = None;
        }
        if state.current == index {
            state.current = hinted.unwrap_or((index + 1) % self.inner.addrs.len());
        }
    }

    async fn call_one<Reply>(&self, index: usize, method: &'static str, request: Bytes) -> Result<Reply, Attempt>
    where
        Reply: prost::Message + Default,
    {
        let options = self.inner.options;
        let channel = self.channel(index).await.map_err(Attempt::Failover)?;
        let addr = &self.inner.addrs[index];
        let scheme = if self.inner.tls.is_some() { "https" } else { "http" };
        let origin: Uri = format!("{scheme}://{addr}")
            .parse()
            .map_err(|_| Attempt::Final(Status::invalid_argument(format!("bad master address {addr:?}"))))?;
        let mut grpc = tonic::client::Grpc::with_origin(channel, origin)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let path = format!("/{SERVICE}/{method}")
            .parse()
            .map_err(|_| Attempt::Final(Status::internal(format!("bad method name {method}"))))?;
        // Signed per attempt: a master accepts a credential once.
        let signed = self.inner.credential.sign(method, &request);
        let header = signed.header().parse().map_err(|_| Attempt::Final(Status::internal("unencodable credential")))?;
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert("authorization", header);
        let call = async {
            if let Err(e) = grpc.ready().await {
                return Err(Attempt::Failover(Status::unavailable(format!("master {addr} not ready: {e}"))));
            }
            grpc.unary(request, path, RawCodec).await.map_err(Attempt::classify)
        };
        let response = match tokio::time::timeout(options.call_timeout, call).await {
            Ok(Ok(response)) => response,
            Ok(Err(attempt)) => return Err(attempt),
            Err(_) => {
                return Err(Attempt::Failover(Status::unavailable(format!(
                    "master {addr} did not answer {method} within {:?}",
                    options.call_timeout
                ))))
            }
        };
        let mac = response.metadata().get(REPLY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.into_inner();
        if !self.inner.credential.verify_reply(&signed, mac.as_deref(), &body) {
            // Whatever answered there does not hold the secret: no master. Another address may be one.
            tracing::warn!(master = %addr, method, "a reply not signed by a GFS master refused");
            return Err(Attempt::Failover(Status::unauthenticated(format!(
                "the answer at {addr} to {method} is not signed by a GFS master"
            ))));
        }
        Reply::decode(body).map_err(|e| Attempt::Final(Status::internal(format!("undecodable {method} reply: {e}"))))
    }

    async fn channel(&self, index: usize) -> Result<H2Channel, Status> {
        if let Some(channel) = self.state().channels[index].clone() {
            if !channel.is_closed() {
                return Ok(channel);
            }
        }
        let addr = &self.inner.addrs[index];
        let connect = H2Channel::connect_with(addr, self.inner.tls.as_ref());
        let channel = match tokio::time::timeout(self.inner.options.connect_timeout, connect).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(Status::unavailable(format!("cannot reach GFS master {addr}: {e}"))),
            Err(_) => return Err(Status::unavailable(format!("connecting to GFS master {addr} timed out"))),
        };
        self.state().channels[index] = Some(channel.clone());
        Ok(channel)
    }
}

/// How one call to one master ended, when it did not succeed.
enum Attempt {
    /// No master answered, or a standby did: try another master.
    Failover(Status),
    /// The master answered: this is the call's answer.
    Final(Status),
}

impl Attempt {
    /// A status from the transport (it carries its cause) or from a standby (it names the active
    /// master, or says it is one) means "ask another master"; any other status is the master's answer,
    /// `UNAVAILABLE` included (for example too few live replicas for a lease), and is not retried here.
    fn classify(status: Status) -> Attempt {
        let from_standby =
            status.metadata().contains_key(ACTIVE_HEADER) || status.metadata().contains_key(STANDBY_HEADER);
        let from_transport = std::error::Error::source(&status).is_some()
            && matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled);
        if from_standby || from_transport {
            Attempt::Failover(status)
        } else {
            Attempt::Final(status)
        }
    }
}
