//! The container runtime behind the compute service: one trait, [`Runtime`], that the reconciler
//! drives, and its implementations ([`podman`] for a laptop and the tests).
//!
//! A runtime knows containers by the platform's container id, not by its own: the container for
//! id `c1` is the runtime object named `edd-c1` (and its volume `edd-c1`), labelled
//! [`LABEL_CONTAINER`]`=c1` and [`LABEL_USER`]`=<owner>`. So the reconciler can ask about a
//! container it has never created in this process (after a crash), and find objects that no
//! container owns any more by their labels ([`Runtime::list`]).
//!
//! Every call takes a deadline ([`tokio::time::Instant`]); a call that does not finish by then is
//! abandoned and answers [`RuntimeError::Timeout`]. Nothing here retries: the reconciler backs off.

pub mod podman;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

/// The label holding the platform's container id on every runtime object of a container.
pub const LABEL_CONTAINER: &str = "edd.container";
/// The label holding the owner's user id on every runtime object of a container.
pub const LABEL_USER: &str = "edd.user";

/// The most a container id may be: it becomes part of runtime names (`edd-<id>`), DNS labels in
/// Kubernetes (63) included.
pub const MAX_ID_LEN: usize = 56;

/// What a container should be: everything the runtime needs to create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The platform's container id: `[a-z0-9-]`, 1 to [`MAX_ID_LEN`] characters, not starting
    /// with `-`.
    pub id: String,
    /// The owner's user id (the [`LABEL_USER`] label).
    pub user: String,
    /// A local image reference (`localhost/edd/base:1`); nothing is pulled.
    pub image: String,
    /// The process to run instead of the image's command, when given.
    pub command: Option<Vec<String>>,
    /// CPU limit in thousandths of a CPU (1000 = one CPU).
    pub cpu_millis: u32,
    /// Memory limit in bytes (no swap beyond it).
    pub memory_bytes: u64,
    /// A named volume of the container's own, mounted at this absolute path; it outlives the
    /// container (a recreate keeps it) until [`Runtime::remove`] with [`VolumePolicy::Delete`].
    pub volume_path: Option<String>,
    /// TCP ports the container listens on, each published on 127.0.0.1 at a port the runtime picks
    /// (see [`Observed::ports`]).
    pub ports: Vec<u16>,
}

/// The least memory a container may be given (the runtimes refuse less than a few MiB).
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

impl ContainerSpec {
    /// The spec's own rules, checked before any runtime call.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        validate_id(&self.id)?;
        if self.user.is_empty() || self.user.len() > 128 || self.user.chars().any(|c| c.is_control()) {
            return Err(RuntimeError::InvalidSpec("the user id must be 1 to 128 printable characters".into()));
        }
        if self.image.is_empty() || self.image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RuntimeError::InvalidSpec(format!("bad image reference {:?}", self.image)));
        }
        if self.command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(RuntimeError::InvalidSpec("the command, when given, needs at least the program".into()));
        }
        if self.cpu_millis == 0 {
            return Err(RuntimeError::InvalidSpec("the CPU limit must be at least 1 millicpu".into()));
        }
        if self.memory_bytes < MIN_MEMORY_BYTES || i64::try_from(self.memory_bytes).is_err() {
            return Err(RuntimeError::InvalidSpec(format!(
                "the memory limit must be at least {MIN_MEMORY_BYTES} bytes"
            )));
        }
        if let Some(path) = &self.volume_path {
            if !path.starts_with('/') || path == "/" || path.contains(':') || path.split('/').any(|p| p == "..") {
                return Err(RuntimeError::InvalidSpec(format!(
                    "the volume path must be an absolute path below / without `..` or `:`, not {path:?}"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for port in &self.ports {
            if *port == 0 || !seen.insert(*port) {
                return Err(RuntimeError::InvalidSpec(format!("port {port} is zero or given twice")));
            }
        }
        Ok(())
    }

    /// The labels every runtime object of this container carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_CONTAINER.to_owned(), self.id.clone()), (LABEL_USER.to_owned(), self.user.clone())])
    }
}

/// A container id as the runtimes accept it (see [`ContainerSpec::id`]).
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('-')
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidSpec(format!(
            "container id {id:?} must be 1 to {MAX_ID_LEN} of [a-z0-9-], not starting with `-`"
        )))
    }
}

/// The runtime's name for the container (and its volume) with this id.
pub fn runtime_name(id: &str) -> String {
    format!("edd-{id}")
}

/// What the runtime says a container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    /// Created and never started (or being set up): a stopped container that has not run.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended with this code: on its own, after a stop (143 for SIGTERM, 137 when the
    /// grace period ran out) or killed from outside. Whether that was wanted is the reconciler's
    /// call, which knows the desired state.
    Exited {
        /// The process' exit status (128 + the signal when a signal ended it).
        code: i64,
    },
    /// The runtime could not run it, or it died in a way an exit code does not tell.
    Failed {
        /// The runtime's words (`out of memory`, the start error).
        reason: String,
        /// The exit code, when there is one.
        code: Option<i64>,
    },
    /// Paused, restarting, being removed: a state this platform does not ask for.
    Other {
        /// The runtime's name for it.
        status: String,
    },
}

/// A published port: the container's port and where it is reachable on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    /// The port inside the container.
    pub container: u16,
    /// The host address (127.0.0.1 and a port the runtime picked).
    pub host: SocketAddr,
}

/// One container as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The platform's container id (from [`LABEL_CONTAINER`]).
    pub id: String,
    /// The owner (from [`LABEL_USER`]).
    pub user: String,
    /// The runtime's own id for it.
    pub runtime_id: String,
    /// The image it was created from (as given in the spec).
    pub image: String,
    /// What it is doing.
    pub state: ObservedState,
    /// Its address on the runtime's network, while it runs.
    pub address: Option<IpAddr>,
    /// Its published ports, while it runs.
    pub ports: Vec<PublishedPort>,
    /// Every label it carries.
    pub labels: BTreeMap<String, String>,
}

/// What [`Runtime::remove`] does with the container's volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumePolicy {
    /// Keep it, for the container that replaces this one (a spec change).
    Keep,
    /// Delete it with the container (the container is deleted).
    Delete,
}

/// Why a runtime call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// No such container (or volume) in the runtime.
    #[error("no such container in the runtime: {0}")]
    NotFound(String),
    /// The image is not in the runtime's local store (nothing is pulled).
    #[error("image {0} is not in the runtime's image store")]
    ImageNotFound(String),
    /// A container of that name already exists.
    #[error("a container named {0} already exists in the runtime")]
    Conflict(String),
    /// The spec breaks a rule, of ours or the runtime's.
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    /// The runtime cannot be reached (its socket is gone, it refuses connections, it is restarting).
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish by its deadline.
    #[error("container runtime: {op} did not finish by its deadline")]
    Timeout {
        /// The call (`create`, `start`, …).
        op: &'static str,
    },
    /// Anything else the runtime answered.
    #[error("container runtime: {0}")]
    Other(String),
}

impl RuntimeError {
    /// Whether trying again later may succeed without changing anything (the runtime was away or
    /// slow), as opposed to an answer about the container or the spec.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout { .. })
    }
}

/// A container runtime, driven by the reconciler. Every call takes the platform's container id and
/// a deadline; the futures are `Send`, so a reconciler can run them on any task.
///
/// The calls are idempotent where the reconciler needs them to be: starting a running container,
/// stopping a stopped one and removing a missing one succeed.
pub trait Runtime: Send + Sync {
    /// Creates the container (not started) and, when the spec has a volume path, its volume (an
    /// existing volume of that container is reused). [`RuntimeError::Conflict`] when a container
    /// of that id exists.
    fn create(&self, spec: &ContainerSpec, deadline: Instant) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Starts the container's process.
    fn start(&self, id: &str, deadline: Instant) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Asks the process to stop (SIGTERM), kills it when it is still there after `grace`.
    fn stop(
        &self,
        id: &str,
        grace: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes the container (killing it if it runs) and, with [`VolumePolicy::Delete`], its
    /// volume. Removing what is not there succeeds.
    fn remove(
        &self,
        id: &str,
        volume: VolumePolicy,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// What the container is doing; [`RuntimeError::NotFound`] when there is none.
    fn inspect(&self, id: &str, deadline: Instant) -> impl Future<Output = Result<Observed, RuntimeError>> + Send;

    /// Every container of the platform (labelled [`LABEL_CONTAINER`]) that also carries each of
    /// `labels` (e.g. [`LABEL_USER`]`=<uid>`), in any state: for the reconciler's resync and its
    /// garbage collection.
    fn list(
        &self,
        labels: &BTreeMap<String, String>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Observed>, RuntimeError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "c-1".into(),
            user: "u1".into(),
            image: "localhost/edd/base:1".into(),
            command: None,
            cpu_millis: 500,
            memory_bytes: 64 << 20,
            volume_path: Some("/data".into()),
            ports: vec![8080],
        }
    }

    #[test]
    fn a_good_spec_passes() {
        spec().validate().unwrap();
        assert_eq!(runtime_name("c-1"), "edd-c-1");
        assert_eq!(spec().labels().get(LABEL_CONTAINER).map(String::as_str), Some("c-1"));
    }

    #[test]
    fn bad_specs_are_refused_before_the_runtime() {
        let cases: &[fn(&mut ContainerSpec)] = &[
            |s| s.id = String::new(),
            |s| s.id = "-a".into(),
            |s| s.id = "A".into(),
            |s| s.id = "a/b".into(),
            |s| s.id = "a".repeat(MAX_ID_LEN + 1),
            |s| s.user = String::new(),
            |s| s.image = "a b".into(),
            |s| s.command = Some(vec![]),
            |s| s.cpu_millis = 0,
            |s| s.memory_bytes = 1024,
            |s| s.memory_bytes = u64::MAX,
            |s| s.volume_path = Some("data".into()),
            |s| s.volume_path = Some("/".into()),
            |s| s.volume_path = Some("/a/../b".into()),
            |s| s.volume_path = Some("/a:rw".into()),
            |s| s.ports = vec![0],
            |s| s.ports = vec![80, 80],
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut s = spec();
            change(&mut s);
            assert!(matches!(s.validate(), Err(RuntimeError::InvalidSpec(_))), "case {i} passed: {s:?}");
        }
    }

    #[test]
    fn transient_errors_are_the_runtimes_absence() {
        assert!(RuntimeError::Unavailable("x".into()).is_transient());
        assert!(RuntimeError::Timeout { op: "start" }.is_transient());
        assert!(!RuntimeError::NotFound("x".into()).is_transient());
        assert!(!RuntimeError::InvalidSpec("x".into()).is_transient());
    }
}
