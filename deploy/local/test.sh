#!/usr/bin/env bash
# Runs the whole Edd Cloud test suite against real NATS and PostgreSQL (set up as for up.sh).
# Idempotent. Extra arguments go to the test runner (cargo nextest run, else cargo test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

ensure_all

# The generated API documents must pass the official parsers, not only our own tests.
ensure_node_tools
validate_docs
# The API contract test drives every running service with schemathesis (it/tests/suite/api_contract.rs).
ensure_schemathesis

# The CLI's end-to-end test runs the `edd` binary; `cargo test` builds only test targets.
log "cargo build -p edd --bin edd"
cargo build -p edd --bin edd

if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run --workspace --no-fail-fast $*"
    cargo nextest run --workspace --no-fail-fast "$@"
else
    log "cargo-nextest not installed; cargo test --workspace --no-fail-fast $*"
    cargo test --workspace --no-fail-fast "$@"
fi
