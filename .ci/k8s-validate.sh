#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests: renders every kustomization (kubectl's
# built-in kustomize, or a standalone kustomize), validates the core kinds against the
# Kubernetes schemas (kubernetes-validate, strict), and checks the manifests against the gateway
# binary (.ci/k8s_check.py: env names, ports, probes, grace period, securityContext, secrets).
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

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for dir in k8s/base k8s/monitoring k8s/overlays/*/; do
  dir=${dir%/}
  name=$(echo "$dir" | tr / _)
  render "$dir" > "$out/$name.yaml"
  echo "rendered $dir: $(grep -c '^kind:' "$out/$name.yaml") objects"
done

# k8s/monitoring has no Deployment of its own: it is checked as part of each overlay.
"$py" .ci/k8s_check.py "$binary" "$out/k8s_base.yaml" "$out"/k8s_overlays_*.yaml
