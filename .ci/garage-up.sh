# Sourced (not run): installs Garage if needed (`cargo install garage --locked`, ~7 min, then
# cached in ~/.cargo/bin), starts a single-node server on free loopback ports with a throwaway
# key, and exports TEST_S3_ENDPOINT/ACCESS_KEY/SECRET_KEY/REGION. An EXIT trap stops it and
# deletes its data. Used by .ci/garage.sh and bench/run.sh.
GARAGE_VERSION=2.5.0
garage_bin="${GARAGE_BIN:-$HOME/.cargo/bin/garage}"
if ! "$garage_bin" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
  echo "installing garage $GARAGE_VERSION (cached afterwards)"
  cargo install garage --locked --version "$GARAGE_VERSION"
fi

dir=$(mktemp -d -p "${GARAGE_TMPDIR:-${TMPDIR:-/tmp}}")
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
s3_port=$(free_port)
rpc_port=$(free_port)
cat > "$dir/garage.toml" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
CONF

garage() { "$garage_bin" -c "$dir/garage.toml" "$@"; }
# The binary itself in the background (not the function), so $! is garage's own pid.
"$garage_bin" -c "$dir/garage.toml" server > "$dir/server.log" 2>&1 &
garage_pid=$!
trap 'kill $garage_pid 2>/dev/null || true; wait $garage_pid 2>/dev/null || true; rm -rf "$dir"' EXIT

booted=false
for _ in $(seq 1 100); do
  if garage status > /dev/null 2>&1; then booted=true; break; fi
  sleep 0.2
done
$booted || { echo "garage did not start"; cat "$dir/server.log"; exit 1; }

node_id=$(garage node id -q 2>/dev/null || garage node id)
garage layout assign -z dc1 -c 1G "${node_id:0:64}" > /dev/null
garage layout apply --version 1 > /dev/null

# A throwaway key for this run only; the server and its data are deleted on exit.
key_id="GK$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
garage key import --yes -n ci "$key_id" "$secret" > /dev/null
garage key allow --create-bucket "$key_id" > /dev/null

export TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export TEST_S3_ACCESS_KEY="$key_id"
export TEST_S3_SECRET_KEY="$secret"
export TEST_S3_REGION=garage
