//! A private `nats-server` process per test: ephemeral port, own JetStream directory, killed on drop,
//! with the platform's authorization on — every component's identity generated from the catalog
//! (`edd_events::access`), plus the harness's own superuser, and no anonymous access.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use edd_events::{access, Credential};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    credentials: BTreeMap<String, Credential>,
    superuser: Credential,
}

/// The harness's own identity: publishes and subscribes anywhere, so fixtures can write any
/// component's events (each as its owner's `source`) and tests can read every stream.
pub const SUPERUSER: &str = "edd-it";

impl NatsServer {
    /// Starts a JetStream-enabled server on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = binary()?;
        let dir = std::env::temp_dir().join(format!("edd-it-nats-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir)?;
        let superuser = Credential::random(SUPERUSER);
        let all = serde_json::json!({
            "user": superuser.user,
            "password": superuser.password(),
            "permissions": { "publish": { "allow": [">"] }, "subscribe": { "allow": [">"] } },
        });
        let credentials = access::generate(&dir.join("identities"), &[all])?;
        let mut server = Self { child: None, port: 0, dir, bin, credentials, superuser };
        server.spawn(None).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The credential of component `name` (an identity of `edd_events::access::IDENTITIES`).
    pub fn credential(&self, name: &str) -> anyhow::Result<Credential> {
        self.credentials.get(name).cloned().with_context(|| format!("no NATS identity {name}"))
    }

    /// The file holding component `name`'s credential, for `EDD_NATS_CREDENTIALS_FILE`.
    pub fn credential_file(&self, name: &str) -> PathBuf {
        access::credential_path(&self.dir.join("identities"), name)
    }

    /// The harness's superuser ([`SUPERUSER`]).
    pub fn superuser(&self) -> &Credential {
        &self.superuser
    }

    /// A new connection as component `name`, with exactly that component's permissions.
    pub async fn connect_as(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let credential = self.credential(name)?;
        Ok(edd_events::connect(&self.url(), &format!("edd-it-as-{name}"), Some(&credential)).await?)
    }

    /// SIGKILLs the server (no clean shutdown), as a crash would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port with the same data, as after a crash.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn(Some(self.port)).await
    }

    async fn spawn(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let ports_dir = self.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(access::server_config_path(&self.dir.join("identities")))
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "--ports_file_dir"])
            .arg(&ports_dir)
            .arg("-sd")
            .arg(self.dir.join("js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        self.port = wait_for_port(&ports_dir).await?;
        // The ports file appears before JetStream is ready; wait for a JetStream answer.
        let url = self.url();
        let superuser = self.superuser.clone();
        crate::eventually(
            Duration::from_secs(20),
            &format!("nats-server on port {} to be ready", self.port),
            || async {
                let client = edd_events::options("edd-it-ready", Some(&superuser)).connect(&url).await?;
                let js = async_nats::jetstream::new(client);
                Ok(js.query_account().await.is_ok().then_some(()))
            },
        )
        .await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for_port(dir: &Path) -> anyhow::Result<u16> {
    crate::eventually(
        Duration::from_secs(10),
        &format!("nats-server to write a ports file in {}", dir.display()),
        || async {
            let Some(entry) = std::fs::read_dir(dir)?.flatten().next() else { return Ok(None) };
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let port = json["nats"][0].as_str().and_then(|url| url.rsplit(':').next()).and_then(|p| p.parse().ok());
            Ok(port)
        },
    )
    .await
}

/// Finds a nats-server ≥ 2.11 binary.
fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("EDD_NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.edd/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    bail!(
        "no nats-server >= 2.11 found: run the tests with deploy/local/test.sh (it installs one), \
         or set EDD_NATS_SERVER_BIN"
    )
}
