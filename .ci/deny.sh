#!/usr/bin/env bash
# cargo-deny against deny.toml: licences, bans (banned crates, duplicate versions, wildcards) and
# sources (crates.io only) on every run; RustSec advisories when an advisory database is at hand.
# Usage: bash .ci/deny.sh
#
# cargo-deny is installed once (`cargo install cargo-deny --locked`: ~220 s of CPU, 13.5 min
# measured on 2 cores busy with other builds, a few minutes on idle ones) and cached in
# ~/.cargo/bin. The checks themselves take a second or two.
#
# The advisory database is a git repository on GitHub (no package registry ships it), which CI
# and the developer machines may not reach. Advisories are checked from, in order:
#   1. a fresh `cargo deny fetch db` (a machine with access to GitHub);
#   2. a local copy: $ADVISORY_DB (a clone of https://github.com/rustsec/advisory-db, bare or
#      not), cargo-audit's ~/.cargo/advisory-db, or a snapshot fetched onto the build machines at
#      /work/.mirror/rustsec+advisory-db/repo. It is cloned into where cargo-deny keeps its
#      database ($CARGO_HOME/advisory-dbs/advisory-db-*) and refreshed when the copy moves on;
#   3. cargo-deny's own copy from an earlier fetch.
# A copy older than cargo-deny's 90-day limit is still used, with a warning naming its date
# (advisories published since are not seen); only with no copy at all are advisories skipped,
# loudly. README "Dependencies and advisories" says how to put a copy on a machine.
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
config=$(mktemp)
trap 'rm -f "$fetch_log" "$config"' EXIT
cp deny.toml "$config"

local_copy=
for candidate in "${ADVISORY_DB:-}" "$audit_db" /work/.mirror/rustsec+advisory-db/repo; do
  if [ -n "$candidate" ] && git -C "$candidate" rev-parse --verify -q HEAD^{commit} > /dev/null 2>&1; then
    local_copy=$candidate
    break
  fi
done

if timeout 120 cargo deny --locked fetch db > "$fetch_log" 2>&1; then
  echo "advisories: RustSec database fetched"
else
  if [ -n "$local_copy" ]; then
    copy_time=$(git -C "$local_copy" log -1 --format=%ct)
    db_time=$(git -C "$db_dir" log -1 --format=%ct 2> /dev/null || echo 0)
    if [ ! -d "$db_dir/.git" ] || [ "$copy_time" -gt "$db_time" ]; then
      # None yet, a symlink (older runs linked cargo-audit's copy) or an older clone.
      rm -rf "$db_dir"
      mkdir -p "$(dirname "$db_dir")"
      git clone --quiet --no-hardlinks "$local_copy" "$db_dir"
    fi
    echo "advisories: the RustSec database could not be fetched; using the local copy $local_copy"
  elif [ ! -d "$db_dir/.git" ]; then
    echo "################################################################################################"
    echo "# advisories SKIPPED: the RustSec advisory database (a git repository on GitHub) is unreachable"
    echo "# from this machine, and there is no local copy (\$ADVISORY_DB, $audit_db, $db_dir)."
    echo "# Checked above: licenses, bans, sources. README \"Dependencies and advisories\" says how to add one."
    grep -v '^\s*$' "$fetch_log" | tail -n 2 | sed 's/^/#   fetch: /'
    echo "################################################################################################"
    exit 0
  fi
  updated=$(git -C "$db_dir" log -1 --format=%ct)
  age_days=$(((EPOCHSECONDS - updated) / 86400))
  echo "advisories: database at $(git -C "$db_dir" log -1 --format='%h of %cs') ($age_days days old)"
  if [ "$age_days" -ge 90 ]; then
    echo "################################################################################################"
    echo "# advisories: the local RustSec database is $age_days days old (cargo-deny's limit: 90). Checking"
    echo "# against it anyway: advisories published after $(git -C "$db_dir" log -1 --format=%cs) are NOT seen."
    echo "# Refresh the copy (README \"Dependencies and advisories\")."
    echo "################################################################################################"
    sed -i "s/^\[advisories\]$/[advisories]\nmaximum-db-staleness = \"P$((age_days + 1))D\"/" "$config"
  fi
fi
# --offline: the database was fetched just above or is the local copy (cargo-deny refuses one
# older than maximum-db-staleness); the crates were fetched by the first check.
cargo deny --locked --offline --config "$config" check advisories
