#!/usr/bin/env bash
# `make test`: builds everything, starts a private broker (Tansu) and the dev
# schema registry, finds or starts Postgres, and runs every test against them.
# Set GALE_KAFKA_BOOTSTRAP / GALE_REGISTRY_URL / DATABASE_URL to use your own.
# Arguments are passed to the test binaries (e.g. a test name filter).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$GALE_ROOT"

ensure_rust
ensure_tansu
ensure_python
ensure_ops_tools

log "checking formatting"
cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
log "building"
cargo build --workspace --bins --quiet

RUN=$(mktemp -d "${TMPDIR:-/tmp}/gale-test.XXXXXX")
export GALE_TEST_LOGS="$RUN/logs"
trap 'stop_stack "$RUN"' EXIT
start_stack "$RUN" "$GALE_ROOT/target/debug"
log "broker $GALE_KAFKA_BOOTSTRAP, registry $GALE_REGISTRY_URL, service logs in $GALE_TEST_LOGS"

cargo test --workspace --quiet --no-fail-fast -- "$@"
log "all tests passed"
