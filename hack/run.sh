#!/usr/bin/env bash
# `make run`: the embedded sandbox — the emulated control plane (API server, scheduler,
# kubelets, workload controllers) plus every add-on controller of the workspace — with the
# seed examples applied through kubectl. Ctrl-C stops everything.
#
# Environment:
#   SANDBOX_PORT     API server port on 127.0.0.1 (default 6443)
#   SANDBOX_DIR      where the kubeconfig, logs and config go (default .sandbox/)
#   SANDBOX_BIN_DIR  use prebuilt binaries from this directory instead of building them
#   RUN_SMOKE=1      apply and check the examples, then stop (used by the smoke test)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${SANDBOX_PORT:-6443}
state=${SANDBOX_DIR:-$root/.sandbox}
smoke=${RUN_SMOKE:-0}
mkdir -p "$state/logs"
rm -f "$state/kubeconfig"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

kubectl_bin=${KUBECTL:-$root/.tools/bin/kubectl}
if [ ! -x "$kubectl_bin" ]; then
  say "installing the pinned tools (kubectl, ...)"
  hack/install-tools.sh
fi
kubectl() { "$kubectl_bin" --kubeconfig "$state/kubeconfig" "$@"; }

controllers=()
for c in tapp-controller cronhpa-controller galaxy-ipam; do
  [ -f "crates/$c/Cargo.toml" ] && controllers+=("$c")
done

bin_dir=${SANDBOX_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  say "building the sandbox and ${#controllers[@]} controllers"
  pkgs=(-p e2e)
  for c in "${controllers[@]}"; do pkgs+=(-p "$c"); done
  cargo build --bins "${pkgs[@]}"
  bin_dir=${CARGO_TARGET_DIR:-$root/target}/debug
fi

pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

# galaxy-ipam is the scheduler's extender for pods requesting eni-ip, at the address of the
# seed's scheduler policy (127.0.0.1:32760/v1).
cat > "$state/scheduler-config.yaml" <<'EOF'
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
extenders:
- urlPrefix: http://127.0.0.1:32760/v1
  filterVerb: filter
  prioritizeVerb: priority
  bindVerb: bind
  weight: 1
  httpTimeout: 10s
  nodeCacheCapable: false
  managedResources:
  - name: tke.cloud.tencent.com/eni-ip
    ignoredByScheduler: true
EOF

say "starting the sandbox on 127.0.0.1:$port (3 nodes in 172.21.64.0/20, the seed's node subnet)"
"$bin_dir/sandbox" --listen "127.0.0.1:$port" --kubeconfig-out "$state/kubeconfig" \
  --nodes 3 --node-address-cidr 172.21.64.0/20 --node-capacity tke.cloud.tencent.com/eni-ip=32 \
  --scheduler-config "$state/scheduler-config.yaml" >"$state/logs/sandbox.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
  [ -s "$state/kubeconfig" ] && kubectl get --raw /version >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$state/logs/sandbox.log" >&2; exit 1; }
  sleep 0.1
done
kubectl get nodes

say "installing the CRDs (server-side apply: the TApp CRD embeds full pod templates)"
kubectl apply --server-side -f manifests/crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

admin_port=18080
for c in "${controllers[@]}"; do
  admin_port=$((admin_port + 1))
  args=(--kubeconfig "$state/kubeconfig" --admin-address "127.0.0.1:$admin_port"
        --leader-elect-namespace kube-system)
  case "$c" in
    tapp-controller | cronhpa-controller) args+=(--webhook-address "") ;;
    galaxy-ipam) args+=(--port 32760 --api-port 9041) ;;
  esac
  say "starting $c (metrics on http://127.0.0.1:$admin_port/metrics)"
  "$bin_dir/$c" "${args[@]}" >"$state/logs/$c.log" 2>&1 &
  pids+=($!)
done

fixtures=crates/addon-common/tests/fixtures
if [[ " ${controllers[*]} " == *" tapp-controller "* ]]; then
  say "TApp: the seed's example-tapp (3 instances)"
  kubectl apply -f "$fixtures/tapp-create.yaml"
  kubectl wait --for=jsonpath='{.status.readyReplicas}'=3 tapp/example-tapp --timeout=120s >/dev/null
  kubectl get tapp example-tapp
  kubectl get pods -l app=example-tapp -o wide
fi

if [[ " ${controllers[*]} " == *" cronhpa-controller "* ]]; then
  say "CronHPA: the seed's example-cron-hpa on a Deployment (Fridays 20:00 → 60, Sundays 23:00 → 30)"
  kubectl create deployment demo-deployment --image=nginx --replicas=1 >/dev/null
  kubectl apply -f "$fixtures/cronhpa-weekly.yaml"
  kubectl wait --for=condition=Ready cronhpa/example-cron-hpa --timeout=60s >/dev/null
  kubectl get cronhpa -o wide
fi

if [[ " ${controllers[*]} " == *" galaxy-ipam "* ]]; then
  say "Galaxy: the seed's floatingip-config pool and a Deployment requesting an ENI IP"
  kubectl apply -f manifests/galaxy-ipam/floatingip-config.yaml
  kubectl apply -f manifests/galaxy-ipam/example-deployment.yaml
  kubectl wait --for=condition=Ready pod -l k8s-app=nnn --timeout=120s >/dev/null
  kubectl get pods -l k8s-app=nnn -o custom-columns='POD:.metadata.name,IP:.status.podIP,ARGS:.metadata.annotations.k8s\.v1\.cni\.galaxy\.io/args'
  kubectl get floatingips.galaxy.k8s.io
fi

if [ "$smoke" = 1 ]; then
  say "smoke run passed"
  exit 0
fi

cat <<EOF

The sandbox is running. In another shell:

  export KUBECONFIG=$state/kubeconfig
  alias kubectl=$kubectl_bin

  kubectl get nodes
  kubectl get tapp,pods
  kubectl describe tapp example-tapp                         # SuccessfulCreate events
  kubectl apply -f $fixtures/tapp-pin-instance.yaml          # instance 1 → template "test", in place
  kubectl scale tapp example-tapp --replicas=5
  kubectl get cronhpa -o wide                                 # next schedules, conditions
  kubectl get floatingips.galaxy.k8s.io                       # ENI IPs held by pods
  curl -s http://127.0.0.1:9041/v1/ip                          # galaxy-ipam REST API
  kubectl explain tapp.spec.templatePool

Logs: $state/logs/   Stop: Ctrl-C
EOF
wait "${pids[0]}"
