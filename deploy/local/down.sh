#!/usr/bin/env bash
# Stops the NATS server and the podman service that up.sh/test.sh started (by .edd/nats.pid and
# .edd/podman/podman.pid). Keeps NATS' data in .edd/nats and podman's containers and images.
# Never touches PostgreSQL: the system server keeps running and the edd role stays.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

stop_nats
stop_podman
log "PostgreSQL left as it is"
