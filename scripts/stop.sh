#!/usr/bin/env bash
# `make stop`: stops what `make demo` started (services first, broker last).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DEMO="$GALE_HOME/demo"
kill_pidfile "$DEMO/status-page.pid"
for name in ingest validate enrich detect-faults aggregate rollup-site rollup-fleet pg-sink archive; do
  kill_pidfile "$DEMO/$name.pid"
done
stop_stack "$DEMO"
log "demo stack stopped (data kept in $DEMO until the next make demo)"
