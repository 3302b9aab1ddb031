#!/usr/bin/env bash
# Builds one image per component from images/<component>/Dockerfile (context: the repository root).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
registry=${REGISTRY:-ghcr.io/tkestack-successors}
tag=${TAG:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
shopt -s nullglob
dockerfiles=("$root"/images/*/Dockerfile)
if [ ${#dockerfiles[@]} -eq 0 ]; then
  echo "images: no images yet (each add-on issue adds images/<component>/Dockerfile); nothing to build"
  exit 0
fi
if ! docker info >/dev/null 2>&1; then
  echo "images: no Docker engine reachable; the Dockerfiles are:" >&2
  printf '  %s\n' "${dockerfiles[@]}" >&2
  echo "run 'make images' on a machine with Docker/BuildKit" >&2
  exit 1
fi
for dockerfile in "${dockerfiles[@]}"; do
  component=$(basename "$(dirname "$dockerfile")")
  docker build -f "$dockerfile" -t "$registry/$component:$tag" "$root"
done
