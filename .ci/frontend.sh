#!/usr/bin/env bash
# Frontends, tested as frontends: headless Chromium (Debian's `chromium`) loads a page served from
# another origin than the gateway's, and that page, holding only a user's JWT, stores and lists
# statements, reads one and checks its SHA-256 with WebCrypto, reads a range, gets a 304, asks
# for a download URL, and meets the refusals (another customer, a purge, a service token on the
# public listener). It runs against the sandbox gateway (debug build) with authentication ON
# and CORS_ALLOWED_ORIGINS naming the page's origin, through the public listener
# (PUBLIC_LISTEN_ADDR; the internal one only answers the health probe here). Prints what the page saw; fails on any
# failed check. The page and its driver: .ci/frontend/.
# Usage: bash .ci/frontend.sh (needs target/debug/finpass-gateway; builds it if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium > /dev/null; then
  echo "installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi
chromium --version

. .ci/venv.sh
# PyJWT + cryptography mint the user's ES256 JWT; websockets speaks the DevTools protocol.
ci_venv PyJWT cryptography websockets

[ -x target/debug/finpass-gateway ] || cargo build --locked

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
public_port=$(free_port)
while [ "$public_port" = "$api_port" ]; do public_port=$(free_port); done
page_port=$(free_port)
while [ "$page_port" = "$api_port" ] || [ "$page_port" = "$public_port" ]; do page_port=$(free_port); done
issuer=https://idp.example.com
audience=finpass-gateway
data=$(mktemp -d)

# A service token too, so the service-token refusal has a real token to refuse.
service_token="ci-frontend-svc-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
service_hash=$(printf '%s' "$service_token" | sha256sum | cut -d' ' -f1)

. .ci/gateway-up.sh
trap 'kill ${gateway_pid:-} 2> /dev/null || true; wait ${gateway_pid:-} 2> /dev/null || true; rm -rf "$data"' EXIT
gateway_up "$data" "$api_port" AUTH_DISABLED=false \
  JWT_PUBLIC_KEY_FILE="$PWD/tests/fixtures/jwt-es256-public.pem" \
  JWT_ISSUER="$issuer" JWT_AUDIENCE="$audience" \
  CALLER_TOKENS="frontend-ci-service:$service_hash" \
  CORS_ALLOWED_ORIGINS="http://127.0.0.1:$page_port" \
  LISTEN_ADDR="127.0.0.1:$api_port" PUBLIC_LISTEN_ADDR="127.0.0.1:$public_port"

status=0
"$py" .ci/frontend/drive.py \
  --gateway "http://127.0.0.1:$public_port" --public-listener \
  --service-token "$service_token" \
  --page-port "$page_port" \
  --client aa_demo_ready \
  --other-client aa_demo_mixed \
  --issuer "$issuer" --audience "$audience" || status=$?
if [ "$status" -ne 0 ]; then
  echo "the gateway's log (last 60 lines):"
  tail -n 60 "$data/gateway.log"
fi
exit "$status"
