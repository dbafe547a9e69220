#!/usr/bin/env bash
# Runs the whole Edd Cloud platform locally: NATS (pinned, in .edd/), PostgreSQL (role edd), then `edd up`.
# Idempotent: run it again and it reuses what is already there. Extra arguments go to `edd up`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

ensure_all

log "cargo build --release -p edd"
cargo build --release -p edd

target_dir="${CARGO_TARGET_DIR:-target}"
log "exec $target_dir/release/edd up $*"
exec "$target_dir/release/edd" up "$@"
