# Helpers for the cluster benchmarks (sourced): start `tern serve` nodes on PostgreSQL, and stop
# exactly the processes this script started, by pid — the machine may be shared, so nothing is
# matched by name. Each run uses a schema, data directories and ports of its own.
B=${TERN_BIN:-$(dirname "$0")/../target/release/tern}
PG=${TERN_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
NATS=${TERN_TEST_NATS:-nats://127.0.0.1:4222}
SCHEMA=tern_clbench_$$
WORK=$(mktemp -d)
# Ports: a block of 30 chosen from the pid, so two runs at once do not collide.
BASE=$((20000 + ($$ % 1000) * 30))
export TERN_AUTH__TOKEN_SECRET=0123456789abcdef0123456789abcdef TERN_STORE__POSTGRES_SCHEMA=$SCHEMA RUST_LOG=warn
# The NATS subjects of this run only (clusters sharing one NATS server are told apart by name).
export TERN_CLUSTER__NAME=$SCHEMA
PIDS=()

# node ID EXTRA...: starts node ID (HTTP on $BASE+10*ID, TCP one above) and records its pid.
node() {
  local id=$1; shift
  $B serve --store "$PG" --node-id "$id" --http "127.0.0.1:$(http_port "$id")" --tcp "127.0.0.1:$(tcp_port "$id")" \
    --data-dir "$WORK/node$id" "$@" > "$WORK/node$id.log" 2>&1 &
  PIDS+=($!)
}
http_port() { echo $((BASE + 10 * $1)); }
tcp_port() { echo $((BASE + 10 * $1 + 1)); }

# fresh: stops the nodes this script started and empties its schema.
fresh() {
  if [ ${#PIDS[@]} -gt 0 ]; then
    kill "${PIDS[@]}" 2>/dev/null
    wait "${PIDS[@]}" 2>/dev/null
  fi
  PIDS=()
  psql "$PG" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" 2>/dev/null
}

trap 'fresh; rm -rf "$WORK"' EXIT
