#!/usr/bin/env bash
# Property-based API testing of the running sandbox gateway against openapi/openapi.yaml:
# every response must match the spec (status, content type, schema, headers) and nothing may
# answer 5xx. Authentication is ON, as in production. Needs target/debug/finpass-gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${CI_CACHE:-$HOME/.cache/finpass-gateway-ci}/venv"
if ! "$venv/bin/schemathesis" --version > /dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet schemathesis openapi-spec-validator
fi

echo "-- openapi-spec-validator"
"$venv/bin/openapi-spec-validator" openapi/openapi.yaml

token="ci-schemathesis-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
data=$(mktemp -d)
port=18082
AUTH_DISABLED=false CALLER_TOKENS="schemathesis:$hash" RATE_LIMIT_PER_MINUTE=1000000 \
  LISTEN_ADDR=127.0.0.1:$port ./target/debug/finpass-gateway --sandbox --sandbox-data "$data" > "$data/gateway.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT
up=
for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$port/healthz" > /dev/null; then up=1; break; fi
  kill -0 "$pid" 2> /dev/null || break
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "the sandbox gateway did not come up on port $port; its log:"
  cat "$data/gateway.log"
  exit 1
fi

echo "-- schemathesis"
"$venv/bin/schemathesis" run openapi/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples 50 \
  --seed 20261125
