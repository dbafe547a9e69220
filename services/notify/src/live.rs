//! Live delivery: the fanout and the sockets.
//!
//! Each replica runs its own [`fanout`]: an ordered consumer over `NOTIFY` from the stream head at
//! start, which hands every notification to that user's live connections on this replica. Each
//! connection has a bounded queue (`send_queue`); when it is full the client is too slow, and the
//! connection is dropped rather than buffered for without bound. Muted notifications are skipped
//! using an in-memory copy of the mutes ([`follow_mutes`]) that is refreshed whenever `notify/state`
//! moves, and only for the users whose mutes changed.
//!
//! [`websocket`] and [`sse`] are the two endpoints. Both authenticate like any route (a header, or
//! `?token=` since browsers cannot set headers on these), check `Origin` when one is sent, count
//! against `max_sockets_per_user`, and end the moment their credential stops working
//! ([`Authorizer::refused`]: a revoked token, a logout, a revoke-all, a revoked signing key, a
//! scope taken away), within the fast revocation path's latency rather than at the next ping.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use async_nats::jetstream;
use axum::{
    extract::{
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
        State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use edd_events::{catalog::notify::Notification, consume};
use edd_kit::{
    auth::{Authorizer, Presented, Principal},
    Metrics, Problem, Shutdown,
};
use edd_projections::{Handle, Watermark};
use futures_util::{Stream, StreamExt};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use sqlx::PgPool;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    config::NotifyConfig,
    queries::{self, Item, Mute},
    state::AppState,
};

/// One notification ready to send: its id and its JSON (a list item, `read: false`).
#[derive(Clone, Debug)]
pub struct Push {
    pub id: u64,
    pub json: Utf8Bytes,
}

/// Counters of the live side, in the service's `/metrics`.
#[derive(Clone, Default)]
struct LiveMetrics {
    connections: Gauge,
    pushed: Counter,
    muted: Counter,
    slow_dropped: Counter,
    ping_timeouts: Counter,
    refused: Counter,
    revoked: Counter,
}

impl LiveMetrics {
    fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register("notify_live_connections", "Open WebSocket and SSE connections", m.connections.clone());
        metrics.register("notify_pushed", "Notifications handed to live connections", m.pushed.clone());
        metrics.register("notify_muted_skipped", "Notifications not pushed because muted", m.muted.clone());
        metrics.register(
            "notify_slow_clients_dropped",
            "Live connections closed because their queue was full",
            m.slow_dropped.clone(),
        );
        metrics.register("notify_ping_timeouts", "WebSockets closed for not answering pings", m.ping_timeouts.clone());
        metrics.register(
            "notify_connections_refused",
            "Live connections refused over the per-user limit",
            m.refused.clone(),
        );
        metrics.register(
            "notify_connections_revoked",
            "Live connections closed because their credential stopped working",
            m.revoked.clone(),
        );
        m
    }
}

/// A live connection as the fanout sees it. Dropping it (removing it from the hub) drops `_close`,
/// which tells the connection to end.
struct Entry {
    id: u64,
    tx: mpsc::Sender<Push>,
    _close: oneshot::Sender<()>,
}

/// The live connections of this replica, by user, and the mutes the fanout honours.
pub struct Hub {
    users: Mutex<HashMap<String, Vec<Entry>>>,
    /// Connections open per user, counted until each one has really ended: a slow connection the
    /// fanout let go of still holds its slot until its socket closes, so it cannot be used to
    /// open more than the limit.
    open: Mutex<HashMap<String, usize>>,
    mutes: RwLock<HashMap<String, Vec<Mute>>>,
    /// The `notify/state` position the mute copy reflects; `None` until first loaded.
    mutes_at: watch::Sender<Option<u64>>,
    /// The same position as a plain number (0 until loaded), for [`Hub::mutes_watermark`].
    mutes_position: watch::Sender<u64>,
    /// Whether the fanout's consumer is in place (readiness).
    fanning: AtomicBool,
    next_id: AtomicU64,
    max_per_user: usize,
    queue: usize,
    metrics: LiveMetrics,
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("at most {0} live connections per user; close one first")]
pub struct TooMany(usize);

impl From<TooMany> for Problem {
    fn from(e: TooMany) -> Self {
        Problem::new(StatusCode::TOO_MANY_REQUESTS).with_detail(e.to_string()).with_extension("limit", e.0)
    }
}

/// What a connection holds: its place in the hub (released on drop), its queue, and the signal
/// that the hub let go of it (slow client).
pub struct Subscription {
    slot: Slot,
    rx: mpsc::Receiver<Push>,
    dropped: oneshot::Receiver<()>,
}

struct Slot {
    hub: Arc<Hub>,
    user: String,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.remove(&self.user, self.id);
        let mut open = self.hub.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
        drop(open);
        self.hub.metrics.connections.dec();
    }
}

impl Hub {
    pub fn new(config: &NotifyConfig, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            users: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            mutes: RwLock::new(HashMap::new()),
            mutes_at: watch::channel(None).0,
            mutes_position: watch::channel(0).0,
            fanning: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            max_per_user: config.max_sockets_per_user,
            queue: config.send_queue,
            metrics: LiveMetrics::register(metrics),
        })
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one of `user`'s live slots, or refuses when they hold all of them.
    pub fn subscribe(self: &Arc<Self>, user: &str) -> Result<Subscription, TooMany> {
        let mut users = self.users();
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = open.entry(user.to_owned()).or_default();
        if *held >= self.max_per_user {
            self.metrics.refused.inc();
            return Err(TooMany(self.max_per_user));
        }
        *held += 1;
        drop(open);
        let entries = users.entry(user.to_owned()).or_default();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue);
        let (close, dropped) = oneshot::channel();
        entries.push(Entry { id, tx, _close: close });
        self.metrics.connections.inc();
        Ok(Subscription { slot: Slot { hub: self.clone(), user: user.to_owned(), id }, rx, dropped })
    }

    fn remove(&self, user: &str, id: u64) {
        let mut users = self.users();
        if let Some(entries) = users.get_mut(user) {
            entries.retain(|e| e.id != id);
            if entries.is_empty() {
                users.remove(user);
            }
        }
    }

    /// How many live connections `user` has here.
    pub fn connections(&self, user: &str) -> usize {
        self.users().get(user).map_or(0, Vec::len)
    }

    fn has_connections(&self, user: &str) -> bool {
        self.users().contains_key(user)
    }

    /// Queues `push` on every connection of `user`; a full queue drops its connection.
    fn deliver(&self, user: &str, push: &Push) {
        let mut users = self.users();
        let Some(entries) = users.get_mut(user) else { return };
        entries.retain(|entry| match entry.tx.try_send(push.clone()) {
            Ok(()) => {
                self.metrics.pushed.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(user, connection = entry.id, "live connection too slow; closing it");
                self.metrics.slow_dropped.inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if entries.is_empty() {
            users.remove(user);
        }
    }

    fn is_muted(&self, user: &str, category: &str, scope: Option<&str>) -> bool {
        let mutes = self.mutes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        mutes.get(user).is_some_and(|list| {
            list.iter().any(|m| m.category == category && (m.scope.is_none() || m.scope.as_deref() == scope))
        })
    }

    /// Waits until the mute copy reflects `notify/state` at `seq` (a mute command's read-your-writes:
    /// once it answers, no push ignores it).
    pub fn mutes_watermark(&self) -> Watermark {
        Watermark::new("notify live mutes", self.mutes_position.subscribe())
    }

    /// Whether the fanout is consuming and the mutes are loaded.
    pub fn is_ready(&self) -> bool {
        self.fanning.load(Ordering::Acquire) && self.mutes_at.borrow().is_some()
    }

    /// Turns a stored `NOTIFY` message into a push for its user's connections here.
    fn dispatch(&self, stored: &consume::Stored) {
        let Some(user) = stored.subject.strip_prefix("notify.") else { return };
        if !self.has_connections(user) {
            return;
        }
        // As the inbox projection does: only a notification from a component that may send one.
        let event = match edd_events::catalog::publishers::check(stored.seq, &stored.subject, &stored.payload) {
            Ok(e) if e.is::<Notification>() => e,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(seq = stored.seq, error = %e, "not a notification of ours; not pushed");
                return;
            }
        };
        let note: Notification = match event.decode() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(seq = stored.seq, error = %e, "undecodable notification; not pushed");
                return;
            }
        };
        if self.is_muted(user, &note.category, note.scope.as_deref()) {
            self.metrics.muted.inc();
            return;
        }
        let Ok(id) = i64::try_from(stored.seq) else { return };
        let time = event.envelope.time;
        // PostgreSQL keeps microseconds: the push shows the time exactly as the list will.
        let created_at = time.replace_nanosecond(time.nanosecond() / 1_000 * 1_000).unwrap_or(time);
        let item = Item {
            id,
            title: note.title,
            message: note.message,
            link: note.link,
            category: note.category,
            scope: note.scope,
            created_at,
            read: false,
        };
        match serde_json::to_string(&item) {
            Ok(json) => self.deliver(user, &Push { id: stored.seq, json: json.into() }),
            Err(e) => tracing::error!(error = %e, "cannot encode a notification"),
        }
    }
}

/// Follows `NOTIFY` from its head at start and dispatches every notification, until `shutdown`.
pub async fn fanout(hub: Arc<Hub>, js: jetstream::Context, shutdown: Shutdown) {
    let filters = vec!["notify.>".to_owned()];
    let mut next: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    // Pushes before the mutes are known could show muted notifications.
    let mut loaded = hub.mutes_at.subscribe();
    tokio::select! {
        _ = shutdown.wait() => return,
        _ = loaded.wait_for(Option::is_some) => {}
    }
    while !shutdown.is_triggered() {
        let from = match next {
            Some(seq) => seq,
            None => match consume::stream_head(&js, "NOTIFY").await {
                Ok(head) => head + 1,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the NOTIFY stream head; retrying");
                    pause(&shutdown, &mut backoff).await;
                    continue;
                }
            },
        };
        let mut messages = match consume::replay(&js, "NOTIFY", &filters, from).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow NOTIFY; retrying");
                pause(&shutdown, &mut backoff).await;
                continue;
            }
        };
        next = Some(from);
        hub.fanning.store(true, Ordering::Release);
        backoff = Duration::from_millis(100);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            let item = tokio::select! {
                _ = &mut stop => return,
                item = messages.next() => item,
            };
            match item {
                Some(Ok(stored)) => {
                    next = Some(stored.seq + 1);
                    hub.dispatch(&stored);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "NOTIFY consumer failed; resuming");
                    break;
                }
                None => break,
            }
        }
    }
}

async fn pause(shutdown: &Shutdown, backoff: &mut Duration) {
    tokio::select! {
        _ = shutdown.wait() => {}
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}

/// Keeps the hub's copy of the mutes current: everything at start, then, whenever `notify/state`
/// moves, the mutes of the users whose `mute_changes` row moved.
pub async fn follow_mutes(hub: Arc<Hub>, pool: PgPool, state: Handle, shutdown: Shutdown) {
    let mut position = state.watch();
    let mut after: Option<i64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let at = *position.borrow_and_update();
        match refresh_mutes(&hub, &pool, after).await {
            Ok(newest) => {
                after = Some(newest);
                backoff = Duration::from_millis(100);
                hub.mutes_at.send_if_modified(|cur| {
                    let moved = cur.is_none_or(|c| c < at);
                    if moved {
                        *cur = Some(at);
                    }
                    moved
                });
                hub.mutes_position.send_if_modified(|cur| {
                    let moved = *cur < at;
                    if moved {
                        *cur = at;
                    }
                    moved
                });
            }
            Err(e) => {
                // Before the runner's first lead the tables may not exist yet.
                tracing::debug!(error = %e, "cannot load mutes yet; retrying");
                pause(&shutdown, &mut backoff).await;
                if shutdown.is_triggered() {
                    return;
                }
                continue;
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = position.changed() => if changed.is_err() { return },
        }
    }
}

/// Loads all mutes (`after` = `None`) or those of users changed after `after`; returns the newest
/// change sequence seen.
async fn refresh_mutes(hub: &Hub, pool: &PgPool, after: Option<i64>) -> Result<i64, sqlx::Error> {
    match after {
        None => {
            let (_, newest) = queries::mute_changes(pool, 0).await?;
            let rows = queries::mutes_of(pool, None).await?;
            let mut all: HashMap<String, Vec<Mute>> = HashMap::new();
            for (user, mute) in rows {
                all.entry(user).or_default().push(mute);
            }
            *hub.mutes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = all;
            Ok(newest)
        }
        Some(after) => {
            let (users, newest) = queries::mute_changes(pool, after).await?;
            if users.is_empty() {
                return Ok(after);
            }
            let rows = queries::mutes_of(pool, Some(&users)).await?;
            let mut fresh: HashMap<String, Vec<Mute>> = users.into_iter().map(|u| (u, Vec::new())).collect();
            for (user, mute) in rows {
                fresh.entry(user).or_default().push(mute);
            }
            let mut mutes = hub.mutes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (user, list) in fresh {
                if list.is_empty() {
                    mutes.remove(&user);
                } else {
                    mutes.insert(user, list);
                }
            }
            Ok(newest)
        }
    }
}

/// Refuses a live connection whose `Origin` is not one of the platform's (the same rule as the
/// service's CORS, [`edd_kit::AllowedOrigins`]); requests without one (non-browser clients) pass.
fn check_origin(origins: &edd_kit::AllowedOrigins, headers: &HeaderMap) -> Result<(), Problem> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    match origin.to_str() {
        Ok(o) if origins.allows(o) => Ok(()),
        _ => Err(Problem::forbidden("this origin may not open live connections to the notification service")),
    }
}

/// Resolves when `credential` stops authenticating as the connection's user with read on the inbox.
fn refused(authorizer: &Authorizer, credential: String, user: String) -> impl Future<Output = ()> + Send + 'static {
    authorizer.refused(credential, move |p| p.user_id.as_str() == user && crate::api::require(p, "read").is_ok())
}

/// Opens a live connection for `principal`: the shared checks of both endpoints.
fn open(state: &AppState, principal: &Principal, headers: &HeaderMap) -> Result<Subscription, Problem> {
    check_origin(&state.origins, headers)?;
    crate::api::require(principal, "read")?;
    if !state.hub.is_ready() {
        return Err(Problem::unavailable("live delivery is starting").with_retry_after(1));
    }
    Ok(state.hub.subscribe(principal.user_id.as_str())?)
}

/// Close codes: 1001 going away (shutdown), 1008 policy (credential revoked, no pong), 1013 try
/// again later (too slow).
enum Ending {
    Shutdown,
    Slow,
    Revoked,
    NoPong,
    ClientGone,
}

/// Opens a WebSocket on which each new notification of the caller arrives.
///
/// A WebSocket handshake (`Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`,
/// `Sec-WebSocket-Key`). Once open, every new notification of the caller that no mute hides comes
/// as one text message: a `Notification` JSON object, the same as an item of
/// `GET /api/notifications`, with `read: false`. Delivery is at most once and only while connected
/// (nothing is replayed): catch up with `GET /api/notifications`. The service ignores what the
/// client sends besides pongs and close, and refuses frames over 64 KiB.
///
/// The service pings every ping interval (20 s by default) and closes a client that has sent
/// nothing for two intervals. Close codes: 1001 the service is stopping; 1008 the credential
/// stopped working (revoked, logged out, scope removed, its signing key revoked; at once) or no pong;
/// 1013 too slow (notifications arrived faster than they were read).
///
/// Browsers, which cannot set headers here, may pass the credential as `?token=`. An `Origin`, when
/// sent, must be one of the platform's hosts or a configured extra (403 otherwise). A user holds at
/// most 5 live connections (by default), WebSocket and SSE together, per replica (429 beyond); 503
/// while live delivery is starting. Needs `read` on `notifications.<user>.inbox`.
#[utoipa::path(
    get,
    path = "/ws/notifications",
    tag = "live",
    params(("token" = Option<String>, Query, description = "the credential, for clients that cannot send `Authorization` (browsers)")),
    responses((
        status = 101,
        description = "Switching Protocols: the WebSocket is open; each message is a `Notification` (see above)",
        headers(
            ("Upgrade" = String, description = "`websocket`"),
            ("Connection" = String, description = "`upgrade`"),
            ("Sec-WebSocket-Accept" = String, description = "the answer to the request's `Sec-WebSocket-Key`")
        )
    ))
)]
pub async fn websocket(
    State(state): State<AppState>,
    principal: Principal,
    Presented(credential): Presented,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Problem> {
    let subscription = open(&state, &principal, &headers)?;
    let user = principal.user_id.to_string();
    Ok(upgrade
        // Each message is one small JSON object; a client has no business sending big frames.
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve_socket(socket, subscription, state, credential, user))
        .into_response())
}

async fn serve_socket(
    mut socket: WebSocket,
    subscription: Subscription,
    state: AppState,
    credential: String,
    user: String,
) {
    let Subscription { slot, mut rx, mut dropped } = subscription;
    let interval = state.ping_interval;
    let write_timeout = interval * 2;
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let stop = state.shutdown.wait();
    tokio::pin!(stop);
    let revoked = refused(&state.authorizer, credential, user);
    tokio::pin!(revoked);
    let ending = loop {
        tokio::select! {
            _ = &mut stop => break Ending::Shutdown,
            _ = &mut dropped => break Ending::Slow,
            _ = &mut revoked => {
                state.hub.metrics.revoked.inc();
                break Ending::Revoked;
            }
            push = rx.recv() => {
                let Some(push) = push else { break Ending::Slow };
                // A send blocks while the client does not read: the hub letting go ends it too.
                let sent = tokio::select! {
                    _ = &mut dropped => break Ending::Slow,
                    sent = tokio::time::timeout(write_timeout, socket.send(Message::Text(push.json))) => sent,
                };
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break Ending::ClientGone,
                    Err(_) => break Ending::Slow,
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break Ending::ClientGone,
                // Pongs, and anything else the client says, show it is alive; its pings are
                // answered by the protocol layer.
                Some(Ok(_)) => heard = Instant::now(),
            },
            _ = ticker.tick() => {
                if heard.elapsed() >= interval * 2 {
                    state.hub.metrics.ping_timeouts.inc();
                    break Ending::NoPong;
                }
                let sent = tokio::select! {
                    _ = &mut dropped => break Ending::Slow,
                    sent = tokio::time::timeout(write_timeout, socket.send(Message::Ping(Default::default()))) => sent,
                };
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break Ending::ClientGone,
                    Err(_) => break Ending::Slow,
                }
            }
        }
    };
    // Free the slot before the goodbye, which may take its time.
    drop(slot);
    let (code, reason) = match ending {
        Ending::ClientGone => return,
        Ending::Shutdown => (1001, "the service is restarting"),
        Ending::Slow => (1013, "too slow: notifications arrived faster than they were read"),
        Ending::Revoked => (1008, "the credential no longer allows this"),
        Ending::NoPong => (1008, "no answer to pings"),
    };
    let close = Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }));
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
}

/// Opens a Server-Sent Events stream on which each new notification of the caller arrives.
///
/// Every new notification of the caller that no mute hides comes as one event (without an `event:`
/// name): `id:` the notification's id, `data:` a `Notification` JSON object on one line, the same
/// as an item of `GET /api/notifications`, with `read: false`. A `keep-alive` comment comes every
/// ping interval (20 s by default). Delivery is at most once and only while connected:
/// `Last-Event-ID` is not honoured, catch up with `GET /api/notifications`. The stream ends when the
/// service stops, when the client reads too slowly, or when the credential stops working (revoked,
/// logged out, scope removed, its signing key revoked; at once).
///
/// Browsers (`EventSource`), which cannot set headers, may pass the credential as `?token=` (with
/// `Accept: text/event-stream`). An `Origin`, when sent, must be one of the platform's hosts or a
/// configured extra (403 otherwise). A user holds at most 5 live connections (by default),
/// WebSocket and SSE together, per replica (429 beyond); 503 while live delivery is starting.
/// Needs `read` on `notifications.<user>.inbox`.
#[utoipa::path(
    get,
    path = "/sse/notifications",
    tag = "live",
    params(("token" = Option<String>, Query, description = "the credential, for clients that cannot send `Authorization` (browsers, with `Accept: text/event-stream`)")),
    responses((
        status = 200,
        description = "the event stream: one event per notification, `data:` a `Notification` (see above)",
        content_type = "text/event-stream",
        body = String
    ))
)]
pub async fn sse(
    State(state): State<AppState>,
    principal: Principal,
    Presented(credential): Presented,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let subscription = open(&state, &principal, &headers)?;
    let interval = state.ping_interval;
    let live = SseState {
        subscription,
        stop: Box::pin(state.shutdown.wait()),
        revoked: Box::pin(refused(&state.authorizer, credential, principal.user_id.to_string())),
        hub: state.hub.clone(),
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        tokio::select! {
            _ = &mut live.stop => None,
            _ = &mut live.subscription.dropped => None,
            push = live.subscription.rx.recv() => {
                let push = push?;
                let event = Event::default().id(push.id.to_string()).data(push.json.as_str());
                Some((Ok(event), live))
            }
            _ = &mut live.revoked => {
                live.hub.metrics.revoked.inc();
                None
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(interval).text("keep-alive")))
}

struct SseState {
    subscription: Subscription,
    stop: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    revoked: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    hub: Arc<Hub>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_connection_and_its_end_frees_the_slot() {
        let config = NotifyConfig { send_queue: 2, max_sockets_per_user: 2, ..NotifyConfig::default() };
        let hub = Hub::new(&config, &Metrics::new());
        let mut slow = hub.subscribe("u1").unwrap();
        let mut fast = hub.subscribe("u1").unwrap();
        assert!(hub.subscribe("u1").is_err(), "the third is over the limit");
        let push = Push { id: 1, json: Utf8Bytes::from("{}") };
        hub.deliver("u1", &push);
        hub.deliver("u1", &push);
        assert!(fast.rx.try_recv().is_ok() && fast.rx.try_recv().is_ok());
        hub.deliver("u1", &push);
        assert_eq!(hub.connections("u1"), 1, "the slow one is out");
        assert!(
            matches!(slow.dropped.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
            "and told so (its close sender is gone)"
        );
        assert!(fast.rx.try_recv().is_ok());
        // The slot is held until the slow connection has really ended, not only left the fanout.
        assert!(hub.subscribe("u1").is_err());
        drop(slow);
        let again = hub.subscribe("u1").unwrap();
        drop(again);
        drop(fast);
        assert_eq!(hub.connections("u1"), 0);
    }
}
