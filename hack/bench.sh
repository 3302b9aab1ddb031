#!/usr/bin/env bash
# Runs every benchmark binary the workspace has (release builds). Figures are recorded in docs/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
benches=$(cargo metadata --no-deps --format-version 1 \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print("\n".join(f"{p["name"]} {t["name"]}" for p in m["packages"] for t in p["targets"] if "bin" in t["kind"] and t["name"].endswith("-bench")))')
if [ -z "$benches" ]; then
  echo "bench: no benchmark binaries yet (they are named *-bench); nothing to run"
  exit 0
fi
while read -r package bin; do
  echo "== $package/$bin"
  cargo run --release -q -p "$package" --bin "$bin" -- "$@"
done <<< "$benches"
