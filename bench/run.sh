#!/usr/bin/env bash
# The benchmark of issue #6 (see README "Benchmark" and bench/RESULTS.md).
#   bash bench/run.sh            full run: 64 x 2 MiB, 256 x 100 KiB, 1 x 1 GiB, 64 x 10 MiB
#   bash bench/run.sh --smoke    a tiny run that only proves the benchmark works (CI): debug
#                                builds, which reuse the test build's dependencies
# Extra arguments go to the harness (bench/main.rs), e.g. `--only "1 x 1 GiB"`.
# Runs against the embedded s3s-fs, then against Garage too when it is installed
# (`cargo install garage --locked`; BENCH_GARAGE=0 skips it). Tables go to bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."

# The peers an operator would script instead of the gateway.
need=()
command -v rclone > /dev/null || need+=(rclone)
command -v curl > /dev/null || need+=(curl)
command -v aws > /dev/null || need+=(awscli)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
fi

# The harness needs the sandbox feature; the gateway it measures is built without it (no
# sandbox code), as the Dockerfile ships it (the image adds LTO: the `dist` profile). Built in
# this order so the second build leaves that binary next to the harness. The smoke proves
# only that the benchmark works, so it uses the debug builds: after `cargo test` they compile
# just this crate (Cargo.toml's feature pins make every build share the dependencies).
profile=release
for a in "$@"; do [[ "$a" == --smoke ]] && profile=debug; done
build=(--locked)
[[ "$profile" == release ]] && build+=(--release)
cargo build "${build[@]}" --example bench
cargo build "${build[@]}" --no-default-features --bin finpass-gateway
bench="./target/$profile/examples/bench"
mkdir -p bench/out
"$bench" --out bench/out/s3s-fs.md "$@"

garage_bin="${GARAGE_BIN:-$HOME/.cargo/bin/garage}"
if [[ "${BENCH_GARAGE:-1}" != 0 ]] && [[ -x "$garage_bin" ]]; then
  # Garage's data in /dev/shm too, so both servers are measured without the shared disk.
  [[ -d /dev/shm ]] && export GARAGE_TMPDIR=/dev/shm
  source .ci/garage-up.sh
  garage bucket create bench > /dev/null
  garage bucket allow --read --write --owner bench --key "$TEST_S3_ACCESS_KEY" > /dev/null
  "$bench" --out bench/out/garage.md "$@" \
    --s3 "garage,$TEST_S3_ENDPOINT,$TEST_S3_ACCESS_KEY,$TEST_S3_SECRET_KEY,$TEST_S3_REGION,bench"
fi
