#!/usr/bin/env bash
# `make test`: builds everything, starts a private broker (Tansu) and the dev
# schema registry, finds or starts Postgres, and runs every test against them.
# Set GALE_KAFKA_BOOTSTRAP / GALE_REGISTRY_URL / DATABASE_URL to use your own.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$GALE_ROOT"

ensure_rust
ensure_tansu
ensure_python

log "building"
cargo build --workspace --bins --quiet

RUN=$(mktemp -d "${TMPDIR:-/tmp}/gale-test.XXXXXX")
export GALE_TEST_LOGS="$RUN/logs"
mkdir -p "$GALE_TEST_LOGS"
cleanup() {
  kill_pidfile "$RUN/registry.pid"
  kill_pidfile "$RUN/tansu/tansu.pid"
  stop_private_postgres
}
trap cleanup EXIT

if [ -z "${GALE_KAFKA_BOOTSTRAP:-}" ]; then
  port=$(free_port)
  start_tansu "$RUN/tansu" "$port" memory
  export GALE_KAFKA_BOOTSTRAP="127.0.0.1:$port"
fi
ensure_postgres
if [ -z "${GALE_REGISTRY_URL:-}" ]; then
  port=$(free_port)
  start_bg registry "$RUN" env GALE_SERVER__LISTEN="127.0.0.1:$port" \
    GALE_SERVER__DATA_FILE="$RUN/registry.json" target/debug/gale-registry
  wait_for_http "http://127.0.0.1:$port/subjects" 30 || die "registry did not start"
  export GALE_REGISTRY_URL="http://127.0.0.1:$port"
fi
log "broker $GALE_KAFKA_BOOTSTRAP, registry $GALE_REGISTRY_URL, logs in $GALE_TEST_LOGS"

cargo test --workspace --quiet -- "$@"
log "all tests passed"
