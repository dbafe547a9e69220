//! Who may do what on the broker: one NATS identity per component, with permissions **generated**
//! from the catalog — what it may publish from [`PUBLISHERS`], what it reads from
//! [`IDENTITIES`] — so the broker's rules and the consumers' origin check cannot drift.
//!
//! A component gets:
//! - **publish** on the subjects it owns (and, where the projection runner runs inside it, the
//!   runner's `log.error.projections` and `deadletter.>`), on the JetStream API calls for the streams
//!   it reads (stream info, its own consumers, message gets, acks), and on stream create/update only
//!   for the streams it [owns](Identity::owns);
//! - **subscribe** on its own reply inbox (`_INBOX_<name>.>`, so no component reads another's
//!   replies) and on the core subjects it [listens](Identity::listens) to.
//!
//! An unknown connection is refused: the server has users and no anonymous one. The operator
//! identity (`edd`, the CLI and `edd up`) manages streams and reads everything but publishes no event.
//!
//! [`generate`] writes a credential file per identity (mode 0600, kept across runs) and the server's
//! `authorization` block from them; `edd up` and the test harness start `nats-server` with it.

use std::{
    collections::BTreeMap,
    fmt, io,
    path::{Path, PathBuf},
};

use crate::catalog::publishers::PUBLISHERS;

/// A component's identity on the broker and what it touches besides its own subjects.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// The NATS user name; for a publishing component, its `source` and its row in `PUBLISHERS`.
    pub name: &'static str,
    /// Streams it reads: consumers, message gets, stream info.
    pub reads: &'static [&'static str],
    /// Streams it creates and updates (a KV bucket `X` is the stream `KV_X`, an object store `OBJ_X`).
    pub owns: &'static [&'static str],
    /// Core NATS subjects it subscribes to, besides its reply inbox.
    pub listens: &'static [&'static str],
    /// The projection runner runs inside it: it also publishes as `projections`.
    pub runs_projections: bool,
    /// The operator: the whole JetStream API, every stream, no event subject.
    pub operator: bool,
}

/// The revocations every service's authorizer applies ahead of its projection (core NATS).
const REVOCATIONS: &[&str] = &["auth.>"];

const SERVICE: Identity =
    Identity { name: "", reads: &[], owns: &[], listens: REVOCATIONS, runs_projections: true, operator: false };

/// Every identity of the platform. A new component adds its row here and in `PUBLISHERS`.
pub const IDENTITIES: &[Identity] = &[
    Identity { name: "auth", reads: &["AUTH"], ..SERVICE },
    Identity { name: "gateway", reads: &["AUTH", "GATEWAY"], ..SERVICE },
    Identity { name: "storage", reads: &["AUTH", "STORAGE"], ..SERVICE },
    Identity { name: "notify", reads: &["AUTH", "NOTIFY", "INBOX"], ..SERVICE },
    Identity {
        name: "gfs-master",
        reads: &["GFS", "KV_GFS_MASTER", "OBJ_GFS_SNAPSHOTS"],
        owns: &["GFS", "KV_GFS_MASTER", "OBJ_GFS_SNAPSHOTS"],
        listens: &[],
        runs_projections: false,
        operator: false,
    },
    Identity { name: OPERATOR, reads: &[], owns: &[], listens: &[], runs_projections: false, operator: true },
];

/// The operator's identity: the `edd` CLI and `edd up`.
pub const OPERATOR: &str = "edd";

/// The identity called `name`.
pub fn identity(name: &str) -> Option<&'static Identity> {
    IDENTITIES.iter().find(|i| i.name == name)
}

/// The reply-subject prefix of `user`: replies to one component's requests are invisible to the others.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// What an identity may publish and subscribe to, as NATS subject filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Identity {
    /// This identity's permissions, derived from the catalog.
    pub fn permissions(&self) -> Permissions {
        let mut publish: Vec<String> = Vec::new();
        let mut own = |component: &str| {
            for p in PUBLISHERS.iter().filter(|p| p.component == component) {
                publish.extend(p.subjects.iter().map(|s| (*s).to_owned()));
            }
        };
        own(self.name);
        if self.runs_projections {
            own("projections");
        }
        if self.operator {
            publish.extend(["$JS.API.>", "$JS.ACK.>", "$JS.FC.>"].map(String::from));
        } else {
            publish.push("$JS.API.INFO".into());
            for stream in self.reads.iter().chain(self.owns) {
                publish.extend(read_api(stream));
            }
            for stream in self.owns {
                publish.push(format!("$JS.API.STREAM.CREATE.{stream}"));
                publish.push(format!("$JS.API.STREAM.UPDATE.{stream}"));
                if let Some(bucket) = stream.strip_prefix("KV_") {
                    publish.push(format!("$KV.{bucket}.>"));
                } else if let Some(bucket) = stream.strip_prefix("OBJ_") {
                    publish.push(format!("$O.{bucket}.>"));
                }
            }
        }
        publish.sort();
        publish.dedup();
        let mut subscribe = vec![format!("{}.>", inbox_prefix(self.name))];
        subscribe.extend(self.listens.iter().map(|s| (*s).to_owned()));
        Permissions { publish, subscribe }
    }
}

/// The JetStream API calls (and acknowledgements) that reading `stream` takes.
fn read_api(stream: &str) -> [String; 12] {
    [
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
        format!("$JS.ACK.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// A NATS user name and password: what a component connects with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub user: String,
    password: String,
}

// Hand-written so that logging a configuration never prints the password.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("user", &self.user).finish_non_exhaustive()
    }
}

impl Credential {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self { user: user.into(), password: password.into() }
    }

    /// A new identity with a random 256-bit password.
    pub fn random(user: &str) -> Self {
        let mut bytes = [0u8; 32];
        // ring's system RNG is the OS's; should it ever fail, UUIDv4 (the same source) fills in.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        let password = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        Self::new(user, password)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Parses a credential file's text: one line, `user:password`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.lines().next().unwrap_or("").trim().split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Some(Self::new(user, password)),
            _ => None,
        }
    }

    /// Reads a credential file.
    pub fn load(path: &Path) -> io::Result<Self> {
        Self::parse(&std::fs::read_to_string(path)?).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a NATS credential file (one line, user:password)", path.display()),
            )
        })
    }

    /// Writes it as a credential file readable only by its owner (0600).
    pub fn store(&self, path: &Path) -> io::Result<()> {
        write_private(path, format!("{}:{}\n", self.user, self.password).as_bytes())
    }
}

/// Creates `dir` (and its parents) and makes it readable only by its owner (0700).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` with mode 0600, replacing it atomically: how every secret file of the
/// platform is written.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The credential file of identity `name` in `dir`.
pub fn credential_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.creds"))
}

/// The NATS server configuration file in `dir`.
pub fn server_config_path(dir: &Path) -> PathBuf {
    dir.join("server.conf")
}

/// The credentials of every identity in `dir`: kept where they exist, created (0600) where not.
/// Then writes the server's configuration (0600) from them and returns them by name.
///
/// `extra` adds users beyond the platform's (the test harness's own superuser) as raw NATS user
/// objects.
pub fn generate(dir: &Path, extra: &[serde_json::Value]) -> io::Result<BTreeMap<String, Credential>> {
    private_dir(dir)?;
    let mut credentials = BTreeMap::new();
    for identity in IDENTITIES {
        let path = credential_path(dir, identity.name);
        let credential = match Credential::load(&path) {
            Ok(c) if c.user == identity.name => c,
            Ok(_) | Err(_) => {
                let c = Credential::random(identity.name);
                c.store(&path)?;
                c
            }
        };
        credentials.insert(identity.name.to_owned(), credential);
    }
    let config = server_config(&credentials, extra);
    write_private(&server_config_path(dir), config.as_bytes())?;
    Ok(credentials)
}

/// The server's `authorization` block (NATS reads JSON as its configuration syntax) for `credentials`.
pub fn server_config(credentials: &BTreeMap<String, Credential>, extra: &[serde_json::Value]) -> String {
    let mut users: Vec<serde_json::Value> = IDENTITIES
        .iter()
        .filter_map(|identity| {
            let credential = credentials.get(identity.name)?;
            let p = identity.permissions();
            Some(serde_json::json!({
                "user": credential.user,
                "password": credential.password,
                "permissions": {
                    "publish": { "allow": p.publish },
                    "subscribe": { "allow": p.subscribe },
                },
            }))
        })
        .collect();
    users.extend(extra.iter().cloned());
    let config = serde_json::json!({ "authorization": { "users": users } });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::filter_matches;

    fn allowed(filters: &[String], subject: &str) -> bool {
        filters.iter().any(|f| filter_matches(f, subject))
    }

    #[test]
    fn every_publisher_has_an_identity_and_every_identity_only_its_subjects() {
        for p in PUBLISHERS.iter().filter(|p| p.component != "projections") {
            assert!(identity(p.component).is_some(), "{} has no NATS identity", p.component);
        }
        let storage = identity("storage").unwrap().permissions();
        assert!(allowed(&storage.publish, "storage.file.f1.created"));
        assert!(allowed(&storage.publish, "notify.u1.sent"));
        assert!(allowed(&storage.publish, "deadletter.storage_files"));
        for forbidden in ["auth.key.k1.added", "auth.user.u1.updated", "gateway.route.r1.created", "gfs.file.x.created"]
        {
            assert!(!allowed(&storage.publish, forbidden), "storage may publish {forbidden}");
        }
        assert!(!allowed(&storage.publish, "$JS.API.STREAM.CREATE.AUTH"));
        assert!(!allowed(&storage.publish, "$JS.API.STREAM.DELETE.STORAGE"));
        assert!(!allowed(&storage.publish, "$JS.API.CONSUMER.CREATE.GATEWAY.x.gateway.>"));
        assert!(allowed(&storage.publish, "$JS.API.CONSUMER.CREATE.STORAGE.x.storage.>"));
        assert!(!allowed(&storage.subscribe, "_INBOX_auth.abc"));
        assert!(allowed(&storage.subscribe, "_INBOX_storage.abc"));
    }

    #[test]
    fn only_owners_manage_streams_and_the_operator_publishes_no_event() {
        let gfs = identity("gfs-master").unwrap().permissions();
        assert!(allowed(&gfs.publish, "$JS.API.STREAM.CREATE.GFS"));
        assert!(allowed(&gfs.publish, "$KV.GFS_MASTER.leader"));
        assert!(!allowed(&gfs.publish, "$JS.API.STREAM.CREATE.AUTH"));
        let operator = identity(OPERATOR).unwrap().permissions();
        assert!(allowed(&operator.publish, "$JS.API.STREAM.CREATE.AUTH"));
        for subject in ["auth.key.k1.added", "storage.ns.n.created", "gfs.file.x.created"] {
            assert!(!allowed(&operator.publish, subject), "the operator may publish {subject}");
        }
    }

    #[test]
    fn credentials_are_kept_across_runs_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("edd-access-{}", uuid::Uuid::new_v4()));
        let first = generate(&dir, &[]).unwrap();
        let again = generate(&dir, &[]).unwrap();
        assert_eq!(first, again);
        assert_eq!(first["auth"].password().len(), 64);
        for file in [credential_path(&dir, "auth"), server_config_path(&dir)] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(server_config_path(&dir)).unwrap()).unwrap();
        assert_eq!(config["authorization"]["users"].as_array().unwrap().len(), IDENTITIES.len());
        assert!(format!("{:?}", first["auth"]).find(first["auth"].password()).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
