#!/usr/bin/env bash
# Creates Gale's topics; idempotent (existing topics are left alone). Used by
# the Helm chart's hook Job and by compose's `topics` job.
# TOPICS_FILE lines: `name config=value[,config=value...]` (# comments); a
# list value keeps its commas (cleanup.policy=compact,delete).
# BOOTSTRAP, PARTITIONS, REPLICATION_FACTOR; SECURITY_PROTOCOL (PLAINTEXT,
# SSL, SASL_PLAINTEXT, SASL_SSL) with SASL_MECHANISM, SASL_USERNAME,
# SASL_PASSWORD and SSL_CA_FILE (PEM) as needed.
set -euo pipefail
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
TOPICS_FILE=${TOPICS_FILE:-/gale/topics.txt}
PROTOCOL=${SECURITY_PROTOCOL:-PLAINTEXT}
extra=()
if [ "$PROTOCOL" != PLAINTEXT ]; then
  props=$(mktemp /tmp/client-XXXXXX.properties)
  echo "security.protocol=$PROTOCOL" >"$props"
  case "$PROTOCOL" in SASL_*)
    module=org.apache.kafka.common.security.scram.ScramLoginModule
    [ "${SASL_MECHANISM:-PLAIN}" = PLAIN ] && module=org.apache.kafka.common.security.plain.PlainLoginModule
    {
      echo "sasl.mechanism=${SASL_MECHANISM:-PLAIN}"
      echo "sasl.jaas.config=$module required username=\"${SASL_USERNAME:-}\" password=\"${SASL_PASSWORD:-}\";"
    } >>"$props"
  esac
  if [ -n "${SSL_CA_FILE:-}" ]; then
    printf 'ssl.truststore.type=PEM\nssl.truststore.location=%s\n' "$SSL_CA_FILE" >>"$props"
  fi
  extra=(--command-config "$props")
fi
for attempt in $(seq 1 60); do
  if "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" "${extra[@]}" --list >/dev/null 2>&1; then break; fi
  if [ "$attempt" = 60 ]; then echo "broker $BOOTSTRAP unreachable" >&2; exit 1; fi
  sleep 2
done
while read -r name configs; do
  case "$name" in ''|'#'*) continue ;; esac
  args=(--create --if-not-exists --topic "$name" --partitions "$PARTITIONS" --replication-factor "$REPLICATION_FACTOR")
  # Configs are comma-separated; a piece without `=` continues the value
  # before it (cleanup.policy=compact,delete).
  IFS=',' read -ra pieces <<<"${configs:-}"
  kvs=()
  for piece in "${pieces[@]}"; do
    [ -z "$piece" ] && continue
    if [[ "$piece" == *=* || ${#kvs[@]} -eq 0 ]]; then kvs+=("$piece"); else kvs[-1]+=",$piece"; fi
  done
  for kv in "${kvs[@]}"; do args+=(--config "$kv"); done
  "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" "${extra[@]}" "${args[@]}"
done <"$TOPICS_FILE"
echo "topics ready"
