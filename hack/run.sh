#!/usr/bin/env bash
# `make run`: the embedded sandbox — emulated control plane plus the controllers that exist —
# with the seed examples applied through kubectl. Ctrl-C stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if ! grep -q 'name = "sandbox"' e2e/Cargo.toml 2>/dev/null; then
  echo "make run: the embedded sandbox arrives with the emulated control plane (issue 3) and the"
  echo "simulated cluster (issue 4); until then there is nothing to start. 'make test' runs the tests."
  exit 0
fi
echo "make run: starting the sandbox is wired up by the simulated-cluster issue" >&2
exit 1
