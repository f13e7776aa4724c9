#!/usr/bin/env bash
# `make stop`: stops what `make demo` started (services first, broker last).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DEMO="$GALE_HOME/demo"
for name in archive pg-sink validate ingest registry tansu; do
  kill_pidfile "$DEMO/$name.pid"
done
stop_private_postgres
log "demo stack stopped (data kept in $DEMO until the next make demo)"
