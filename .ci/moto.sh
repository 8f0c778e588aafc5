#!/usr/bin/env bash
# Runs the read-side, purge and retention tests against moto (PyPI `moto[server]`), an S3 implementation with
# bucket versioning, which neither s3s-fs nor Garage has: a purge must remove every version
# and delete marker, not just add a marker (issue #12). TEST_S3_EXPECT_VERSIONING=1 makes the
# versioned-purge test fail if versioning did not take effect, so it cannot pass vacuously.
# moto does not enforce X-Amz-Expires on pre-signed URLs (s3s-fs, Garage and AWS do), so the
# download-link expiry test is skipped here; it runs in the s3s-fs and Garage suites.
# It also runs the job queue's SQS tests (#19) against moto's SQS.
# Usage: bash .ci/moto.sh [extra test-harness args, e.g. --nocapture]
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/venv.sh
ci_venv 'moto[server]'
"$venv/bin/python" -c 'import moto, flask' # the [server] extra is there

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; wait $moto_pid 2>/dev/null || true; rm -f "$log"' EXIT
up=false
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/moto-api/" > /dev/null 2>&1; then up=true; break; fi
  sleep 0.2
done
$up || { echo "moto did not start"; cat "$log"; exit 1; }

export TEST_S3_ENDPOINT="http://127.0.0.1:$port"
export TEST_S3_ACCESS_KEY=moto-test-access-key
export TEST_S3_SECRET_KEY=moto-test-secret-key
export TEST_S3_REGION=us-east-1
export TEST_S3_EXPECT_VERSIONING=1
# The job queue on SQS (moto serves it on the same port): the tests marked #[ignore] because
# plain `cargo test` has no SQS server.
export TEST_SQS_ENDPOINT="http://127.0.0.1:$port"
cargo test --locked --lib jobs::queue::sqs -- --ignored "$@"
# Two gateway processes over one bucket and one queue: the holder of a job is killed and the
# other finishes it.
cargo test --locked --test api -- --ignored jobs_sqs:: "$@"
# retention:: checks that the retention sweep leaves no version or delete marker either.
cargo test --locked --test api -- read_side:: purge:: retention:: \
  --skip download_url_serves_the_exact_bytes_and_expires_after_its_ttl "$@"
