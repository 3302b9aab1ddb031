#!/usr/bin/env bash
# Runs every benchmark binary of the workspace (binaries named *-bench: the bench/ crate's and
# e2e's apiserver-bench) in release mode. Benchmarks that drive the sandbox start the `sandbox`
# and controller binaries found next to themselves, so every binary is built first. Figures are
# recorded in docs/<component>.md.
# Run one: hack/bench.sh cronhpa-bench --objects 1000
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
benches=$(cargo metadata --no-deps --format-version 1 \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print("\n".join(t["name"] for p in m["packages"] for t in p["targets"] if "bin" in t["kind"] and t["name"].endswith("-bench")))')
if [ -z "$benches" ]; then
  echo "bench: no benchmark binaries yet (they are named *-bench); nothing to run"
  exit 0
fi
only=""
if [ $# -gt 0 ] && [[ "$1" == *-bench ]]; then only=$1; shift; fi
cargo build --release --workspace --bins
target=${CARGO_TARGET_DIR:-$root/target}
for bin in $benches; do
  if [ -n "$only" ] && [ "$bin" != "$only" ]; then continue; fi
  echo "== $bin"
  "$target/release/$bin" "$@"
done
