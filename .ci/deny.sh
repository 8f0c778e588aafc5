#!/usr/bin/env bash
# cargo-deny against deny.toml: licences, bans (banned crates, duplicate versions, wildcards) and
# sources (crates.io only) on every run; RustSec advisories when an advisory database is at hand.
# Usage: bash .ci/deny.sh
#
# cargo-deny is installed once (`cargo install cargo-deny --locked`: ~220 s of CPU, 13.5 min
# measured on 2 cores busy with other builds, a few minutes on idle ones) and cached in
# ~/.cargo/bin. The checks themselves take a second or two.
#
# The advisory database is a git repository on GitHub, which CI and the developer machines
# cannot reach (no package registry ships it). So advisories run only when either
#   - `cargo deny fetch db` succeeds (a machine with access to GitHub), or
#   - a copy is already on the machine: where cargo-deny keeps it
#     ($CARGO_HOME/advisory-dbs/advisory-db-*), or cargo-audit's ~/.cargo/advisory-db
#     (a clone of the RustSec advisory-db repository).
# Otherwise the script says loudly that advisories were skipped, and checks the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2> /dev/null | grep -qF "$CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION (cached afterwards)"
  start=$SECONDS
  nice -n 10 cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
  echo "cargo-deny installed in $((SECONDS - start)) s"
fi

cargo_home=${CARGO_HOME:-$HOME/.cargo}
# Where cargo-deny keeps the database for deny.toml's db-urls entry: db-path/<last URL segment>-
# <xxhash64 of the lowercased URL> (the name cargo-deny 0.20 prints when it is missing).
db_dir="$cargo_home/advisory-dbs/advisory-db-3157b0e258782691"
audit_db="$cargo_home/advisory-db"

cargo deny --locked check --hide-inclusion-graph licenses bans sources

fetch_log=$(mktemp)
trap 'rm -f "$fetch_log"' EXIT
if timeout 120 cargo deny --locked fetch db > "$fetch_log" 2>&1; then
  echo "advisories: RustSec database fetched"
elif [ -d "$db_dir/.git" ]; then
  echo "advisories: the RustSec database could not be fetched; using the local copy in $db_dir" \
    "(HEAD $(git -C "$db_dir" log -1 --format='%h of %cs'))"
elif [ -d "$audit_db/.git" ] && [ ! -e "$db_dir" ]; then
  echo "advisories: the RustSec database could not be fetched; using cargo-audit's copy in $audit_db" \
    "(HEAD $(git -C "$audit_db" log -1 --format='%h of %cs'))"
  mkdir -p "$(dirname "$db_dir")"
  ln -s "$audit_db" "$db_dir"
else
  echo "################################################################################################"
  echo "# advisories SKIPPED: the RustSec advisory database (a git repository on GitHub) is unreachable"
  echo "# from this machine, and there is no local copy in $db_dir"
  echo "# or $audit_db. Checked above: licenses, bans, sources."
  grep -v '^\s*$' "$fetch_log" | tail -n 2 | sed 's/^/#   fetch: /'
  echo "################################################################################################"
  exit 0
fi
# --offline: the database was fetched just above or is the local copy (cargo-deny fails if that
# copy is older than 90 days, advisories.maximum-db-staleness); the crates were fetched by the
# first check.
cargo deny --locked --offline check advisories
