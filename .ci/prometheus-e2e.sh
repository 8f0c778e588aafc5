#!/usr/bin/env bash
# Static checks of the rules (promtool check rules, the promtool unit tests, every alert tested),
# then the sandbox gateway and a real Prometheus (Debian package) scraping it and evaluating the
# recording and alerting rules, some traffic, and every PromQL expression of the Grafana dashboard
# and the rules checked for data (.ci/promql_check.py). Needs target/debug/finpass-gateway.
# Usage: bash .ci/prometheus-e2e.sh [--static]   (--static: the promtool part only;
#        GATEWAY=path/to/finpass-gateway to use another binary than target/debug's)
set -euo pipefail
cd "$(dirname "$0")/.."
static_only=${1:-}

if ! command -v prometheus > /dev/null || ! command -v promtool > /dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus > /dev/null
fi
. .ci/venv.sh
ci_venv pyyaml # promql_exprs.py reads the PrometheusRule

# Static checks first: the rules parse (promtool wants the plain `groups:` file, i.e. the
# PrometheusRule's spec) and the alerts fire on the series in the unit tests.
rules_dir=$(mktemp -d)
"$py" .ci/promql_exprs.py --rule-groups "$rules_dir/finpass-gateway.rules.yaml" \
  --check-tests k8s/monitoring/prometheusrule.test.yaml k8s/monitoring/prometheusrule.yaml > /dev/null
promtool check rules "$rules_dir/finpass-gateway.rules.yaml"
cp k8s/monitoring/prometheusrule.test.yaml "$rules_dir/"
(cd "$rules_dir" && timeout 300 promtool test rules prometheusrule.test.yaml)
rm -rf "$rules_dir"
[ "$static_only" = --static ] && exit 0

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
api_port=$(free_port)
metrics_port=$(free_port)
prom_port=$(free_port)

LISTEN_ADDR=127.0.0.1:$api_port METRICS_ADDR=127.0.0.1:$metrics_port \
  "${GATEWAY:-./target/debug/finpass-gateway}" --sandbox --sandbox-data "$work/data" > "$work/gateway.log" 2>&1 &
gw_pid=$!
# The rules as Prometheus loads them, every group evaluated every second (the 5-minute long
# group would otherwise first run up to 5 minutes after start).
"$py" .ci/promql_exprs.py --rule-groups "$work/rules.yaml" --no-group-intervals \
  k8s/monitoring/prometheusrule.yaml > /dev/null
cat > "$work/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $work/rules.yaml
scrape_configs:
  - job_name: finpass-gateway
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
CONF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
prom_pid=$!
trap 'kill $gw_pid $prom_pid 2>/dev/null || true; wait $gw_pid $prom_pid 2>/dev/null || true; rm -rf "$work"' EXIT

prom="http://127.0.0.1:$prom_port"
wait_for() { # wait_for <description> <command...>: bounded polling, 60 s at most
  local what=$1; shift
  for _ in $(seq 1 300); do "$@" > /dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what"; tail -20 "$work/gateway.log" "$work/prometheus.log"; exit 1
}
has_data() { curl -sf "$prom/api/v1/query" --data-urlencode "query=$1" | grep -q '"result":\[{'; }
wait_for "the gateway" curl -sf "http://127.0.0.1:$api_port/healthz"
wait_for "the first scrape" has_data 'up{job="finpass-gateway"} == 1'

post() { curl -s -o /dev/null -X POST "http://127.0.0.1:$api_port/v1/statements" -H 'content-type: application/json' -d "$1"; }
for round in 1 2 3; do
  for client in aa_demo_ready aa_demo_mixed aa_demo_not_pdf aa_demo_flaky aa_unknown_client; do
    post "{\"client_id\":\"$client\",\"request_id\":\"r$round\"}"
  done
  post '{"client_id":"../bad"}'
  curl -s -o /dev/null "http://127.0.0.1:$api_port/readyz"
  sleep 1 # spread the traffic over several 1 s scrapes so rate() has two samples
done
# A statement job (#19), so the jobs' series carry data: aa_demo_ready completes on its first poll.
job_status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$api_port/v1/statement-jobs" \
  -H 'content-type: application/json' -d '{"client_id":"aa_demo_ready","request_id":"e2e-job"}')
[ "$job_status" = 202 ] || { echo "creating a statement job answered $job_status"; exit 1; }
wait_for "the statement job to complete" has_data 'finpass_gateway_jobs_finished_total{state="completed"} > 0'
wait_for "rates over the traffic" has_data 'sum(rate(finpass_gateway_http_requests_total[1m])) > 0'
wait_for "the recording rules" has_data 'finpass_gateway:sli_availability:error_ratio_rate30d'
wait_for "the recording rules" has_data 'finpass_gateway:sli_latency:error_ratio_rate30d'

"$py" .ci/promql_exprs.py k8s/monitoring/*.json k8s/monitoring/prometheusrule.yaml > "$work/exprs.tsv"
python3 .ci/promql_check.py "$prom" < "$work/exprs.tsv"
