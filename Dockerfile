# syntax=docker/dockerfile:1.7
# Gale: every service binary (gale-ingest, gale-validate, gale-enrich,
# gale-detect-faults, gale-aggregate, gale-rollup, gale-archive,
# gale-pg-sink, gale-registry) and the operator CLI `gale` in one image.
# Pick the program with the container's command, e.g. `gale-validate` or
# `gale db migrate`.
#
#   docker build -t gale:dev .
#
# Stages: `chef` (the pinned toolchain and cargo-chef), `planner` (the
# dependency recipe, which changes only with Cargo.toml/Cargo.lock), `build`
# (dependencies compiled in their own cached layer, then the workspace) and
# the runtime stage (Debian slim, no compiler, no sources, no secrets).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
# librdkafka is built from source by rdkafka-sys (ssl, zstd): it needs a C
# toolchain, cmake, perl and the OpenSSL/zlib headers.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake perl pkg-config python3 libssl-dev zlib1g-dev libsasl2-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.71
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when the recipe (Cargo.lock) changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins \
      -p gale-ingest -p gale-validate -p gale-enrich -p gale-detect-faults \
      -p gale-aggregate -p gale-rollup -p gale-archive -p gale-pg-sink \
      -p gale-registry -p gale-cli \
 && mkdir -p /out/bin \
 && for b in gale gale-ingest gale-validate gale-enrich gale-detect-faults gale-aggregate \
             gale-rollup gale-archive gale-pg-sink gale-registry; do \
      cp "target/release/$b" /out/bin/; \
    done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gale" \
      org.opencontainers.image.description="Gale: a Kafka-native telemetry pipeline for wind turbines and smart meters" \
      org.opencontainers.image.source="https://github.com/gale-telemetry/gale" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Runtime libraries only; curl serves the compose health checks.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g libsasl2-2 curl tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gale \
 && useradd --system --uid 10001 --gid gale --home-dir /var/lib/gale --shell /usr/sbin/nologin gale \
 && mkdir -p /var/lib/gale /etc/gale \
 && chown gale:gale /var/lib/gale
COPY --from=build /out/bin/ /usr/local/bin/
# The rule presets (validate, detect-faults) and pg-sink's migrations, for
# reference and for `rules_file` overrides; the binaries embed them too.
COPY services/validate/rules/ /usr/share/gale/rules/validate/
COPY services/detect-faults/rules/ /usr/share/gale/rules/detect-faults/
COPY services/pg-sink/migrations/ /usr/share/gale/migrations/
COPY schemas/ /usr/share/gale/schemas/
USER 10001:10001
WORKDIR /var/lib/gale
ENV GALE_HTTP__LISTEN=0.0.0.0:9100 \
    GALE_TELEMETRY__LOG_FORMAT=json
EXPOSE 9100 8080
CMD ["gale", "--help"]
