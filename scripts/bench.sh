#!/usr/bin/env bash
# `make bench`: release builds, a private broker and registry, then each
# stage's throughput next to a baseline measured in the same run.
# The last line of each stage is the one to record in docs/performance.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$GALE_ROOT"

ensure_rust
ensure_tansu
ensure_python
log "building release binaries"
cargo build --release --workspace --bins --quiet

RUN=$(mktemp -d "${TMPDIR:-/tmp}/gale-bench.XXXXXX")
export GALE_TEST_LOGS="$RUN/logs"
trap 'stop_stack "$RUN"' EXIT
start_stack "$RUN" "$GALE_ROOT/target/release"
log "broker $GALE_KAFKA_BOOTSTRAP, registry $GALE_REGISTRY_URL; $(nproc) cores; logs in $RUN/logs"

RECORDS="${GALE_BENCH_RECORDS:-200000}"
# Offered rates (readings/s) and seconds per rate of the end-to-end run.
RATES="${GALE_BENCH_RATES:-2000,5000,8000}"
SECONDS_PER_RATE="${GALE_BENCH_SECONDS:-60}"
# Sinks first, then the SCADA backfill into the lake, validate last: its
# line ends the output, as docs/performance.md expects.
target/release/gale-bench sinks --records "$RECORDS"
target/release/gale-bench backfill
target/release/gale-bench enrich --records "$RECORDS"
target/release/gale-bench detect-faults --records "$RECORDS"
target/release/gale-bench aggregate --records "$RECORDS"
target/release/gale-bench pipeline --rates "$RATES" --seconds "$SECONDS_PER_RATE"
target/release/gale-bench validate --records "$RECORDS"
