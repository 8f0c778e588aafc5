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
. .ci/gateway-up.sh
trap 'kill ${gateway_pid:-} 2>/dev/null || true; rm -rf "$data"' EXIT
gateway_up "$data" "$port" AUTH_DISABLED=false CALLER_TOKENS="schemathesis:$hash" RATE_LIMIT_PER_MINUTE=1000000 \
  LISTEN_ADDR=127.0.0.1:$port

echo "-- schemathesis"
"$venv/bin/schemathesis" run openapi/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples 50 \
  --seed 20261125
