# Gale: the two commands that matter are `make demo` and `make test`.
.PHONY: demo stop test bench build fmt lint clean

## Bring up the local stack, run the simulator for about a minute, print a summary.
demo:
	@scripts/demo.sh

## Stop what `make demo` started.
stop:
	@scripts/stop.sh

## Build, start a private broker/registry/Postgres and run every test.
test:
	@scripts/test.sh

## Throughput benchmarks with same-run baselines (see docs/performance.md).
bench:
	@scripts/bench.sh

build:
	cargo build --workspace --bins

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf .gale
