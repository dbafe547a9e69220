#!/usr/bin/env bash
# Gateway vs nginx: the same static backend behind our gateway and behind nginx (reverse proxy with
# upstream keep-alive), on the same machine, in the same run, loaded by Debian's wrk.
#
#   deploy/bench/gateway-vs-nginx.sh            # full run: DURATION=10s per wrk run
#   DURATION=5s deploy/bench/gateway-vs-nginx.sh
#
# Environment:
#   DURATION      wrk -d per measured run (default 10s)
#   WARMUP        wrk -d of the unmeasured warm-up run before each measured one (default 2s; 0 = none)
#   ROUNDS        measured runs per scenario and proxy; the table shows medians (default 1)
#   THREADS       wrk -t (default 2);  CONNECTIONS  wrk -c (default 64)
#   PORT_BASE     backend PORT_BASE, gateway +1, nginx +2, gateway https +3, nginx https +4 (default 18181)
#   GATEWAY_ARGS  extra arguments for gateway-bench (e.g. "--workers 1")
#   KEEP_TMP=1    keep the temporary directory (configs, logs, raw wrk output)
#
# Idempotent: installs nginx, wrk, curl (and openssl for TLS) with apt only when missing, writes
# nginx's configuration into a temporary directory (nothing under /etc/nginx is read or touched),
# and stops what it started, by pid, on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-1}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"
PORT_BASE="${PORT_BASE:-18181}"
GATEWAY_ARGS="${GATEWAY_ARGS:-}"
HOST_HEADER="bench.localhost"
START_DEADLINE_SECS=30

BACKEND_PORT=$PORT_BASE
GATEWAY_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
GATEWAY_TLS_PORT=$((PORT_BASE + 3))
NGINX_TLS_PORT=$((PORT_BASE + 4))

# ---------------------------------------------------------------------------------------------
# tools

pkgs=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx)
command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
command -v curl >/dev/null 2>&1 || pkgs+=(curl)
command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
if ((${#pkgs[@]})); then
    apt_install "${pkgs[@]}"
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
ensure_cargo

log "cargo build --release -p edd-it --bin static-backend --bin gateway-bench"
cargo build --release -p edd-it --bin static-backend --bin gateway-bench
TARGET_DIR="$(cargo metadata --no-deps --format-version 1 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-${CARGO_TARGET_DIR:-$EDD_REPO/target}}"
BIN="$TARGET_DIR/release"
[[ -x "$BIN/static-backend" && -x "$BIN/gateway-bench" ]] || die "built binaries not found in $BIN"

# ---------------------------------------------------------------------------------------------
# processes: started in the background, stopped by pid on exit

TMP="$(mktemp -d -t edd-gateway-bench.XXXXXX)"
PIDS=()
# Set by start (PID_<name>); wait_http reads them indirectly.
# shellcheck disable=SC2034
PID_backend="" PID_gateway="" PID_nginx=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP_TMP:-}" == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in "$BACKEND_PORT" "$GATEWAY_PORT" "$NGINX_PORT" "$GATEWAY_TLS_PORT" "$NGINX_TLS_PORT"; do
    if tcp_open 127.0.0.1 "$port"; then
        die "127.0.0.1:$port is already in use (set PORT_BASE to move the benchmark's ports)"
    fi
done

# start NAME CMD...: runs CMD in the background (output in $TMP/NAME.out), remembers its pid.
start() {
    local name="$1"
    shift
    "$@" >"$TMP/$name.out" 2>&1 &
    PIDS+=("$!")
    printf -v "PID_$name" '%s' "$!"
}

# wait_http NAME URL [CURL_ARGS...]: polls URL until it answers 200, until a deadline; fails early
# if the process NAME started has exited.
wait_http() {
    local name="$1" url="$2"
    shift 2
    local pid_var="PID_$name" deadline=$((SECONDS + START_DEADLINE_SECS))
    while ((SECONDS < deadline)); do
        if curl -fsS -o /dev/null --max-time 2 -H "Host: $HOST_HEADER" "$@" "$url" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "${!pid_var}" 2>/dev/null; then
            cat "$TMP/$name.out" >&2 || true
            die "$name exited before answering $url"
        fi
        sleep 0.1
    done
    cat "$TMP/$name.out" >&2 || true
    die "$name did not answer $url within ${START_DEADLINE_SECS}s"
}

# ---------------------------------------------------------------------------------------------
# TLS: a self-signed certificate for the benchmark host, used by both proxies

TLS=""
if command -v openssl >/dev/null 2>&1; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$HOST_HEADER" -addext "subjectAltName=DNS:$HOST_HEADER" \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1 && TLS=1
fi
[[ -n "$TLS" ]] || warn "no openssl: TLS rows skipped"
# Our side of TLS: gateway-bench's --https-addr/--cert/--key (edd_gateway's TLS listener). A
# gateway-bench without them leaves the gateway's HTTPS cells "n/a".
GATEWAY_TLS=""
if [[ -n "$TLS" ]] && "$BIN/gateway-bench" --help 2>/dev/null | grep -q -- '--https-addr'; then
    GATEWAY_TLS=1
fi

# ---------------------------------------------------------------------------------------------
# nginx configuration: a reverse proxy with upstream keep-alive, everything in $TMP

mkdir -p "$TMP/nginx"
nginx_tls_server=""
if [[ -n "$TLS" ]]; then
    nginx_tls_server="
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        server_name $HOST_HEADER;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { include $TMP/nginx/proxy.conf; }
    }"
fi
cat >"$TMP/nginx/proxy.conf" <<EOF
proxy_pass http://backend;
proxy_http_version 1.1;
proxy_set_header Connection "";
# What our gateway forwards too: the client's Host and X-Forwarded-*.
proxy_set_header Host \$host;
proxy_set_header X-Forwarded-For \$remote_addr;
proxy_set_header X-Forwarded-Proto \$scheme;
proxy_set_header X-Forwarded-Host \$host;
EOF
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log $TMP/nginx/access.log;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;

    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        server_name $HOST_HEADER;
        location / { include $TMP/nginx/proxy.conf; }
    }$nginx_tls_server
}
EOF
"$NGINX" -t -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx-test.out" 2>&1 ||
    {
        cat "$TMP/nginx-test.out" >&2
        die "nginx rejected the generated configuration"
    }

# ---------------------------------------------------------------------------------------------
# start: backend, gateway, nginx

log "starting static-backend on :$BACKEND_PORT, gateway-bench on :$GATEWAY_PORT, nginx on :$NGINX_PORT"
start backend "$BIN/static-backend" --addr "127.0.0.1:$BACKEND_PORT"
wait_http backend "http://127.0.0.1:$BACKEND_PORT/1k"

gateway_cmd=("$BIN/gateway-bench" --addr "127.0.0.1:$GATEWAY_PORT" --backend "127.0.0.1:$BACKEND_PORT")
if "$BIN/gateway-bench" --help 2>/dev/null | grep -q -- '--access-log'; then
    gateway_cmd+=(--access-log "$TMP/gateway-access.log")
fi
if [[ -n "$GATEWAY_TLS" ]]; then
    gateway_cmd+=(--https-addr "127.0.0.1:$GATEWAY_TLS_PORT" --cert "$TMP/cert.pem" --key "$TMP/key.pem")
fi
# shellcheck disable=SC2206 # GATEWAY_ARGS is split on purpose
gateway_cmd+=($GATEWAY_ARGS)
start gateway "${gateway_cmd[@]}"
start nginx "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf"

wait_http gateway "http://127.0.0.1:$GATEWAY_PORT/1k"
wait_http nginx "http://127.0.0.1:$NGINX_PORT/1k"
if [[ -n "$GATEWAY_TLS" ]]; then
    wait_http gateway "https://127.0.0.1:$GATEWAY_TLS_PORT/1k" -k
fi
if [[ -n "$TLS" ]]; then
    wait_http nginx "https://127.0.0.1:$NGINX_TLS_PORT/1k" -k
fi

# Both must really proxy the backend: same status and body length.
for url in "http://127.0.0.1:$GATEWAY_PORT/1m" "http://127.0.0.1:$NGINX_PORT/1m"; do
    size="$(curl -fsS -o /dev/null -w '%{size_download}' -H "Host: $HOST_HEADER" "$url")"
    [[ "$size" == $((1024 * 1024)) ]] || die "$url answered $size bytes, not 1 MiB"
done

# ---------------------------------------------------------------------------------------------
# wrk runs and parsing

# to_ms VALUE: wrk latency (e.g. 812.00us, 1.20ms, 2.00s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# to_mib VALUE: wrk's Transfer/sec (e.g. 55.21MB, 1.02GB; binary units) in MiB.
to_mib() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "B") n /= 1048576; else if (u == "KB") n /= 1024; else if (u == "GB") n *= 1024; else if (u == "TB") n *= 1048576
        printf "%.2f", n }'
}

CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

# proxy_pids PROXY: the processes doing a proxy's work (nginx: its workers).
proxy_pids() {
    if [[ "$1" == gateway ]]; then
        echo "$PID_gateway"
    else
        pgrep -P "$PID_nginx" | tr '\n' ' '
    fi
}

# cpu_ticks PID...: user + system CPU time of the processes, in clock ticks.
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# run_wrk PROXY SCENARIO URL ROUND: one measured wrk run; appends "scenario proxy rps mib p50 p99 errors
# cpu-µs-per-request" to $TMP/results and keeps the raw output.
run_wrk() {
    local proxy="$1" scenario="$2" url="$3" round="$4"
    local out="$TMP/wrk-$scenario-$proxy-$round.txt"
    if [[ "$WARMUP" != 0 && "$WARMUP" != 0s ]]; then
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -H "Host: $HOST_HEADER" "$url" >/dev/null 2>&1 || true
    fi
    log "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency  $proxy  $url"
    local pids cpu0 cpu1
    # shellcheck disable=SC2207 # pids are numbers
    pids=($(proxy_pids "$proxy"))
    cpu0="$(cpu_ticks "${pids[@]}")"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $HOST_HEADER" "$url" >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
    cpu1="$(cpu_ticks "${pids[@]}")"
    local requests cpu_per_req
    requests="$(awk '/requests in/ {print $1}' "$out")"
    cpu_per_req="$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="${requests:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print 0 }')"
    local rps transfer p50 p99 non2xx sockerr
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    transfer="$(awk '/^Transfer\/sec:/ {print $2}' "$out")"
    p50="$(awk '$1 == "50%" {print $2}' "$out")"
    p99="$(awk '$1 == "99%" {print $2}' "$out")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")"
    sockerr="$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")"
    [[ -n "$rps" && -n "$transfer" && -n "$p99" ]] || die "cannot parse wrk output: $(cat "$out")"
    local errors=$((${non2xx:-0} + ${sockerr:-0}))
    ((errors == 0)) || warn "$proxy $scenario: $errors non-2xx answers or socket errors (see $out)"
    printf '%s %s %s %s %s %s %s %s\n' "$scenario" "$proxy" "$rps" "$(to_mib "$transfer")" \
        "$(to_ms "$p50")" "$(to_ms "$p99")" "$errors" "$cpu_per_req" >>"$TMP/results"
}

# The scenarios: NAME URL-PATH and which listener (plain or tls).
SCENARIOS=("1k plain /1k" "1m plain /1m")
[[ -n "$TLS" ]] && SCENARIOS+=("tls-1k tls /1k")

url_for() { # PROXY TRANSPORT PATH
    local port
    case "$1-$2" in
    gateway-plain) port=$GATEWAY_PORT ;;
    nginx-plain) port=$NGINX_PORT ;;
    gateway-tls) port=$GATEWAY_TLS_PORT ;;
    nginx-tls) port=$NGINX_TLS_PORT ;;
    esac
    if [[ "$2" == tls ]]; then
        printf 'https://127.0.0.1:%s%s' "$port" "$3"
    else
        printf 'http://127.0.0.1:%s%s' "$port" "$3"
    fi
}

: >"$TMP/results"
turn=0
for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${SCENARIOS[@]}"; do
        read -r scenario transport path <<<"$s"
        # Alternate which proxy goes first, so neither always gets the warmer (or cooler) machine.
        if ((turn % 2 == 0)); then order=(gateway nginx); else order=(nginx gateway); fi
        turn=$((turn + 1))
        for proxy in "${order[@]}"; do
            if [[ "$proxy-$transport" == gateway-tls && -z "$GATEWAY_TLS" ]]; then
                continue # a gateway-bench without --https-addr: its HTTPS cells stay "n/a"
            fi
            run_wrk "$proxy" "$scenario" "$(url_for "$proxy" "$transport" "$path")" "$round"
        done
    done
done

# ---------------------------------------------------------------------------------------------
# report: medians over rounds, ratios gateway / nginx

# median SCENARIO PROXY FIELD: median of a results column (3 = req/s, 4 = MiB/s, 5 = p50, 6 = p99,
# 8 = proxy CPU µs per request).
median() {
    awk -v s="$1" -v p="$2" -v f="$3" '$1 == s && $2 == p {print $f}' "$TMP/results" | sort -g |
        awk '{v[NR] = $1} END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
errors_of() { awk -v s="$1" -v p="$2" '$1 == s && $2 == p {e += $7} END {print e + 0}' "$TMP/results"; }
ratio() { [[ -n "$1" && -n "$2" ]] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }' || echo "n/a"; }
fmt() { [[ -n "$1" ]] && awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }' || echo "n/a"; }
# met VALUE NGINX higher|lower: "yes" / "**no**" for goal "at least nginx's" or "at most nginx's".
met() {
    [[ -n "$1" && -n "$2" ]] || {
        echo "n/a"
        return
    }
    awk -v a="$1" -v b="$2" -v dir="$3" 'BEGIN { ok = (dir == "higher") ? (a >= b) : (a <= b); print ok ? "yes" : "**no**" }'
}

# row LABEL SCENARIO FIELD DECIMALS GOAL DIRECTION
row() {
    local g n
    g="$(median "$2" gateway "$3")"
    n="$(median "$2" nginx "$3")"
    local verdict=""
    [[ -n "$6" ]] && verdict="$(met "$g" "$n" "$6")"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(fmt "$g" "$4")" "$(fmt "$n" "$4")" "$(ratio "$g" "$n")" "$5" "$verdict"
}

cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H 'Host: $HOST_HEADER'; $ROUNDS round(s), medians;" \
    "$(nproc) cores (${cpu:-unknown CPU}); $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
echo
echo "| measure | gateway | nginx | ratio | goal | met? |"
echo "|---|---:|---:|---:|---|---|"
row "1 KiB, requests/s" 1k 3 0 "≥ 1.0×" higher
row "1 KiB, p50 latency (ms)" 1k 5 2 "" ""
row "1 KiB, p99 latency (ms)" 1k 6 2 "≤ nginx" lower
row "1 KiB, proxy CPU per request (µs)" 1k 8 1 "" ""
row "1 MiB, MiB/s" 1m 4 1 "≥ 1.0×" higher
row "1 MiB, p99 latency (ms)" 1m 6 2 "" ""
row "1 MiB, proxy CPU per response (µs)" 1m 8 0 "" ""
if [[ -n "$TLS" ]]; then
    row "HTTPS 1 KiB keep-alive, requests/s" tls-1k 3 0 "report" ""
    row "HTTPS 1 KiB keep-alive, p99 latency (ms)" tls-1k 6 2 "report" ""
    row "HTTPS 1 KiB keep-alive, proxy CPU per request (µs)" tls-1k 8 1 "" ""
fi
total_errors=0
for s in 1k 1m tls-1k; do
    for p in gateway nginx; do
        total_errors=$((total_errors + $(errors_of "$s" "$p")))
    done
done
echo
if ((total_errors > 0)); then
    echo "WARNING: $total_errors non-2xx answers or socket errors over the runs (raw wrk output: KEEP_TMP=1)"
fi
[[ -n "$TLS" && -z "$GATEWAY_TLS" ]] && echo "(gateway HTTPS: n/a — this gateway-bench has no --https-addr)"
true
