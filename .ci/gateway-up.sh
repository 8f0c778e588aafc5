# Sourced by the CI steps that drive a running sandbox gateway (.ci/run's smoke, .ci/schemathesis.sh,
# .ci/frontend.sh): one way to start it and wait for it.
#
# gateway_up DATA_DIR HEALTH_PORT [VAR=value ...]
#   Starts ./target/debug/finpass-gateway --sandbox --sandbox-data DATA_DIR with the given
#   environment, logging to DATA_DIR/gateway.log, and sets gateway_pid. Waits (at most 60 s, polling
#   /healthz on HEALTH_PORT) until it answers; if it exits or never answers, prints its log and
#   exits 1. Callers set their EXIT trap (killing "${gateway_pid:-}") before calling this.
gateway_up() {
  local data=$1 port=$2
  shift 2
  env "$@" ./target/debug/finpass-gateway --sandbox --sandbox-data "$data" > "$data/gateway.log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$port/healthz" > /dev/null; then return 0; fi
    kill -0 "$gateway_pid" 2> /dev/null || break
    sleep 0.1
  done
  echo "the sandbox gateway did not come up on port $port; its log:"
  cat "$data/gateway.log"
  exit 1
}
