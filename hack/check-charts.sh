#!/usr/bin/env bash
# Lints every chart under charts/ and validates its rendered manifests strictly
# against the Kubernetes 1.33 schemas.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
shopt -s nullglob
charts=("$root"/charts/*/Chart.yaml)
if [ ${#charts[@]} -eq 0 ]; then
  echo "charts: no charts yet (each add-on issue adds charts/<component>/); nothing to check"
  exit 0
fi
export HOME=${HOME:-/tmp}
for chart_yaml in "${charts[@]}"; do
  chart=$(dirname "$chart_yaml")
  name=$(basename "$chart")
  echo "charts: $name"
  "$bin/helm" lint --strict "$chart"
  "$bin/helm" template "$name" "$chart" --namespace kube-system --kube-version 1.33.0 \
    | "$bin/kubernetes-validate" -k 1.33.0 --strict -
  # Every values file under ci/ is a supported configuration and must render and validate too.
  for values in "$chart"/ci/*-values.yaml; do
    "$bin/helm" template "$name" "$chart" --namespace kube-system --kube-version 1.33.0 -f "$values" \
      | "$bin/kubernetes-validate" -k 1.33.0 --strict -
  done
done
