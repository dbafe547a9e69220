//! [`Runtime`] on podman: its Docker-compatible API over the unix socket of `podman system
//! service` (`deploy/local/lib.sh`, `ensure_podman`, exports [`SOCKET_ENV`]), through `bollard`.
//!
//! Podman 4.3 (Debian 12) serves the compatible API up to version 1.41, and refuses requests for a
//! newer one, so the client speaks [`API_VERSION`]. Containers run with an init process (podman's
//! `catatonit`) so a shell's children are reaped, no restart policy (the reconciler restarts), a
//! memory limit without swap, a CPU quota and a pids limit; their ports are published on
//! 127.0.0.1 only.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig, Mount, MountType, PortBinding,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StopContainerOptions,
};
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{
    runtime_name, validate_id, ContainerSpec, Observed, ObservedState, PublishedPort, Runtime, RuntimeError,
    VolumePolicy, LABEL_CONTAINER, LABEL_USER,
};

/// The environment variable naming the podman API socket (`deploy/local/lib.sh` exports it).
pub const SOCKET_ENV: &str = "EDD_PODMAN_SOCKET";

/// The Docker API version spoken to podman (the newest podman 4.3 serves).
pub const API_VERSION: ClientVersion = ClientVersion { major_version: 1, minor_version: 41 };

/// The most processes (threads included) one container may have.
pub const PIDS_LIMIT: i64 = 4096;

/// The bollard client's own timeout per request, beyond which no deadline is ever set.
const CLIENT_TIMEOUT_SECS: u64 = 600;

/// The podman runtime: a client of one podman API socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PodmanRuntime {
    docker: Docker,
    socket: PathBuf,
}

impl PodmanRuntime {
    /// A client of the podman service at `socket` (a path or `unix://path`). Does not call it:
    /// [`RuntimeError::Unavailable`] only when the socket does not exist.
    pub fn connect(socket: impl AsRef<Path>) -> Result<Self, RuntimeError> {
        let socket = socket.as_ref();
        let raw = socket.to_string_lossy();
        let path = PathBuf::from(raw.strip_prefix("unix://").unwrap_or(&raw));
        let docker = Docker::connect_with_unix(&path.to_string_lossy(), CLIENT_TIMEOUT_SECS, &API_VERSION)
            .map_err(|e| RuntimeError::Unavailable(format!("podman socket {}: {e}", path.display())))?;
        Ok(Self { docker, socket: path })
    }

    /// A client of the socket named by [`SOCKET_ENV`].
    pub fn from_env() -> Result<Self, RuntimeError> {
        match std::env::var_os(SOCKET_ENV) {
            Some(path) if !path.is_empty() => Self::connect(PathBuf::from(path)),
            _ => Err(RuntimeError::Unavailable(format!(
                "{SOCKET_ENV} is not set (deploy/local/up.sh and test.sh start podman and set it)"
            ))),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The service answers (`_ping`).
    pub async fn ping(&self, deadline: Instant) -> Result<(), RuntimeError> {
        within("ping", deadline, self.docker.ping()).await.map(drop)
    }

    /// Sends `signal` (`KILL`, `TERM`, …) to the container's process, as an operator (or a crash)
    /// would behind the reconciler's back.
    pub async fn kill(&self, id: &str, signal: &str, deadline: Instant) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let name = runtime_name(id);
        let opts = KillContainerOptions { signal: signal.to_owned() };
        within("kill", deadline, self.docker.kill_container(&name, Some(opts))).await
    }

    /// The last `tail` lines of the container's stdout and stderr, interleaved as written.
    pub async fn logs(&self, id: &str, tail: usize, deadline: Instant) -> Result<String, RuntimeError> {
        validate_id(id)?;
        let name = runtime_name(id);
        let opts = LogsOptions { stdout: true, stderr: true, tail: tail.to_string(), ..Default::default() };
        let collect = async {
            let mut out = Vec::new();
            let mut stream = self.docker.logs(&name, Some(opts));
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?.into_bytes());
            }
            Ok::<_, BollardError>(out)
        };
        let bytes = within("logs", deadline, collect).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
        let labels: HashMap<String, String> = spec.labels().into_iter().collect();
        let ports: Vec<String> = spec.ports.iter().map(|p| format!("{p}/tcp")).collect();
        let bindings = spec
            .ports
            .iter()
            .map(|p| {
                let local =
                    PortBinding { host_ip: Some(Ipv4Addr::LOCALHOST.to_string()), host_port: Some(String::new()) };
                (format!("{p}/tcp"), Some(vec![local]))
            })
            .collect();
        let memory = i64::try_from(spec.memory_bytes).unwrap_or(i64::MAX);
        let mounts = spec.volume_path.as_ref().map(|target| {
            vec![Mount {
                typ: Some(MountType::VOLUME),
                source: Some(runtime_name(&spec.id)),
                target: Some(target.clone()),
                ..Default::default()
            }]
        });
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            labels: Some(labels),
            exposed_ports: (!ports.is_empty()).then_some(ports),
            host_config: Some(HostConfig {
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some(i64::from(spec.cpu_millis) * 1_000_000),
                pids_limit: Some(PIDS_LIMIT),
                init: Some(true),
                port_bindings: Some(bindings),
                mounts,
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl Runtime for PodmanRuntime {
    async fn create(&self, spec: &ContainerSpec, deadline: Instant) -> Result<(), RuntimeError> {
        spec.validate()?;
        let name = runtime_name(&spec.id);
        if spec.volume_path.is_some() {
            let volume = VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(spec.labels().into_iter().collect()),
                ..Default::default()
            };
            match within("create volume", deadline, self.docker.create_volume(volume)).await {
                // A volume kept from the container's previous incarnation is reused.
                Ok(_) | Err(RuntimeError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let created = self.docker.create_container(Some(opts), Self::create_body(spec));
        match within("create", deadline, created).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::NotFound(_)) => Err(RuntimeError::ImageNotFound(spec.image.clone())),
            Err(RuntimeError::Conflict(_)) => Err(RuntimeError::Conflict(name)),
            Err(e) => Err(e),
        }
    }

    async fn start(&self, id: &str, deadline: Instant) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let name = runtime_name(id);
        // 304 (already running) is a success for bollard.
        within("start", deadline, self.docker.start_container(&name, None)).await
    }

    async fn stop(&self, id: &str, grace: Duration, deadline: Instant) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let name = runtime_name(id);
        let secs =
            i32::try_from(grace.as_secs().saturating_add(u64::from(grace.subsec_nanos() > 0))).unwrap_or(i32::MAX);
        let opts = StopContainerOptions { t: Some(secs), signal: None };
        match within("stop", deadline, self.docker.stop_container(&name, Some(opts))).await {
            Ok(()) => Ok(()),
            // Stopping what does not run (created, exited) is refused by some versions: it is stopped.
            Err(RuntimeError::Conflict(_) | RuntimeError::Other(_))
                if !self.inspect(id, deadline).await.is_ok_and(|o| o.state == ObservedState::Running) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn remove(&self, id: &str, volume: VolumePolicy, deadline: Instant) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let name = runtime_name(id);
        let opts = RemoveContainerOptions { force: true, v: false, link: false };
        match within("remove", deadline, self.docker.remove_container(&name, Some(opts))).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if volume == VolumePolicy::Delete {
            let opts = RemoveVolumeOptions { force: true };
            match within("remove volume", deadline, self.docker.remove_volume(&name, Some(opts))).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn inspect(&self, id: &str, deadline: Instant) -> Result<Observed, RuntimeError> {
        validate_id(id)?;
        let name = runtime_name(id);
        let found = within("inspect", deadline, self.docker.inspect_container(&name, None)).await?;
        Ok(observed(id, found))
    }

    async fn list(&self, labels: &BTreeMap<String, String>, deadline: Instant) -> Result<Vec<Observed>, RuntimeError> {
        let mut wanted = vec![LABEL_CONTAINER.to_owned()];
        wanted.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), wanted)])),
            ..Default::default()
        };
        let summaries = within("list", deadline, self.docker.list_containers(Some(opts))).await?;
        let mut out = Vec::with_capacity(summaries.len());
        for summary in summaries {
            // The label filter is the runtime's; check it here too, a foreign object must not pass.
            let Some(found_labels) = summary.labels else { continue };
            let Some(id) = found_labels.get(LABEL_CONTAINER).cloned() else { continue };
            if labels.iter().any(|(k, v)| found_labels.get(k) != Some(v)) || validate_id(&id).is_err() {
                continue;
            }
            let Some(runtime_id) = summary.id else { continue };
            // The summary has no exit code: inspect each (by runtime id: a foreign name cannot mislead).
            match within("inspect", deadline, self.docker.inspect_container(&runtime_id, None)).await {
                Ok(found) => out.push(observed(&id, found)),
                Err(RuntimeError::NotFound(_)) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// Runs one API call by `deadline`, mapping its error.
async fn within<T>(
    op: &'static str,
    deadline: Instant,
    call: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(answer) => answer.map_err(|e| map_error(op, e)),
        Err(_) => Err(RuntimeError::Timeout { op }),
    }
}

fn map_error(op: &'static str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => match status_code {
            404 => RuntimeError::NotFound(message),
            409 => RuntimeError::Conflict(message),
            400 => RuntimeError::InvalidSpec(message),
            // Podman 4.3 answers 500 for some of these, with libpod's words.
            _ if message.contains("no such container") || message.contains("no such volume") => {
                RuntimeError::NotFound(message)
            }
            _ if message.contains("is already in use") => RuntimeError::Conflict(message),
            _ => RuntimeError::Other(format!("{op}: {status_code} {message}")),
        },
        BollardError::SocketNotFoundError(path) => RuntimeError::Unavailable(format!("no podman socket at {path}")),
        BollardError::RequestTimeoutError => RuntimeError::Timeout { op },
        e @ (BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::HttpClientError { .. }) => RuntimeError::Unavailable(format!("{op}: {e}")),
        e => RuntimeError::Other(format!("{op}: {e}")),
    }
}

/// The platform's view of an inspect answer.
fn observed(id: &str, found: ContainerInspectResponse) -> Observed {
    let labels: BTreeMap<String, String> =
        found.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default().into_iter().collect();
    let image = found.config.as_ref().and_then(|c| c.image.clone()).or(found.image).unwrap_or_default();
    let state = found.state.unwrap_or_default();
    let code = state.exit_code;
    let error = state.error.filter(|e| !e.is_empty());
    let observed_state = match state.status {
        Some(ContainerStateStatusEnum::RUNNING) => ObservedState::Running,
        Some(ContainerStateStatusEnum::CREATED) => match error {
            Some(reason) => ObservedState::Failed { reason, code },
            None => ObservedState::Created,
        },
        Some(ContainerStateStatusEnum::EXITED) => {
            if state.oom_killed == Some(true) {
                ObservedState::Failed { reason: "out of memory".into(), code }
            } else if let Some(reason) = error {
                ObservedState::Failed { reason, code }
            } else {
                ObservedState::Exited { code: code.unwrap_or(-1) }
            }
        }
        Some(ContainerStateStatusEnum::DEAD) => {
            ObservedState::Failed { reason: error.unwrap_or_else(|| "dead".into()), code }
        }
        other => ObservedState::Other { status: other.map(|s| s.to_string()).unwrap_or_default() },
    };
    let running = observed_state == ObservedState::Running;
    let network = found.network_settings.unwrap_or_default();
    let address = network
        .networks
        .unwrap_or_default()
        .into_values()
        .filter_map(|n| n.ip_address)
        .find_map(|ip| ip.parse::<IpAddr>().ok())
        .filter(|_| running);
    let mut ports: Vec<PublishedPort> = network
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter(|_| running)
        .filter_map(|(key, bindings)| {
            let container = key.strip_suffix("/tcp")?.parse::<u16>().ok()?;
            Some(bindings.unwrap_or_default().into_iter().filter_map(move |b| {
                let ip =
                    b.host_ip.as_deref().filter(|ip| !ip.is_empty()).unwrap_or("127.0.0.1").parse::<IpAddr>().ok()?;
                let port = b.host_port?.parse::<u16>().ok().filter(|p| *p != 0)?;
                Some(PublishedPort { container, host: SocketAddr::new(ip, port) })
            }))
        })
        .flatten()
        .collect();
    ports.sort();
    Observed {
        id: id.to_owned(),
        user: labels.get(LABEL_USER).cloned().unwrap_or_default(),
        runtime_id: found.id.unwrap_or_default(),
        image,
        state: observed_state,
        address,
        ports,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerState;

    fn inspect_with(state: ContainerState) -> ContainerInspectResponse {
        ContainerInspectResponse { id: Some("abc".into()), state: Some(state), ..Default::default() }
    }

    #[test]
    fn states_map_to_the_platforms() {
        let run = ContainerState { status: Some(ContainerStateStatusEnum::RUNNING), ..Default::default() };
        assert_eq!(observed("c", inspect_with(run)).state, ObservedState::Running);
        let exited = ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(137),
            ..Default::default()
        };
        assert_eq!(observed("c", inspect_with(exited)).state, ObservedState::Exited { code: 137 });
        let oom = ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(137),
            oom_killed: Some(true),
            ..Default::default()
        };
        assert_eq!(
            observed("c", inspect_with(oom)).state,
            ObservedState::Failed { reason: "out of memory".into(), code: Some(137) }
        );
        let bad_start = ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            error: Some("executable file not found".into()),
            ..Default::default()
        };
        assert!(matches!(observed("c", inspect_with(bad_start)).state, ObservedState::Failed { .. }));
        let created = ContainerState {
            status: Some(ContainerStateStatusEnum::CREATED),
            error: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(observed("c", inspect_with(created)).state, ObservedState::Created);
    }

    #[test]
    fn server_errors_are_classified() {
        let server = |status_code, message: &str| BollardError::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        assert!(matches!(map_error("x", server(404, "nope")), RuntimeError::NotFound(_)));
        assert!(matches!(map_error("x", server(409, "in use")), RuntimeError::Conflict(_)));
        assert!(matches!(map_error("x", server(400, "bad")), RuntimeError::InvalidSpec(_)));
        assert!(matches!(map_error("x", server(500, "no such container")), RuntimeError::NotFound(_)));
        assert!(matches!(
            map_error("x", server(500, "the container name \"edd-a\" is already in use")),
            RuntimeError::Conflict(_)
        ));
        assert!(matches!(map_error("x", server(500, "boom")), RuntimeError::Other(_)));
        assert!(matches!(map_error("x", BollardError::SocketNotFoundError("/x".into())), RuntimeError::Unavailable(_)));
    }

    #[test]
    fn the_body_limits_and_publishes_locally() {
        let spec = ContainerSpec {
            id: "c1".into(),
            user: "u".into(),
            image: "localhost/edd/base:1".into(),
            command: None,
            cpu_millis: 250,
            memory_bytes: 64 << 20,
            volume_path: Some("/data".into()),
            ports: vec![80],
        };
        let body = serde_json::to_value(PodmanRuntime::create_body(&spec)).unwrap();
        assert_eq!(body["HostConfig"]["NanoCpus"], 250_000_000);
        assert_eq!(body["HostConfig"]["Memory"], 64 << 20);
        assert_eq!(body["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"], "127.0.0.1");
        assert_eq!(body["HostConfig"]["Mounts"][0]["Source"], "edd-c1");
        assert_eq!(body["ExposedPorts"]["80/tcp"], serde_json::json!({}));
        assert_eq!(body["Labels"]["edd.container"], "c1");
    }
}
