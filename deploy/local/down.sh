#!/usr/bin/env bash
# Stops the NATS server that up.sh/test.sh started (by .edd/nats.pid). Keeps its data in .edd/nats.
# Never touches PostgreSQL: the system server keeps running and the edd role stays.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

stop_nats
log "PostgreSQL left as it is"
