#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests: renders every kustomization (kubectl's
# built-in kustomize, or a standalone kustomize), validates the core kinds against the
# Kubernetes schemas (kubernetes-validate, strict) and the CRD kinds against the schemas of the
# npm @kubernetes-models packages, and checks the manifests against the gateway binary
# (.ci/k8s_check.py: env names and defaults, ports, probes, grace period vs drain, autoscaling,
# IAM policy, alerts' runbooks, securityContext, image digest, secrets). Then proves the checker
# catches each known break with the bad fixtures of .ci/fixtures/k8s/.
# Usage: bash .ci/k8s-validate.sh path/to/finpass-gateway
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:?usage: k8s-validate.sh path/to/finpass-gateway}

. .ci/venv.sh
ci_venv pyyaml kubernetes-validate

# kubectl ships on this kind of machine (Debian's kubernetes-client is too old for the
# kustomize features used here and no registry reached here carries a kustomize binary).
if command -v kubectl > /dev/null; then
  render() { timeout 60 kubectl kustomize "$1"; }
elif command -v kustomize > /dev/null; then
  render() { timeout 60 kustomize build "$1"; }
else
  echo "k8s-validate: needs kubectl or kustomize on PATH" >&2
  exit 1
fi

# CRD schemas (ExternalSecret v1, ServiceMonitor, PrometheusRule, ScaledObject): the compiled
# JSON-schema validators of @kubernetes-models (MIT, generated from the operators' Go API
# types), pinned here and installed once into the CI cache. Renovate's regex manager keeps the
# versions current (renovate.json).
crd_dir="${CI_CACHE:-$HOME/.cache/finpass-gateway-ci}/crd-schemas"
crd_pkgs='"@kubernetes-models/external-secrets": "2.0.0", "@kubernetes-models/prometheus-operator": "6.0.0", "@kubernetes-models/keda": "2.0.0"'
mkdir -p "$crd_dir"
want="{\"name\": \"finpass-gateway-crd-schemas\", \"private\": true, \"dependencies\": {$crd_pkgs}}"
if [ "$(cat "$crd_dir/package.json" 2> /dev/null)" != "$want" ] || [ ! -d "$crd_dir/node_modules/@kubernetes-models/keda" ]; then
  echo "$want" > "$crd_dir/package.json"
  (cd "$crd_dir" && timeout 600 npm install --silent --no-audit --no-fund --no-package-lock > /dev/null)
fi
cat > "$crd_dir/validate.mjs" <<'JS'
// Reads a JSON array of CRD objects on stdin, prints [{index, error}] for the invalid ones.
import { ExternalSecret } from "@kubernetes-models/external-secrets/external-secrets.io/v1/ExternalSecret";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
const models = {
  "external-secrets.io/v1/ExternalSecret": ExternalSecret,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
};
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
JSON.parse(input).forEach((doc, index) => {
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) return out.push({ index, error: `no schema for ${doc.apiVersion} ${doc.kind}` });
  try { new Model(doc).validate(); } catch (e) { out.push({ index, error: e.message }); }
});
process.stdout.write(JSON.stringify(out));
JS

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for dir in k8s/base k8s/monitoring k8s/overlays/*/; do
  dir=${dir%/}
  name=$(echo "$dir" | tr / _)
  render "$dir" > "$out/$name.yaml"
  echo "rendered $dir: $(grep -c '^kind:' "$out/$name.yaml") objects"
done

# k8s/monitoring has no Deployment of its own: it is checked as part of each overlay.
"$py" .ci/k8s_check.py --crd-validator "$crd_dir" "$binary" "$out/k8s_base.yaml" "$out"/k8s_overlays_*.yaml

# The checker fails on each break it exists for (bad fixtures, each reintroducing one).
"$py" .ci/fixtures/k8s/run.py --crd-validator "$crd_dir" "$binary"
