//! The compute service's podman runtime against the real podman service that `deploy/local/test.sh`
//! starts (`EDD_PODMAN_SOCKET`) and the base image it builds (`EDD_BASE_IMAGE`): a container's life
//! (create, start, running with its limits, ports and volume, stop, remove, nothing left by label),
//! a process killed behind the runtime's back, and the errors. Each test has its own owner label and
//! container ids, and removes what it made even when it fails.

use std::collections::BTreeMap;
use std::time::Duration;

use edd_compute::runtime::podman::{PodmanRuntime, SOCKET_ENV};
use edd_compute::runtime::{ContainerSpec, ObservedState, Runtime, RuntimeError, VolumePolicy, LABEL_USER};
use edd_it::eventually;
use tokio::time::Instant;

/// Each runtime call's deadline in these tests (podman answers in milliseconds when well).
const CALL: Duration = Duration::from_secs(30);

fn deadline() -> Instant {
    Instant::now() + CALL
}

fn runtime() -> PodmanRuntime {
    let socket = std::env::var(SOCKET_ENV).unwrap_or_else(|_| {
        panic!("{SOCKET_ENV} is not set: run the tests with deploy/local/test.sh, which installs and starts podman")
    });
    assert!(
        std::path::Path::new(&socket).exists(),
        "{SOCKET_ENV}={socket} does not exist: run deploy/local/test.sh, which starts the podman service"
    );
    PodmanRuntime::connect(&socket).unwrap()
}

fn base_image() -> String {
    std::env::var("EDD_BASE_IMAGE").unwrap_or_else(|_| {
        panic!("EDD_BASE_IMAGE is not set: run the tests with deploy/local/test.sh, which builds it")
    })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

fn spec(user: &str, command: &str) -> ContainerSpec {
    ContainerSpec {
        id: unique("t"),
        user: user.to_owned(),
        image: base_image(),
        command: Some(vec!["/bin/sh".into(), "-c".into(), command.into()]),
        cpu_millis: 500,
        memory_bytes: 64 << 20,
        volume_path: None,
        ports: vec![],
    }
}

fn owned_by(user: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_USER.to_owned(), user.to_owned())])
}

/// Removes every container (and volume) of `user` when dropped, so a failing test leaves nothing.
struct Cleanup {
    user: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let user = self.user.clone();
        // Drop cannot await; a thread of its own with a runtime of its own can.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let podman = runtime();
                for c in podman.list(&owned_by(&user), deadline()).await.unwrap_or_default() {
                    let _ = podman.remove(&c.id, VolumePolicy::Delete, deadline()).await;
                }
            });
        });
        let _ = done.join();
    }
}

async fn wait_state(
    podman: &PodmanRuntime,
    id: &str,
    what: &str,
    want: impl Fn(&ObservedState) -> bool,
) -> edd_compute::runtime::Observed {
    eventually(Duration::from_secs(30), what, || async {
        let seen = podman.inspect(id, deadline()).await?;
        Ok(want(&seen.state).then_some(seen))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn compute_runtime_container_lifecycle_leaves_nothing() {
    let podman = runtime();
    podman.ping(deadline()).await.unwrap();
    let user = unique("u");
    let _cleanup = Cleanup { user: user.clone() };
    let mut c = spec(&user, "echo \"hello from $HOSTNAME\"; echo kept >/data/mark; exec sleep 600");
    c.volume_path = Some("/data".into());
    c.ports = vec![8080];

    let t0 = std::time::Instant::now();
    podman.create(&c, deadline()).await.unwrap();
    let created = t0.elapsed();
    podman.start(&c.id, deadline()).await.unwrap();
    let seen = wait_state(&podman, &c.id, "the container running", |s| *s == ObservedState::Running).await;
    println!("compute_runtime: create {created:?}, create → running {:?}", t0.elapsed());

    assert_eq!(seen.id, c.id);
    assert_eq!(seen.user, user);
    assert_eq!(seen.image, c.image);
    assert!(!seen.runtime_id.is_empty());
    assert!(seen.address.is_some(), "a running container has an address: {seen:?}");
    assert_eq!(seen.ports.len(), 1, "{seen:?}");
    assert_eq!(seen.ports[0].container, 8080);
    assert!(seen.ports[0].host.ip().is_loopback(), "published on loopback only: {seen:?}");
    assert_ne!(seen.ports[0].host.port(), 0);

    eventually(Duration::from_secs(10), "its line in the logs", || async {
        let logs = podman.logs(&c.id, 10, deadline()).await?;
        Ok(logs.contains("hello from ").then_some(()))
    })
    .await
    .unwrap();

    // Listed by its owner's label, and only under it.
    let listed = podman.list(&owned_by(&user), deadline()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, c.id);
    assert_eq!(listed[0].state, ObservedState::Running);
    assert!(podman.list(&owned_by(&unique("nobody")), deadline()).await.unwrap().is_empty());

    // A second create of the same id is a conflict, not a second container.
    assert!(matches!(podman.create(&c, deadline()).await, Err(RuntimeError::Conflict(_))));
    // Starting what runs is fine.
    podman.start(&c.id, deadline()).await.unwrap();

    let t1 = std::time::Instant::now();
    podman.stop(&c.id, Duration::from_secs(5), deadline()).await.unwrap();
    let stop_call = t1.elapsed();
    let stopped =
        wait_state(&podman, &c.id, "the container stopped", |s| matches!(s, ObservedState::Exited { .. })).await;
    println!("compute_runtime: stop call {stop_call:?}, stopped observed {:?} ({:?})", t1.elapsed(), stopped.state);
    assert!(stopped.ports.is_empty() && stopped.address.is_none(), "{stopped:?}");
    // Stopping what is stopped is fine.
    podman.stop(&c.id, Duration::from_secs(5), deadline()).await.unwrap();

    // A recreate (spec change) keeps the volume: the file the first one wrote is still there.
    podman.remove(&c.id, VolumePolicy::Keep, deadline()).await.unwrap();
    c.command = Some(vec!["/bin/sh".into(), "-c".into(), "cat /data/mark; exec sleep 600".into()]);
    podman.create(&c, deadline()).await.unwrap();
    podman.start(&c.id, deadline()).await.unwrap();
    eventually(Duration::from_secs(10), "the kept volume's file in the logs", || async {
        let logs = podman.logs(&c.id, 10, deadline()).await?;
        Ok(logs.contains("kept").then_some(()))
    })
    .await
    .unwrap();

    // Removed with its volume: nothing of it is left, and removing again is fine.
    podman.remove(&c.id, VolumePolicy::Delete, deadline()).await.unwrap();
    assert!(matches!(podman.inspect(&c.id, deadline()).await, Err(RuntimeError::NotFound(_))));
    assert!(podman.list(&owned_by(&user), deadline()).await.unwrap().is_empty());
    podman.remove(&c.id, VolumePolicy::Delete, deadline()).await.unwrap();
    // The volume went too: a new container of the same id starts with an empty one.
    c.command = Some(vec!["/bin/sh".into(), "-c".into(), "test -e /data/mark && exit 9; exit 0".into()]);
    podman.create(&c, deadline()).await.unwrap();
    podman.start(&c.id, deadline()).await.unwrap();
    let fresh =
        wait_state(&podman, &c.id, "the fresh container done", |s| matches!(s, ObservedState::Exited { .. })).await;
    assert_eq!(fresh.state, ObservedState::Exited { code: 0 }, "the volume outlived its delete");
    podman.remove(&c.id, VolumePolicy::Delete, deadline()).await.unwrap();
    assert!(podman.list(&owned_by(&user), deadline()).await.unwrap().is_empty());
}

#[tokio::test]
async fn compute_runtime_limits_reach_the_process() {
    let podman = runtime();
    let user = unique("u");
    let _cleanup = Cleanup { user: user.clone() };
    // cgroup v2 and v1 spellings of the memory limit and the CPU quota.
    let c = spec(
        &user,
        "echo mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
         echo cpu=$(cut -d' ' -f1 /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); \
         echo nofile=$(ulimit -n)",
    );
    podman.create(&c, deadline()).await.unwrap();
    podman.start(&c.id, deadline()).await.unwrap();
    let done = wait_state(&podman, &c.id, "the container done", |s| matches!(s, ObservedState::Exited { .. })).await;
    assert_eq!(done.state, ObservedState::Exited { code: 0 });
    let logs = podman.logs(&c.id, 10, deadline()).await.unwrap();
    assert!(logs.contains(&format!("mem={}", 64 << 20)), "memory limit not applied: {logs}");
    // 500 millicpus: half of the default 100 ms period.
    assert!(logs.contains("cpu=50000"), "CPU limit not applied: {logs}");
    assert!(logs.contains("nofile=20000"), "containers.conf ulimits not applied: {logs}");
    podman.remove(&c.id, VolumePolicy::Delete, deadline()).await.unwrap();
}

#[tokio::test]
async fn compute_runtime_process_killed_behind_its_back_is_observed() {
    let podman = runtime();
    let user = unique("u");
    let _cleanup = Cleanup { user: user.clone() };
    let c = spec(&user, "exec sleep 600");
    podman.create(&c, deadline()).await.unwrap();
    podman.start(&c.id, deadline()).await.unwrap();
    wait_state(&podman, &c.id, "the container running", |s| *s == ObservedState::Running).await;

    podman.kill(&c.id, "KILL", deadline()).await.unwrap();
    let seen = wait_state(&podman, &c.id, "the killed container observed", |s| *s != ObservedState::Running).await;
    assert_eq!(seen.state, ObservedState::Exited { code: 137 }, "SIGKILL is 128 + 9");
    let listed = podman.list(&owned_by(&user), deadline()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, ObservedState::Exited { code: 137 });

    // A process that ends on its own is observed with its code.
    let quits = spec(&user, "exit 3");
    podman.create(&quits, deadline()).await.unwrap();
    podman.start(&quits.id, deadline()).await.unwrap();
    let seen = wait_state(&podman, &quits.id, "the quitting container observed", |s| {
        *s != ObservedState::Running && *s != ObservedState::Created
    })
    .await;
    assert_eq!(seen.state, ObservedState::Exited { code: 3 });

    for id in [&c.id, &quits.id] {
        podman.remove(id, VolumePolicy::Delete, deadline()).await.unwrap();
    }
    assert!(podman.list(&owned_by(&user), deadline()).await.unwrap().is_empty());
}

#[tokio::test]
async fn compute_runtime_errors_are_told_apart() {
    let podman = runtime();
    let user = unique("u");
    let _cleanup = Cleanup { user: user.clone() };
    let unknown = unique("none");
    assert!(matches!(podman.inspect(&unknown, deadline()).await, Err(RuntimeError::NotFound(_))));
    assert!(matches!(podman.start(&unknown, deadline()).await, Err(RuntimeError::NotFound(_))));
    assert!(matches!(podman.kill(&unknown, "KILL", deadline()).await, Err(RuntimeError::NotFound(_))));
    podman.remove(&unknown, VolumePolicy::Delete, deadline()).await.unwrap();

    // No image is ever pulled: a missing one is told as such.
    let mut missing = spec(&user, "true");
    missing.image = format!("localhost/edd/{}:1", unique("missing"));
    let err = podman.create(&missing, deadline()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotFound(_)), "{err:?}");

    let mut bad = spec(&user, "true");
    bad.id = "Not/An/Id".into();
    assert!(matches!(podman.create(&bad, deadline()).await, Err(RuntimeError::InvalidSpec(_))));
    assert!(matches!(podman.inspect("Not/An/Id", deadline()).await, Err(RuntimeError::InvalidSpec(_))));

    // A deadline already past is a timeout, not a hang.
    let past = Instant::now();
    assert!(matches!(podman.list(&owned_by(&user), past).await, Err(RuntimeError::Timeout { .. })));

    // No service behind the socket: unavailable.
    let gone = std::env::temp_dir().join(format!("{}.sock", unique("edd-no-podman-")));
    assert!(matches!(PodmanRuntime::connect(&gone), Err(RuntimeError::Unavailable(_))));
    let dir = std::env::temp_dir().join(unique("edd-dead-podman-"));
    std::fs::create_dir_all(&dir).unwrap();
    let dead = dir.join("podman.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap()); // the file stays, nobody listens
    let away = PodmanRuntime::connect(&dead).unwrap();
    let err = away.inspect("c1", deadline()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(podman.list(&owned_by(&user), deadline()).await.unwrap().is_empty());
}
