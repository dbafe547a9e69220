//! One test world: the platform pieces a suite needs, started for one test by [`World::builder`] —
//! a private NATS and database ([`TestEnv`]), the auth service with its first administrator logged
//! in, and, as the suite asks, a gateway in front, the notification service, the storage service (a
//! child process) on a GFS cluster of its own. Then users, tokens and service accounts for the test.
//!
//! Like the rest of a test, the world panics on failure, saying what failed.

// A fixture's way to fail is a test's: loudly, where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edd_auth::AuthConfig;
use edd_notify::NotifyConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    eventually,
    gfs::{GfsCluster, Timing},
    services::{self, Answer, Api, Probe, ADMIN, ADMIN_PASSWORD},
    Service, TestEnv,
};

/// The password of every user [`World::user`] creates.
pub const PASSWORD: &str = "password-1";

/// The platform of one test. Dropped, it stops every service, then the cluster, then NATS and the
/// databases.
pub struct World {
    /// The gateway, when asked for: it routes `auth.localhost`, and `storage.localhost` and
    /// `notifications.localhost` to those services when they run.
    gateway: Option<Service>,
    notify: Option<Service>,
    storage: Option<Service>,
    gfs: Option<GfsCluster>,
    /// The auth service (on the test's own database, `env.db`).
    pub auth_service: Service,
    /// The auth API: through the gateway when there is one, else the service's own.
    pub auth: Api,
    /// The API of the service the world is for: storage, else the notification service, else auth
    /// (through the gateway when there is one).
    pub api: Api,
    /// A session of the first administrator.
    pub admin: String,
    /// A client for raw HTTP requests (one, so that connections are reused as a browser would).
    pub http: reqwest::Client,
    pub env: TestEnv,
}

/// What a world is made of; [`start`](Self::start) starts it.
pub struct WorldBuilder {
    auth: AuthConfig,
    gateway: bool,
    notify: Option<NotifyConfig>,
    storage: Option<Vec<(String, String)>>,
    chunkservers: usize,
}

impl World {
    /// The auth service alone ([`services::test_config`]); ask for more on the builder.
    pub fn builder() -> WorldBuilder {
        WorldBuilder { auth: services::test_config(), gateway: false, notify: None, storage: None, chunkservers: 3 }
    }

    /// The gateway.
    pub fn gateway(&self) -> &Service {
        self.gateway.as_ref().expect("this world has no gateway: ask the builder for .gateway()")
    }

    pub fn gateway_mut(&mut self) -> &mut Service {
        self.gateway.as_mut().expect("this world has no gateway: ask the builder for .gateway()")
    }

    /// The notification service.
    pub fn notify(&self) -> &Service {
        self.notify.as_ref().expect("this world has no notification service: ask the builder for .notify(…)")
    }

    pub fn notify_mut(&mut self) -> &mut Service {
        self.notify.as_mut().expect("this world has no notification service: ask the builder for .notify(…)")
    }

    /// The storage service (an `edd serve storage` process).
    pub fn storage(&self) -> &Service {
        self.storage.as_ref().expect("this world has no storage service: ask the builder for .storage(…)")
    }

    pub fn storage_mut(&mut self) -> &mut Service {
        self.storage.as_mut().expect("this world has no storage service: ask the builder for .storage(…)")
    }

    /// The GFS cluster behind the storage service.
    pub fn gfs(&self) -> &GfsCluster {
        self.gfs.as_ref().expect("this world has no GFS cluster: ask the builder for .storage(…)")
    }

    pub fn gfs_mut(&mut self) -> &mut GfsCluster {
        self.gfs.as_mut().expect("this world has no GFS cluster: ask the builder for .storage(…)")
    }

    /// `host`'s API through the gateway.
    pub fn via(&self, host: &str) -> Api {
        Api::via(&self.gateway().url, host)
    }

    /// The API of `service` (`storage.localhost` …): through the gateway when there is one.
    fn api_of(&self, host: &str, service: &Service) -> Api {
        match &self.gateway {
            Some(gateway) => Api::via(&gateway.url, host),
            None => Api::new(&service.url),
        }
    }

    /// A new user (password [`PASSWORD`]) and a session token for it, once every service of the
    /// world accepts the session.
    pub async fn user(&self, name: &str) -> (String, String) {
        let id = self.auth.create_user(&self.admin, name, PASSWORD).await.unwrap();
        let token = self.auth.login(name, PASSWORD).await.unwrap();
        self.accepted(&token).await;
        (id, token)
    }

    /// Waits until every service of the world other than auth knows `token`: they learn credentials
    /// from auth's events, through their permissions projections, moments later (only auth reads its
    /// own writes).
    pub async fn accepted(&self, token: &str) {
        if let Some(storage) = &self.storage {
            let api = self.api_of("storage.localhost", storage);
            eventually(Duration::from_secs(10), "storage to accept the credential", || async {
                Ok((api.get("/storage/usage", token).await?.status != StatusCode::UNAUTHORIZED).then_some(()))
            })
            .await
            .unwrap();
        }
        if let Some(notify) = &self.notify {
            let api = self.api_of("notifications.localhost", notify);
            eventually(Duration::from_secs(15), "the credential to reach the notification service", || async {
                Ok((api.get("/api/notifications/unread-count", token).await?.status == StatusCode::OK).then_some(()))
            })
            .await
            .unwrap();
        }
    }

    /// A personal API token of the user of `session`, named `name`, with `scopes`; its secret.
    pub async fn token(&self, session: &str, name: &str, scopes: Value) -> String {
        let a = self.auth.post("/api/tokens", session, json!({"name": name, "scopes": scopes})).await.unwrap();
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        a.body["token"].as_str().unwrap().to_owned()
    }

    /// A service account of the user of `session`, named `name`, with `scopes`; its id.
    pub async fn service_account(&self, session: &str, name: &str, scopes: Value) -> String {
        let a =
            self.auth.post("/api/service-accounts", session, json!({"name": name, "scopes": scopes})).await.unwrap();
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    /// A token of service account `id` (`body`: its name, and `expires_in` if wanted); its secret.
    pub async fn service_account_token(&self, session: &str, id: &str, body: Value) -> String {
        let a = self.auth.post(&format!("/api/service-accounts/{id}/tokens"), session, body).await.unwrap();
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        a.body["token"].as_str().unwrap().to_owned()
    }

    /// Starts the probe (a kit service guarding `storage` resources, see [`services::start_probe`])
    /// and waits until its permissions have loaded; the probe and its API.
    pub async fn probe(&self) -> (Probe, Api) {
        let probe = services::start_probe(&self.env).await.unwrap();
        let api = Api::new(&probe.running.url);
        assert!(probe.authorizer.wait_ready(Duration::from_secs(30)).await, "probe permissions never loaded");
        (probe, api)
    }
}

impl WorldBuilder {
    /// The auth service's settings (else [`services::test_config`]).
    pub fn auth(mut self, config: AuthConfig) -> Self {
        self.auth = config;
        self
    }

    /// A gateway in front of the services; the world's APIs go through it. Auth trusts it (its
    /// loopback address) for the client's address and scheme unless the auth settings name other
    /// trusted proxies.
    pub fn gateway(mut self) -> Self {
        self.gateway = true;
        self
    }

    /// The notification service, with `config`.
    pub fn notify(mut self, config: NotifyConfig) -> Self {
        self.notify = Some(config);
        self
    }

    /// The storage service as a child process with extra `EDD_STORAGE_*` `settings`, on a GFS cluster
    /// of one master and (unless [`chunkservers`](Self::chunkservers) says otherwise) 3 chunkservers.
    pub fn storage(mut self, settings: &[(&str, String)]) -> Self {
        self.storage = Some(settings.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect());
        self
    }

    /// How many chunkservers the storage service's cluster has.
    pub fn chunkservers(mut self, n: usize) -> Self {
        self.chunkservers = n;
        self
    }

    pub async fn start(self) -> World {
        let env = TestEnv::new().await.unwrap();
        let gfs = match &self.storage {
            Some(_) => {
                let gfs = GfsCluster::start(&env.nats, 1, self.chunkservers, Timing::default()).await.unwrap();
                gfs.wait_live(self.chunkservers).await.unwrap();
                Some(gfs)
            }
            None => None,
        };
        let mut auth_config = self.auth;
        if self.gateway && auth_config.trusted_proxies.is_empty() {
            // As `edd up` does: the gateway connects from loopback, and auth believes the client
            // address and scheme it forwards.
            auth_config.trusted_proxies = edd_kit::forwarded::TrustedProxies::loopback();
        }
        let auth_service = services::start_auth(&env, auth_config).await.unwrap();
        let storage = match (&self.storage, &gfs) {
            (Some(settings), Some(gfs)) => {
                let settings: Vec<(&str, String)> = settings.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                Some(services::start_storage_process(&env, gfs, &settings).await.unwrap())
            }
            _ => None,
        };
        let notify = match self.notify {
            Some(config) => Some(services::start_notify(&env, config).await.unwrap()),
            None => None,
        };
        let gateway = match self.gateway {
            true => {
                let mut upstreams = vec![("auth", auth_service.url.as_str())];
                if let Some(storage) = &storage {
                    upstreams.push(("storage", &storage.url));
                }
                if let Some(notify) = &notify {
                    upstreams.push(("notifications", &notify.url));
                }
                Some(services::start_gateway_to(&env, &upstreams).await.unwrap())
            }
            false => None,
        };
        let auth = match &gateway {
            Some(gateway) => Api::via(&gateway.url, "auth.localhost"),
            None => Api::new(&auth_service.url),
        };
        let api = match (&gateway, &storage, &notify) {
            (Some(gateway), Some(_), _) => Api::via(&gateway.url, "storage.localhost"),
            (Some(gateway), None, Some(_)) => Api::via(&gateway.url, "notifications.localhost"),
            (None, Some(storage), _) => Api::new(&storage.url),
            (None, None, Some(notify)) => Api::new(&notify.url),
            (_, None, None) => auth.clone(),
        };
        let admin = eventually(Duration::from_secs(30), "the administrator to log in", || async {
            Ok(auth.login(ADMIN, ADMIN_PASSWORD).await.ok())
        })
        .await
        .unwrap();
        World { gateway, notify, storage, gfs, auth_service, auth, api, admin, http: reqwest::Client::new(), env }
    }
}

/// A refusal as the platform answers one: `status`, and a problem document (`application/problem+json`)
/// saying the same status.
#[track_caller]
pub fn assert_problem(a: &Answer, status: StatusCode) {
    assert_eq!(a.status, status, "{:?}", a.body);
    assert!(a.content_type.starts_with("application/problem+json"), "{}", a.content_type);
    assert_eq!(a.body["status"], status.as_u16(), "{:?}", a.body);
}

/// A scopes document: `[("storage.u1.files", &["read"])]` → `{"storage.u1.files": ["read"]}`.
pub fn scopes(entries: &[(&str, &[&str])]) -> Value {
    entries.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>().into()
}

/// A WebSocket client connection, as `tokio-tungstenite` opens one.
pub type WebSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message on a WebSocket, as JSON (pings and pongs skipped); fails after 15 s.
pub async fn next_json(ws: &mut WebSocket) -> Value {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a notification, got {other:?}"),
        }
    }
}
